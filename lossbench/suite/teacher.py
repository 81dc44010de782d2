"""A suite's model teacher: ``[data] teacher = "model"`` with ``teacher_from`` (and a
``[teacher_model]`` section where the file does not say its architecture), or
``teacher = { run = { ... } }``, a teacher run lossbench trains first.

Resolved before any run: the teacher's architecture (``RunConfig.teacher_model``), its identity
(``[data] teacher_hash``: the weights' sha256, or ``run:<id>`` of the teacher run), and the one
check distillation cannot do without, a teacher vocabulary equal to the corpus's. A teacher run
is an ordinary run (its own run id, folder, checkpoints: trained once, resumed, reused by every
suite that names the same spec); the sweep trains it first and points the students'
``teacher_from`` at its model.pt (lossbench.sweep.sweep.place_teacher; the path is not in
their run ids).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from lossbench.core.config import DataConfig, ModelConfig, RunConfig
from lossbench.core.fields import ConfigError

RUN_KEYS = ("model", "train", "loss", "hparams", "seed")


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    """What a suite says about its teacher, before resolution."""

    run: dict[str, Any] | None = None  # teacher = { run = { ... } }
    model: dict[str, Any] | None = None  # [teacher_model]


def take_teacher(doc: dict) -> TeacherSpec:
    """Take ``teacher = { run = ... }`` out of ``[data]`` (leaving ``teacher = "model"``) and the
    ``[teacher_model]`` section out of ``doc``, so the sections parse as usual."""
    data = doc.get("data")
    run = None
    if isinstance(data, dict) and isinstance(data.get("teacher"), dict):
        run = data["teacher"]
        data["teacher"] = "model"
    return TeacherSpec(run=run, model=doc.pop("teacher_model", None))


def resolve_teacher(spec: TeacherSpec, sections: dict, *, device: str, vocab: int | None,
                    where: str) -> tuple[DataConfig, ModelConfig | None, RunConfig | None,
                                         list[str]]:
    """(the students' [data] with teacher_hash, the teacher's architecture, the teacher run or
    None, problems), each problem one line naming the key."""
    data: DataConfig = sections["data"]
    if data.teacher != "model":
        if spec.model is not None:
            return data, None, None, [f"{where}: [teacher_model] applies to [data] teacher = "
                                      f"\"model\" (got {data.teacher!r})"]
        return data, None, None, []
    if spec.run is not None:
        if data.teacher_from:
            return data, None, None, [f"{where}: [data] teacher: a teacher run and teacher_from "
                                      f"name two teachers: keep one"]
        return _teacher_run(spec.run, sections, device, where)
    if not data.teacher_from:
        return data, None, None, [f"{where}: [data] teacher = \"model\" needs teacher_from = PATH "
                                  f"or teacher = {{ run = {{ ... }} }}"]
    return _teacher_file(spec.model, data, sections["model"], vocab, where)


def _teacher_run(table: Any, sections: dict, device: str, where: str):
    data = sections["data"]
    if not isinstance(table, dict) or set(table) != {"run"} or not isinstance(table["run"], dict):
        return data, None, None, [f"{where}: [data] teacher: expected {{ run = {{ ... }} }} "
                                  f"(keys {', '.join(RUN_KEYS)})"]
    run = table["run"]
    if unknown := sorted(set(run) - set(RUN_KEYS)):
        return data, None, None, [f"{where}: [data] teacher.run: unknown key {unknown[0]!r} "
                                  f"(known: {', '.join(RUN_KEYS)})"]
    from lossbench.losses import get_loss
    from lossbench.suite.preflight import resolve_losses

    try:
        model = dataclasses.replace(sections["model"], init_from=None, init_hash=None,
                                    **run.get("model", {}))
        train = dataclasses.replace(sections["train"], **run.get("train", {}), save_weights=True)
        plain = {f.name: getattr(data, f.name) for f in dataclasses.fields(DataConfig)
                 if not f.name.startswith("teacher")}
        teacher = RunConfig(loss=run.get("loss", "cross_entropy"),
                            hparams=dict(run.get("hparams", {})), seed=int(run.get("seed", 0)),
                            data=DataConfig(**plain), model=model, train=train,
                            eval=sections["eval"], device=device, label="teacher")
        if errors := get_loss(teacher.loss).validate_hparams(teacher.hparams):
            raise ValueError("; ".join(errors))
        teacher = resolve_losses(teacher)
    except ConfigError as exc:
        return data, None, None, [f"{where}: [data] teacher.run: {t}" for _, t in exc.problems]
    except (TypeError, ValueError, KeyError) as exc:
        return data, None, None, [f"{where}: [data] teacher.run: {str(exc).splitlines()[0]}"]
    data = dataclasses.replace(data, teacher_hash=f"run:{teacher.run_id()}")
    return data, model, teacher, []


def _architecture(path: Path, table: dict | None, student: ModelConfig) -> ModelConfig | str:
    """The teacher's architecture: [teacher_model], an HF folder's config.json, or the
    config.json of the lossbench run folder holding the model.pt; else why not."""
    if table is not None:
        return ModelConfig(**{"block_size": student.block_size, **table})
    if path.is_dir() and (path / "config.json").is_file():
        doc = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if isinstance(doc, dict) and isinstance(doc.get("model_type"), str):
            return ModelConfig(arch="hf", hf_path=str(path), block_size=student.block_size)
    beside = path.parent / "config.json"
    if path.is_file() and beside.is_file():
        try:
            return RunConfig.from_dict(json.loads(beside.read_text(encoding="utf-8"))).model
        except (TypeError, ValueError, KeyError, AttributeError):
            pass
    return (f"{path} does not say its architecture: add a [teacher_model] section (n_layer, "
            f"n_head, n_embd, ... as in [model])")


def _teacher_file(table, data: DataConfig, student: ModelConfig, vocab: int | None, where: str):
    from lossbench.models.weights import check_loadable, read_state, weights_hash
    from lossbench.suite.preflight import resolve_model

    path = Path(data.teacher_from).expanduser()
    if not path.exists():
        return data, None, None, [f"{where}: [data] teacher_from: no such file or folder: "
                                  f"{data.teacher_from}"]
    try:
        model = _architecture(path, table, student)
    except ConfigError as exc:
        return data, None, None, [f"{where}: [teacher_model] {t}" for _, t in exc.problems]
    except TypeError as exc:
        return data, None, None, [f"{where}: [teacher_model] {exc}"]
    if isinstance(model, str):
        return data, None, None, [f"{where}: [data] teacher_from: {model}"]
    model = dataclasses.replace(model, init_from=None, init_hash=None, dropout=0.0)
    if model.block_size < student.block_size:
        return data, None, None, [f"{where}: [data] teacher_from: the teacher's block_size "
                                  f"{model.block_size} is shorter than the students' "
                                  f"{student.block_size}: it cannot read their windows"]
    model, problems = resolve_model(model)
    if problems:
        return data, None, None, [f"{where}: teacher {p}" for p in problems]
    try:
        check_loadable(str(path))
        state = read_state(str(path))
        digest = weights_hash(str(path))
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        return data, None, None, [f"{where}: [data] teacher_from: {str(exc).splitlines()[0]}"]
    if vocab is not None and (problem := vocabulary_problem(state, model, vocab)):
        return data, None, None, [f"{where}: [data] teacher_from: {problem}"]
    return dataclasses.replace(data, teacher_hash=digest), model, None, []


def teacher_vocab(state: dict, model: ModelConfig) -> int | None:
    """The teacher's vocabulary size, from its HF config or its token embedding's rows."""
    if model.arch == "hf" and model.hf_path:
        doc = json.loads((Path(model.hf_path) / "config.json").read_text(encoding="utf-8"))
        if isinstance(doc.get("vocab_size"), int):
            return doc["vocab_size"]
    for key, value in state.items():
        embedding = key.endswith(("wte.weight", "embed_tokens.weight", "embed_in.weight"))
        if embedding and value.dim() == 2:
            return int(value.shape[0])
    return None


def vocabulary_problem(state: dict, model: ModelConfig, vocab: int) -> str | None:
    """Distillation compares distributions over the same tokens: one line when they differ."""
    theirs = teacher_vocab(state, model)
    if theirs is not None and theirs != vocab:
        return (f"the teacher's vocabulary has {theirs} tokens, the corpus's {vocab}: the "
                f"teacher must be trained with the students' tokenizer")
    return None



def drop_unused_teacher(run: RunConfig) -> RunConfig:
    """A run whose losses take no teacher (cross_entropy beside the distilled students) does
    not name the model teacher: its run id is a plain run's, reused across teachers."""
    from lossbench.losses import get_loss

    if run.data.teacher != "model" or any(
            "teacher_probs" in get_loss(name).extra_inputs
            for name in (run.loss, run.finetune.loss)):
        return run
    plain = {f.name: getattr(run.data, f.name) for f in dataclasses.fields(DataConfig)
             if not f.name.startswith("teacher")}
    return dataclasses.replace(run, data=DataConfig(**plain), teacher_model=None)
