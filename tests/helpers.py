"""Tiny suites for end-to-end tests (seconds per run on one core), and result comparisons."""

import dataclasses
import json
import textwrap
from pathlib import Path

import pandas as pd
import torch

from lossbench.core.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from lossbench.store.tables import load
from lossbench.train.observers import Observer

TINY_SECTIONS = {
    "data": {"markov_tokens": 20000, "markov_vocab": 8},
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16},
    "train": {"steps": 20, "batch_size": 4, "warmup_steps": 2},
    "eval": {"eval_every": 10, "val_windows": 8, "rep_prefixes": 2, "rep_prefix_len": 4,
             "rep_continuation": 8},
}


def _toml(value) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def tiny_toml(name: str, losses: str, *, seeds=(0, 1), extra: str = "", **overrides) -> str:
    """A suite's TOML text: ``losses`` is the TOML list; ``overrides`` maps a section to the
    keys it changes, e.g. ``train={"steps": 40}``; ``extra`` is appended (e.g. a [tune] table)."""
    lines = [f'name = "{name}"', f"seeds = {list(seeds)}", f"losses = {losses}"]
    for section, keys in TINY_SECTIONS.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml(v)}" for k, v in {**keys, **overrides.get(section, {})}.items()]
    return "\n".join(lines) + "\n" + extra


TIMING = ["wall_s", "train_s", "eval_s", "tokens_per_s", "attempts"]  # not results: bookkeeping


def tiny_text(steps: int) -> str:
    return tiny_toml("tiny", '["cross_entropy", "mse", { name = "unlikelihood", alpha = [0.5] }]',
                     train={"steps": steps, "checkpoint_every": 5})


def tiny_suite(tmp_path, steps=20, extra_losses=""):
    text = tiny_text(steps)
    if extra_losses:
        text = text.replace('losses = [', f'losses = [{extra_losses}, ')
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(text))
    return path


def comparable(out):
    summary, curves = load(out)
    summary = summary.drop(columns=[c for c in TIMING if c in summary]).sort_values("run_id")
    curves = curves[curves.metric != "wall_s"].sort_values(["run_id", "metric", "step"])
    return summary.reset_index(drop=True), curves.reset_index(drop=True)


def assert_same_results(a, b):
    sa, ca = comparable(a)
    sb, cb = comparable(b)
    pd.testing.assert_frame_equal(sa, sb)
    pd.testing.assert_frame_equal(ca, cb)


def wait_for(condition, timeout: float, what: str, proc=None, poll_s: float = 0.05):
    """Poll ``condition()`` until truthy (returned) or ``timeout`` s; fail saying ``what``,
    with ``proc``'s stderr when that process exited first."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited ({proc.returncode}) before {what}: "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


FIXTURES = Path(__file__).parent / "fixtures"  # plugin files for the tests


# ---- single runs: a tiny config, what a run saw, and comparisons ----------------------

TINY_DATA = DataConfig(corpus="markov", markov_tokens=20_000, markov_vocab=8)
TINY = RunConfig(
    data=TINY_DATA,
    model=ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16),
    train=TrainConfig(steps=12, batch_size=4, warmup_steps=2, checkpoint_every=4),
    eval=EvalConfig(eval_every=4, val_windows=8, rep_prefixes=2, rep_prefix_len=4,
                    rep_continuation=8, samples=1),
)


def tiny(**changes) -> RunConfig:
    return dataclasses.replace(TINY, **changes)


def records_text(result) -> str:
    """Everything a run recorded except timings, as text (so NaN == NaN)."""
    steps = {k: v for k, v in result.steps.items() if k != "wall_s"}
    return json.dumps([steps, result.evals], sort_keys=True)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Recorder(Observer):
    """What a run saw: its initial weights, its batches, the RNG state that drew each
    forward's dropout masks, its evaluation tokens, and the records it reported."""

    def __init__(self):
        self.batches, self.rng, self.steps, self.evals = [], [], [], []

    def on_start(self, start):
        self.init = {k: v.clone() for k, v in start.model.state_dict().items()}
        self.eval_x = start.eval_set.x.clone()

    def on_batch(self, step, micro, x, y):
        self.batches.append((x.clone(), y.clone()))
        self.rng.append(torch.random.get_rng_state().clone())

    def on_step(self, record):
        self.steps.append(dict(record))

    def on_eval(self, step, metrics):
        self.evals.append(step)



class _Killed(Exception):
    pass


class _KillAt(Observer):
    def __init__(self, step: int):
        self.step = step

    def on_step(self, record):
        if record["step"] == self.step:
            raise _Killed


def kill_at(config: RunConfig, checkpoint_dir, step: int) -> None:
    """Train ``config`` with checkpoints in ``checkpoint_dir`` and stop it by an exception at
    ``step`` (as a crash would); the next train_run with that folder resumes it."""
    import pytest

    from lossbench.train.loop import train_run

    with pytest.raises(_Killed):
        train_run(config, checkpoint_dir=checkpoint_dir, observers=[_KillAt(step)])

# ---- suites of your own data and model -------------------------------------------------

def suite_file(tmp_path, data: dict, model: dict | None = None, losses='["cross_entropy", "mse"]',
               name="own"):
    def table(d):
        return "\n".join(f"{k} = {json.dumps(v) if not isinstance(v, dict) else _inline(v)}"
                         for k, v in d.items())

    model = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, **(model or {})}
    text = textwrap.dedent(f"""\
        name = "{name}"
        seeds = [0]
        losses = {losses}
        [data]
        {table(data)}
        [model]
        {table(model)}
        [train]
        steps = 6
        batch_size = 4
        warmup_steps = 2
        [eval]
        eval_every = 3
        val_windows = 8
        rep_prefixes = 2
        rep_prefix_len = 4
        rep_continuation = 8
        """)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def _inline(d: dict) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in d.items()) + " }"


def lossbench_cli(*args, cwd=None, env=None, timeout: float = 600):
    """``python -m lossbench ARGS`` in a fresh process, as a CompletedProcess with text output;
    ``env`` adds to (not replaces) this process's environment."""
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "lossbench", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, **env} if env else None)


def write_suite(folder: Path, name: str, losses: str, **options) -> Path:
    """``folder/<name>.toml``: the tiny suite of :func:`tiny_toml` (same options)."""
    path = folder / f"{name}.toml"
    path.write_text(tiny_toml(name, losses, **options))
    return path


def load_module(path: Path, name: str):
    """A fixture file imported as a module (tests/fixtures/...: not on sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
