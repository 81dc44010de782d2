"""Experiments: the runs one `lossbench run` invocation asked for, as its suite resolved.

The store (``DIR/runs/<run_id>/``) is a cache shared by every suite written into DIR: a run
with the same config is the same run, whoever asked for it. What a table, a report or
``load()`` shows is one experiment's runs, so a 100-step rerun of an 800-step suite, or a
3-loss subset, never mixes with (or replaces) the earlier experiment:

    DIR/experiments/<id>.json  one per distinct resolved suite: what suite.json always held
                               (name, description, path, seeds, baseline, target_val_ce,
                               run_ids = the final runs, tune, tuning_runs, choices) plus
                               id, key, created, updated (UTC), runs (label and seed of
                               each final run) and config (flattened, for diffs)
    DIR/suite.json             a copy of the latest experiment: what older lossbench wrote
                               and what `report` and `compare` read by default

Which experiment is the latest is decided by ``seq``, a number each invocation takes one
higher than every record's (under the table lock), never by the clock: a machine whose
clock runs behind (or a copy from another machine) still makes its run the latest, so
load(), summary.csv and the report agree with what `lossbench run` printed. Records
without one (older lossbench) come first, ordered by time.

An id is ``<name>-<UTC yyyymmddThhmmss>-<8 hex of the key>``; the key hashes what decides
the results and the report (name, baseline, target, tuning, run ids), so rerunning an
identical suite reuses its experiment instead of adding a duplicate. A directory written by
an older lossbench (a suite.json without an id) is one experiment whose id comes from
suite.json's modification time; the next `lossbench run` there records it under that id.
Experiment files may come from anyone: ids and run ids must be plain names.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossbench.core.atomic import atomic_write_json, sweep_temp_files
from lossbench.core.locks import file_lock
from lossbench.core.paths import contained, name_problem, safe_name
from lossbench.core.schema import TABLES_LOCK
from lossbench.core.schema import DONE
from lossbench.store.runs import StoreError, read_json_object, run_dir

if TYPE_CHECKING:
    from lossbench.core.config import RunConfig

EXPERIMENTS = "experiments"
_NOT_CONFIG = ("loss", "hparams", "seed", "label")  # what differs between a suite's runs


class UnknownExperiment(LookupError):
    """An experiment selector that names no experiment of the directory (one line)."""


def suite_meta(out: str | Path) -> dict[str, Any]:
    """suite.json: the suite as resolved, its final run ids and, if tuned, the tuning.
    ``{}`` when absent; StoreError when it is not a JSON object (it may come from anyone)."""
    path = Path(out) / "suite.json"
    return read_json_object(path) if path.exists() else {}


def _iso(when: dt.datetime) -> str:
    """UTC to the microsecond: two invocations in one second still have an order."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_utc() -> str:
    return _iso(dt.datetime.now(dt.timezone.utc))


def _stamp(iso: str) -> str:
    """'2026-11-24T00:48:27.123456Z' -> '20261124T004827' (the time part of an id)."""
    return iso[:19].replace("-", "").replace(":", "")


def flat_config(suite) -> dict[str, Any]:
    """The suite's shared settings as ``section.key -> value`` (plus seeds and losses):
    what `lossbench runs` diffs between experiments."""
    flat: dict[str, Any] = {"seeds": list(suite.seeds),
                            "losses": [r.display_name for r in suite.entries]}
    for key, value in suite.entries[0].to_dict().items():
        if key in _NOT_CONFIG:
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def experiment_key(meta: dict[str, Any], run_ids: list[str]) -> str:
    """What makes two invocations the same experiment: the same runs, reported the same way."""
    blob = json.dumps({"name": meta.get("name"), "baseline": meta.get("baseline"),
                       "target_val_ce": meta.get("target_val_ce"), "tune": meta.get("tune"),
                       "runs": sorted(set(run_ids))}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def new_meta(suite) -> tuple[dict[str, Any], list[RunConfig], list[str]]:
    """An experiment record for ``suite`` before it runs (id, times and key are set by
    :func:`open_experiment`), the runs to train first (the tuning runs when tuned, else
    the final runs), and the run ids that identify it (with [tune], the tuning runs and
    the untuned candidates: the final runs are only known after the tuning)."""
    meta = {"name": suite.name, "description": suite.description, "path": suite.path,
            "seeds": list(suite.seeds), "baseline": suite.baseline,
            "target_val_ce": suite.target_val_ce, "run_ids": [], "runs": [],
            "config": flat_config(suite)}
    candidates = [r.run_id() for r in suite.runs]
    if suite.tune is None:
        meta.update(final_runs_of(suite.runs))
        return meta, list(suite.runs), candidates
    from lossbench.suite.tuning import tuning_runs

    tuning = tuning_runs(suite.tune, suite.entries)
    meta["tune"] = suite.tune.to_dict()
    meta["tuning_runs"] = [{"run_id": t.config.run_id(), "label": t.label,
                            "setting": t.setting} for t in tuning]
    return meta, [t.config for t in tuning], [t["run_id"] for t in meta["tuning_runs"]] + candidates


def find_experiment(out: str | Path, meta: dict[str, Any], run_ids: list[str]
                    ) -> dict[str, Any] | None:
    """The latest experiment of ``out`` that an invocation of ``meta`` would reuse."""
    key = experiment_key(meta, run_ids)
    same = [r for r in list_experiments(out) if r.get("key") == key]
    return same[-1] if same else None


def final_runs_of(configs) -> dict[str, Any]:
    """The record's fields for the final runs: their ids, and label and seed of each (so
    `lossbench status` can name runs that have not started)."""
    return {"run_ids": [r.run_id() for r in configs],
            "runs": [{"run_id": r.run_id(), "label": r.display_name, "seed": r.seed}
                     for r in configs]}


def run_ids_of(meta: dict[str, Any], final_only: bool = False) -> list[str] | None:
    """The experiment's run ids: tuning runs then final runs (only the final ones with
    ``final_only``); None when the record lists none (a hand-made directory: every run).
    A run id becomes a folder name, so one that is not a plain name is refused."""
    ids = meta.get("run_ids")
    tuning = [] if final_only else [t.get("run_id") for t in meta.get("tuning_runs", [])
                                    if isinstance(t, dict)]
    # "runs" marks a record this lossbench wrote: no run ids there means none (yet: a tuned
    # sweep still tuning); in an older or hand-made suite.json, every run
    if not isinstance(ids, list) or (not ids and not tuning and "runs" not in meta):
        return None
    out = list(dict.fromkeys([*tuning, *ids]))
    for run_id in out:
        if problem := name_problem(run_id):
            raise StoreError(f"experiment {meta.get('id', '')}: run id {problem}")
    return out


def _read_record(path: Path) -> dict[str, Any]:
    """One experiments/<id>.json, checked: a JSON object whose id is its file's name."""
    meta = read_json_object(path)
    if meta.get("id") != path.stem or name_problem(meta.get("id")):
        raise StoreError(f"{path}: its id {meta.get('id')!r} is not its file's name")
    return meta


def legacy_experiment(out: str | Path) -> dict[str, Any] | None:
    """suite.json of a directory an older lossbench wrote (no id) as an experiment record;
    None when suite.json is absent or already an experiment's copy."""
    path = Path(out) / "suite.json"
    meta = suite_meta(out)
    if not meta or "id" in meta:
        return None
    iso = _iso(dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc))
    # a bad name is refused where it is used (reports); the id must be a plain name anyway
    name = "suite" if name_problem(meta.get("name")) else meta["name"]
    key = experiment_key(meta, run_ids_of(meta) or [])
    return {**meta, "id": _make_id(name, iso, key), "key": key, "created": iso, "updated": iso}


def _make_id(name: str, iso: str, key: str) -> str:
    return f"{name[:60]}-{_stamp(iso)}-{key[:8]}"  # at most 86 characters: a plain name


def list_experiments(out: str | Path, problems: list[str] | None = None) -> list[dict]:
    """Every experiment of ``out``, oldest first (by the last invocation that ran it).
    An unreadable record is left out and named in ``problems``."""
    folder = Path(out) / EXPERIMENTS
    records = []
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            try:
                contained(folder, path, what="experiment file")
                records.append(_read_record(path))
            except (OSError, ValueError) as exc:
                if problems is not None:
                    problems.append(f"experiment {path.name} skipped: {exc}")
                continue
    try:
        legacy = legacy_experiment(out)
    except (OSError, ValueError) as exc:
        legacy = None
        if problems is not None:
            problems.append(str(exc))
    if legacy is not None and legacy["id"] not in {r["id"] for r in records}:
        records.append(legacy)
    return sorted(records, key=_order)


def _order(record: dict) -> tuple:
    """Oldest first: by ``seq`` (records without one first), then by time and id."""
    seq = record.get("seq")
    return (seq if isinstance(seq, int) else 0, str(record.get("updated", "")),
            str(record.get("created", "")), str(record["id"]))


def resolve_experiment(out: str | Path, selector: str | None = None) -> dict[str, Any]:
    """The experiment ``selector`` names (its id, a unique start of it, or "latest"), by
    default the latest: suite.json, its copy. ``{}`` for a directory without either."""
    if selector in (None, "latest"):
        meta = suite_meta(out)
        if meta:
            return legacy_experiment(out) or meta
        records = list_experiments(out)
        return records[-1] if records else {}
    records = list_experiments(out)
    ids = [r["id"] for r in records]
    matches = [r for r in records if r["id"] == selector] or \
              [r for r in records if r["id"].startswith(str(selector))]
    if len(matches) == 1:
        return matches[0]
    what = "matches several" if matches else "names no"
    known = ", ".join(ids) if ids else "none"
    raise UnknownExperiment(f"--experiment: {selector!r} {what} experiment of {out} "
                            f"(experiments: {known})")


def _write(out: Path, meta: dict[str, Any], records: list[dict]) -> None:
    """Write the record, and suite.json when no other experiment ran later (two sweeps in
    one directory at once: the one started last stays the latest). Table lock held."""
    sweep_temp_files(out / EXPERIMENTS, root=out)
    atomic_write_json(out / EXPERIMENTS / f"{safe_name(meta['id'])}.json", meta, root=out)
    later = [r for r in records if r["id"] != meta["id"] and _order(r) > _order(meta)]
    if not later:
        atomic_write_json(out / "suite.json", meta, root=out)


CLAIM_STAMPS = ("stated_at", "after_results")


def _claim_key(claim: dict) -> str:
    return json.dumps({k: v for k, v in claim.items() if k not in CLAIM_STAMPS},
                      sort_keys=True, default=str)


def stamp_claims(claims: list, before: list, now: str, results_exist: bool) -> list[dict]:
    """Each claim with when it was stated: a claim the record already had, unchanged,
    keeps its stamp; a new or edited one is stated ``now``, and ``after_results`` when
    some of the experiment's runs had finished by then (the table could have suggested
    it)."""
    old = {_claim_key(c): c for c in before or [] if isinstance(c, dict)}
    out = []
    for c in claims or []:
        prev = old.get(_claim_key(c))
        if prev is not None and isinstance(prev.get("stated_at"), str):
            out.append({**c, "stated_at": prev["stated_at"],
                        "after_results": prev.get("after_results") is True})
        else:
            out.append({**c, "stated_at": now, "after_results": results_exist})
    return out


def open_experiment(out: str | Path, meta: dict[str, Any], run_ids: list[str]) -> dict[str, Any]:
    """Record an invocation of a suite that will run ``run_ids`` (final or, when tuned,
    tuning and untuned candidate runs): the experiment with the same key, if the directory
    has one, or a new one. Returns the record as written (id, key, created, updated)."""
    out = Path(out)
    key = experiment_key(meta, run_ids)
    with file_lock(out / TABLES_LOCK, root=out):
        legacy = legacy_experiment(out)
        if legacy is not None:  # keep an older lossbench's suite under its own id
            atomic_write_json(out / EXPERIMENTS / f"{legacy['id']}.json", legacy, root=out)
        records = list_experiments(out)
        same = [r for r in records if r.get("key") == key]
        now = now_utc()
        seq = 1 + max((r["seq"] for r in records if isinstance(r.get("seq"), int)), default=0)
        known = {*run_ids, *(same[-1].get("run_ids") or [] if same else [])}
        done = any((run_dir(out, str(r)) / DONE).exists() for r in known
                   if isinstance(r, str) and not name_problem(r))
        meta = {**meta, "claims": stamp_claims(meta.get("claims"), same[-1].get("claims")
                                               if same else [], now, done)}
        if same:  # an identical rerun: the same experiment, run again
            old = same[-1]
            kept = {k: old[k] for k in ("run_ids", "runs", "choices")
                    if k in old and not meta.get(k)}  # known until this run recomputes them
            record = {**meta, **kept, "id": old["id"], "key": key,
                      "created": old.get("created", now), "updated": now, "seq": seq}
        else:
            record = {**meta, "id": _make_id(safe_name(meta["name"]), now, key), "key": key,
                      "created": now, "updated": now, "seq": seq}
        _write(out, record, records)
    return record


def save_experiment(out: str | Path, meta: dict[str, Any]) -> None:
    """Rewrite an opened experiment's record (run ids known, tuning choices made)."""
    out = Path(out)
    with file_lock(out / TABLES_LOCK, root=out):
        _write(out, meta, list_experiments(out))


def config_diff(before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    """'train.steps 800→100; seeds [0, 1]→[0]': the flattened settings that changed."""
    if not before:
        return "-"
    a, b = before.get("config") or {}, after.get("config") or {}
    if not a or not b:
        return "?"  # an older record: no settings kept
    changes = [f"{k} {_short(a.get(k))}→{_short(b.get(k))}"
               for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    for k in ("baseline", "target_val_ce"):
        if before.get(k) != after.get(k):
            changes.append(f"{k} {_short(before.get(k))}→{_short(after.get(k))}")
    return "; ".join(changes) or "same settings"


def _short(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
