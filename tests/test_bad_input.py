"""Bad input is reported before any run, one line per problem, all of them at once, each
naming where it came from (the suite file or the --set behind it), exit 2, no traceback."""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import TINY, tiny_toml

from lossbench.cli.main import main
from lossbench.core.config import RunConfig
from lossbench.losses import load_plugin, registry, unregister_loss
from lossbench.suite.load import SuiteError, load_suite
from lossbench.suite.source import MAX_DEPTH
from lossbench.train.loop import train_run



def cli(capsys, *args) -> tuple[int, list[str], str]:
    """``lossbench ARGS`` in this process: exit code, stderr lines, stderr."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    return code, err.strip().splitlines(), err


def write(tmp_path, text: str, name="s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def bad_run(capsys, tmp_path, suite, *args) -> list[str]:
    code, lines, err = cli(capsys, "run", suite, "--out", tmp_path / "out", "--dry-run", *args)
    assert code == 2 and "Traceback" not in err, err
    assert all(line.startswith("lossbench: error: ") for line in lines), err
    assert not (tmp_path / "out").exists()
    return lines


# ---- every phase at once ---------------------------------------------------------------

def test_problems_of_every_phase_are_reported_together(tmp_path, capsys):
    """lr = nan (a field), a split too short for one window and a batch that cannot fit in
    memory (the corpus with this model): before, only lr was printed."""
    suite = write(tmp_path, tiny_toml("x", '["cross_entropy"]', data={"markov_tokens": 150},
                                      train={"lr": float("nan"), "batch_size": 10**9}))
    lines = bad_run(capsys, tmp_path, suite)
    text = "\n".join(lines)
    assert "[train] lr=nan is not a finite number" in text
    assert "the validation split has 15 tokens, fewer than block_size + 1 = 17" in text
    assert "GiB" in text and "[train]" in text.split("validation split")[1], text
    assert len(lines) == 3, text


def test_a_check_that_cannot_run_yet_says_more_may_follow(tmp_path, capsys):
    suite = write(tmp_path, tiny_toml("x", '["cross_entropy"]', data={"markov_tokens": 150},
                                      model={"n_embd": 15}))  # not divisible by n_head = 2
    lines = bad_run(capsys, tmp_path, suite)
    assert len(lines) == 1 and "n_embd (15) must be divisible by n_head (2)" in lines[0]
    assert "more problems may follow: the corpus's files, split sizes and memory" in lines[0]


# ---- deep TOML ---------------------------------------------------------------------------

DEEP = [  # [model] exists in the tiny suite: the deep values go into a table below it
    ("array", "[model.model_kwargs]\nx = {}\n".format("[" * 3000 + "]" * 3000)),
    ("inline-table", "[model.model_kwargs]\nx = {}\n".format("{a=" * 600 + "1" + "}" * 600)),
    ("dotted-key", "[model.model_kwargs]\n{} = 1\n".format(".".join(["a"] * 5000))),
    ("just-over", "[model.model_kwargs]\nx = {}\n".format("[" * MAX_DEPTH + "]" * MAX_DEPTH)),
]


@pytest.mark.parametrize("text", [t for _, t in DEEP], ids=[n for n, _ in DEEP])
def test_deep_toml_is_one_line(tmp_path, capsys, text):
    suite = write(tmp_path, tiny_toml("x", '["cross_entropy"]') + "\n" + text)
    lines = bad_run(capsys, tmp_path, suite)
    assert len(lines) == 1 and f"{MAX_DEPTH} levels" in lines[0] and str(suite) in lines[0], \
        lines


def test_a_value_at_the_limit_is_read(tmp_path):
    depth = MAX_DEPTH - 2  # the document, model, model_kwargs: x's innermost [ is level 32
    text = "[model.model_kwargs]\nx = {}\n".format("[" * depth + "]" * depth)
    suite = load_suite(write(tmp_path, tiny_toml("x", '["cross_entropy"]') + "\n" + text))
    value, levels = suite.runs[0].model.model_kwargs["x"], 0
    while value:
        value, levels = value[0], levels + 1
    assert levels == depth - 1  # read as written


def test_deep_set_value_is_one_line(tmp_path, capsys):
    suite = write(tmp_path, tiny_toml("x", '["cross_entropy"]'))
    lines = bad_run(capsys, tmp_path, suite, "--set",
                    "model.model_kwargs={ x = " + "[" * 2000 + "]" * 2000 + " }")
    assert len(lines) == 1 and lines[0].startswith("lossbench: error: --set ") and \
        f"{MAX_DEPTH} levels" in lines[0], lines


def test_shipped_depth_is_far_below_the_limit():
    from pathlib import Path

    from lossbench.suite.source import read_toml, too_deep

    root = Path(__file__).resolve().parent.parent
    for path in [*root.glob("suites/**/*.toml"), *root.glob("examples/**/*.toml")]:
        assert too_deep(read_toml(path), limit=8) is None, path


# ---- tuning grids --------------------------------------------------------------------------

@pytest.mark.parametrize("grid,bad", [("lr = [1e-3, inf]", "inf"),
                                      ("lr = { log_grid = [1e-4, inf, 3] }", "inf"),
                                      ("gamma = [nan, 1.0]", "nan"),
                                      ("lr = [nan]\ngamma = [inf]", "nan")])
def test_inf_and_nan_in_a_grid_are_named(tmp_path, grid, bad):
    text = tiny_toml("x", '["cross_entropy", "focal"]', extra=f"[tune.grid]\n{grid}\n")
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, text))
    assert f"{bad} is not a finite number" in str(info.value), info.value.errors
    assert "repeated" not in str(info.value)


# ---- optional extras ---------------------------------------------------------------------

def test_bpe_without_tokenizers_is_one_line_in_a_dry_run(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['tokenizers'] = None\n")
    (tmp_path / "c.txt").write_text("the quick brown fox jumps over the lazy dog. " * 100)
    suite = write(tmp_path, tiny_toml("x", '["cross_entropy"]', data={
        "corpus": "text", "path": str(tmp_path / "c.txt"), "tokenizer": "bpe",
        "markov_vocab": 16}))
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "lossbench", "run", str(suite), "--dry-run",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=120, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "[data] tokenizer" in lines[0] and "pip install 'lossbench[bpe]'" in lines[0]


# ---- --seeds -----------------------------------------------------------------------------

def test_one_seed_has_an_unambiguous_spelling(tmp_path, capsys):
    suite = write(tmp_path, tiny_toml("x", '["cross_entropy"]', seeds=(0, 1)))
    for spelling, seeds in (("7,", [7]), ("[7]", [7]), ("[0, 3]", [0, 3]), ("2", [0, 1])):
        try:
            main(["run", str(suite), "--out", str(tmp_path / "o"), "--dry-run", "--json",
                  "--seeds", spelling])
        except SystemExit as exc:
            assert exc.code == 0, capsys.readouterr().err
        plan = json.loads(capsys.readouterr().out)
        assert [r["seed"] for r in plan["runs"]] == seeds, spelling
    lines = bad_run(capsys, tmp_path, suite, "--seeds", "0")
    assert len(lines) == 1 and "--seeds 0," in lines[0] and "count" in lines[0], lines


# ---- --set attribution -------------------------------------------------------------------

@pytest.mark.parametrize("override,fragment", [
    ("train.lr=-1", "[train] lr=-1"),
    ("train.lrr=1", "[train] unknown key 'lrr'"),
    ('losses=["nope"]', "losses[0]: unknown loss 'nope'"),
    ("data.markov_tokens=150", "[data] markov_tokens: the validation split has 15 tokens"),
    ("seeds=-1", "seeds: expected"),
])
def test_set_problems_are_attributed_to_set(tmp_path, capsys, override, fragment):
    suite = write(tmp_path, tiny_toml("x", '["cross_entropy"]'))
    lines = bad_run(capsys, tmp_path, suite, "--set", override)
    assert len(lines) == 1 and lines[0].startswith(f"lossbench: error: --set {override}: ") \
        and fragment in lines[0], lines


def test_a_file_problem_stays_the_file_s_beside_a_set(tmp_path, capsys):
    suite = write(tmp_path, tiny_toml("x", '["cross_entropy"]', train={"lr": -1.0}))
    lines = bad_run(capsys, tmp_path, suite, "--set", "train.steps=0")
    assert sorted(line.split(": ")[2] for line in lines) == ["--set train.steps=0", str(suite)]


# ---- relative paths ----------------------------------------------------------------------

def test_a_missing_relative_path_names_the_absolute_path_tried(tmp_path, capsys, monkeypatch):
    """Relative paths are read from the working directory (the path as written is part of
    the run id); the line names the path tried, and the suite's folder when it is there."""
    folder = tmp_path / "suites"
    folder.mkdir()
    (folder / "corpus.txt").write_text("abc " * 500)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    suite = write(folder, tiny_toml("x", '["cross_entropy"]', data={
        "corpus": "text", "path": "corpus.txt"}))
    lines = bad_run(capsys, tmp_path, suite)
    assert len(lines) == 1, lines
    assert f"tried {elsewhere / 'corpus.txt'}" in lines[0]
    assert f"{folder / 'corpus.txt'} exists" in lines[0]
    monkeypatch.chdir(folder)  # from the suite's folder it loads, with the path as written
    assert load_suite(suite).runs[0].data.path == "corpus.txt"


def test_missing_weights_and_tokenizer_name_the_path_too(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite = write(tmp_path, tiny_toml("x", '["cross_entropy"]', model={"init_from": "w.pt"}))
    lines = bad_run(capsys, tmp_path, suite)
    assert len(lines) == 1 and f"[model] init_from: no such file or folder: w.pt (relative " \
        f"to the working directory: tried {tmp_path / 'w.pt'})" in lines[0], lines


# ---- a loss that returns a mean --------------------------------------------------------------

MEAN_PLUGIN = """
import torch.nn.functional as F
from lossbench.losses import register_loss

@register_loss("{name}", description="mean CE", reference="test")
def {name}(logits, targets, *, ignore_index=-100):
    return F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=ignore_index)
"""


def test_a_mean_reduced_plugin_fails_its_runs_at_the_first_update(tmp_path, capsys):
    """The run stops at its first update with one line, not a silent CE run. (Not at load:
    the loss's code runs in the runs' processes only, see lossbench.losses.contract.)"""
    plugin = write(tmp_path, MEAN_PLUGIN.format(name="mean_ce_cli"), "mean.py")
    suite = write(tmp_path, tiny_toml("x", '["mean_ce_cli"]', seeds=(0,))
                  .replace("losses =", 'baseline = "mean_ce_cli"\nlosses ='))
    try:
        code, lines, err = cli(capsys, "run", suite, "--out", tmp_path / "out", "--no-report",
                               "--workers", "1", "--plugin", plugin)
    finally:
        spec = registry._REGISTRY.get("mean_ce_cli")
        unregister_loss("mean_ce_cli")
        sys.modules.pop(spec.origin, None)
    assert code == 1 and "Traceback" not in err, err
    failed = [line for line in lines if "failed (1× in a row)" in line]
    assert len(failed) == 1 and "ValueError: loss 'mean_ce_cli' returned shape () for targets " \
        "of shape (4, 16) (B, T), not one value per token: it looks mean-reduced" in failed[0]
    (result,) = (tmp_path / "out" / "runs").glob("*/result.json")
    assert json.loads(result.read_text())["status"] == "failed"
    assert not any(p.name.startswith("checkpoint") for p in result.parent.iterdir())


def test_a_mean_reduced_loss_stops_at_its_first_step(tmp_path):
    """From Python (no suite to probe it): the first update refuses it."""
    load_plugin(str(write(tmp_path, MEAN_PLUGIN.format(name="mean_ce_py"), "mean_py.py")))
    try:
        with pytest.raises(ValueError, match=r"'mean_ce_py' returned shape \(\) .* mean-red"):
            train_run(RunConfig(**{**TINY.__dict__, "loss": "mean_ce_py"}))
        assert torch.get_rng_state() is not None
    finally:
        spec = registry._REGISTRY.get("mean_ce_py")
        unregister_loss("mean_ce_py")
        sys.modules.pop(spec.origin, None)


# ---- hf datasets whose text is not text -------------------------------------------------------

@pytest.mark.parametrize("value,kind", [(5, "int"), (["a", "b"], "list"), ({"t": "x"}, "dict")])
def test_an_hf_record_whose_text_is_not_a_string_is_named(tmp_path, monkeypatch, value, kind):
    pytest.importorskip("datasets")
    from tests.test_own_data import train_tokenizer

    monkeypatch.setenv("LOSSBENCH_CACHE", str(tmp_path / "cache"))
    docs = [{"text": "the quick brown fox jumps over the lazy dog. " * 3}] * 30
    docs[7] = {"text": value}
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "part.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    train_tokenizer(tmp_path / "tok.json")
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, tiny_toml("x", '["cross_entropy"]', data={
            "corpus": "hf", "path": str(tmp_path / "d"), "tokenizer": "hf",
            "tokenizer_path": str(tmp_path / "tok.json"), "markov_vocab": 16})))
    assert len(info.value.errors) == 1 and f"record 7: text_field 'text' holds {kind}" in \
        info.value.errors[0], info.value.errors
