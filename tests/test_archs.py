"""Bring your own model: arch = "gpt" | "hf" | "python:...", and init_from. For each arch the
guarantees of tests/test_training.py: two losses start bit-identical and see the same
batches, a rerun is identical, a killed run resumes to the same result."""

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY, Recorder, kill_at, records_text, same_weights, suite_file, tiny

from lossbench import models
from lossbench.core.config import ModelConfig
from lossbench.store.tables import load
from lossbench.suite.load import SuiteError, load_suite
from lossbench.sweep.sweep import run_suite
from lossbench.train.loop import train_run

LLAMA = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
FACTORY = "python:tests.fixtures.archs:tiny_mlp"


def arch(name: str) -> ModelConfig:
    if name == "hf":
        pytest.importorskip("transformers")
        return dataclasses.replace(TINY.model, arch="hf", hf_config=LLAMA)
    if name == "python":
        return dataclasses.replace(TINY.model, arch=FACTORY, model_kwargs={"width": 8})
    return TINY.model


ARCHS = ["gpt", "hf", "python"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSBENCH_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", ARCHS)
def test_two_losses_start_bit_identical_and_see_the_same_batches(name):
    model = arch(name)
    ce, mse = Recorder(), Recorder()
    a = train_run(tiny(loss="cross_entropy", model=model), observers=[ce])
    b = train_run(tiny(loss="mse", model=model), observers=[mse])
    assert ce.init.keys() == mse.init.keys() and all(torch.equal(ce.init[k], mse.init[k])
                                                      for k in ce.init)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(ce.batches, mse.batches))
    assert all(torch.equal(x, y) for x, y in zip(ce.rng, mse.rng))
    assert a.steps["train_loss"] != b.steps["train_loss"]
    other = Recorder()
    train_run(tiny(loss="cross_entropy", model=model, seed=1), observers=[other])
    assert any(not torch.equal(ce.init[k], other.init[k]) for k in ce.init)  # the seed decides


@pytest.mark.parametrize("name", ARCHS)
def test_rerun_is_identical_and_resume_equals_uninterrupted(name, tmp_path):
    config = tiny(model=arch(name), loss="kl")
    a, b = train_run(config), train_run(config)
    assert records_text(a) == records_text(b) and same_weights(a.model, b.model)
    kill_at(config, tmp_path, 10)
    resumed = train_run(config, checkpoint_dir=tmp_path)
    assert records_text(resumed) == records_text(a) and same_weights(resumed.model, a.model)


@pytest.mark.parametrize("name", ARCHS)
def test_every_arch_gets_its_gradient_behaviour_measured(name):
    """Noise scale, SNR, Adam sharpness and update ratios for any model; per-example
    gradients by vmap for every arch here, kl's fused autograd Function included (its vmap
    rule; the loop fallback is checked against vmap in tests/test_vmap_losses.py)."""
    for loss, traced in (("cross_entropy", 1.0), ("kl", 1.0)):
        result = train_run(tiny(model=arch(name), loss=loss))
        final = result.evals[-1]
        for key in ("grad_snr", "grad_noise_trace", "sharpness", "sharpness_eos",
                    "update_ratio", "grad_cos_ce"):
            assert math.isfinite(final[key]), (name, loss, key)
        assert final["grad_vmap"] == traced and final["grad_examples"] == 4
        assert result.notes == [] or all("not measured" not in n for n in result.notes)


def test_flops_per_token_formula_or_a_stated_estimate():
    gpt = models.build(arch("gpt"), 8, 0)
    hf = models.build(arch("hf"), 8, 0)
    py = models.build(arch("python"), 8, 0)
    # llama: 6 N + 12 L H Q T, N without the (untied) input embedding
    n = sum(p.numel() for p in hf.parameters()) - 8 * 32
    assert hf.flops_per_token() == 6 * n + 12 * 2 * 32 * 16 and models.flops_note(hf) == ""
    assert py.flops_per_token() == 6 * (sum(p.numel() for p in py.parameters()) - 8 * 8)
    assert "estimated" in models.flops_note(py) and models.flops_note(gpt) == ""
    result = train_run(tiny(model=arch("python")))
    assert "estimated as 6 x parameters" in result.summary()["notes"]


def test_suite_arch_problems_are_one_line_each(tmp_path):
    bad = [({"arch": "python:tests.fixtures.archs:no_such"}, "[model] arch: AttributeError"),
           ({"arch": "hf", "hf_config": {"model_type": "no-such-model"}}, "[model] hf_config:"),
           ({"arch": "llama"}, "[model] arch: unknown value 'llama'"),
           ({"init_from": str(tmp_path / "nothing")}, "[model] init_from: no such file or folder"),
           ({"arch": 5}, "[model] arch: expected str, got 5"),
           ({"arch": FACTORY, "dropout": 0.1}, "[model] dropout: applies to arch = \"gpt\""),
           ({"arch": "hf", "hf_config": "llama"}, "[model] hf_config: expected dict"),
           ({"arch": "hf", "hf_path": str(tmp_path / "nothing")},
            "[model] hf_path: no such file or folder"),
           ({"arch": "hf", "hf_path": "gpt2"}, "[model] hf_path: no such file or folder"),
           # what only building the model shows (done on the meta device: no memory, no RNG)
           ({"arch": "hf", "hf_config": {"model_type": "t5"}},
            "[model] hf_config: ValueError: Unrecognized configuration class"),
           ({"arch": FACTORY, "model_kwargs": {"nope": 1}},
            "[model] arch: TypeError: PairLM.__init__() got an unexpected keyword argument"),
           ({"arch": "python:tests.fixtures.archs:wrong_shape"},
            "[model] arch: ValueError: the model must map (B, T) ids to (B, T, V) logits"),
           ({"arch": "python:operator:add"}, "[model] arch: TypeError: python:operator:add "
                                             "returned int, not a torch.nn.Module")]
    state = torch.random.get_rng_state()
    for model, fragment in bad:
        with pytest.raises(SuiteError) as info:
            load_suite(suite_file(tmp_path, {"markov_tokens": 5000}, model))
        assert len(info.value.errors) == 1 and fragment in info.value.errors[0], info.value.errors
    assert torch.equal(torch.random.get_rng_state(), state)  # preflight drew no random number


def test_finetuning_suite_starts_every_loss_from_the_saved_checkpoint(tmp_path):
    """Pretrain with save_weights, then fine-tune two losses from its model.pt: both start
    from exactly the pretrained weights (step-0 val_ce equal to the pretrained run's
    final one, whatever the seed), and the weights' hash is in the run id."""
    pre = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, save_weights=True))
    pretrained = train_run(pre, checkpoint_dir=tmp_path / "pre")
    weights = tmp_path / "pre" / "model.pt"
    model = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "init_from": str(weights)}
    data = {"markov_tokens": 20000, "markov_vocab": 8}
    suite = load_suite(suite_file(tmp_path, data, model, name="finetune"))
    assert run_suite(suite, tmp_path / "out", workers=1).exit_code == 0
    summary, curves = load(tmp_path / "out")
    start = curves[(curves.metric == "val_ce") & (curves.step == 0)].value
    assert len(start) == 2 and (start == pretrained.evals[-1]["val_ce"]).all()
    torch.save({k: v * 1.01 for k, v in torch.load(weights, weights_only=True).items()}, weights)
    moved = load_suite(suite_file(tmp_path, data, model, name="finetune"))
    assert moved.runs[0].run_id() != suite.runs[0].run_id()


def test_hf_checkpoint_folder_loads_into_arch_hf(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from lossbench.models.hf import hf_config

    source = transformers.AutoModelForCausalLM.from_config(hf_config(arch("hf"), 8))
    source.save_pretrained(tmp_path / "hf")  # config.json + model.safetensors
    m = dataclasses.replace(TINY.model, arch="hf", hf_path=str(tmp_path / "hf"),
                            init_from=str(tmp_path / "hf"))
    built = models.build(m, 8, seed=5)
    assert all(torch.equal(p, source.state_dict()[k]) for k, p in built.net.state_dict().items())
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "llama"
    result = train_run(tiny(model=m))
    assert result.status == "done"


def test_init_from_loads_weights_only(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"model": {"x": Boom()}}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        models.build(dataclasses.replace(TINY.model, init_from=str(tmp_path / "evil.pt")), 8, 0)
    torch.save({"lm_head.weight": torch.zeros(3, 16)}, tmp_path / "small.pt")
    with pytest.raises(ValueError, match="no weights for"):
        models.build(dataclasses.replace(TINY.model, init_from=str(tmp_path / "small.pt")), 8, 0)


EXAMPLES = sorted((Path(__file__).parent.parent / "examples" / "own").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate(path, tmp_path, monkeypatch):
    """Each example of the README's "your own data and model" section loads, given files."""
    pytest.importorskip("transformers")
    pytest.importorskip("datasets")
    from test_own_data import TEXT, token_ids, train_tokenizer

    from lossbench.data.tokens import write_token_folder

    monkeypatch.chdir(Path(__file__).parent.parent)  # the factory imports from the root
    text = path.read_text()
    overrides = []
    if 'corpus = "tokens"' in text:
        ids = token_ids(vocab=65)
        write_token_folder(tmp_path / "tok", ids[:5000], ids[5000:], 65)
        overrides.append(f'data.path="{tmp_path / "tok"}"')
    if 'corpus = "hf"' in text:
        import datasets

        datasets.Dataset.from_dict({"text": TEXT.split(".")}).save_to_disk(str(tmp_path / "ds"))
        train_tokenizer(tmp_path / "tokenizer.json")
        overrides += [f'data.path="{tmp_path / "ds"}"',
                      f'data.tokenizer_path="{tmp_path / "tokenizer.json"}"', "model.block_size=16"]
    if "init_from" in text:
        shape = ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=64)
        torch.save(models.build(shape, 16, 0).state_dict(), tmp_path / "model.pt")
        overrides.append(f'model.init_from="{tmp_path / "model.pt"}"')
    suite = load_suite(path, overrides)
    assert suite.runs
    if "init_from" in text:  # the checkpoint fits the example's model
        models.build(suite.runs[0].model, 16, 0)


def test_device_mps_is_accepted_where_torch_has_it(tmp_path):
    path = suite_file(tmp_path, {"markov_tokens": 5000})
    if torch.backends.mps.is_available():
        assert load_suite(path, ['device="mps"']).runs[0].device == "mps"
    else:
        with pytest.raises(SuiteError) as info:
            load_suite(path, ['device="mps"'])
        assert info.value.errors == ["--set device=\"mps\": device: \"mps\": torch sees no "
                                     "Apple GPU (MPS) on this machine"]  # --set gave it
    with pytest.raises(SuiteError, match="expected \"cpu\", \"cuda\" or \"mps\", got 'tpu'"):
        load_suite(path, ['device="tpu"'])


@pytest.mark.parametrize("name", ["mse", "z_loss"])
def test_chunked_brier_and_z_loss_equal_the_registered_losses(name):
    """The closed-form, row-blocked versions in losses/_fused.py (two and one (B, T, V)
    tensors instead of four) give the registered losses' values and gradients."""
    from lossbench.losses import get_loss
    from lossbench.losses._fused import brier, z_loss_ce

    g = torch.Generator().manual_seed(0)
    z = (3 * torch.randn(3, 40, 9000, generator=g, dtype=torch.float64)).requires_grad_(True)
    y = torch.randint(0, 9000, (3, 40), generator=g)
    y[0, :3] = -100
    keep, safe = y != -100, y.clamp(min=0)
    hp = {"coefficient": 0.01} if name == "z_loss" else {}
    ours = brier(z, safe) if name == "mse" else z_loss_ce(z, safe, 0.01)
    ours = torch.where(keep, ours, torch.zeros_like(ours))
    ref = get_loss(name).fn(z, y, **hp)
    w = torch.randn(3, 40, generator=g, dtype=torch.float64)
    (g_ref,), (g_ours,) = (torch.autograd.grad((v * w).sum(), z) for v in (ref, ours))
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_a_factory_in_the_working_directory_imports_from_the_lossbench_script(tmp_path):
    """The `lossbench` script does not put the working directory on sys.path (python -P
    imitates it); a factory module in the project the user runs from must still import."""
    (tmp_path / "my_models.py").write_text((Path(__file__).parent / "fixtures" / "archs.py")
                                           .read_text())
    suite = suite_file(tmp_path, {"corpus": "markov", "markov_tokens": 20000, "markov_vocab": 8},
                       {"arch": "python:my_models:tiny_mlp"})
    proc = subprocess.run([sys.executable, "-P", "-m", "lossbench", "run", str(suite),
                           "--out", str(tmp_path / "out"), "--workers", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert {r["status"] for r in load(tmp_path / "out")[0].to_dict("records")} == {"done"}


def test_default_run_ids_are_unchanged_by_the_model_definition_hash():
    """The id of a default run, written down before arch_hash existed: results on disk
    keep their ids (a built-in GPT has no definition file to hash)."""
    from lossbench.core.config import RunConfig

    assert RunConfig().run_id() == "cross_entropy-1c91d80e77dc"
    assert ModelConfig().arch_hash is None


def test_editing_the_model_definition_changes_the_run_id(tmp_path, monkeypatch):
    """A factory's module file and an hf_path's config.json are hashed into the run id (like
    init_from's weights): editing either must not reuse the results of the old model."""
    pytest.importorskip("transformers")
    from lossbench.models.hf import hf_config

    monkeypatch.syspath_prepend(str(tmp_path))
    source = (Path(__file__).parent / "fixtures" / "archs.py").read_text()
    (tmp_path / "edited_factory_mod.py").write_text(source)
    hf_config(arch("hf"), 8).save_pretrained(tmp_path / "cfg")  # config.json only
    data = {"markov_tokens": 20000, "markov_vocab": 8}
    kinds = {"python": {"arch": "python:edited_factory_mod:tiny_mlp"},
             "hf": {"arch": "hf", "hf_path": str(tmp_path / "cfg")}}

    def ids(kind):
        return [r.run_id() for r in load_suite(suite_file(tmp_path, data, kinds[kind])).runs]

    before = {kind: ids(kind) for kind in kinds}
    assert {kind: ids(kind) for kind in kinds} == before  # same files, same results
    stale = load_suite(suite_file(tmp_path, data, kinds["python"])).runs[0]
    (tmp_path / "edited_factory_mod.py").write_text(source.replace("nn.Dropout(0.1)",
                                                                   "nn.Dropout(0.2)"))
    monkeypatch.delitem(sys.modules, "edited_factory_mod")  # as a new process would import it
    cfg = json.loads((tmp_path / "cfg" / "config.json").read_text())
    (tmp_path / "cfg" / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 48}))
    for kind in kinds:
        assert not set(ids(kind)) & set(before[kind]), kind
    with pytest.raises(ValueError, match="changed since the suite was resolved"):
        models.build(stale.model, 8, 0)  # a resolved config refuses the edited file


def test_a_shard_index_names_files_inside_its_folder_only(tmp_path):
    """model.safetensors.index.json comes with someone's checkpoint folder: a shard named
    outside the folder (absolute, or through ..) is refused, not hashed and loaded, and an
    index that is not a {"weight_map": {key: file}} table is one problem line."""
    torch.save(models.build(TINY.model, 8, 0).state_dict(), tmp_path / "mine.pt")
    folder = tmp_path / "theirs"
    folder.mkdir()
    index = folder / "model.safetensors.index.json"
    for weight_map, fragment in [({"a": str(tmp_path / "mine.pt")}, "outside"),
                                 ({"a": "../mine.pt"}, "outside"),
                                 ([1, 2], "unreadable"), ({"a": 3}, "unreadable")]:
        index.write_text(json.dumps({"weight_map": weight_map}))
        with pytest.raises(SuiteError) as info:
            load_suite(suite_file(tmp_path, {"markov_tokens": 5000}, {"init_from": str(folder)}))
        assert len(info.value.errors) == 1 and "[model] init_from" in info.value.errors[0] \
            and fragment in info.value.errors[0], info.value.errors


def test_safetensors_init_from_without_the_extra_stops_before_any_run(tmp_path, monkeypatch):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    state = models.build(TINY.model, 8, 0).state_dict()
    state.pop("lm_head.weight")  # tied to the embedding: loaded through it
    safetensors_torch.save_file(state, str(tmp_path / "w.safetensors"))
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(SuiteError) as info:
        load_suite(suite_file(tmp_path, {"markov_tokens": 5000},
                              {"init_from": str(tmp_path / "w.safetensors")}))
    assert len(info.value.errors) == 1 and "[model] init_from" in info.value.errors[0] and \
        "pip install 'lossbench[hf]'" in info.value.errors[0], info.value.errors


def test_a_factory_edited_after_this_process_imported_it_is_refused(tmp_path, monkeypatch):
    """The run id hashes the module file on disk; the process would still build with the
    code it imported before the edit: that mix is refused (restart to use the new code)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    source = (Path(__file__).parent / "fixtures" / "archs.py").read_text()
    (tmp_path / "edited_in_process_mod.py").write_text(source)
    model = {"arch": "python:edited_in_process_mod:tiny_mlp"}
    load_suite(suite_file(tmp_path, {"markov_tokens": 20000, "markov_vocab": 8}, model))
    (tmp_path / "edited_in_process_mod.py").write_text(source + "\n# edited\n")
    with pytest.raises(SuiteError, match=r"\[model\] arch: .*changed since this process "
                                         r"imported it"):
        load_suite(suite_file(tmp_path, {"markov_tokens": 20000, "markov_vocab": 8}, model))
