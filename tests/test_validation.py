"""Validation before any run starts: every input that used to fail (or quietly misbehave)
at run time is one line naming the file and the key, exit 2, and nothing is written."""

import dataclasses
import math

import pytest
from helpers import tiny_toml

from lossbench.cli import main
from lossbench.core.config import TrainConfig
from lossbench.data.corpora import load_corpus
from lossbench.suite.load import SuiteError, load_suite

LONG_TEXT = "It was the best of times, it was the worst of times.\n" * 20  # 1,060 chars
HUGE_MODEL = {"n_layer": 64, "n_head": 1, "n_embd": 65536, "block_size": 16}


def _text_suite(**data) -> str:
    return tiny_toml("text", '["cross_entropy"]', data={"corpus": "text", **data})


def _file(tmp_path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


# (id, suite text or a function of tmp_path giving it, the fragment its one error line holds)
CASES = [
    ("lr-nan", tiny_toml("x", '["cross_entropy"]', train={"lr": math.nan}),
     "[train] lr=nan is not a finite number"),
    ("lr-inf", tiny_toml("x", '["cross_entropy"]', train={"lr": math.inf}),
     "[train] lr=inf is not a finite number"),
    ("beta1-nan", tiny_toml("x", '["cross_entropy"]', train={"beta1": math.nan}),
     "[train] beta1=nan"),
    ("min-lr-nan", tiny_toml("x", '["cross_entropy"]', train={"min_lr": math.nan}),
     "[train] min_lr=nan"),
    ("grad-clip-nan", tiny_toml("x", '["cross_entropy"]', train={"grad_clip": math.nan}),
     "[train] grad_clip=nan"),
    ("grad-clip-inf", tiny_toml("x", '["cross_entropy"]', train={"grad_clip": math.inf}),
     "[train] grad_clip=inf"),
    ("dropout-nan", tiny_toml("x", '["cross_entropy"]', model={"dropout": math.nan}),
     "[model] dropout=nan"),
    ("loss-hparam-nan", tiny_toml("x", '[{ name = "focal", gamma = nan }]'),
     "losses[0] focal: gamma=nan is outside its range"),
    ("finetune-hparam-nan", tiny_toml("x", '["cross_entropy"]', extra=(
        '[finetune]\nloss = "sequence_unlikelihood"\nhparams = { ngram = nan }\n')),
     "[finetune] hparams: sequence_unlikelihood: ngram"),
    ("finetune-loss-unknown", tiny_toml("x", '["cross_entropy"]',
                                        extra='[finetune]\nloss = "nope"\n'),
     "[finetune] loss: unknown loss 'nope'"),
    ("target-inf", "target_val_ce = inf\n" + tiny_toml("x", '["cross_entropy"]'),
     "target_val_ce: expected a positive number"),
    ("tune-grid-nan", tiny_toml("x", '["cross_entropy"]',
                                extra="[tune]\nsteps = 10\n[tune.grid]\nlr = [nan, 1e-3]\n"),
     "[tune.grid] lr=nan"),
    ("tune-warmup-past-budget", tiny_toml("x", '["cross_entropy"]',
                                          extra="[tune]\nsteps = 1\n[tune.grid]\nlr = [1e-3]\n"),
     "[tune] warmup_steps=2 is longer than steps=1"),
    ("text-missing", lambda tmp: _text_suite(path=f"{tmp}/nope.txt"),
     "[data] path: no such file or folder"),
    ("text-empty", lambda tmp: _text_suite(path=_file(tmp, "empty.txt", b"")),
     "corpus is empty"),
    ("text-empty-folder", lambda tmp: _text_suite(path=str(tmp)),  # only the suite, hidden
     "[data] path: "),
    ("text-binary", lambda tmp: _text_suite(path=_file(tmp, "a.bin", b"\x00\x01" * 500)),
     "a.bin: a binary file"),
    ("text-not-utf8", lambda tmp: _text_suite(path=_file(tmp, "l1.txt", b"caf\xe9 " * 100)),
     "not valid UTF-8"),
    ("text-val-too-short", lambda tmp: _text_suite(path=_file(tmp, "s.txt", b"abc" * 50)),
     "[data] path: the validation split has 15 tokens, fewer than block_size + 1 = 17"),
    ("text-train-too-short", lambda tmp: _text_suite(path=_file(tmp, "s.txt", b"abc" * 50),
                                                     val_fraction=0.9),
     "[data] path: the training split has 14 tokens"),
    ("bpe-too-short", lambda tmp: _text_suite(path=_file(tmp, "s.txt", b"abcd" * 30),
                                              tokenizer="bpe", bpe_vocab=300),
     "the validation split has at most 12 tokens"),
    ("stdlib-nothing-fits", tiny_toml("x", '["cross_entropy"]',
                                      data={"corpus": "stdlib", "stdlib_max_bytes": 1}),
     "[data] stdlib_max_bytes: no stdlib .py file fits"),
    ("markov-too-short", tiny_toml("x", '["cross_entropy"]', data={"markov_tokens": 100}),
     "[data] markov_tokens: the validation split has 10 tokens"),
    ("markov-tokens-huge", tiny_toml("x", '["cross_entropy"]', data={"markov_tokens": 10**12}),
     "[data] markov_tokens=1000000000000 is out of range"),
    ("markov-table-huge", tiny_toml("x", '["cross_entropy"]',
                                    data={"markov_vocab": 16, "markov_order": 8}),
     "[data] markov_order: the transition table"),
    ("ngram-table-huge", lambda tmp: tiny_toml(
        "x", '["cross_entropy", "kl"]', data={"corpus": "text", "tokenizer": "byte",
                                              "ngram_order": 5,
                                              "path": _file(tmp, "t.txt", LONG_TEXT.encode())}),
     "[data] ngram_order: an order-5 n-gram teacher over 256 tokens"),
    ("model-too-big", tiny_toml("x", '["cross_entropy"]', model=HUGE_MODEL),
     "[model]/[train]: needs ~"),
    ("batch-too-big", tiny_toml("x", '["cross_entropy"]',
                                train={"batch_size": 10**9}),
     "[model]/[train]: needs ~"),
    ("min-lr-above-lr", tiny_toml("x", '["cross_entropy"]', train={"lr": 1e-3, "min_lr": 1e-2}),
     "[train] min_lr=0.01 is above lr=0.001"),
    ("warmup-past-steps", tiny_toml("x", '["cross_entropy"]', train={"warmup_steps": 21}),
     "[train] warmup_steps=21 is longer than steps=20"),
    ("decay-negative", tiny_toml("x", '["cross_entropy"]', train={"decay_steps": -1}),
     "[train] decay_steps=-1 is out of range [0, inf]"),
    ("duplicate-entry", tiny_toml("x", '["cross_entropy", "focal", "cross_entropy"]'),
     "losses[2]: cross_entropy with default hyperparameters is already listed as losses[0]"),
    ("duplicate-default-written-out", tiny_toml(
        "x", '["cross_entropy", "label_smoothing", { name = "label_smoothing", smoothing = 0.1 }]'),
     "losses[2]: label_smoothing with {'smoothing': 0.1} is already listed as losses[1]"),
    ("duplicate-grid-point", tiny_toml(
        "x", '["cross_entropy", { name = "focal", gamma = [1.0, 1.0] }]'),
     "losses[1]: focal[gamma=1.0] with {'gamma': 1.0} is twice in its grid"),
    ("name-escapes", tiny_toml("../../x", '["cross_entropy"]'),
     "name: '../../x' is not a safe name"),
    ("name-absolute", tiny_toml("/tmp/x", '["cross_entropy"]'), "name: '/tmp/x' is not a safe"),
    ("grad-stats-level", tiny_toml("x", '["cross_entropy"]', eval={"grad_stats": "most"}),
     "[eval] grad_stats: unknown value 'most'"),
    ("content-hash-set", tiny_toml("x", '["cross_entropy"]', data={"content_hash": "ab"}),
     "[data] content_hash: computed by lossbench, not set in a suite"),
]


@pytest.mark.parametrize("text,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_suite_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, text, fragment):
    work = tmp_path / "a" / "b"  # so that results/../../x would still land inside tmp_path
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    suite = tmp_path / ".suite.toml"  # hidden: a folder corpus of tmp_path skips it
    suite.write_text(text(tmp_path) if callable(text) else text)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as info:
        main(["run", str(suite)])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"lossbench: error: {suite}: ") and fragment in lines[0], lines[0]
    assert sorted(tmp_path.rglob("*")) == before  # no results folder, no run started


def test_every_problem_at_once(tmp_path):
    path = tmp_path / "suite.toml"
    path.write_text('target_val_ce = nan\n' + tiny_toml(
        "../x", '["cross_entropy", "cross_entropy"]', data={"markov_tokens": 10**12},
        train={"lr": math.nan, "warmup_steps": 30, "decay_steps": -5}, model={"dropout": 1.5}))
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    errors = info.value.errors
    for fragment in ("target_val_ce", "name:", "[train] lr=nan", "[train] decay_steps=-5",
                     "losses[1]: cross_entropy", "[data] markov_tokens=", "[model] dropout="):
        assert sum(fragment in e for e in errors) == 1, (fragment, errors)
    assert all(e.startswith(f"{path}: ") for e in errors) and len(errors) == 7, errors
    # lr is invalid, so the schedule is not judged on top of it (no follow-on noise)
    assert not any("warmup_steps" in e for e in errors), errors


def test_a_valid_tiny_suite_still_validates(tmp_path):
    path = tmp_path / "ok.toml"
    losses = '["cross_entropy", "kl", { name = "focal", gamma = [1.0, 2.0] }]'
    path.write_text(tiny_toml("ok", losses))
    assert len(load_suite(path).runs) == 4 * 2  # entries x seeds


def _text_run_ids(tmp_path, corpus_text: str) -> list[str]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text)
    suite = tmp_path / "suite.toml"
    suite.write_text(_text_suite(path=str(corpus)))
    return [r.run_id() for r in load_suite(suite).runs]


def test_run_ids_follow_the_corpus_contents(tmp_path):
    first = _text_run_ids(tmp_path, LONG_TEXT)
    assert _text_run_ids(tmp_path, LONG_TEXT) == first  # same bytes, same results
    changed = _text_run_ids(tmp_path, LONG_TEXT.replace("best", "BEST"))
    assert len(changed) == len(first) and not set(changed) & set(first)


def test_resolved_corpus_refuses_changed_contents(tmp_path):
    _text_run_ids(tmp_path, LONG_TEXT)
    run = load_suite(tmp_path / "suite.toml").runs[0]
    assert run.data.content_hash == load_corpus(run.data).content_hash  # the same digest
    assert run.to_dict()["data"]["content_hash"] == run.data.content_hash  # in config.json
    (tmp_path / "corpus.txt").write_text(LONG_TEXT.upper())
    with pytest.raises(ValueError, match="corpus changed since the suite was resolved"):
        load_corpus(run.data)


def test_markov_run_ids_do_not_hash_an_absent_content_hash():
    from lossbench.core.config import RunConfig

    run = RunConfig()
    assert run.data.content_hash is None and "content_hash" in run.to_dict()["data"]
    # the id of a markov run is what it was before content_hash existed
    assert run.run_id() == "cross_entropy-" + _legacy_hash(run)


def _legacy_hash(run) -> str:
    import hashlib
    import json

    from lossbench.core.config import _ADDED_AT_DEFAULT

    d = run.to_dict()
    for section, key, _ in _ADDED_AT_DEFAULT:  # fields added later, absent from old ids
        (d[section] if section else d).pop(key, None)  # "": a top-level field
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def test_memory_estimate_formula():
    """The docstring's formula on a case small enough to count by hand."""
    from lossbench.core.memory import memory_need, memory_problem

    need = memory_need(n_layer=1, n_head=1, n_embd=4, block_size=4, vocab=5, batch_size=2)
    n_params = 1 * (12 * 16 + 13 * 4) + 2 * 4 + 4 * 4 + 5 * 4  # 288
    assert need == {"params": 4 * n_params, "optimizer": 12 * n_params,
                    "activations": 4 * 2 * 4 * 1 * (17 * 4 + 2 * 1 * 4),
                    "logits": 4 * 3 * 64 * 4 * 5, "corpus": 0}
    assert memory_problem(need, have=10**9) is None
    text = memory_problem({"params": 3 * 2**30, "activations": 2**30}, have=2**30)
    assert text == "needs ~4 GiB (params 3 GiB, activations 1 GiB) but the machine has 1 GiB"


def test_schedule_checks_are_for_suites_only():
    """From Python a 1-step smoke run with the default warmup stays possible."""
    train = TrainConfig(steps=1)
    assert [k for k, _ in train.schedule_problems()] == ["warmup_steps"]
    with pytest.raises(ValueError, match="lr=nan"):
        dataclasses.replace(train, lr=math.nan)
