"""A suite file's sections and its `losses` list, each parsed into typed configs with every
problem collected (one line each, naming the file and the key): the parts of
:func:`lossbench.suite.load.load_suite` that read one table at a time."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from lossbench.core.config import (TRACKERS, DataConfig, EvalConfig, FinetuneConfig,
                                   ModelConfig, ReportConfig, TrainConfig)
from lossbench.core.fields import ConfigError
from lossbench.core.text import did_you_mean
from lossbench.losses import get_loss, list_losses


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig,
            "finetune": FinetuneConfig}


def parse_log(table: Any, where: str, errors: list[str]) -> tuple[str, ...]:
    """[log] trackers = ["tensorboard", "mlflow", "wandb"]: names checked here, packages
    when the sweep starts."""
    if not isinstance(table, dict) or set(table) - {"trackers"}:
        extra = set(table) - {"trackers"} if isinstance(table, dict) else ()
        errors.append(f"{where}: [log]: expected a table with only 'trackers'"
                      + (f" (unknown: {', '.join(sorted(extra))})" if extra else ""))
        return ()
    trackers = table.get("trackers", [])
    if not isinstance(trackers, list) or not all(isinstance(t, str) for t in trackers):
        errors.append(f"{where}: log.trackers: expected a list of names, got {trackers!r}")
        return ()
    for t in trackers:
        if t not in TRACKERS:
            errors.append(f"{where}: log.trackers: unknown tracker {t!r}{did_you_mean(t, TRACKERS)} "
                          f"(known: {', '.join(TRACKERS)})")
    return tuple(dict.fromkeys(trackers))


def parse_section(doc: dict, name: str, where: str, errors: list[str]):
    """The section's config and its invalid keys ("*": all; empty: valid). Checks across
    sections skip what they need of an invalid one; an invalid config keeps its valid keys.
    Types and ranges are the dataclass's own checks: here they are only listed."""
    cls = SECTIONS[name]
    table = doc.get(name, {})
    if not isinstance(table, dict):
        errors.append(f"{where}: [{name}] must be a table")
        return cls(), {"*"}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        if key not in fields:
            errors.append(f"{where}: [{name}] unknown key {key!r}{did_you_mean(key, fields)}")
        elif fields[key].metadata.get("derived"):
            errors.append(f"{where}: [{name}] {key}: computed by lossbench, not set in a suite")
        else:
            values[key] = value
    try:
        return cls(**values), set()
    except ConfigError as exc:
        errors.extend(f"{where}: [{name}] {text}" for _, text in exc.problems)
        try:  # keep the valid keys, so later messages describe what the file says
            return cls(**{k: v for k, v in values.items() if k not in exc.keys}), exc.keys
        except ConfigError:
            return cls(), {"*"}


def finetune_problems(ft: FinetuneConfig, known: list[str]) -> list[str]:
    """Every run builds its fine-tuning loss (even with steps = 0): it must exist."""
    if ft.loss not in known:
        return [f"[finetune] loss: unknown loss {ft.loss!r}{did_you_mean(ft.loss, known)}"]
    if get_loss(ft.loss).needs_hidden:
        return [f"[finetune] loss: {ft.loss} needs the model's hidden states, which the "
                f"fine-tuning phase (logits of generated text) does not supply"]
    return [f"[finetune] hparams: {m}" for m in get_loss(ft.loss).validate_hparams(ft.hparams)]


def loss_entries(doc: dict, where: str, errors: list[str]) -> list[tuple[str, dict, dict]]:
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
    seen: dict[tuple, str] = {}  # (loss, effective hyperparameters, label) -> first entry
    for i, entry in enumerate(entries):
        key = f"losses[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            errors.append(f"{where}: {key}: expected a loss name or a table with name = \"...\"")
            continue
        name = entry["name"]
        if name not in known:
            errors.append(f"{where}: {key}: unknown loss {name!r}{did_you_mean(name, known)}")
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
            extras["finetune"], bad = parse_section(table, "finetune", f"{where}: {key}", errors)
            if not bad:
                errors += [f"{where}: {key}: {m}"
                           for m in finetune_problems(extras["finetune"], known)]
        out += _grid_points(entry, name, spec, extras, key, where, seen, errors)
    return out


def _grid_points(entry: dict, name: str, spec, extras: dict, key: str, where: str,
                 seen: dict[tuple, str], errors: list[str]) -> list[tuple[str, dict, dict]]:
    """One entry's (name, hparams, extras) per point of its grid (list values); a point
    already seen (``seen``: defaults written out or left out alike) is a problem."""
    grid = {k: (v if isinstance(v, list) else [v]) for k, v in entry.items()
            if k not in ("name", "label", "finetune")}
    problems = [f"{where}: {key} {msg}" for hp, values in grid.items() for value in values
                for msg in spec.validate_hparams({hp: value})]
    if problems:
        errors += problems
        return []
    out = []
    keys = list(grid)
    varying = [k for k in keys if len(grid[k]) > 1]
    for combo in itertools.product(*(grid[k] for k in keys)):
        hp = dict(zip(keys, combo))
        point = extras
        if varying:  # each grid point is its own contender in reports
            tag = ", ".join(f"{k}={hp[k]}" for k in varying)
            point = {**extras, "label": f"{extras['label'] or name}[{tag}]"}
        # a default written out is the same run as one left out
        same = (name, tuple(sorted({**spec.defaults(), **hp}.items())), point["label"] or name)
        if same in seen:
            where_else = ("twice in its grid" if seen[same] == key
                          else f"already listed as {seen[same]}")
            errors.append(f"{where}: {key}: {same[2]} with {hp or 'default hyperparameters'} "
                          f"is {where_else}: drop one of them")
            continue
        seen[same] = key
        out.append((name, hp, point))
    return out


def needs_ngram(data: DataConfig, finetune: FinetuneConfig,
                 entries: list[tuple[str, dict, dict]]) -> bool:
    """Does some run build the n-gram teacher (a loss of it takes teacher_probs)?"""
    losses = {finetune.loss, *(n for n, _, _ in entries),
              *(x["finetune"].loss for _, _, x in entries if "finetune" in x)}
    known = {s.name: s for s in list_losses()}
    return data.teacher == "ngram" and any(
        "teacher_probs" in known[n].extra_inputs for n in losses if n in known)


def parse_report(table: Any, where: str, errors: list[str]) -> ReportConfig:
    """[report] margin = 0.01: checked like any section (ReportConfig's fields)."""
    if not isinstance(table, dict):
        errors.append(f"{where}: [report] must be a table")
        return ReportConfig()
    known = {f.name for f in dataclasses.fields(ReportConfig)}
    for key in set(table) - known:
        errors.append(f"{where}: [report] unknown key {key!r}{did_you_mean(key, known)}")
    try:
        return ReportConfig(**{k: v for k, v in table.items() if k in known})
    except ConfigError as exc:
        errors.extend(f"{where}: [report] {text}" for _, text in exc.problems)
        return ReportConfig()
