"""The suite-key reference (docs/reference/suite-keys.md), generated from the code.

Every key a suite file may hold is listed from the sets the loader checks against
(``TOP_LEVEL``, the config dataclasses' fields, ``TUNE_KEYS``, ``SCALE_KEYS``, the claim
``KEYS``), with the type, default and accepted range declared in each field's metadata
(:func:`lossbench.core.fields.ranged`) and the field's own ``doc``. The docs build calls
:func:`suite_keys_markdown` (an MkDocs hook, docs/hooks.py), so the site's page is
written afresh on every build; the copy committed for readers of the repository is
checked against it by tests/test_suite_keys.py. A key the loader accepts without a
description raises instead of leaving a hole in the page.

    python -m lossbench.suite.keys > docs/reference/suite-keys.md    # after changing a field
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from lossbench.core.config import TRACKERS, ReportConfig
from lossbench.core.fields import doc_of
from lossbench.suite.claims import KEYS as CLAIM_KEYS
from lossbench.suite.load import SECTIONS, TOP_LEVEL
from lossbench.suite.scale import SCALE_KEYS
from lossbench.suite.tuning import METRICS, TUNE_KEYS

# The top-level keys, in the order a suite usually writes them: (default, description).
TOP_LEVEL_DOCS: dict[str, tuple[str, str]] = {
    "name": ("the file's name", "the suite's name, a plain name (letters, digits, `.`, `_`, "
             "`-`): results go to `results/NAME/`"),
    "description": ('`""`', "one line shown at the top of the report"),
    "seeds": ("`[0]`", "a list of non-negative integers, or `n` for seeds 0..n-1; "
              "`--seeds` replaces it"),
    "losses": ("required", "loss names, or tables `{ name = \"focal\", gamma = [1.0, 2.0], "
               "label = \"...\", finetune = { ... } }`: a list value is a grid (one contender "
               "per grid point), `label` names the entry in reports, `finetune` replaces "
               "`[finetune]` for that entry"),
    "baseline": ('`"cross_entropy"`', "the label every loss is compared with in the report; "
                 "must be among the losses"),
    "device": ('`"cpu"`', '`"cpu"`, `"cuda"` (bf16 autocast) or `"mps"` (Apple GPUs); '
               "part of every run id; `--device` replaces it"),
    "target_val_ce": ("the baseline's final val CE × 1.05",
                      "a positive number: the target of steps-to-target in reports, claims "
                      "and `lossbench compare`"),
    "data": ("", "the corpus, tokenizer and teacher: [`[data]`](#data)"),
    "model": ("", "the model: [`[model]`](#model)"),
    "train": ("", "optimization: [`[train]`](#train)"),
    "eval": ("", "evaluation: [`[eval]`](#eval)"),
    "finetune": ("", "an optional fine-tuning phase: [`[finetune]`](#finetune)"),
    "tune": ("no tuning", "per-loss tuning before the runs: [`[tune]`](#tune)"),
    "scale": ("one size", "a ladder of model sizes: [`[scale]`](#scale)"),
    "claims": ("none", "effects the report tests: [`[[claims]]`](#claims)"),
    "report": ("", "how the report judges: [`[report]`](#report)"),
    "log": ("none", "experiment trackers: [`[log]`](#log)"),
}

TUNE_DOCS = {
    "grid": "a table of parameter → values: a list, or `{ log_grid = [low, high, points] }`; "
            "`[train]` keys (lr, min_lr, weight_decay, beta1, beta2, grad_clip, "
            "warmup_steps) or a loss's own hyperparameter (only losses that declare it)",
    "steps": "tuning budget per setting (default: the suite's `[train] steps`)",
    "seeds": "tuning seeds (default: the suite's first seed)",
    "metric": f"selection metric, never the training loss (default `val_ce`; one of "
              f"{', '.join(f'`{m}`' for m in METRICS)})",
}

SCALE_DOCS = {
    "params": "parameter counts to build, e.g. `[5e4, 2e5, 8e5]`: each size's shape follows "
              "the shape rule (within 10%, n_embd / n_layer closest to `aspect`)",
    "sizes": "explicit shapes instead of `params`, e.g. `[{ n_layer = 2, n_embd = 64 }]` "
             "(`n_head` defaults to n_embd / head_size)",
    "head_size": "n_embd = head_size × n_head (default 8)",
    "aspect": "the n_embd / n_layer the shape rule aims at (default 32)",
    "steps": "every size trains this many steps",
    "tokens_per_param": "each size gets ceil(r × N / tokens per step) steps (Chinchilla: 20); "
                        "neither this nor `steps`: `[train] steps` at every size",
}

CLAIM_DOCS = {
    "name": "the claim's name in the report",
    "a": "a label, as in the report",
    "b": "a label, or a number (every seed of `a` against a constant)",
    "metric": "any final metric of the report's glossary (`final_` prefix optional), or "
              "`steps_to_target`",
    "direction": "`lower` | `higher` | `equal`",
    "margin": "lower/higher: by more than margin; equal: |a − b| ≤ margin (> 0 required)",
    "source": "where the expected effect was published",
}

LOG_DOCS = {"trackers": f"a list of tracker names: {', '.join(f'`{t}`' for t in TRACKERS)}; "
                        f"`--log` adds to it"}


def _cell(text: str) -> str:
    """Text inside a Markdown table cell: pipes, angle brackets and asterisks literal."""
    for raw, escaped in (("|", "\\|"), ("<", "&lt;"), (">", "&gt;"), ("*", "\\*")):
        text = text.replace(raw, escaped)
    return text


def _toml(value: Any) -> str:
    """A default as a suite would write it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value}`"


_TYPE_NAMES = {int: "integer", float: "number", str: "string", bool: "boolean",
               type(None): "unset"}


def _type(annotation: Any) -> str:
    """'integer', 'string or unset', 'table' (TOML's words for the annotation)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in typing.get_args(annotation))
    if annotation is dict or typing.get_origin(annotation) is dict:
        return "table"
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _accepted(f: dataclasses.Field) -> str:
    """The field's declared range: its choices, or an interval (≥ 1, > 0, [2, 94])."""
    valid = f.metadata.get("range")
    if valid is None:
        return ""
    if valid.choices is not None:
        return ", ".join(f'`"{c}"`' for c in valid.choices)
    if valid.high is None and valid.low is not None:
        return f"{'>' if valid.low_open else '≥'} {valid.low:g}"
    if valid.low is None and valid.high is not None:
        return f"{'<' if valid.high_open else '≤'} {valid.high:g}"
    return str(valid)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # hf_config, model_kwargs, hparams: {}


def _field_rows(cls: type) -> list[str]:
    hints = typing.get_type_hints(cls)
    rows = ["| key | type | default | accepted | description |", "|---|---|---|---|---|"]
    computed = []
    for f in dataclasses.fields(cls):
        if not doc_of(f):
            raise ValueError(f"{cls.__name__}.{f.name} has no description: give its field "
                             f"a doc= (lossbench.core.fields)")
        if f.metadata.get("derived"):
            computed.append(f"`{f.name}`: {_cell(doc_of(f))}")
            continue
        rows.append(f"| `{f.name}` | {_type(hints[f.name])} | {_toml(_default(f))} | "
                    f"{_cell(_accepted(f))} | {_cell(doc_of(f))} |")
    if computed:
        rows += ["", "Computed by lossbench when a suite is resolved (a suite may not set "
                     "them; stored in each run's config):", ""]
        rows += [f"- {line}" for line in computed]
    return rows


def _key_table(keys, docs: dict[str, str], where: str) -> list[str]:
    missing = [k for k in keys if k not in docs]
    if missing:
        raise ValueError(f"{where}: keys without a description in lossbench.suite.keys: "
                         f"{', '.join(sorted(missing))}")
    rows = ["| key | description |", "|---|---|"]
    return rows + [f"| `{k}` | {_cell(docs[k])} |" for k in docs if k in keys]


def _top_level_rows() -> list[str]:
    missing = set(TOP_LEVEL) - set(TOP_LEVEL_DOCS)
    if missing:
        raise ValueError(f"top-level suite keys without a description in "
                         f"lossbench.suite.keys: {', '.join(sorted(missing))}")
    rows = ["| key | default | description |", "|---|---|---|"]
    return rows + [f"| `{k}` | {d} | {text} |" for k, (d, text) in TOP_LEVEL_DOCS.items()
                   if k in TOP_LEVEL]


def suite_keys_markdown() -> str:
    """The whole reference page, Markdown."""
    out = ["# Suite keys", "",
           "<!-- generated by lossbench.suite.keys from the field docs in "
           "lossbench/core/config.py; do not edit, regenerate: python -m "
           "lossbench.suite.keys > docs/reference/suite-keys.md -->", "",
           "Every key a suite file (TOML) may hold. This page is generated from the code "
           "that validates suites: each `[data]`, `[model]`, `[train]`, `[eval]` and "
           "`[finetune]` row is a field of the dataclass in `lossbench/core/config.py`, with "
           "its declared type, default, accepted range and description. Unknown keys, "
           "wrong types and values out of range are refused before any run starts, one "
           "line per problem naming the file and key (exit 2). `--set SECTION.KEY=VALUE` "
           "overrides any of them from the command line.", "",
           "## Top level", ""]
    out += _top_level_rows()
    for name, cls in SECTIONS.items():
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        out += ["", f"## `[{name}]` {{#{name}}}", "", summary, ""]
        out += _field_rows(cls)
    for heading, intro, keys, docs in (
            ("`[tune]` {#tune}", "Per-loss tuning (see [Fair comparison](../tuning.md)). A "
             "`[tune.grid]` table holds the grid.", TUNE_KEYS, TUNE_DOCS),
            ("`[scale]` {#scale}", "A ladder of model sizes (see [Scale ladders](../scale.md)); "
             "`params` or `sizes`, and at most one of `steps` and `tokens_per_param`.",
             SCALE_KEYS, SCALE_DOCS),
            ("`[[claims]]` {#claims}", "One table per claim (see [Claims](../claims.md)); `a`, "
             "`b`, `metric` and `direction` are required.", CLAIM_KEYS, CLAIM_DOCS),
            ("`[report]` {#report}", "How the report judges the runs (see [Statistics]"
             "(../statistics.md)); not part of any run id.", None, ReportConfig),
            ("`[log]` {#log}", "Experiment trackers (see [Sweeps](../sweeps.md#trackers)); not "
             "part of any run id.", LOG_DOCS, LOG_DOCS)):
        where = heading.split("`")[1]
        out += ["", f"## {heading}", "", intro, ""]
        out += _field_rows(docs) if keys is None else _key_table(keys, docs, where)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(suite_keys_markdown(), end="")
