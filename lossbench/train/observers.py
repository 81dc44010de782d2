"""Observers: the public hook into a training run, for progress, live metrics files,
experiment trackers and tests. An observer sees what the run does as it happens and
changes nothing: it draws no random numbers and its return values are ignored, so a run
with observers is identical to one without (tested).

Subclass :class:`Observer` and override what you need; pass instances to
``train_run(config, observers=[...])``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # typing only: observers must not import the training loop
    import torch

    from lossbench.core.config import RunConfig
    from lossbench.train.evaluation import EvalSet


@dataclass(frozen=True)
class RunStart:
    config: "RunConfig"
    model: "torch.nn.Module"  # the initial weights, or the resumed ones
    eval_set: "EvalSet"  # the fixed evaluation tokens
    start_step: int  # 0, or the step a checkpoint resumes from
    total_steps: int  # main steps + fine-tuning steps


class Observer:
    """Every method is optional; the defaults do nothing."""

    def on_start(self, start: RunStart) -> None:
        """Before the first step (after the step-0 evaluation is due, before it runs)."""

    def on_batch(self, step: int, micro: int, x: "torch.Tensor", y: "torch.Tensor") -> None:
        """A micro-batch, just before its forward pass: the global RNG state now is the one
        that draws this forward's dropout masks."""

    def on_step(self, record: dict[str, Any]) -> None:
        """After an update: the step's record (step = updates done, train_loss, train_ce,
        grad_norm, lr, clipped, tokens, wall_s)."""

    def on_eval(self, step: int, metrics: dict[str, Any]) -> None:
        """After an evaluation: every metric as stored in result.json's evals."""

    def on_end(self, result: Any) -> None:
        """The run finished (done or diverged) with this RunResult; not called when it
        raised or was interrupted."""

    def on_close(self) -> None:
        """Last, once, however the run ended (done, diverged, raised or interrupted):
        release files, connections and processes (trackers finish their runs here)."""


class Fanout(Observer):
    """Several observers as one, called in order."""

    def __init__(self, observers: Iterable[Observer] = ()):
        self.observers = list(observers)

    def on_start(self, start):
        for o in self.observers:
            o.on_start(start)

    def on_batch(self, step, micro, x, y):
        for o in self.observers:
            o.on_batch(step, micro, x, y)

    def on_step(self, record):
        for o in self.observers:
            o.on_step(record)

    def on_eval(self, step, metrics):
        for o in self.observers:
            o.on_eval(step, metrics)

    def on_end(self, result):
        for o in self.observers:
            o.on_end(result)

    def on_close(self):
        errors = []
        for o in self.observers:
            try:
                o.on_close()
            except Exception as exc:  # every observer gets closed
                errors.append(exc)
        if errors:
            raise errors[0]
