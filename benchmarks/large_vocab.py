"""Every loss at a real tokenizer's vocabulary: the built-in GPT at V = 50257 (GPT-2's), T = 256.

For each loss, in a fresh process (so one loss's memory cannot hide another's):

* memory: the logits of a GPT forward, (B, T, V) fp32, are made a leaf; the loss's forward
  and backward on them then raise the process's peak RSS (``getrusage`` ru_maxrss) above the
  RSS just before (psutil). Reported in units of one (B, T, V) fp32 tensor: the logits'
  gradient is one, so cross-entropy needs at least 1 (torch's takes ~2: the gradient and
  the softmax it is computed in). tracemalloc cannot see torch's CPU allocations, so RSS is
  the measure; it is taken first, before any timing, so no earlier peak masks it.
* time of the loss alone (forward + backward from the logits) against cross-entropy's on
  the same logits, and of a whole training step (GPT forward, loss, backward) against a
  cross-entropy step: CE and the loss alternate, so machine noise hits both; medians.

    flock /tmp/lossbench-heavy.lock python benchmarks/large_vocab.py [--batch 2] [--repeats 7]
        [--losses NAME ...] [--threads 1]

Goals: loss time <= 2x CE's for every loss, <= 3x for unlikelihood.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

V, T = 50257, 256


def _child(name: str, batch: int, repeats: int, threads: int) -> dict:
    import psutil
    import torch
    import torch.nn.functional as F

    from lossbench.core.config import ModelConfig
    from lossbench.losses import get_loss, mean_over_tokens
    from lossbench.models.gpt import GPTConfig, build_model

    torch.set_num_threads(threads)
    spec = get_loss(name)
    model = build_model(GPTConfig.of(ModelConfig(block_size=T), V), seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (batch, T), generator=g)  # (B, T)
    y = torch.randint(0, V, (batch, T), generator=g)  # (B, T)
    extras = {}
    if "teacher_probs" in spec.extra_inputs:  # an input like the targets, made beforehand
        extras["teacher_probs"] = torch.randn(batch, T, V, generator=g).softmax(-1)
    with torch.no_grad():
        logits = model(x).requires_grad_(True)  # (B, T, V) leaf

    def loss_of(z):
        return mean_over_tokens(spec.fn(z, y, **spec.defaults(), **extras), y)

    def ce_of(z):
        return F.cross_entropy(z.flatten(0, 1), y.flatten())

    unit = batch * T * V * 4
    rss0 = psutil.Process().memory_info().rss
    peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    loss_of(logits).backward()
    peak1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    logits.grad = None
    extra = (peak1 - rss0) / unit if peak1 > peak0 else None  # None: under an earlier peak

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def loss_only(f):
        def run():
            f(logits).backward()
            logits.grad = None
        return run

    def step(f):
        def run():
            f(model(x)).backward()
            model.zero_grad(set_to_none=True)
        return run

    out = {"loss": name, "peak_extra_logits": extra}
    for what, make, n in (("loss", loss_only, repeats), ("step", step, max(3, repeats // 2))):
        make(ce_of)(), make(loss_of)()  # warm-up
        ce, ours = [], []
        for _ in range(n):
            ce.append(timed(make(ce_of)))
            ours.append(timed(make(loss_of)))
        out[f"{what}_ce_ms"] = 1e3 * statistics.median(ce)
        out[f"{what}_ms"] = 1e3 * statistics.median(ours)
        out[f"{what}_ratio"] = statistics.median(ours) / statistics.median(ce)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--losses", nargs="*")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.batch, args.repeats, args.threads)))
        return
    from lossbench.losses import list_losses

    names = args.losses or [s.name for s in list_losses() if not s.finetune_only]
    print(f"built-in GPT (4 x 128), V = {V}, T = {T}, B = {args.batch}, {args.threads} thread(s); "
          f"one (B, T, V) fp32 tensor = {args.batch * T * V * 4 / 2**20:.0f} MiB")
    print("| loss | loss ms | CE ms | loss / CE | goal | step / CE step | peak RSS above start "
          "(x logits) |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--batch",
                               str(args.batch), "--repeats", str(args.repeats), "--threads",
                               str(args.threads)], capture_output=True, text=True)
        if proc.returncode:
            print(f"| {name} | failed: {proc.stderr.strip().splitlines()[-1]} |||||")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        goal = 3.0 if name == "unlikelihood" else 2.0
        flag = "ok" if r["loss_ratio"] <= goal else f"**over {goal:g}x**"
        mem = "n/a" if r["peak_extra_logits"] is None else f"{r['peak_extra_logits']:.2f}"
        print(f"| {name} | {r['loss_ms']:.0f} | {r['loss_ce_ms']:.0f} | {r['loss_ratio']:.2f} | "
              f"{flag} | {r['step_ratio']:.2f} | {mem} |", flush=True)


if __name__ == "__main__":
    main()
