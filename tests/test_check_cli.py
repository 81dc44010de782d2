"""`lossbench check` as a user runs it: lossbench.cli.main in-process (its real exit codes
and one-line errors), with the check command of lossbench.cli.check."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import lossbench_cli as lossbench

from lossbench.checks import PROPERTIES, LossCase, resolve_targets, run_property
from lossbench.losses import unregister_loss

FIXTURES = Path(__file__).parent / "fixtures"
BROKEN = FIXTURES / "broken_losses.py"
REAL = FIXTURES / "real_losses"




@pytest.mark.parametrize("fn,prop", [
    ("naive_ce", "finite_at_extremes"),
    ("unmasked_ce", "output_contract"),
    ("row_mixing_ce", "batch_permutation_equivariant"),
    ("row_mixing_ce", "row_independent"),
    ("wrong_gradient_ce", "gradient_matches_finite_differences"),
])
def test_broken_loss_is_caught_with_a_runnable_reproduction(fn, prop):
    (spec,) = resolve_targets(f"{BROKEN}:{fn}")
    result = run_property(spec, prop, max_examples=200)
    assert not result.passed
    case = eval(result.counterexample, {"torch": torch, "LossCase": LossCase})
    assert repr(case) == result.counterexample
    with pytest.raises(AssertionError):
        PROPERTIES[prop].check(spec, case)
    with pytest.raises(AssertionError):  # the printed reproduction runs as it is
        exec(result.reproduction, {})


@pytest.mark.slow
def test_failure_prints_table_reproduction_and_exits_1(check):
    code, out, err = check(f"{BROKEN}:naive_ce", "--max-examples", "20")
    assert code == 1, err
    assert "finite_at_extremes" in out and "FAIL" in out
    assert "Falsifying example (runnable)" in out and "case = LossCase(" in out
    assert "PROPERTIES['finite_at_extremes'].check(spec, case)" in out
    assert out.strip().splitlines()[-1].endswith("failed")


def test_registered_loss_passes(check):
    code, out, _ = check("cross_entropy", "--max-examples", "10")
    assert code == 0, out
    assert "row_independent" in out and "token_local" in out and "0 failed" in out


def test_module_function_target(check):
    code, out, _ = check("lossbench.losses.likelihood:cross_entropy", "--max-examples", "5")
    assert code == 0, out


@pytest.fixture
def negative_plugin():
    yield FIXTURES / "broken_plugin.py"
    unregister_loss("fixture_negative_ce")
    for name in [m for m in sys.modules if m.startswith("lossbench_plugin_broken_plugin_")]:
        del sys.modules[name]


@pytest.mark.slow
def test_plugin_loss_claiming_a_false_property_fails(check, negative_plugin):
    code, out, _ = check("fixture_negative_ce", "--plugin", negative_plugin, "--max-examples", "50")
    assert code == 1
    assert "nonnegative" in out and "FAIL" in out
    assert f"plugins=['{negative_plugin}']" in out  # the reproduction loads the plugin


@pytest.mark.slow
def test_real_shapes_without_adapters(check):
    """A mean-reduced nn.Module, an (N, V) function and a fairseq-style sum with padding
    id 1 and log-probabilities are checked as they are."""
    for args in ([f"{REAL}/focal.py:FocalLoss", "--reduction", "mean"],
                 [f"{REAL}/label_smoothing.py:LabelSmoothingCrossEntropy", "--flat",
                  "--reduction", "mean"],
                 [f"{REAL}/label_smoothing.py:label_smoothed_nll_loss", "--log-probs",
                  "--ignore-index", "1", "--reduction", "sum", "--set", "epsilon=0.1"]):
        code, out, _ = check(*args, "--max-examples", "10")
        assert code == 0, out
        assert "reduction  " in out and " 0 failed" in out


def test_like_focal_fails_an_eps_focal_and_passes_a_correct_one(check):
    code, out, _ = check(f"{REAL}/focal.py:focal_loss_eps", "--flat", "--like", "focal",
                         "--property", "matches_reference", "--max-examples", "50")
    assert code == 1
    assert "loss vs reference (checked as focal)" in out
    assert "this loss: [" in out and "reference: [" in out  # the differing values
    assert "hparams={'gamma':" in out  # and the input, with the drawn hyperparameter
    code, out, _ = check(f"{REAL}/focal.py:FocalLoss", "--reduction", "mean", "--like", "focal",
                         "--max-examples", "10")
    assert code == 0, out
    assert "matches_reference" in out and "shift_invariant" in out


def test_mean_reduced_return_is_one_line_diagnosis(check):
    code, out, _ = check(f"{REAL}/focal.py:FocalLoss")
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[0].endswith("looks mean-reduced: return per-token values, or pass "
                             "--reduction mean")
    assert "property" not in out  # no table of cascading failures


@pytest.mark.slow
def test_exception_in_the_loss_is_printed_once_with_its_own_frames(check, tmp_path):
    path = tmp_path / "raising.py"
    path.write_text("import torch\n\n"
                    "def picky_ce(logits, targets, *, ignore_index=-100):\n"
                    "    if (logits.abs() > 10).any():\n"
                    "        raise ValueError('logit out of range')\n"
                    "    return torch.zeros(targets.shape, dtype=logits.dtype)\n")
    code, out, _ = check(f"{path}:picky_ce", "--max-examples", "15")
    assert code == 1
    assert out.count("raise ValueError('logit out of range')") == 1
    assert f'File "{path}", line 5, in picky_ce' in out
    assert "the same error as under" in out
    assert "hypothesis" not in out.split("Raised inside the loss:")[1].split("Falsifying")[0]
    # raising on every input stops the run before the properties, with one message
    path = tmp_path / "always.py"  # a new file: an imported one is not imported again
    path.write_text("def broken_ce(logits, targets, *, ignore_index=-100):\n"
                    "    return logits.sum(-1) / undefined_name\n")
    code, out, _ = check(f"{path}:broken_ce")
    assert code == 1
    assert "raised NameError: name 'undefined_name' is not defined (always.py:2) on a plain " \
           "input" in out and "property" not in out


def test_warnings_from_the_loss_collapse_to_one_line(check, tmp_path):
    path = tmp_path / "noisy.py"
    path.write_text("import warnings\nimport torch.nn.functional as F\n\n"
                    "def noisy_ce(logits, targets, *, ignore_index=-100):\n"
                    "    warnings.warn('deprecated path')\n"
                    "    return F.cross_entropy(logits.transpose(1, 2), targets, "
                    "ignore_index=ignore_index, reduction='none')\n")
    code, out, _ = check(f"{path}:noisy_ce", "--max-examples", "5")
    assert code == 0, out
    (line,) = [ln for ln in out.splitlines() if "deprecated path" in ln]
    assert "x UserWarning: deprecated path (noisy.py:5)" in line


def test_file_without_function_lists_its_candidates(check):
    code, out, err = check(f"{REAL}/focal.py")
    assert code == 2 and out == ""
    assert "names no function" in err and "candidates: FocalLoss, focal_loss_eps, " \
                                          "focal_loss_pow" in err


@pytest.mark.parametrize("args,fragment", [
    (["cross_entropyy"], "did you mean cross_entropy"),
    (["missing_file.py:fn"], "no such file: missing_file.py"),
    ([f"{BROKEN}:nope"], "has no function 'nope'"),
    ([f"{BROKEN}:not_a_loss"], "expected signature"),
    (["no_such_module_xyz:fn"], "cannot import module"),
    (["all", "--property", "bogus"], "--property: unknown"),
    ([f"{BROKEN}:naive_ce", "--property", "nonnegative"],
     "--property nonnegative: does not apply to"),
    (["focal", "--flat"], "--flat: applies to FILE.py:FUNCTION"),
    ([f"{REAL}/focal.py:FocalLoss", "--like", "focall"], "did you mean focal"),
    ([f"{REAL}/poly.py:poly1_cross_entropy", "--flat", "--like", "focal"],
     "takes no hyperparameter 'gamma' (focal's hyperparameters: gamma)"),
    ([f"{REAL}/focal.py:FocalLoss", "--like", "focal", "--hparam-name", "gama=g"],
     "focal has no hyperparameter 'gama' (focal's hyperparameters: gamma)"),
    ([f"{REAL}/focal.py:FocalLoss", "--set", "gama=2"], "takes no parameter 'gama'"),
    ([f"{REAL}/label_smoothing.py:label_smoothed_nll_loss"], "['epsilon'] have no default"),
    ([f"{REAL}/distill.py:kd_loss", "--teacher", "soft"], "--teacher: expected probs or logits"),
    ([f"{REAL}/focal.py:FocalLoss", "--like", "focal", "--teacher", "probs"],
     "--teacher: focal takes no teacher"),
    (["check_plugin_missing", "--plugin", "missing_plugin.py"], "--plugin: no such file"),
    ([], "Missing argument"),
])
def test_bad_input_exits_2_with_one_line(check, args, fragment):
    code, out, err = check(*args)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("lossbench: error:") and fragment in lines[0], lines[0]


@pytest.mark.slow
def test_losses_json_lists_every_registered_loss():
    proc = lossbench("losses", "--json")
    assert proc.returncode == 0
    names = {row["name"] for row in json.loads(proc.stdout)}
    # a fresh interpreter's registry: this one may hold other tests' plugin losses
    fresh = subprocess.run([sys.executable, "-c", "from lossbench.losses import list_losses; "
                            "print(' '.join(s.name for s in list_losses()))"],
                           capture_output=True, text=True, check=True)
    assert names == set(fresh.stdout.split()) and "cross_entropy" in names


@pytest.mark.slow
def test_losses_table_has_references():
    proc = lossbench("losses")
    assert proc.returncode == 0
    assert "Welleck" in proc.stdout and "Crammer" in proc.stdout and "focal" in proc.stdout


# --------------------------------------------------------------------------- calling conventions


def test_loss_without_targets_is_called_with_its_teacher_and_its_own_arguments(check):
    """kd(student, teacher, temperature): --set temperature accounts for the third parameter,
    so nothing is taken as the targets (it was: "takes no parameter 'temperature'")."""
    kd = f"{REAL}/kd_no_targets.py:kl_div_loss"
    base = ["--teacher", "logits:logits_teacher", "--flat", "--reduction", "mean",
            "--max-examples", "5"]
    code, out, err = check(kd, *base, "--set", "temperature=4")
    assert code == 0, out + err
    assert "takes no targets" in out and " 0 failed" in out
    code, out, _ = check(kd, *base, "--targets", "none", "--range", "temperature=1:8")
    assert code == 0, out
    code, out, err = check(kd, *base)  # temperature has no default and no value: ask
    assert code == 2 and "does 'temperature' take the targets?" in err
    assert "--targets none" in err and "--set temperature=VALUE" in err


def test_criterion_object_taking_the_batch_and_the_model_output_as_dicts(check):
    code, out, err = check(f"{REAL}/twinkle.py:CrossEntropyLoss", "--targets", "inputs",
                           "--targets-key", "labels", "--logits-key", "logits",
                           "--ignore-index", "-100", "--reduction", "mean", "--max-examples", "5")
    assert code == 0, out + err
    assert "reduction  " in out and " 0 failed" in out


def test_class_method_entry_and_model_output_attributes(check, tmp_path):
    path = tmp_path / "criterion.py"
    path.write_text(
        "import torch.nn.functional as F\n\n"
        "class Criterion:\n"
        "    def __init__(self, label_smoothing=0.0):\n"
        "        self.label_smoothing = label_smoothing\n\n"
        "    def compute_loss(self, model_output, batch):\n"
        "        logits = model_output.logits  # a model hub's output object\n"
        "        assert model_output[0] is logits and model_output['logits'] is logits\n"
        "        return F.cross_entropy(logits.flatten(0, 1), batch['labels'].flatten(),\n"
        "                               label_smoothing=self.label_smoothing)\n")
    code, out, err = check(f"{path}:Criterion.compute_loss", "--logits-key", "logits",
                           "--targets-key", "labels", "--ignore-index", "-100", "--reduction",
                           "mean", "--like", "label_smoothing",
                           "--hparam-name", "smoothing=label_smoothing", "--max-examples", "5")
    assert code == 0, out + err
    assert "matches_reference" in out and " 0 failed" in out


def test_vocab_arg_passes_the_vocabulary_size_to_the_constructor(check):
    target = f"{REAL}/apl.py:NormalizedCrossEntropy"
    code, out, err = check(target, "--flat", "--reduction", "mean", "--vocab-arg", "num_classes",
                           "--max-examples", "5")
    assert code == 0, out + err
    code, _, err = check(target, "--flat", "--reduction", "mean")
    assert code == 2 and "--vocab-arg NAME for the vocabulary size" in err


def test_in_place_loss_fails_once_and_its_reproduction_shows_the_inputs_before_the_call(
        check, tmp_path):
    """A label smoother that clamps the caller's labels (clamp_min_) used to fail six
    properties under wrong diagnoses, and its reproductions showed the clamped labels."""
    path = tmp_path / "smoother.py"
    path.write_text(
        "import torch.nn.functional as F\n\n"
        "def smoothed(logits, labels, *, ignore_index=-100, epsilon=0.1):\n"
        "    log_probs = -F.log_softmax(logits, dim=-1)\n"
        "    padding_mask = labels.eq(ignore_index)\n"
        "    labels.clamp_min_(0)\n"
        "    nll = log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)\n"
        "    loss = (1 - epsilon) * nll + epsilon * log_probs.mean(-1)\n"
        "    return loss.masked_fill(padding_mask, 0.0)\n")
    code, out, _ = check(f"{path}:smoothed", "--max-examples", "30", "--seed", "0")
    assert code == 1
    rows = [line.split() for line in out.splitlines() if "smoothed " in line]
    assert [r[1] for r in rows if r[2] == "FAIL"] == ["inputs_unchanged"], out
    assert "modifies its argument 'labels' in place during the call" in out
    reproduction = out.split("Falsifying example (runnable):\n")[1].split("\n\n")[0]
    reproduction = textwrap.dedent(reproduction)
    case = reproduction.split("case = ")[1].split("PROPERTIES")[0]
    assert re.search(r"targets=torch\.tensor\(\[\[[^\]]*-(1|100)\b", case), case  # not clamped
    with pytest.raises(AssertionError, match="modifies its argument 'labels'"):
        exec(reproduction, {})


def test_a_crash_at_some_ignore_ids_is_one_line_suggesting_the_users_own(check):
    code, out, _ = check(f"{REAL}/axolotl_chunked.py:chunked_fix_cross_entropy", "--reduction",
                         "mean")
    assert code == 1 and "property" not in out  # no table of nine identical crashes
    assert "with ignore_index=-1 on a plain input, but runs with ignore_index=-100, 0" in out
    assert "--ignore-index K (K = -100 runs)" in out
    code, out, _ = check(f"{REAL}/axolotl_chunked.py:chunked_fix_cross_entropy", "--reduction",
                         "mean", "--ignore-index", "-100", "--max-examples", "5")
    assert code == 0, out


def test_non_causal_sum_is_asked_about_then_checked_on_its_total(check):
    target = f"{REAL}/parlai_repetition.py:repetition_ul_loss"
    code, out, _ = check(target, "--reduction", "sum")
    assert code == 1 and "property" not in out
    assert "depends on later positions" in out and "pass --non-causal" in out
    code, out, _ = check(target, "--reduction", "sum", "--non-causal", "--max-examples", "10")
    assert code == 0, out
    assert "token_local " in out and "reduction: not checked" in out


@pytest.mark.parametrize("args,fragment", [
    ([f"{REAL}/focal.py:FocalLoss", "--targets", "nope"], "--targets: "),
    ([f"{REAL}/focal.py:FocalLoss", "--range", "gamma=1"], "--range: expected NAME=LO:HI"),
    ([f"{REAL}/focal.py:FocalLoss", "--like", "focal", "--range", "gamma=0:99"],
     "--range gamma=0:99: outside focal's range"),
    ([f"{REAL}/focal.py:FocalLoss", "--range", "gama=0:1"], "takes no parameter 'gama'"),
    ([f"{REAL}/apl.py:NormalizedCrossEntropy", "--vocab-arg", "classes"],
     "--vocab-arg: "),
    ([f"{REAL}/focal.py:FocalLoss", "--targets-key", "labels", "--targets", "none"],
     "--targets-key: the function takes no targets"),
    ([f"{REAL}/focal.py:FocalLoss.nope"], "has no method 'nope'"),
    (["focal", "--chunk", "8"], "--chunk: applies to FILE.py:FUNCTION"),
])
def test_new_options_that_do_not_fit_exit_2_with_one_line(check, args, fragment):
    code, out, err = check(*args)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], err
