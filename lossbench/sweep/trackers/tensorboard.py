"""TensorBoard: event files under ``<results dir>/tensorboard/<label>-seed<seed>-<run_id>/``.

View with ``tensorboard --logdir <results dir>/tensorboard``. Scalars have the names of
curves.csv (train_loss, val_ce, ...), stored as float32 as TensorBoard does; the flattened
config is in the HParams tab, the tags (suite, experiment, run id) in the Text tab. The
report is not attached: TensorBoard keeps nothing but its event files.

The writer is torch's own ``torch.utils.tensorboard.SummaryWriter``: torch is already a
dependency, and the ``tensorboard`` package it needs is the one that views the logs anyway,
so the extra adds nothing a TensorBoard user lacks (tensorboardX would be a second writer on
top of the viewer).

Resume: the same log dir, opened with ``purge_step`` = the first step not yet checkpointed,
so TensorBoard drops what a killed attempt logged past its checkpoint and the curve
continues without duplicates. A run started over (step 0) purges the whole previous curve.
"""

from __future__ import annotations

import re

from lossbench.sweep.trackers import Sink, TrackerBase, flatten, run_name, unavailable

FLUSH_SECS = 30  # how stale the files may be while a run trains (closed at its end)


def require() -> None:
    """Raise TrackerUnavailable (one line, with the pip command) if TensorBoard is missing."""
    try:
        import tensorboard  # noqa: F401  (torch's writer needs it; it also views the logs)
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise unavailable("tensorboard", exc) from None


def log_dir_name(config: dict, run_id: str) -> str:
    """``<label>-seed<seed>-<run_id>``, with anything but letters, digits, '.', '_', '-'
    in the label replaced (a label is free text; the run id keeps names apart)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{run_name(config)}-{run_id}")


class _Writer(Sink):
    def __init__(self, log_dir, start_step: int, hparams: dict, tags: dict[str, str]):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        # purge what a previous attempt logged past step start_step (all of it on a restart)
        purge = start_step + 1 if start_step else (0 if log_dir.exists() else None)
        self.writer = SummaryWriter(str(log_dir), purge_step=purge, flush_secs=FLUSH_SECS)
        if not start_step:
            values = {k: ("None" if v is None else v) for k, v in hparams.items()}
            for summary in hparams_summary(values, {"val_ce": 0.0, "train_loss": 0.0}):
                self.writer._get_file_writer().add_summary(summary)
            self.writer.add_text("tags", "  \n".join(f"{k}: {v}" for k, v in tags.items()), 0)

    def log(self, step, values):
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self, status):
        self.writer.close()


class Tracker(TrackerBase):
    """Logs one lossbench run to its own TensorBoard log dir."""

    name = "tensorboard"

    def open(self, start_step: int) -> Sink:
        log_dir = self.results_dir / "tensorboard" / log_dir_name(self.config, self.run_id)
        return _Writer(log_dir, start_step, flatten(self.config), self.tags)

