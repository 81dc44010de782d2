"""Suites: a TOML file that expands into identical runs (losses x grids x seeds).

    name = "quick"
    description = "..."
    seeds = [0, 1]
    baseline = "cross_entropy"          # optional; the report compares every loss to it
    losses = ["cross_entropy", { name = "label_smoothing", smoothing = [0.05, 0.1] }]

    [data]   corpus = "markov"          # DataConfig fields
    [model]  n_layer = 2                # ModelConfig fields
    [train]  steps = 300                # TrainConfig fields
    [eval]   eval_every = 50            # EvalConfig fields
    [finetune] steps = 0                # FinetuneConfig fields
    [tune]   grid = { lr = { log_grid = [1e-4, 1e-2, 5] } }   # optional, see lossbench.tuning
    target_val_ce = 1.5                 # optional; steps-to-target's target in reports

A list value in a loss table is a grid. Everything is validated before any run
starts, and every problem is reported at once, one line each, naming the file
and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossbench.config import (EvalConfig, FinetuneConfig, ModelConfig, RunConfig, TrainConfig,
                              parse_seeds)
from lossbench.data.corpora import DataConfig
from lossbench.losses import get_loss, list_losses
from lossbench.tuning import TuneSpec, parse_tune

SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig,
            "finetune": FinetuneConfig}
TOP_LEVEL = {"name", "description", "seeds", "losses", "baseline", "device", "target_val_ce",
             "tune", *SECTIONS}

# value ranges beyond the dataclasses' own checks: (low, high) inclusive, None = open
RANGES = {
    "model.n_layer": (1, None), "model.n_head": (1, None), "model.n_embd": (1, None),
    "model.block_size": (2, None), "model.dropout": (0.0, 0.99),
    "train.steps": (1, None), "train.batch_size": (1, None), "train.grad_accum": (1, None),
    "train.lr": (0.0, None), "train.min_lr": (0.0, None), "train.warmup_steps": (0, None),
    "train.weight_decay": (0.0, None), "train.beta1": (0.0, 0.999999),
    "train.beta2": (0.0, 0.999999), "train.grad_clip": (0.0, None), "train.threads": (1, 256),
    "train.checkpoint_every": (0, None), "eval.eval_every": (1, None),
    "eval.val_windows": (2, None), "eval.ece_bins": (1, 1000), "eval.rep_prefixes": (1, None),
    "eval.rep_prefix_len": (1, None), "eval.rep_continuation": (4, None),
    "eval.samples": (0, None), "eval.full_val_windows": (0, None),
    "finetune.steps": (0, None), "finetune.lr": (0.0, None),
    "finetune.prefix_len": (1, None), "finetune.continuation_len": (4, None),
    "finetune.mle_mix": (0.0, 1.0),
}


class SuiteError(ValueError):
    """Everything wrong with a suite, one line per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    path: str
    seeds: tuple[int, ...]
    baseline: str
    runs: tuple[RunConfig, ...]  # losses x grid points x seeds, in file order
    entries: tuple[RunConfig, ...] = ()  # the contenders: one per loss x grid point, first seed
    tune: TuneSpec | None = None  # per-loss tuning before the runs (then `runs` are not final)
    target_val_ce: float | None = None  # steps-to-target's target; None: baseline x 1.05


def _type_ok(value: Any, annotation: Any) -> bool:
    """Does a TOML value fit a dataclass field annotation (int, float, str, bool, Optional)?"""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    return True


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def _closest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.steps=100' -> (['train', 'steps'], 100); the value is read as TOML, else a string."""
    if "=" not in text:
        raise SuiteError([f"--set {text}: expected SECTION.KEY=VALUE"])
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def _apply_overrides(doc: dict, overrides: list[str]) -> None:
    for text in overrides:
        path, value = parse_override(text)
        node = doc
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SuiteError([f"--set {text}: {part} is not a section"])
        node[path[-1]] = value


def _section(doc: dict, name: str, where: str, errors: list[str]):
    cls = SECTIONS[name]
    table = doc.get(name, {})
    if not isinstance(table, dict):
        errors.append(f"{where}: [{name}] must be a table")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in table.items():
        if key not in fields:
            errors.append(f"{where}: [{name}] unknown key {key!r}{_closest(key, fields)}")
            continue
        if not _type_ok(value, hints[key]):
            errors.append(f"{where}: [{name}] {key}: expected {_type_name(hints[key])}, "
                          f"got {value!r}")
            continue
        low, high = RANGES.get(f"{name}.{key}", (None, None))
        if (low is not None and value < low) or (high is not None and value > high):
            errors.append(f"{where}: [{name}] {key}={value!r} is out of range "
                          f"[{low}, {'inf' if high is None else high}]")
            continue
        values[key] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        errors.append(f"{where}: [{name}] {exc}")
        return cls()


def _loss_entries(doc: dict, where: str, errors: list[str]) -> list[tuple[str, dict, dict]]:
    """Expand `losses` into (name, hparams, extras) triples; list values are grids.

    An entry may carry `label` (its name in reports) and a `finetune` table that
    replaces the suite's [finetune] section for that entry.
    """
    entries = doc.get("losses")
    if not isinstance(entries, list) or not entries:
        errors.append(f"{where}: losses: expected a non-empty list of names or tables")
        return []
    known = [s.name for s in list_losses()]
    out = []
    for i, entry in enumerate(entries):
        key = f"losses[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            errors.append(f"{where}: {key}: expected a loss name or a table with name = \"...\"")
            continue
        name = entry["name"]
        if name not in known:
            errors.append(f"{where}: {key}: unknown loss {name!r}{_closest(name, known)}")
            continue
        spec = get_loss(name)
        if spec.finetune_only:
            errors.append(f"{where}: {key}: {name} needs generated text: use it as a fine-tuning "
                          f"phase, e.g. {{ name = \"cross_entropy\", finetune = {{ steps = 200, "
                          f"loss = \"{name}\" }} }}")
            continue
        extras = {}
        label = entry.get("label", "")
        if not isinstance(label, str):
            errors.append(f"{where}: {key}: label: expected a string")
        extras["label"] = label if isinstance(label, str) else ""
        if "finetune" in entry:
            table = {"finetune": entry["finetune"]}
            n_before = len(errors)
            extras["finetune"] = _section(table, "finetune", f"{where}: {key}", errors)
            if len(errors) == n_before and extras["finetune"].loss not in known:
                errors.append(f"{where}: {key}: finetune loss {extras['finetune'].loss!r} is unknown")
        grid = {k: (v if isinstance(v, list) else [v]) for k, v in entry.items()
                if k not in ("name", "label", "finetune")}
        bad = False
        for hp, values in grid.items():
            for value in values:
                for msg in spec.validate_hparams({hp: value}):
                    errors.append(f"{where}: {key} {msg}")
                    bad = True
        if bad:
            continue
        keys = list(grid)
        varying = [k for k in keys if len(grid[k]) > 1]
        for combo in itertools.product(*(grid[k] for k in keys)):
            hp = dict(zip(keys, combo))
            point = extras
            if varying:  # each grid point is its own contender in reports
                tag = ", ".join(f"{k}={hp[k]}" for k in varying)
                point = {**extras, "label": f"{extras['label'] or name}[{tag}]"}
            out.append((name, hp, point))
    return out


def load_suite(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """Parse, validate and expand a suite. Raises SuiteError listing every problem."""
    where = str(path)
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SuiteError([f"{where}: no such suite file"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError([f"{where}: TOML syntax error: {exc}"]) from None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise SuiteError([f"{where}: cannot read: {exc}"]) from None
    _apply_overrides(doc, list(overrides))
    errors: list[str] = []
    for key in doc:
        if key not in TOP_LEVEL:
            errors.append(f"{where}: unknown key or section {key!r}{_closest(key, TOP_LEVEL)}")
    name = doc.get("name", Path(path).stem)
    if not isinstance(name, str) or not name:
        errors.append(f"{where}: name: expected a non-empty string")
    description = doc.get("description", "")
    if not isinstance(description, str):
        errors.append(f"{where}: description: expected a string")
    seeds = parse_seeds(doc.get("seeds", [0]))  # `seeds = 3` means 0, 1, 2
    if seeds is None:
        errors.append(f"{where}: seeds: expected a non-empty list of non-negative integers")
        seeds = [0]
    device = doc.get("device", "cpu")
    if device not in ("cpu", "cuda"):
        errors.append(f"{where}: device: expected \"cpu\" or \"cuda\", got {device!r}")
    sections = {name_: _section(doc, name_, where, errors) for name_ in SECTIONS}
    data = sections["data"]
    if data.corpus == "text" and data.path and not Path(data.path).exists():
        errors.append(f"{where}: [data] path: no such file or folder: {data.path}")
    if data.corpus == "text" and not data.path:
        errors.append(f"{where}: [data] path: required for corpus = \"text\"")
    if sections["model"].n_embd % max(1, sections["model"].n_head):
        errors.append(f"{where}: [model] n_embd must be divisible by n_head")
    entries = _loss_entries(doc, where, errors)
    baseline = doc.get("baseline", "cross_entropy")
    names = {x.get("label") or n for n, _, x in entries}
    if entries and baseline not in names:
        errors.append(f"{where}: baseline: {baseline!r} is not among the suite's losses")
    target = doc.get("target_val_ce")
    number = isinstance(target, (int, float)) and not isinstance(target, bool)
    if target is not None and not (number and target > 0):
        errors.append(f"{where}: target_val_ce: expected a positive number, got {target!r}")
    tune = None
    if "tune" in doc:
        tune = parse_tune(doc["tune"], where, errors, suite_steps=sections["train"].steps,
                          suite_seeds=list(seeds), loss_names=[n for n, _, _ in entries])
        for loss, hp, _ in entries:
            for param in set(hp) & set(tune.params if tune else ()):
                errors.append(f"{where}: {loss} fixes {param}, which [tune] also tunes: "
                              f"drop one of them")
    if errors:
        raise SuiteError(errors)
    contenders = tuple(RunConfig(loss=loss, hparams=hp, seed=seeds[0], device=device,
                                 **{**sections, **extras}) for loss, hp, extras in entries)
    labels = [c.display_name for c in contenders]
    if tune and len(set(labels)) < len(labels):
        repeated = ", ".join(sorted({x for x in labels if labels.count(x) > 1}))
        raise SuiteError([f"{where}: with [tune], every losses entry needs its own label "
                          f"(repeated: {repeated})"])
    runs = tuple(dataclasses.replace(c, seed=seed) for c in contenders for seed in seeds)
    return Suite(name=name, description=description, path=where, seeds=tuple(seeds),
                 baseline=baseline, runs=runs, entries=contenders, tune=tune,
                 target_val_ce=None if target is None else float(target))
