"""Losses that declare needs_hidden (SimCTG) get the model's last hidden states from the same
forward pass, for every architecture that exposes them; a factory that does not is refused
before any run; and nothing changes for the other losses (same weights, batches, dropout,
evaluation tokens: the GPT's logits are the same computation with or without hidden states)."""

import dataclasses
import math

import pytest
import torch
from helpers import TINY, Recorder, suite_file, tiny

from lossbench.core.config import FinetuneConfig
from lossbench.models import build
from lossbench.suite.load import SuiteError, load_suite
from lossbench.train.loop import train_run

LLAMA = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
WITH_HIDDEN = "python:tests.fixtures.hidden_archs:with_hidden"
LOGITS_ONLY = "python:tests.fixtures.hidden_archs:logits_only"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(__import__("pathlib").Path(__file__).parent.parent)  # factories import


def _model(name):
    if name == "hf":
        pytest.importorskip("transformers")
        return dataclasses.replace(TINY.model, arch="hf", hf_config=LLAMA)
    if name == "python":
        return dataclasses.replace(TINY.model, arch=WITH_HIDDEN)
    return TINY.model


@pytest.mark.parametrize("name", ["gpt", "hf", "python"])
def test_forward_with_hidden_gives_the_same_logits(name):
    m = _model(name)
    model = build(m, 8, seed=0).eval()
    idx = torch.randint(0, 8, (2, m.block_size), generator=torch.Generator().manual_seed(0))
    logits, hidden = model.forward_with_hidden(idx)
    assert torch.equal(logits, model(idx))
    assert hidden.shape[:2] == (2, m.block_size) and hidden.dim() == 3


@pytest.mark.parametrize("name", ["gpt", "python"])
def test_simctg_trains_identically_initialised(name):
    """simctg sees the same initial weights, batches, dropout RNG and evaluation tokens as
    cross-entropy; its updates differ (the hidden states reach the loss)."""
    model = _model(name)
    ce, sim = Recorder(), Recorder()
    a = train_run(tiny(loss="cross_entropy", model=model), observers=[ce])
    b = train_run(tiny(loss="simctg", model=model), observers=[sim])
    assert b.status == "done"
    assert all(torch.equal(ce.init[k], sim.init[k]) for k in ce.init)
    assert torch.equal(ce.eval_x, sim.eval_x)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(ce.batches, sim.batches))
    assert all(torch.equal(x, y) for x, y in zip(ce.rng, sim.rng))
    assert a.steps["train_loss"][0] < b.steps["train_loss"][0]  # CE + a positive contrast
    # the gradient probe sees the hidden states too: noise and sharpness are measured
    for key in ("grad_snr", "sharpness", "grad_cos_ce"):
        assert math.isfinite(b.evals[-1][key]), key
    assert b.evals[-1]["grad_cos_ce"] < 1 - 1e-6 < a.evals[-1]["grad_cos_ce"]


def test_a_factory_without_hidden_states_is_refused_in_one_line(tmp_path):
    path = suite_file(tmp_path, {"corpus": "markov", "markov_tokens": 5000},
                      {"arch": LOGITS_ONLY}, losses='["cross_entropy", "simctg"]')
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    (line,) = info.value.errors
    assert "[model] arch: python:tests.fixtures.hidden_archs:logits_only does not expose its " \
           "last hidden states" in line and "(needed by simctg)" in line
    fine = suite_file(tmp_path, {"corpus": "markov", "markov_tokens": 5000},
                      {"arch": WITH_HIDDEN}, losses='["cross_entropy", "simctg"]', name="ok")
    assert len(load_suite(fine).runs) == 2
    plain = suite_file(tmp_path, {"corpus": "markov", "markov_tokens": 5000},
                       {"arch": LOGITS_ONLY}, name="plain")  # no such loss: no such demand
    assert len(load_suite(plain).runs) == 2


def test_simctg_cannot_be_a_fine_tuning_loss(tmp_path):
    path = suite_file(tmp_path, {"corpus": "markov", "markov_tokens": 5000},
                      losses='[{ name = "cross_entropy", finetune = { steps = 2, '
                             'loss = "simctg" } }]')
    with pytest.raises(SuiteError, match=r"\[finetune\] loss: simctg needs the model's "
                                         r"hidden states"):
        load_suite(path)
    assert FinetuneConfig().loss != "simctg"




def test_check_draws_hidden_states_for_simctg_and_refuses_like(check, tmp_path):
    """`lossbench check simctg` runs its properties on drawn hidden states (the loss raises
    without them); `--like simctg` cannot pass hidden states to a function: one line, exit 2."""
    code, out, err = check("simctg", "--property", "matches_reference", "--property",
                           "row_independent", "--max-examples", "10")
    assert code == 0, out + err
    mine = tmp_path / "mine.py"
    mine.write_text("import torch.nn.functional as F\n\n"
                    "def my_simctg(logits, targets, margin=0.5):\n"
                    "    return F.cross_entropy(logits.transpose(1, 2), targets, "
                    "reduction='none')\n")
    code, out, err = check(f"{mine}:my_simctg", "--like", "simctg")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--like simctg: simctg needs the model's hidden states" in err
