"""Forward+backward time of every registered loss relative to torch's cross-entropy.

Same logits for every loss, B*T = 4096 tokens (B = 4096 // T), at V = 65 (char-level)
and V = 8192 (a small BPE vocabulary), for each sequence length T and intra-op thread
count asked for. Timings interleave the baseline and the loss so machine noise hits
both; we print medians and the ratio of medians.

    python benchmarks/loss_speed.py [--repeats 15] [--min-seconds 1] [--vocab 65 8192]
        [--time-steps 64 512] [--threads 1 2] [--losses NAME ...] [--markdown]

Each (loss, shape) pair is timed at least --repeats times and until the loss has run for
--min-seconds, so millisecond-sized calls get hundreds of samples.

Goal: ratio <= 2x for every loss, <= 3x for unlikelihood.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lossbench.losses import list_losses, mean_over_tokens

TOKENS = 4096


def _time_once(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def bench(vocab: int, time_steps: int, repeats: int, min_seconds: float, names=None):
    """Rows (name, V, T, CE ms, loss ms, ratio) for one shape, medians over interleaved runs."""
    batch = TOKENS // time_steps
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, time_steps, vocab, generator=gen).requires_grad_(True)  # (B, T, V)
    targets = torch.randint(0, vocab, (batch, time_steps), generator=gen)  # (B, T)
    targets[:, :2] = -100  # some padding, as in real batches
    teacher = torch.randn(batch, time_steps, vocab, generator=gen).softmax(-1)
    # a needs_hidden loss's hidden states (B, T, 64), differentiated like the logits
    hidden = torch.randn(batch, time_steps, 64, generator=gen).requires_grad_(True)

    def baseline():
        loss = F.cross_entropy(logits.view(-1, vocab), targets.view(-1), ignore_index=-100)
        loss.backward()
        logits.grad = None

    rows = []
    for spec in list_losses():
        if names and spec.name not in names:
            continue
        extras = {"teacher_probs": teacher} if "teacher_probs" in spec.extra_inputs else {}
        if spec.needs_hidden:
            extras["hidden_states"] = hidden

        def ours(spec=spec, extras=extras):
            per_token = spec(logits, targets, **extras)
            mean_over_tokens(per_token, targets).backward()
            logits.grad = hidden.grad = None

        baseline(), ours()  # warm-up
        base_t, ours_t = [], []
        while len(ours_t) < repeats or sum(ours_t) < min_seconds:
            base_t.append(_time_once(baseline))
            ours_t.append(_time_once(ours))
        b, o = statistics.median(base_t), statistics.median(ours_t)
        rows.append((spec.name, vocab, time_steps, b * 1e3, o * 1e3, o / b, len(ours_t)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="minimum samples per loss")
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="keep sampling until the loss has run this long")
    parser.add_argument("--vocab", type=int, nargs="+", default=[65, 8192])
    parser.add_argument("--time-steps", type=int, nargs="+", default=[64, 512],
                        help="sequence lengths T (B = 4096 // T)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="intra-op thread counts (torch.set_num_threads), each a full pass")
    parser.add_argument("--losses", nargs="+", default=None, help="only these losses")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, B*T = {TOKENS}, median of >= {args.repeats} samples "
          f"and >= {args.min_seconds:g} s per loss, CE measured interleaved")
    if args.markdown:
        print("| loss | V | T | threads | CE ms | loss ms | ratio | goal |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
    else:
        print(f"{'loss':<24}{'V':>6}{'T':>5}{'thr':>4}{'CE ms':>9}{'loss ms':>9}{'ratio':>7}"
              f"{'n':>5}  goal")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for vocab in args.vocab:
            for time_steps in args.time_steps:
                for name, v, t, b, o, r, n in bench(vocab, time_steps, args.repeats,
                                                    args.min_seconds, args.losses):
                    goal = 3.0 if name == "unlikelihood" else 2.0
                    flag = "ok" if r <= goal else f"> {goal:g}x"
                    if args.markdown:
                        print(f"| `{name}` | {v} | {t} | {threads} | {b:.2f} | {o:.2f} | "
                              f"{r:.2f}× | {flag} |", flush=True)
                    else:
                        print(f"{name:<24}{v:>6}{t:>5}{threads:>4}{b:>9.2f}{o:>9.2f}{r:>7.2f}"
                              f"{n:>5}  {flag}", flush=True)


if __name__ == "__main__":
    main()
