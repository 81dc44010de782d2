"""Typed readers of what a results directory holds: every file read back is checked field by
field before anything uses it, because a results directory may come from anyone.

    RunRecord.read(folder)        runs/<id>/result.json   config, status, summary, steps, evals
    run_config(folder)            runs/<id>/config.json   the fields `status` reads
    ExperimentRecord.check(meta)  experiments/<id>.json and suite.json
    metrics_line / attempt_line   one line of metrics.jsonl / attempts.jsonl

A value of the wrong type (a string where a number is, a list as a label, a 400-digit
number, nesting 10,000 deep, a FIFO instead of a file) is :class:`MalformedRecord`, one line
``<file>: <field>: expected <type>``: the caller skips that run or record with a warning and
reports the rest. Numbers are floats (NaN and infinities included: lossbench writes them for
a diverged run) or integers of at most 2**63 in size, so ``float(x)`` never overflows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossbench.core.paths import read_regular_text
from lossbench.core.schema import CONFIG, RESULT

MAX_RESULT_BYTES = 256 << 20  # a 100k-step run with samples writes a few MB
MAX_SMALL_BYTES = 16 << 20  # config.json, experiment records, suite.json
MAX_INT = 2 ** 63
STATUSES = ("done", "diverged", "failed")
SECTIONS = ("data", "model", "train", "eval", "finetune")


class MalformedRecord(ValueError):
    """A file of a results directory that is not what lossbench writes (one line: the file,
    the field, what was expected)."""


def load_json(path: Path, limit: int = MAX_SMALL_BYTES) -> Any:
    """The JSON in ``path`` (a regular file of at most ``limit`` bytes). OSError when it
    cannot be read (StoreError for a FIFO, device or oversized file), MalformedRecord when
    it is not JSON (including numbers of more than 4300 digits and nesting Python's parser
    cannot follow)."""
    text = read_regular_text(path, limit)
    try:
        return json.loads(text)
    except RecursionError:
        raise MalformedRecord(f"{path}: not JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, and int() of too many digits
        raise MalformedRecord(f"{path}: not JSON ({str(exc).splitlines()[0][:200]})") from None


# ---- value types: each a predicate and what a message calls it ----------------------------

def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_INT


def is_number(v: Any) -> bool:
    return isinstance(v, float) or is_int(v)


def is_scalar(v: Any) -> bool:
    """What a table cell may hold: a number, a string, a boolean or nothing."""
    return v is None or isinstance(v, (str, bool)) or is_number(v)


INT = (is_int, "an integer")
NUMBER = (is_number, "a number")
NUMBER_OR_NULL = (lambda v: v is None or is_number(v), "a number or null")
NUMBER_OR_FLAG = (lambda v: v is None or isinstance(v, bool) or is_number(v),
                  "a number or null")
INT_OR_NULL = (lambda v: v is None or is_int(v), "an integer or null")
FLAG = (lambda v: isinstance(v, bool) or is_int(v), "a boolean")
TEXT = (lambda v: isinstance(v, str), "a string")
TEXT_OR_NULL = (lambda v: v is None or isinstance(v, str), "a string or null")
OBJECT = (lambda v: isinstance(v, dict), "an object")
LIST = (lambda v: isinstance(v, list), "a list")
SCALAR = (is_scalar, "a number, string, boolean or null")


def need(path: Path, field: str, value: Any, kind: tuple) -> Any:
    """``value`` when ``kind``'s predicate holds, else MalformedRecord naming the field."""
    ok, what = kind
    if not ok(value):
        raise MalformedRecord(f"{path}: {field}: expected {what}")
    return value


def need_fields(path: Path, record: dict, fields: dict[str, tuple], prefix: str = "") -> None:
    """Every field of ``fields`` that ``record`` has, of its type (absent ones are fine)."""
    for key, kind in fields.items():
        if key in record:
            need(path, prefix + key, record[key], kind)


def need_list_of(path: Path, field: str, value: Any, kind: tuple) -> list:
    need(path, field, value, LIST)
    for i, item in enumerate(value):
        need(path, f"{field}[{i}]", item, kind)
    return value


# ---- runs/<id>/result.json and config.json -------------------------------------------------

_CONFIG_FIELDS = {"loss": TEXT, "seed": INT, "label": TEXT, "hparams": OBJECT, "device": TEXT,
                  **{s: OBJECT for s in SECTIONS}}
_SUMMARY_FIELDS = {"run_id": TEXT, "loss": TEXT, "status": TEXT, "notes": TEXT,
                   "error": TEXT, "seed": INT, "steps": INT, "attempts": INT,
                   "diverged_step": INT_OR_NULL,
                   "teacher_desc": TEXT}  # a model teacher's "4×128" (lossbench.train.result)


def check_config(path: Path, config: Any, field: str = "config") -> dict:
    """A stored run config: loss and seed present, every field `status`, the tables and the
    report read of its type (the sections' own keys are RunConfig's business)."""
    need(path, field or "the file", config, OBJECT)
    prefix = f"{field}." if field else ""
    need(path, f"{prefix}loss", config.get("loss"), TEXT)
    need(path, f"{prefix}seed", config.get("seed"), INT)
    need_fields(path, config, _CONFIG_FIELDS, prefix)
    for key, value in config.get("hparams", {}).items():
        need(path, f"{prefix}hparams.{key}", value, SCALAR)
    for section in SECTIONS:
        for key, value in config.get(section, {}).items():
            if key == "steps":
                need(path, f"{prefix}{section}.steps", value, INT)
    return config


def _check_steps(path: Path, steps: Any) -> None:
    need(path, "steps", steps, OBJECT)
    lengths = set()
    for key, values in steps.items():
        kind = INT if key == "step" else FLAG if key == "clipped" else NUMBER
        need_list_of(path, f"steps.{key}", values, kind)
        lengths.add(len(values))
    if len(lengths) > 1:
        raise MalformedRecord(f"{path}: steps: expected lists of one length, got "
                              f"{sorted(lengths)[:6]}")


_RELIABILITY_ROW = (lambda r: isinstance(r, list) and len(r) == 5 and all(map(is_number, r)),
                    "a row of 5 numbers")
_SAMPLE = (lambda s: isinstance(s, dict) and all(isinstance(t, str) for t in s.values()),
           "an object of strings")


def _check_evals(path: Path, evals: Any) -> None:
    need(path, "evals", evals, LIST)
    for i, record in enumerate(evals):
        need(path, f"evals[{i}]", record, OBJECT)
        need(path, f"evals[{i}].step", record.get("step"), INT)
        for key, value in record.items():
            if key == "reliability":
                need_list_of(path, f"evals[{i}].reliability", value, _RELIABILITY_ROW)
            elif key == "samples":
                need_list_of(path, f"evals[{i}].samples", value, _SAMPLE)
            else:
                need(path, f"evals[{i}].{key}", value, NUMBER_OR_NULL)


@dataclass(frozen=True)
class RunRecord:
    """A run's result.json, every field checked (:meth:`read`)."""

    config: dict[str, Any]
    status: str
    summary: dict[str, Any]
    steps: dict[str, list]
    evals: list[dict[str, Any]]

    @classmethod
    def read(cls, folder: Path) -> "RunRecord":
        """The record of the run folder ``folder``; MalformedRecord (or OSError) when it
        is not one lossbench wrote for this folder."""
        path = folder / RESULT
        r = need(path, "the file", load_json(path, MAX_RESULT_BYTES), OBJECT)
        status = r.get("status")
        if status not in STATUSES:
            raise MalformedRecord(f"{path}: status: expected one of {', '.join(STATUSES)}")
        config = check_config(path, r.get("config"))
        summary = need(path, "summary", r.get("summary"), OBJECT)
        need_fields(path, summary, _SUMMARY_FIELDS, "summary.")
        for key, value in summary.items():  # metrics are numbers; hp_* as configured
            if key not in _SUMMARY_FIELDS:
                need(path, f"summary.{key}", value,
                     SCALAR if key.startswith("hp_") else NUMBER_OR_FLAG)
        if summary.get("run_id", folder.name) != folder.name:
            raise MalformedRecord(f"{path}: summary.run_id: expected {folder.name!r}, the "
                                  f"run folder's name")
        steps, evals = r.get("steps", {}), r.get("evals", [])
        _check_steps(path, steps)
        _check_evals(path, evals)
        return cls(config, status, summary, steps, evals)

    def as_dict(self) -> dict[str, Any]:
        return {"config": self.config, "status": self.status, "summary": self.summary,
                "steps": self.steps, "evals": self.evals}


def run_config(folder: Path) -> dict[str, Any]:
    """runs/<id>/config.json, checked like a result's config."""
    path = folder / CONFIG
    return check_config(path, load_json(path), "")


# ---- experiments/<id>.json and suite.json ---------------------------------------------------

_EXPERIMENT_FIELDS = {
    "id": TEXT, "name": TEXT, "description": TEXT_OR_NULL, "path": TEXT_OR_NULL,
    "baseline": TEXT, "target_val_ce": NUMBER_OR_NULL, "key": TEXT, "created": TEXT,
    "updated": TEXT, "seq": INT, "config": OBJECT, "tune": OBJECT, "choices": OBJECT,
    "scale": OBJECT, "claims": LIST, "seeds": LIST, "run_ids": LIST, "runs": LIST,
    "tuning_runs": LIST}
_RUN_ENTRY = {"run_id": TEXT, "label": TEXT, "seed": INT, "setting": OBJECT}
_CHOICE = {"setting": OBJECT, "score": NUMBER_OR_NULL, "notes": LIST}


class ExperimentRecord:
    """An experiment record (experiments/<id>.json, or suite.json: its copy), checked."""

    @staticmethod
    def check(path: Path, meta: Any) -> dict[str, Any]:
        """``meta`` when every field the store, `status`, `runs` and the report read has its
        type; MalformedRecord naming the first that has not."""
        need(path, "the file", meta, OBJECT)
        need_fields(path, meta, _EXPERIMENT_FIELDS)
        need_list_of(path, "seeds", meta.get("seeds", []), INT)
        need_list_of(path, "run_ids", meta.get("run_ids", []), TEXT)
        for field in ("runs", "tuning_runs"):
            for i, entry in enumerate(meta.get(field, [])):
                need(path, f"{field}[{i}]", entry, OBJECT)
                need(path, f"{field}[{i}].run_id", entry.get("run_id"), TEXT)
                need_fields(path, entry, _RUN_ENTRY, f"{field}[{i}].")
        for label, choice in meta.get("choices", {}).items():
            need(path, f"choices.{label}", choice, OBJECT)
            need_fields(path, choice, _CHOICE, f"choices.{label}.")
            need_list_of(path, f"choices.{label}.notes", choice.get("notes", []), TEXT)
        return meta

    @classmethod
    def read(cls, path: Path) -> dict[str, Any]:
        return cls.check(path, load_json(path))


# ---- lines of metrics.jsonl and attempts.jsonl: a bad line is skipped, like a torn one ----

_METRICS_LINE = {"step": INT, "total": INT, "time": NUMBER}
_ATTEMPT_LINE = {"event": TEXT, "attempt": INT, "status": TEXT, "error": TEXT, "step": INT,
                 "time": NUMBER, "host": TEXT, "pid": INT}


def _line_ok(item: Any, fields: dict[str, tuple]) -> bool:
    return isinstance(item, dict) and all(ok(item[k]) for k, (ok, _) in fields.items()
                                          if k in item)


def metrics_line(item: Any) -> bool:
    """Is ``item`` a metrics.jsonl line: kind eval or step, an integer step, numbers?"""
    return _line_ok(item, _METRICS_LINE) and item.get("kind") in ("eval", "step") and \
        "step" in item and all(is_scalar(v) for v in item.values())


def attempt_line(item: Any) -> bool:
    """Is ``item`` an attempts.jsonl line with every known field of its type?"""
    return _line_ok(item, _ATTEMPT_LINE)


def json_lines(path: Path, keep) -> list[dict[str, Any]]:
    """The lines of a JSON-lines file that parse and that ``keep`` accepts (missing file:
    none; a torn last line, a foreign line, a FIFO or device: skipped)."""
    try:
        text = read_regular_text(path, MAX_RESULT_BYTES)
    except OSError:
        return []
    items = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if keep(item):
            items.append(item)
    return items
