"""What `lossbench run` would do, without doing it (``--dry-run``): each run's state and an
estimate of the sweep's wall time on this machine.

Nothing is started and nothing is written: the results directory is only read (not even
created), checkpoints are read as data (never renamed, unlike a resume), and the timing
probe trains a few steps of the suite's model in this process, in memory.

The estimate comes from the finished runs in the directory that have the same shape (model,
data, batch, evaluation, threads, device: what decides the seconds per step), as seconds
per step × steps; otherwise from a probe of a few optimizer steps and the two kinds of
evaluation of the same model. Runs are then laid out on the workers in order, as the pool
hands them out, plus each worker's start (a Python with torch, the corpus).
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from lossbench.core.config import RunConfig
from lossbench.store.records import run_config
from lossbench.store.runs import (
    DONE,
    GIVE_UP_AFTER,
    MalformedResult,
    check_run_folder,
    read_result,
    run_dir,
    same_failures_in_a_row,
    settled,
    stored_status,
)
from lossbench.suite.load import Suite
from lossbench.core.schema import CHECKPOINT

WORKER_START_S = 3.0  # a spawned worker: Python, torch and lossbench imported (2-3 s idle)
PROBE_STEPS = 10
RUN_OVERHEAD_S = 0.5  # per run, beyond its steps: model, config, result and tables written
# seconds per step only: what a learning rate or step count does not change
_TIMING_FREE = {"loss", "hparams", "seed", "label"}
_TRAIN_TIMING_FREE = {"steps", "lr", "min_lr", "warmup_steps", "decay_steps", "weight_decay",
                      "beta1", "beta2", "grad_clip", "checkpoint_every"}


@dataclass(frozen=True)
class Planned:
    config: RunConfig
    phase: str  # "teacher" | "tuning" | "final"
    state: str  # "finished" | "resumable" | "retry" | "new"
    detail: str  # e.g. "done", "failed 2× in a row, not retried", "after tuning"
    steps_left: int

    @property
    def total(self) -> int:
        return self.config.total_steps

    def to_dict(self) -> dict:
        """One run of the plan for scripts (`lossbench run --dry-run --json`)."""
        return {"run_id": self.config.run_id(), "label": self.config.display_name,
                "loss": self.config.loss, "seed": self.config.seed, "phase": self.phase,
                "state": self.state, "detail": self.detail, "steps_left": self.steps_left,
                "total_steps": self.total}


def _checkpoint_step(folder: Path) -> int | None:
    """The step a checkpoint resumes from; None when there is none or it does not read as a
    lossbench checkpoint (the run then restarts; the sweep, not the dry run, sets it aside)."""
    path = folder / CHECKPOINT
    if not path.exists():
        return None
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # data only, see checkpoint
        step = state.get("next_step") if isinstance(state, dict) else None
    except Exception:
        return None
    return step if isinstance(step, int) and step > 0 else None


def classify(config: RunConfig, out: Path, phase: str, *, retry: bool = True,
             give_up_after: int = GIVE_UP_AFTER) -> Planned:
    """What the sweep would do with this run: the same rules as runner.partition."""
    folder = run_dir(out, config.run_id())
    check_run_folder(out, folder)
    total = config.total_steps
    final = settled(folder, retry=retry, give_up_after=give_up_after)
    if final is not None:
        detail = final
        if final == "failed":
            n, _ = same_failures_in_a_row(folder)
            detail = f"failed {n}× in a row, not retried" if retry else "failed, not retried"
        return Planned(config, phase, "finished", detail, 0)
    step = _checkpoint_step(folder)
    failed = stored_status(folder) == "failed"
    state = "retry" if failed else ("resumable" if step else "new")
    detail = f"from step {step}" if step else ("from step 0" if failed else "")
    return Planned(config, phase, state, detail, total - (step or 0))


def plan_suite(suite: Suite, out: str | Path, *, retry: bool = True,
               give_up_after: int = GIVE_UP_AFTER) -> list[Planned]:
    """Every run the sweep would consider, in the order it would train them. With [tune],
    the final runs are those of the directory's earlier identical experiment when there is
    one, else the untuned candidates, marked new "after tuning" (their settings are chosen
    by the tuning runs)."""
    from lossbench.store.experiments import find_experiment, new_meta

    out = Path(out)
    meta, first, identity = new_meta(suite)
    kw = {"retry": retry, "give_up_after": give_up_after}
    teachers = [classify(t, out, "teacher", **kw) for t in suite.teachers]  # trained first
    if suite.tune is None:
        return teachers + [classify(r, out, "final", **kw) for r in first]
    planned = teachers + [classify(r, out, "tuning", **kw) for r in first]
    earlier = find_experiment(out, meta, identity) if out.is_dir() else None
    configs = _earlier_finals(out, earlier) if earlier else []
    if configs:
        return planned + [classify(r, out, "final", **kw) for r in configs]
    return planned + [Planned(r, "final", "new", "after tuning", r.total_steps)
                      for r in suite.runs]


def _earlier_finals(out: Path, record: dict) -> list[RunConfig]:
    """The final runs an earlier identical experiment chose, from their config.json (all of
    them, or none: then they are planned as untuned candidates)."""
    configs = []
    for run_id in record.get("run_ids") or []:
        try:
            folder = run_dir(out, run_id)
            check_run_folder(out, folder)
            configs.append(RunConfig.from_dict(run_config(folder)))
        except (OSError, ValueError, TypeError):  # MalformedRecord is a ValueError
            return []
    return configs


def shape_key(config: RunConfig) -> str:
    """What decides a run's seconds per step: everything but the loss, the seed and the
    optimizer's numbers."""
    d = config.to_dict()
    d = {k: v for k, v in d.items() if k not in _TIMING_FREE}
    d["train"] = {k: v for k, v in d["train"].items() if k not in _TRAIN_TIMING_FREE}
    return json.dumps(d, sort_keys=True, default=str)


def _history(out: Path) -> dict[str, dict[str, list[float]]]:
    """Seconds per step (training and evaluation, as the run measured them) of the
    directory's finished runs, by shape, then by loss."""
    rates: dict[str, dict[str, list[float]]] = {}
    runs = out / "runs"
    if not runs.is_dir():
        return rates
    for folder in sorted(runs.iterdir()):
        if not (folder / DONE).exists():
            continue
        try:
            check_run_folder(out, folder)
            r = read_result(folder)
            summary, config = r["summary"], RunConfig.from_dict(r["config"])
            steps, wall = float(summary["steps"]), float(summary["wall_s"])
        except (OSError, MalformedResult, KeyError, TypeError, ValueError):
            continue
        if r["status"] == "done" and steps > 0 and wall > 0:
            by_loss = rates.setdefault(shape_key(config), {})
            by_loss.setdefault(config.loss, []).append(wall / steps)
    return rates


@dataclass(frozen=True)
class Probe:
    """Timings of PROBE_STEPS updates of a run's model in this process."""

    setup_s: float  # data, model and the first call's one-time costs
    step_s: float  # one optimizer step (median)
    eval_s: float  # one periodic evaluation
    final_extra_s: float  # what the final evaluation adds (the whole-split val CE)
    took_s: float

    def run_seconds(self, config: RunConfig, start: int) -> float:
        """A run from step ``start`` to its end: its updates and evaluations."""
        total = config.total_steps
        every = max(1, config.eval.eval_every)
        evals = sum(1 for done in range(start + 1, total + 1) if done % every == 0
                    or done in (config.train.steps, total)) + (start == 0)
        return (total - start) * self.step_s + evals * self.eval_s + self.final_extra_s


def probe(config: RunConfig) -> Probe:
    """Train PROBE_STEPS steps of ``config``'s model in memory (no folder, no checkpoint)
    with an evaluation before the first and after the last, and time each part."""
    from lossbench.train.loop import train_run
    from lossbench.train.observers import Observer

    times: list[tuple[str, int, float]] = []

    class Clock(Observer):
        def on_start(self, start):
            times.append(("start", 0, time.perf_counter()))

        def on_step(self, record):
            times.append(("step", record["step"], time.perf_counter()))

        def on_eval(self, step, metrics):
            times.append(("eval", step, time.perf_counter()))

    train = dataclasses.replace(config.train, steps=PROBE_STEPS,
                                warmup_steps=min(config.train.warmup_steps, PROBE_STEPS),
                                decay_steps=None, checkpoint_every=0)
    # cross-entropy stands for the run's loss: at a sweep's sizes the model dominates a
    # step, and it cannot fail or diverge (a plugin's loss could, before a single step)
    short = dataclasses.replace(config, loss="cross_entropy", hparams={}, train=train,
                                eval=dataclasses.replace(config.eval, eval_every=PROBE_STEPS),
                                finetune=dataclasses.replace(config.finetune, steps=0),
                                loss_source=None)  # the loss's definition: not this one's
    t0 = time.perf_counter()
    train_run(short, observers=[Clock()])
    took = time.perf_counter() - t0
    at = {(kind, step): t for kind, step, t in times}
    steps = [at[("step", k)] - at[("step", k - 1)] for k in range(2, PROBE_STEPS)
             if ("step", k) in at and ("step", k - 1) in at]
    eval_s = at[("eval", 0)] - at[("start", 0)]
    final = at[("eval", PROBE_STEPS)] - at[("step", PROBE_STEPS)]
    return Probe(at[("start", 0)] - t0, statistics.median(steps), eval_s,
                 max(0.0, final - eval_s), took)


def slowdown(workers: int, seconds: float = 0.25) -> float:
    """How much slower each of ``workers`` concurrent workers computes than one alone, on
    this machine now: the same matrix products in ``workers`` threads at once (torch
    releases the GIL in them) against one thread. Cores, hyperthreads, other jobs and a
    hypervisor's share all show in it; a probe run alone does not (1 when workers <= 1)."""
    import threading

    import torch

    if workers <= 1:
        return 1.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core per worker, as train.threads = 1
    try:
        x = torch.randn(160, 160)

        def spin(n: int) -> None:
            for _ in range(n):
                torch.mm(x, x)

        t0, n = time.perf_counter(), 16
        while time.perf_counter() - t0 < seconds / 4:  # size the work: about seconds / 2 each
            spin(n)
            n *= 2
        t0 = time.perf_counter()
        spin(n)
        alone = time.perf_counter() - t0
        pool = [threading.Thread(target=spin, args=(n,)) for _ in range(workers)]
        t0 = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        together = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    return min(float(workers), max(1.0, together / alone))


@dataclass(frozen=True)
class Estimate:
    seconds: float
    basis: str  # how it was made, in words


def makespan(durations: list[float], workers: int) -> float:
    """Runs handed out in order to the first free worker (as the pool does)."""
    free = [0.0] * max(1, workers)
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def process_age() -> float | None:
    """Seconds since this process started (Linux; else None). Measured by the CLI before the
    probe: Python started, torch and lossbench imported, the suite read; about what a
    spawned worker spends before its first run, on this machine under its present load."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in ticks
        return float(Path("/proc/uptime").read_text().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return None


def estimate(planned: list[Planned], out: str | Path, workers: int,
             worker_start_s: float = WORKER_START_S) -> Estimate:
    """The sweep's wall time on ``workers`` processes of this machine (see the module doc);
    ``worker_start_s``: how long a worker process takes to start (see process_age)."""
    todo = [p for p in planned if p.state != "finished" and p.steps_left > 0]
    if not todo:
        return Estimate(0.0, "nothing to train")
    t0 = time.perf_counter()
    history = _history(Path(out))
    probes: dict[str, Probe] = {}
    durations: list[tuple[float, bool]] = []  # (seconds, from a probe)
    used: set[str] = set()
    for p in todo:
        key = shape_key(p.config)
        if key in history:
            by_loss = history[key]
            rates = by_loss.get(p.config.loss) or [x for xs in by_loss.values() for x in xs]
            durations.append((statistics.median(rates) * p.steps_left + RUN_OVERHEAD_S, False))
            used.add(key)
            continue
        if key not in probes:
            probes[key] = probe(p.config)
        durations.append((probes[key].run_seconds(p.config, p.total - p.steps_left)
                          + RUN_OVERHEAD_S, True))
    workers = min(workers, len(todo))
    # probes ran alone; the sweep's workers share the machine (the finished runs' times
    # were measured while sharing it already)
    factor = slowdown(workers) if probes else 1.0
    # each worker starts a Python with torch (none in-process) and builds the data once
    setup = max([pr.setup_s for pr in probes.values()], default=0.0)
    start = ((worker_start_s if workers > 1 else 0.0) + setup) * factor
    seconds = makespan([d * factor if probed else d for d, probed in durations], workers) + start
    parts = []
    if used:
        n = sum(len(xs) for k in used for xs in history[k].values())
        parts.append(f"{n} finished run{'s' * (n != 1)} of the same shape")
    if probes:
        parts.append(f"a {time.perf_counter() - t0:.0f} s probe")
    return Estimate(seconds, "estimated from " + " and ".join(parts))
