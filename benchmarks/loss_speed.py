"""Forward+backward time of every registered loss relative to torch's cross-entropy.

Same logits for every loss (B*T = 4096 tokens), at V = 65 (char-level) and
V = 8192 (a small BPE vocabulary). Timings interleave the baseline and the loss
so machine noise hits both; we print medians and the ratio of medians.

    python benchmarks/loss_speed.py [--repeats 15] [--vocab 65 8192] [--threads N]

Goal (issue 2): ratio <= 2x for every loss, <= 3x for unlikelihood.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lossbench.losses import list_losses, mean_over_tokens


def _time_once(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def bench(vocab: int, repeats: int, batch: int = 64, time_steps: int = 64):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, time_steps, vocab, generator=gen).requires_grad_(True)  # (B, T, V)
    targets = torch.randint(0, vocab, (batch, time_steps), generator=gen)  # (B, T)
    targets[:, :2] = -100  # some padding, as in real batches
    teacher = torch.randn(batch, time_steps, vocab, generator=gen).softmax(-1)

    def baseline():
        loss = F.cross_entropy(logits.view(-1, vocab), targets.view(-1), ignore_index=-100)
        loss.backward()
        logits.grad = None

    rows = []
    for spec in list_losses():
        extras = {"teacher_probs": teacher} if "teacher_probs" in spec.extra_inputs else {}

        def ours(spec=spec, extras=extras):
            per_token = spec(logits, targets, **extras)
            mean_over_tokens(per_token, targets).backward()
            logits.grad = None

        baseline(), ours()  # warm-up
        base_t, ours_t = [], []
        for _ in range(repeats):
            base_t.append(_time_once(baseline))
            ours_t.append(_time_once(ours))
        b, o = statistics.median(base_t), statistics.median(ours_t)
        rows.append((spec.name, vocab, b * 1e3, o * 1e3, o / b))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--vocab", type=int, nargs="+", default=[65, 8192])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B*T = 4096, "
          f"median of {args.repeats}")
    print(f"{'loss':<24}{'V':>6}{'CE ms':>9}{'loss ms':>9}{'ratio':>7}  goal")
    for vocab in args.vocab:
        for name, v, b, o, r in bench(vocab, args.repeats):
            goal = 3.0 if name == "unlikelihood" else 2.0
            flag = "ok" if r <= goal else f"> {goal:g}x"
            print(f"{name:<24}{v:>6}{b:>9.2f}{o:>9.2f}{r:>7.2f}  {flag}")


if __name__ == "__main__":
    main()
