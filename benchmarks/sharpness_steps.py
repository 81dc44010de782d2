"""How many Lanczos steps the sharpness needs: the probe's Adam sharpness after m steps
against a 40-step reference, at every probed update of a suite's runs.

    python benchmarks/sharpness_steps.py [suites/quick.toml] [--losses cross_entropy kl]
        [--steps 4 8 12 20] [--set KEY=VALUE ...]

Each run trains at grad_stats = "off" (so nothing else is measured); at the updates the
probe would measure, the script calls the probe's own sharpness on that step's batch with
each m, from the same start vector. Lanczos's estimate only grows with m and never exceeds
the true top eigenvalue, so each row's shortfall is m's error. Prints the error of each m
relative to the reference, per probed update, and the median and worst over all of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from functools import partial

from lossbench.suite.load import load_suite
from lossbench.train import step as step_module
from lossbench.data.batches import step_seed
from lossbench.train.gradients import PLANS, PROBE_STREAM, GradientProbe, _forked_rng
from lossbench.train.loop import train_run

REFERENCE = 40


def measure(config, ms: list[int]) -> list[dict[str, float]]:
    """One training run; at each probed update, {m: sharpness} for every m and the reference."""
    rows, original = [], step_module.optimizer_step
    eval_every = config.eval.eval_every

    def optimizer_step(run, step, lr, *, probe, compute=step_module.training_loss):
        if (step + 1) % eval_every == 0 or step + 1 == config.train.steps:
            x, y, extras = run.batch(step, 0)
            loss_of = partial(step_module._loss_of, run.spec, run.cfg.hparams)
            row = {"step": step + 1}
            for m in [*ms, REFERENCE]:  # the probe's own sharpness, noise left out
                probe = GradientProbe(run.model, run.optimizer, seed=config.seed,
                                      level="cheap", device=run.device,
                                      beta1=config.train.beta1)
                probe.plan = dataclasses.replace(PLANS["cheap"], lanczos_steps=m)
                params = {n: p.detach() for n, p in probe.named.items()}
                with _forked_rng(run.device):
                    stats = probe._sharpness(step, lr, step_seed(config.seed, step, PROBE_STREAM),
                                             probe._functional(loss_of, autocast=False),
                                             params, x, y, extras)
                row[m] = stats.get("sharpness", float("nan"))
            rows.append(row)
        return original(run, step, lr, probe=False, compute=compute)

    step_module.optimizer_step = optimizer_step
    import lossbench.train.loop as loop

    loop.optimizer_step = optimizer_step
    try:
        train_run(dataclasses.replace(config, eval=dataclasses.replace(
            config.eval, grad_stats=False)))
    finally:
        step_module.optimizer_step = loop.optimizer_step = original
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", nargs="?", default="suites/quick.toml")
    parser.add_argument("--losses", nargs="*", default=["cross_entropy", "kl"])
    parser.add_argument("--steps", nargs="*", type=int, default=[4, 8, 12, 20])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    suite = load_suite(args.suite, args.overrides)
    errors = {m: [] for m in args.steps}
    print("| loss | step | " + " | ".join(f"m = {m}" for m in args.steps) +
          f" | m = {REFERENCE} |")
    print("|---|---:|" + "---:|" * (len(args.steps) + 1))
    for config in [c for c in suite.runs if c.seed == suite.seeds[0] and c.loss in args.losses]:
        for row in measure(config, args.steps):
            ref = row[REFERENCE]
            cells = []
            for m in args.steps:
                err = row[m] / ref - 1
                errors[m].append(abs(err))
                cells.append(f"{err:+.1%}")
            print(f"| {config.display_name} | {row['step']} | " + " | ".join(cells) +
                  f" | {ref:,.0f} |", flush=True)
    print("| median abs. error | | " + " | ".join(f"{statistics.median(errors[m]):.1%}"
                                                 for m in args.steps) + " | |")
    print("| worst | | " + " | ".join(f"{max(errors[m]):.1%}" for m in args.steps) + " | |")


if __name__ == "__main__":
    main()
