"""Tiny suites for end-to-end tests (seconds per run on one core), and result comparisons."""

import textwrap
from pathlib import Path

import pandas as pd

from lossbench.results import load

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
