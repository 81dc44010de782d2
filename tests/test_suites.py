"""Suite parsing and validation: every malformed case is one line naming file and key, exit 2."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lossbench.suite.load import SuiteError, load_suite

GOOD = """
name = "tiny"
seeds = [0, 1]
losses = ["cross_entropy", { name = "label_smoothing", smoothing = [0.05, 0.2] }]
[train]
steps = 5
warmup_steps = 1
"""


def write(tmp_path, text, name="suite.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_grid_and_seeds_expand(tmp_path):
    suite = load_suite(write(tmp_path, GOOD))
    assert [(r.loss, r.hparams, r.seed) for r in suite.runs] == [
        ("cross_entropy", {}, 0), ("cross_entropy", {}, 1),
        ("label_smoothing", {"smoothing": 0.05}, 0), ("label_smoothing", {"smoothing": 0.05}, 1),
        ("label_smoothing", {"smoothing": 0.2}, 0), ("label_smoothing", {"smoothing": 0.2}, 1)]
    assert all(r.train.steps == 5 for r in suite.runs)
    assert len({r.run_id() for r in suite.runs}) == 6


def test_set_overrides(tmp_path):
    suite = load_suite(write(tmp_path, GOOD), ["train.steps=7", "model.n_layer=1", 'data.corpus="markov"'])
    assert suite.runs[0].train.steps == 7 and suite.runs[0].model.n_layer == 1


def test_run_id_is_stable_and_config_sensitive(tmp_path):
    a = load_suite(write(tmp_path, GOOD)).runs[0]
    b = load_suite(write(tmp_path, GOOD)).runs[0]
    c = load_suite(write(tmp_path, GOOD), ["train.lr=0.002"]).runs[0]
    assert a.run_id() == b.run_id() != c.run_id()


def test_all_errors_reported_at_once(tmp_path):
    path = write(tmp_path, """
        name = "bad"
        losses = ["cross_entropyy", { name = "focal", gamma = 9.0 }]
        colour = "red"
        [train]
        stepz = 3
        lr = "fast"
        batch_size = 0
    """)
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    errors = info.value.errors
    assert len(errors) == 6, errors
    assert all(e.startswith(str(path)) for e in errors)


CASES = [
    ('name = "x"\nlosses = ["cross_entropy"]\n[trian]\nsteps = 1\n', "unknown key or section 'trian' (did you mean train?)"),
    ('losses = ["cross_entropy"]\n[train]\nsteps = "ten"\n', "[train] steps: expected int, got 'ten'"),
    ('losses = ["cross_entropy"]\n[train]\nsteps = -1\n', "[train] steps=-1 is out of range"),
    ('losses = ["cross_entropy"]\n[model]\nwidth = 3\n', "[model] unknown key 'width'"),
    ('losses = ["hingee"]\n', "losses[0]: unknown loss 'hingee' (did you mean hinge"),
    ('losses = [{ name = "focal", gamma = 9.0 }]\n', "losses[0] focal: gamma=9.0 is outside its range"),
    ('losses = ["cross_entropy"]\n[data]\ncorpus = "text"\npath = "no/such/file.txt"\n',
     "[data] path: no such file or folder: no/such/file.txt"),
    ('losses = ["cross_entropy"\n', "TOML syntax error"),
    ('losses = ["cross_entropy"]\n[data]\ncorpus = "wikipedia"\n', "[data]"),
    ('losses = []\n', "losses: expected a non-empty list"),
    ('losses = ["cross_entropy"]\ntarget_val_ce = -1.0\n', "target_val_ce: expected a positive"),
    ('losses = ["cross_entropy", { name = "focal", gamma = 2.0 }]\n[tune.grid]\ngamma = [1.0, 3.0]\n',
     "focal fixes gamma, which [tune] also tunes"),
]


# each case is a `lossbench run` subprocess (~3 s, most of it importing torch): the fast lane
# (-m "not slow") runs the first through the real command, the full suite all of them
@pytest.mark.parametrize("text,fragment", [
    pytest.param(*c, id=c[1][:30], marks=() if i == 0 else pytest.mark.slow)
    for i, c in enumerate(CASES)])
def test_malformed_suite_exits_2_with_one_line(tmp_path, text, fragment):
    path = write(tmp_path, text)
    proc = subprocess.run([sys.executable, "-m", "lossbench", "run", str(path), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"lossbench: error: {path}") and fragment in lines[0], lines[0]
    assert not (tmp_path / "out").exists()  # validation happens before any run starts


def test_toml_syntax_error_names_the_line(tmp_path):
    with pytest.raises(SuiteError, match=r"line 2"):
        load_suite(write(tmp_path, 'name = "x"\nlosses = ["a",, "b"]\nseeds = [0]\n'))


@pytest.mark.slow
def test_missing_suite_file():
    proc = subprocess.run([sys.executable, "-m", "lossbench", "run", "no_such_suite.toml"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "lossbench: error: no_such_suite.toml: no such suite file"


# anchored on this file: a path relative to the working directory would find no suite
# (and silently test nothing) when pytest runs from elsewhere
SHIPPED = sorted((Path(__file__).parent.parent / "suites").glob("*.toml"))


def test_shipped_suites_are_found():
    assert len(SHIPPED) >= 5, SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_suites_validate(path, tmp_path):
    text = path.read_text()
    overrides = []
    if 'corpus = "text"' in text:  # needs a text file; any text long enough for the windows
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("The quick brown fox jumps over the lazy dog.\n" * 100)
        overrides = [f'data.path="{corpus}"']
    suite = load_suite(path, overrides)
    assert suite.runs and suite.baseline in {r.display_name for r in suite.runs}


def test_entry_labels_and_per_entry_finetune(tmp_path):
    suite = load_suite(write(tmp_path, """
        seeds = [0]
        losses = [
            "cross_entropy",
            { name = "cross_entropy", label = "ce+seq_ul", finetune = { steps = 10, loss = "sequence_unlikelihood" } },
        ]
    """))
    plain, tuned = suite.runs
    assert plain.finetune.steps == 0 and tuned.finetune.steps == 10
    assert tuned.display_name == "ce+seq_ul" and plain.run_id() != tuned.run_id()


def test_finetune_only_loss_is_rejected_as_a_training_loss(tmp_path):
    with pytest.raises(SuiteError, match="fine-tuning phase"):
        load_suite(write(tmp_path, 'losses = ["cross_entropy", "sequence_unlikelihood"]\n'))
