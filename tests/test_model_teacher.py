"""Trained networks as teachers ([data] teacher = "model"): a teacher run trained once and
reused, students of a seed seeing the same batches and weights, the same teacher loaded from a
model.pt, a state dict and a Hugging Face folder, vocabulary mismatch refused before any run,
and the top-k cache equal to the live teacher within its truncation."""

import dataclasses
import json

import pytest
import torch
from helpers import TINY, Recorder, lossbench_cli, suite_file, tiny

from lossbench.models.teacher import ModelTeacher
from lossbench.store.experiments import resolve_experiment
from lossbench.store.tables import load
from lossbench.suite.load import load_suite
from lossbench.sweep.plan import plan_suite
from lossbench.sweep.status import experiment_states
from lossbench.sweep.sweep import place_teacher, run_suite
from lossbench.train.loop import train_run

DATA = {"markov_tokens": 20000, "markov_vocab": 8}


def _teacher_suite(tmp_path, teacher_steps=8, name="distil", losses='["cross_entropy", "kd"]'):
    run = f'{{ run = {{ model = {{ n_embd = 32 }}, train = {{ steps = {teacher_steps} }} }} }}'
    path = suite_file(tmp_path, DATA, losses=losses, name=name)
    text = path.read_text().replace("[data]\n", f"[data]\nteacher = {run}\n")
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny teacher trained with save_weights: its run folder holds model.pt + config.json."""
    folder = tmp_path_factory.mktemp("teacher")
    config = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, save_weights=True))
    (folder / "run").mkdir()
    train_run(config, checkpoint_dir=folder / "run")
    (folder / "run" / "config.json").write_text(json.dumps(config.to_dict()))
    return folder / "run", config


def _student(path, teacher_model=None, loss="kd", **data):
    d = dataclasses.replace(TINY.data, teacher="model", teacher_from=str(path), **data)
    return tiny(loss=loss, data=d, teacher_model=teacher_model or TINY.model)


def test_a_teacher_run_is_trained_once_and_an_edited_spec_retrains(tmp_path):
    suite = load_suite(_teacher_suite(tmp_path))
    (teacher,) = suite.teachers
    assert all(r.data.teacher_hash == f"run:{teacher.run_id()}" for r in suite.runs if r.loss == "kd")
    planned = plan_suite(suite, tmp_path / "out")  # the dry run: the teacher first
    assert (planned[0].phase, planned[0].config.run_id()) == ("teacher", teacher.run_id())
    first = run_suite(suite, tmp_path / "out", workers=1, show_progress=False)
    assert first.exit_code == 0 and first.statuses[teacher.run_id()] == "done"
    folder = tmp_path / "out" / "runs" / teacher.run_id()
    stamp = (folder / "result.json").stat().st_mtime_ns
    states = experiment_states(tmp_path / "out", resolve_experiment(tmp_path / "out",
                                                                    first.experiment))
    assert (states[0].run_id, states[0].phase, states[0].state) == \
        (teacher.run_id(), "teacher", "done")  # `lossbench status` lists it first
    summary, _ = load(tmp_path / "out")
    teacher_result = json.loads((folder / "result.json").read_text())
    kd = summary[summary.loss == "kd"]
    assert (kd.teacher_val_ce - teacher_result["evals"][-1]["val_ce"]).abs().max() < 1e-6
    assert (kd.flops_per_token > summary[summary.loss == "cross_entropy"].flops_per_token.max()).all()

    again = run_suite(load_suite(_teacher_suite(tmp_path, name="other")), tmp_path / "out",
                      workers=1, show_progress=False)  # another suite, the same teacher spec
    assert again.skipped == len(suite.runs) + 1
    assert (folder / "result.json").stat().st_mtime_ns == stamp

    edited = load_suite(_teacher_suite(tmp_path, teacher_steps=9))
    assert edited.teachers[0].run_id() != teacher.run_id()
    assert {r.run_id() for r in edited.runs if r.loss == "kd"}.isdisjoint(
        r.run_id() for r in suite.runs)
    assert run_suite(edited, tmp_path / "out", workers=1, show_progress=False).skipped == 1
    assert (tmp_path / "out" / "runs" / edited.teachers[0].run_id() / "model.pt").exists()


def test_students_of_a_seed_see_the_same_batches_weights_and_dropout(trained):
    folder, _ = trained
    seen = {}
    for loss in ("cross_entropy", "kd", "skew_kl"):
        rec = Recorder()
        train_run(_student(folder / "model.pt", loss=loss), observers=[rec])
        seen[loss] = rec
    base = seen["cross_entropy"]
    for loss in ("kd", "skew_kl"):
        rec = seen[loss]
        assert all(torch.equal(base.init[k], rec.init[k]) for k in base.init)
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                   for a, b in zip(base.batches, rec.batches, strict=True))
        assert all(torch.equal(a, b) for a, b in zip(base.rng, rec.rng, strict=True))


def _gpt2_folder(state, m, vocab, folder):
    """The lossbench GPT's weights as a Hugging Face GPT-2 (Conv1D: transposed matrices,
    zero biases, exact GELU): the same network, saved with save_pretrained."""
    tf = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    cfg = tf.GPT2Config(vocab_size=vocab, n_positions=m.block_size, n_embd=m.n_embd,
                        n_layer=m.n_layer, n_head=m.n_head, activation_function="gelu",
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)
    hf = tf.GPT2LMHeadModel(cfg)
    new = {k: torch.zeros_like(v) for k, v in hf.state_dict().items()}
    for k, v in state.items():
        if k == "lm_head.weight":
            continue
        conv = k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        new[k] = v.t().contiguous() if conv else v
    new["lm_head.weight"] = state["transformer.wte.weight"]
    hf.load_state_dict(new)
    hf.save_pretrained(folder)
    return folder


def test_model_pt_state_dict_and_hf_folder_give_the_same_teacher(trained, tmp_path):
    folder, config = trained
    state = torch.load(folder / "model.pt", weights_only=True)
    torch.save(state, tmp_path / "weights.pt")  # a bare state dict: [teacher_model] says what
    _gpt2_folder(state, config.model, 8, tmp_path / "hf")
    x = torch.randint(0, 8, (3, 16), generator=torch.Generator().manual_seed(0))
    probs = []
    for where, table in ((folder / "model.pt", None), (tmp_path / "weights.pt", config.model),
                         (tmp_path / "hf", None)):
        path = suite_file(tmp_path, {**DATA, "teacher": "model", "teacher_from": str(where)},
                          losses='["cross_entropy", "kd"]', name="from")
        if table is not None:
            path.write_text(path.read_text() + "[teacher_model]\nn_layer = 1\nn_head = 2\n"
                                               "n_embd = 16\n")
        run = next(r for r in load_suite(path).runs if r.loss == "kd")
        probs.append(ModelTeacher(run, 8).probs(x, 0))
    assert torch.equal(probs[0], probs[1])
    torch.testing.assert_close(probs[2], probs[0], rtol=1e-5, atol=1e-6)


def test_vocabulary_mismatch_is_refused_before_any_run(trained, tmp_path):
    folder, _ = trained
    data = {"markov_tokens": 20000, "markov_vocab": 10, "teacher": "model",
            "teacher_from": str(folder / "model.pt")}
    path = suite_file(tmp_path, data, losses='["cross_entropy", "kd"]')
    proc = lossbench_cli("run", path, "--out", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "vocabulary has 8 tokens, the corpus's 10" in lines[0], lines
    assert not (tmp_path / "out" / "runs").exists()


def test_topk_cache_equals_the_live_teacher_within_its_truncation(trained, tmp_path):
    folder, _ = trained
    live = ModelTeacher(_student(folder / "model.pt"), 8)
    cached = ModelTeacher(_student(folder / "model.pt", teacher_topk=3), 8, cache_dir=tmp_path)
    x = torch.randint(0, 8, (4, 16), generator=torch.Generator().manual_seed(1))
    full = live.probs(x, 5)
    first = cached.probs(x, 5)  # computed, written
    assert len(list(tmp_path.rglob("*.npz"))) == 1
    second = cached.probs(torch.zeros_like(x), 5)  # read back: the inputs are not looked at
    assert torch.equal(first, second)
    kept = first > 0
    assert (kept.sum(-1) == 3).all()
    mass = (full * kept).sum(-1, keepdim=True)  # the teacher's mass on its top 3
    torch.testing.assert_close(first, torch.where(kept, full / mass, 0.0))
    top = full.topk(3, -1).indices.sort(-1).values
    assert torch.equal(top, kept.nonzero()[:, -1].view(4, 16, 3))
    runs = tmp_path / "out" / "runs"  # a results folder: its teacher_cache is beside runs/
    (runs / "a").mkdir(parents=True)
    (runs / "b").mkdir()
    a = train_run(_student(folder / "model.pt", teacher_topk=3), checkpoint_dir=runs / "a")
    n = len(list((tmp_path / "out" / "teacher_cache").rglob("*.npz")))
    assert n == TINY.train.steps  # one file per batch
    b = train_run(_student(folder / "model.pt", teacher_topk=3), checkpoint_dir=runs / "b")
    assert a.evals == b.evals  # the second read every batch from the first's cache


def test_a_teachers_contents_name_its_students_not_its_path():
    a = _student("/x/model.pt", teacher_hash="abc")
    assert a.run_id() == _student("/y/model.pt", teacher_hash="abc").run_id()
    assert a.run_id() != _student("/x/model.pt", teacher_hash="abd").run_id()
    assert place_teacher(tiny(), None).run_id() == TINY.run_id()  # no model teacher: as before


def test_a_teacher_with_a_shorter_context_or_no_architecture_is_refused(trained, tmp_path):
    from lossbench.suite.source import SuiteError

    folder, _ = trained
    data = {**DATA, "teacher": "model", "teacher_from": str(folder / "model.pt")}
    path = suite_file(tmp_path, data, {"block_size": 32}, losses='["cross_entropy", "kd"]')
    with pytest.raises(SuiteError, match="block_size 16 is shorter than the students' 32"):
        load_suite(path)
    torch.save(torch.load(folder / "model.pt", weights_only=True), tmp_path / "bare.pt")
    path = suite_file(tmp_path, {**data, "teacher_from": str(tmp_path / "bare.pt")},
                      losses='["cross_entropy", "kd"]')
    with pytest.raises(SuiteError, match=r"add a \[teacher_model\] section"):
        load_suite(path)
