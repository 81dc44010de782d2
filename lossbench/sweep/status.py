"""The state of an experiment's runs, read while a sweep trains them (`lossbench status`,
`lossbench runs`). Only reads: a run's lock is tested with a shared, non-blocking flock on a
read-only descriptor (never created), and its live metrics come from metrics.jsonl."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from lossbench.core.schema import LOCK
from lossbench.core.paths import name_problem
from lossbench.store.experiments import run_ids_of
from lossbench.core.schema import METRICS
from lossbench.store.metrics_log import read_metrics
from lossbench.store.records import MalformedRecord, run_config
from lossbench.store.runs import (
    DONE,
    MalformedResult,
    StoreError,
    attempts,
    check_run_folder,
    label_of,
    read_result,
    run_dir,
)
from lossbench.core.schema import CHECKPOINT

# metrics written this recently mean running, even when the lock is not visible here (a
# Dask worker on another machine: flock does not cross every network filesystem)
RECENT_S = 60.0
PAUSE_S = 120.0  # a longer gap between two lines of metrics.jsonl: another attempt


@dataclass(frozen=True)
class RunState:
    run_id: str
    label: str
    seed: int | str
    phase: str  # "tuning" | "final"
    state: str  # done | diverged | failed | running | stopped | not started | unreadable
    step: int | None
    total: int | None
    val_ce: float | None  # the latest evaluation's
    eta_s: float | None  # running runs: seconds to their last step, at their recent pace
    rate: float | None = None  # steps per second (running runs)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "diverged", "failed")


def lock_held(path: Path) -> bool:
    """Does another process hold this flock? (A shared lock taken and dropped at once; a
    missing lock file means nobody ever trained the run.)"""
    try:  # never blocking on a FIFO, never through a symlink
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)  # releases the shared lock, if taken


def _pace(lines: list[dict], now: float) -> tuple[float | None, float | None]:
    """(steps per second, seconds since the last line) over the current attempt's lines:
    the trailing ones whose steps increase without a long pause (a resume keeps the lines
    of the steps before its checkpoint, written by an earlier attempt)."""
    timed = [(x["step"], x["time"]) for x in lines if isinstance(x.get("time"), (int, float))]
    if not timed:
        return None, None
    segment = [timed[-1]]
    for step, t in reversed(timed[:-1]):
        gaps = sorted(b[1] - a[1] for a, b in zip(segment, segment[1:]))
        usual = gaps[len(gaps) // 2] if gaps else 0.0
        if step > segment[0][0] or t > segment[0][1] or \
                segment[0][1] - t > max(PAUSE_S, 5 * usual):
            break
        segment.insert(0, (step, t))
    (s0, t0), (s1, t1) = segment[0], segment[-1]
    rate = (s1 - s0) / (t1 - t0) if s1 > s0 and t1 > t0 else None
    return rate, max(0.0, now - t1)


def _config(folder: Path, problems: list[str] | None) -> dict:
    """The run's config.json (checked: lossbench.store.records), or {} with a problem."""
    try:
        return run_config(folder)
    except FileNotFoundError:
        return {}
    except (OSError, MalformedRecord) as exc:
        if problems is not None:
            problems.append(f"{exc}; skipped")
        return {}


def _ended(folder: Path) -> bool:
    """Did the run's latest attempt record its end (stopped, failed or finished)? Then
    recent metrics do not mean it is still running."""
    events = attempts(folder)
    return bool(events) and events[-1].get("event") == "end"


def run_state(out: Path, run_id: str, label: str | None = None, seed: int | str = "",
              phase: str = "final", now: float | None = None,
              problems: list[str] | None = None) -> RunState:
    """The state of one run, read from its folder; what could not be read is named in
    ``problems`` (the run is shown as unreadable or by what could be read)."""
    now = time.time() if now is None else now
    folder = run_dir(out, run_id)
    if not folder.is_dir():
        return RunState(run_id, label or run_id, seed, phase, "not started", None, None,
                        None, None)
    try:
        check_run_folder(out, folder)
    except StoreError as exc:
        if problems is not None:
            problems.append(f"{exc}; skipped")
        return RunState(run_id, label or run_id, seed, phase, "unreadable", None, None,
                        None, None)
    config = _config(folder, problems)
    if config.get("loss"):
        label, seed = label or label_of(config), config.get("seed", seed)
    train, finetune = config.get("train") or {}, config.get("finetune") or {}
    total = (train.get("steps", 0) + finetune.get("steps", 0)) or None
    metrics = read_metrics(folder)
    try:
        recent = now - (folder / METRICS).stat().st_mtime < RECENT_S
    except OSError:
        recent = False
    done = (folder / DONE).exists()
    running = lock_held(folder / LOCK) or (recent and not done and not _ended(folder))
    if done and not running:
        try:
            r = read_result(folder)
        except (OSError, MalformedResult) as exc:
            if problems is not None:
                problems.append(f"{exc}; skipped")
            return RunState(run_id, label or run_id, seed, phase, "unreadable", None, total,
                            None, None)
        value = r["summary"].get("final_val_ce")
        return RunState(run_id, label or label_of(r["config"]), r["config"]["seed"], phase,
                        r["status"], r["summary"].get("steps"), total,
                        value if isinstance(value, (int, float)) else None, None)
    step = metrics[-1]["step"] if metrics else None
    totals = [x["total"] for x in metrics if isinstance(x.get("total"), int)]
    total = totals[-1] if totals else total
    evals = [x for x in metrics
             if x["kind"] == "eval" and isinstance(x.get("val_ce"), (int, float))]
    val_ce = evals[-1]["val_ce"] if evals else None
    if not running:
        state = "stopped" if (folder / CHECKPOINT).exists() or metrics else "not started"
        return RunState(run_id, label or run_id, seed, phase, state, step, total, val_ce, None)
    rate, since = _pace(metrics, now)
    eta = None
    if rate and total is not None and step is not None:
        eta = max(0.0, (total - step) / rate - (since or 0.0))
    return RunState(run_id, label or run_id, seed, phase, "running", step, total, val_ce, eta,
                    rate)


def experiment_states(out: str | Path, meta: dict,
                      problems: list[str] | None = None) -> list[RunState]:
    """Every run of the experiment, tuning runs first, in the order the sweep trains them.
    Without a record of run ids (a hand-made directory): every run folder. A run whose
    steps are not known yet (not started) counts the experiment's usual total, so the ETA
    covers it. What could not be read is named in ``problems``."""
    out, now = Path(out), time.time()
    names = {r["run_id"]: (r.get("label"), r.get("seed", ""))
             for r in meta.get("runs", []) if isinstance(r, dict) and "run_id" in r}
    tuning = {t["run_id"]: t.get("label") for t in meta.get("tuning_runs", [])
              if isinstance(t, dict) and "run_id" in t}
    ids = run_ids_of(meta)
    if ids is None:
        runs = out / "runs"
        ids = sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []
    teachers = [t["run_id"] for t in meta.get("teacher_runs", [])  # trained first
                if isinstance(t, dict) and isinstance(t.get("run_id"), str)
                and not name_problem(t["run_id"]) and t["run_id"] not in ids]
    states = [run_state(out, t, "teacher", 0, "teacher", now) for t in teachers]
    for run_id in ids:
        label, seed = names.get(run_id, (tuning.get(run_id), ""))
        states.append(run_state(out, run_id, label, seed,
                                "tuning" if run_id in tuning else "final", now, problems))
    return _with_totals(states, meta)


def _with_totals(states: list[RunState], meta: dict) -> list[RunState]:
    """States whose total is unknown (not started) given the usual total of the others,
    or the experiment's configured steps."""
    known = sorted(s.total for s in states if s.total)
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    steps = [config.get("train.steps"), config.get("finetune.steps")]
    configured = sum(x for x in steps if isinstance(x, int) and not isinstance(x, bool))
    usual = known[len(known) // 2] if known else (configured or None)
    if usual is None:
        return states
    return [s if s.total or s.finished else dataclasses.replace(s, total=usual)
            for s in states]


def overall(states: list[RunState]) -> tuple[dict[str, int], float | None]:
    """Counts by state, and the seconds left at the running runs' combined pace."""
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    pace = sum(s.rate for s in states if s.state == "running" and s.rate)
    left = sum(max(0, (s.total or 0) - (s.step or 0)) for s in states if not s.finished)
    eta = left / pace if pace and math.isfinite(pace) else None
    return counts, eta
