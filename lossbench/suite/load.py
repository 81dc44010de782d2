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
    [tune]   grid = { lr = { log_grid = [1e-4, 1e-2, 5] } }   # optional, see lossbench.suite.tuning
    [scale]  params = [5e4, 2e5, 8e5]   # optional: every run at every size, see lossbench.suite.scale
    target_val_ce = 1.5                 # optional; steps-to-target's target in reports

A list value in a loss table is a grid. Everything is validated before any run
starts, and every problem is reported at once, one line each, naming the file
and the key.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossbench.core.config import (
    ReportConfig,
    RunConfig,
    parse_seeds,
)
from lossbench.core.paths import name_problem
from lossbench.core.text import did_you_mean
from lossbench.losses import get_loss, list_losses
from lossbench.suite.claims import Claim, parse_claims
from lossbench.suite.preflight import (
    device_problem,
    missing_paths,
    resolve_corpus,
    resolve_losses,
    resolve_model,
    tune_problems,
)
from lossbench.suite.scale import ScaleSpec, at_size, parse_scale
from lossbench.suite.sections import (SECTIONS, finetune_problems, loss_entries, needs_ngram,
                                      parse_log, parse_report, parse_section)
from lossbench.suite.source import (  # noqa: F401  parse_override: public here too
    SuiteError,
    apply_overrides,
    attribute,
    parse_override,
    read_toml,
)
from lossbench.data.corpora import corpus_facts
from lossbench.suite.teacher import drop_unused_teacher, resolve_teacher, take_teacher
from lossbench.suite.tuning import TuneSpec, parse_tune

TOP_LEVEL = {"name", "description", "seeds", "losses", "baseline", "device", "target_val_ce",
             "claims", "report",
             "tune", "log", "scale", *SECTIONS}

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
    log: tuple[str, ...] = ()  # experiment trackers ([log] trackers = [...]); not in run ids
    scale: ScaleSpec | None = None  # a ladder of model sizes: `runs` holds every size
    claims: tuple[Claim, ...] = ()  # [[claims]]: effects the report tests (lossbench.suite.claims)
    teachers: tuple[RunConfig, ...] = ()  # teacher runs, trained before the students
    report: ReportConfig = ReportConfig()  # [report]: how the report judges (no run id)


def load_suite(path: str | Path, overrides: list[str] | tuple[str, ...] = (), *,
               seeds: list[int] | None = None, device: str | None = None) -> Suite:
    """Parse, validate and expand a suite. Raises SuiteError listing every problem.
    ``overrides``: ``--set KEY=VALUE`` texts; ``seeds`` and ``device`` replace the file's."""
    where = str(path)
    doc = read_toml(path)
    overridden = apply_overrides(doc, list(overrides))
    if seeds is not None:
        doc["seeds"] = list(seeds)
    if device is not None:
        doc["device"] = device
    try:
        return _expand(doc, Path(path), where)
    except SuiteError as exc:  # every problem, each under the file or the --set behind it
        raise SuiteError([attribute(e, where, overridden) for e in exc.errors]) from None


def _expand(doc: dict, path: Path, where: str) -> Suite:
    """The body of :func:`load_suite`: every check that can run, then the runs."""
    errors: list[str] = []
    skipped: list[str] = []  # checks that need what is invalid: said, not silently dropped
    teacher_spec = take_teacher(doc)  # teacher = { run = ... } and [teacher_model]
    name, description, seeds, device = _header(doc, path, where, errors)
    sections, valid, entries, missing = _sections_and_losses(doc, path, where, device, errors,
                                                             skipped)
    teacher_model, teacher_run = _teacher(teacher_spec, sections, valid, missing, device, where,
                                          errors, skipped)
    baseline, target, log, claims, report = _comparison(doc, entries, where, errors)
    tune, scale = _tune_and_scale(doc, where, sections, valid, entries, seeds, device,
                                  errors, skipped)
    if errors:
        if skipped:  # on the last line: each problem stays one line
            errors[-1] += (f" (more problems may follow: {'; '.join(skipped)} are checked "
                           f"once these are fixed)")
        raise SuiteError(errors)
    runs, contenders = _runs(entries, sections, seeds, device, tune, scale, where, teacher_model)
    return Suite(name=name, description=description, path=where, seeds=tuple(seeds),
                 baseline=baseline, runs=runs, entries=contenders, tune=tune,
                 target_val_ce=None if target is None else float(target), log=log,
                 claims=claims, scale=scale, report=report,
                 teachers=(teacher_run,) if teacher_run is not None else ())


def _header(doc: dict, path: Path, where: str, errors: list[str]):
    """The top-level keys: name, description, seeds, device."""
    for key in doc:
        if key not in TOP_LEVEL:
            errors.append(f"{where}: unknown key or section {key!r}{did_you_mean(key, TOP_LEVEL)}")
    name = doc.get("name", path.stem)
    if problem := name_problem(name):  # it becomes results/<name>
        errors.append(f"{where}: name: {problem}")
    description = doc.get("description", "")
    if not isinstance(description, str):
        errors.append(f"{where}: description: expected a string")
    seeds = parse_seeds(doc.get("seeds", [0]))  # `seeds = 3` means 0, 1, 2
    if seeds is None:
        errors.append(f"{where}: seeds: expected a non-empty list of non-negative integers")
        seeds = [0]
    device = doc.get("device", "cpu")
    if problem := device_problem(device):
        errors.append(f"{where}: device: {problem}")
    return name, description, seeds, device


def _sections_and_losses(doc: dict, path: Path, where: str, device: str, errors: list[str],
                         skipped: list[str]):
    """The config sections (the corpus and model resolved where they are valid) and the
    losses' entries; ``valid`` maps each section to whether it parsed cleanly."""
    sections, bad = {}, {}
    for name in SECTIONS:
        sections[name], bad[name] = parse_section(doc, name, where, errors)
    valid = {k: not v for k, v in bad.items()}
    if valid["train"]:
        errors += [f"{where}: [train] {m}" for _, m in sections["train"].schedule_problems()]
    if valid["finetune"]:
        errors += [f"{where}: {m}" for m in finetune_problems(sections["finetune"],
                                                               [s.name for s in list_losses()])]
    entries = loss_entries(doc, where, errors)
    missing = missing_paths(sections["data"], sections["model"], path.parent)
    errors += [f"{where}: {m}" for lines in missing.values() for m in lines]
    # the corpus with this model (its block size) and batch (memory): the rest of [train]
    # may be invalid (lr = nan) without hiding a split too short or a model too big
    if valid["data"] and valid["model"] and not bad["train"] & {"*", "batch_size"} \
            and "data" not in missing:
        sections["data"], problems = resolve_corpus(
            sections["data"], sections["model"], sections["train"], device=device,
            needs_ngram=needs_ngram(sections["data"], sections["finetune"], entries))
        errors += [f"{where}: {m}" for m in problems]
    else:
        skipped.append("the corpus's files, split sizes and memory")
    if valid["model"] and "model" not in missing:
        sections["model"], problems = resolve_model(sections["model"])
        errors += [f"{where}: {m}" for m in problems]
        hidden = sorted({n for n, _, _ in entries if get_loss(n).needs_hidden})
        if hidden and not problems:
            from lossbench.models import hidden_problem
        if hidden and not problems and (problem := hidden_problem(sections["model"])):
            errors.append(f"{where}: {problem} (needed by {', '.join(hidden)})")
    else:
        skipped.append("the model's definition and init_from weights")
    return sections, valid, entries, missing


def _teacher(spec, sections: dict, valid: dict, missing: dict, device: str, where: str,
             errors: list[str], skipped: list[str]):
    """(the teacher's model config, the teacher run) of a model teacher, each None without
    one; ``sections["data"]`` gets the teacher's resolved fields."""
    teacher_model, teacher_run = None, None
    if valid["data"] and valid["model"] and valid["train"] and valid["eval"] \
            and "data" not in missing:
        vocab = corpus_facts(sections["data"]).vocab_size \
            if sections["data"].teacher == "model" and sections["data"].teacher_from else None
        sections["data"], teacher_model, teacher_run, problems = resolve_teacher(
            spec, sections, device=device, vocab=vocab, where=where)
        errors += problems
    elif spec.run is not None or spec.model is not None:
        skipped.append("the teacher")
    return teacher_model, teacher_run


def _comparison(doc: dict, entries: list, where: str, errors: list[str]):
    """What the runs are compared on: the baseline, the target CE, the live log, the claims,
    and how the report judges them ([report])."""
    baseline = doc.get("baseline", "cross_entropy")
    names = {x.get("label") or n for n, _, x in entries}
    if entries and baseline not in names:
        errors.append(f"{where}: baseline: {baseline!r} is not among the suite's losses")
    target = doc.get("target_val_ce")
    number = isinstance(target, (int, float)) and not isinstance(target, bool)
    if target is not None and not (number and math.isfinite(target) and target > 0):
        errors.append(f"{where}: target_val_ce: expected a positive number, got {target!r}")
    log = parse_log(doc.get("log", {}), where, errors)
    report = parse_report(doc.get("report", {}), where, errors)
    claims = parse_claims(doc["claims"], where, sorted(names), errors) if "claims" in doc else ()
    return baseline, target, log, claims, report


def _tune_and_scale(doc: dict, where: str, sections: dict, valid: dict, entries: list,
                    seeds: list[int], device: str, errors: list[str], skipped: list[str]):
    """The [tune] and [scale] sections, each checked once what it needs is valid."""
    tune = None
    if "tune" in doc:
        tune = parse_tune(doc["tune"], where, errors, suite_steps=sections["train"].steps,
                          suite_seeds=list(seeds), loss_names=[n for n, _, _ in entries])
        for loss, hp, _ in entries:
            for param in set(hp) & set(tune.params if tune else ()):
                errors.append(f"{where}: {loss} fixes {param}, which [tune] also tunes: "
                              f"drop one of them")
        if tune and valid["train"]:
            errors += [f"{where}: {m}" for m in tune_problems(tune, sections["train"])]
        elif tune:
            skipped.append("[tune]'s schedules")
    scale = None
    if "scale" in doc and valid["data"] and valid["model"] and valid["train"]:
        scale = _parse_scale(doc["scale"], where, errors, sections, device)
    elif "scale" in doc:
        skipped.append("the [scale] ladder")
    return tune, scale


def _runs(entries: list, sections: dict, seeds: list[int], device: str, tune, scale,
          where: str, teacher_model) -> tuple[tuple[RunConfig, ...], tuple[RunConfig, ...]]:
    """(every run: contenders x seeds, x sizes with a ladder; the contenders)."""
    contenders = tuple(drop_unused_teacher(resolve_losses(RunConfig(
        loss=loss, hparams=hp, seed=seeds[0], device=device, teacher_model=teacher_model,
        **{**sections, **extras}))) for loss, hp, extras in entries)
    labels = [c.display_name for c in contenders]
    if tune and len(set(labels)) < len(labels):
        repeated = ", ".join(sorted({x for x in labels if labels.count(x) > 1}))
        raise SuiteError([f"{where}: with [tune], every losses entry needs its own label "
                          f"(repeated: {repeated})"])
    runs = tuple(dataclasses.replace(c, seed=seed) for c in contenders for seed in seeds)
    if scale is not None:  # every size; entries stay the contenders at the smallest size
        runs = tuple(scale.expand(runs))
        contenders = tuple(at_size(c, scale.sizes[0]) for c in contenders)
    return runs, contenders


def _parse_scale(table: Any, where: str, errors: list[str], sections: dict,
                 device: str) -> ScaleSpec | None:
    """The ladder at the corpus's vocabulary; the largest size must fit the machine too."""
    from lossbench.data.corpora import corpus_facts

    try:
        vocab = corpus_facts(sections["data"]).vocab_size
    except (ValueError, OSError, ImportError):
        return None  # the corpus's own problem (a missing extra too) is already listed
    scale = parse_scale(table, where, errors, model=sections["model"],
                        train=sections["train"], vocab=vocab)
    if scale is not None:
        top = at_size(RunConfig(model=sections["model"], train=sections["train"]),
                      scale.sizes[-1])
        _, problems = resolve_corpus(sections["data"], top.model, top.train, device=device,
                                     needs_ngram=False)
        errors += [f"{where}: [scale] size {scale.sizes[-1].label}: {m}" for m in problems]
    return scale
