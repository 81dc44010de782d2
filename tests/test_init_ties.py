"""init_from and tied weights: a checkpoint whose LM head and token embedding are different
matrices cannot initialise a model that ties them (loading kept whichever came last: the LM
head's matrix silently became the embedding): refused with one line before any run, and by
the build itself. A tied checkpoint into an untied model is exact: both get the shared matrix.
"""

import dataclasses

import pytest
import torch
from helpers import TINY, suite_file

from lossbench import models
from lossbench.models.gpt import GPTConfig, build_model
from lossbench.suite.load import SuiteError, load_suite

VOCAB = 8
DATA = {"markov_tokens": 5000, "markov_vocab": VOCAB}
GPT_KEYS = ("transformer.wte.weight", "lm_head.weight")


def gpt(tied: bool, seed: int = 0):
    return build_model(GPTConfig.of(dataclasses.replace(TINY.model, tie_weights=tied), VOCAB),
                       seed)


def save(model_or_state, path):
    state = model_or_state if isinstance(model_or_state, dict) else model_or_state.state_dict()
    torch.save({k: v.detach().clone() for k, v in state.items()}, path)
    return str(path)


def model_table(path, tied: bool) -> dict:
    return {"init_from": path, "tie_weights": tied}


def test_an_untied_checkpoint_into_a_tied_model_is_refused_before_any_run(tmp_path):
    path = save(gpt(tied=False), tmp_path / "untied.pt")
    with pytest.raises(SuiteError) as info:
        load_suite(suite_file(tmp_path, DATA, model_table(path, tied=True)))
    assert len(info.value.errors) == 1, info.value.errors
    line = info.value.errors[0]
    assert "[model] init_from" in line and "tie_weights = false" in line and "\n" not in line
    with pytest.raises(ValueError, match="ties transformer.wte.weight and lm_head.weight"):
        models.build(dataclasses.replace(TINY.model, init_from=path), VOCAB, 0)  # a run too


def test_a_tied_checkpoint_into_an_untied_model_is_exact(tmp_path):
    source = gpt(tied=True, seed=3)
    path = save(source, tmp_path / "tied.pt")
    suite = load_suite(suite_file(tmp_path, DATA, model_table(path, tied=False)))
    built = models.build(suite.runs[0].model, VOCAB, seed=0)
    shared = source.lm_head.weight
    assert torch.equal(built.transformer.wte.weight, shared)
    assert torch.equal(built.lm_head.weight, shared)
    assert built.transformer.wte.weight is not built.lm_head.weight  # untied, as configured
    x = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(built(x), source(x))  # the checkpoint's function, exactly


def test_a_tied_checkpoint_saved_once_into_an_untied_model_says_why(tmp_path):
    """Hugging Face stores a tied matrix once (no lm_head.weight): into an untied model the
    missing head is named, with the setting that fits."""
    state = {k: v for k, v in gpt(tied=True).state_dict().items() if k != "lm_head.weight"}
    path = save(state, tmp_path / "once.pt")
    with pytest.raises(SuiteError) as info:
        load_suite(suite_file(tmp_path, DATA, model_table(path, tied=False)))
    assert len(info.value.errors) == 1 and "no weights for lm_head.weight" in \
        info.value.errors[0] and "tie_weights = true" in info.value.errors[0]
    tied = load_suite(suite_file(tmp_path, DATA, model_table(path, tied=True)))
    built = models.build(tied.runs[0].model, VOCAB, seed=0)
    assert torch.equal(built.lm_head.weight, state["transformer.wte.weight"])


def test_an_untied_checkpoint_whose_matrices_are_equal_loads_into_a_tied_model(tmp_path):
    state = gpt(tied=True).state_dict()
    state = {k: v.clone() for k, v in state.items()}  # two copies of one matrix: exact
    path = save(state, tmp_path / "copies.pt")
    suite = load_suite(suite_file(tmp_path, DATA, model_table(path, tied=True)))
    built = models.build(suite.runs[0].model, VOCAB, seed=0)
    assert torch.equal(built.lm_head.weight, state["lm_head.weight"])


def test_an_hf_model_that_ties_its_embeddings_refuses_an_untied_checkpoint(tmp_path):
    transformers = pytest.importorskip("transformers")
    from lossbench.models.hf import hf_config

    llama = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2}
    m = dataclasses.replace(TINY.model, arch="hf", hf_config={**llama,
                                                              "tie_word_embeddings": False})
    untied = transformers.AutoModelForCausalLM.from_config(hf_config(m, VOCAB))
    path = save(untied, tmp_path / "hf_untied.pt")
    model = {"arch": "hf", "hf_config": {**llama, "tie_word_embeddings": True}, "init_from": path}
    with pytest.raises(SuiteError) as info:
        load_suite(suite_file(tmp_path, DATA, model))
    assert len(info.value.errors) == 1 and "ties" in info.value.errors[0] and \
        "lm_head.weight" in info.value.errors[0], info.value.errors
