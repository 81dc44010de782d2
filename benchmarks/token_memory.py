"""A token folder trains in bounded memory: peak RSS of a run on a generated multi-GB corpus.

Writes two nanoGPT-style folders (train.bin of --gib GiB, and of 16 MiB, of uint16 ids, a
small val.bin, meta.json) under --dir, then, for each in a fresh process, resolves it (the
content hash streams the file once) and trains a tiny GPT on it for --steps steps, printing
that process's peak RSS (getrusage ru_maxrss). A corpus read whole would need the file's
size more (and 4x that as int64); here the peak should not depend on the file's size.
Training batches are positioned reads (lossbench.data.tokens.read_windows): faults on a
long-lived map would keep ~1.5 MiB resident per random window, ~700 MiB over these 50 steps.
The vocabulary is small (--vocab 512) so that the logits, whose memory grows with V, do not
hide the corpus's. A second resolve shows the cached hash (by path, size and mtime).

    flock /tmp/lossbench-heavy.lock python benchmarks/token_memory.py [--gib 1] [--dir /tmp/lb-tokens]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _child(folder: str, steps: int) -> None:
    from lossbench.core.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
    from lossbench.suite.preflight import resolve_corpus
    from lossbench.train.loop import train_run

    model = ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=64)
    train = TrainConfig(steps=steps, batch_size=12, warmup_steps=2)
    t0 = time.perf_counter()
    data, problems = resolve_corpus(DataConfig(corpus="tokens", path=folder), model, train,
                                    device="cpu", needs_ngram=False)
    t_resolve = time.perf_counter() - t0
    t0 = time.perf_counter()
    resolve_corpus(data, model, train, device="cpu", needs_ngram=False)
    t_again = time.perf_counter() - t0
    result = train_run(RunConfig(data=data, model=model, train=train, eval=EvalConfig(
        eval_every=steps, val_windows=16, full_val_windows=0, rep_prefixes=2)))
    print(json.dumps({"problems": problems, "status": result.status, "resolve_s": t_resolve,
                      "resolve_cached_s": t_again,
                      "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--dir", default="/tmp/lb-tokens")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.steps)
        return
    for gib in (16 / 1024, args.gib):
        folder = Path(args.dir) / f"{gib:g}GiB"
        folder.mkdir(parents=True, exist_ok=True)
        n = int(gib * 2**30) // 2
        rng = np.random.default_rng(0)
        with open(folder / "train.bin", "wb") as f:  # in 64 MiB pieces: bounded here too
            for start in range(0, n, 2**25):
                rng.integers(0, args.vocab, min(2**25, n - start), dtype=np.uint16).tofile(f)
        rng.integers(0, args.vocab, 2**20, dtype=np.uint16).tofile(folder / "val.bin")
        (folder / "meta.json").write_text(json.dumps({"vocab_size": args.vocab}))
        proc = subprocess.run([sys.executable, __file__, "--child", str(folder), "--steps",
                               str(args.steps)], capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        size = (folder / "train.bin").stat().st_size
        print(f"train.bin {size / 2**20:,.0f} MiB ({n:,} uint16 tokens, V = {args.vocab}): "
              f"{r['status']}, {args.steps} steps; peak RSS {r['peak_rss'] / 2**20:.0f} MiB; "
              f"resolve (hash) {r['resolve_s']:.2f} s, again (cached) "
              f"{r['resolve_cached_s']:.3f} s; problems: {r['problems'] or 'none'}", flush=True)


if __name__ == "__main__":
    main()
