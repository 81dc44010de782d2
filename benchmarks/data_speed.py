"""How long the data layer takes: corpus loading, tokenizers and Markov sampling.

    python benchmarks/data_speed.py [--shakespeare PATH] [--repeats 5]

Prints the median and range of each operation over ``--repeats`` runs, one
thread. These were once timing assertions in the unit tests; timings belong
here, where a loaded machine shows up as a wide range instead of a failed test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from lossbench.core.config import DataConfig
from lossbench.data.corpora import load_corpus
from lossbench.data.markov import MarkovSource
from lossbench.data.tokenizers import CharTokenizer

DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt"


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shakespeare", type=Path, default=DEFAULT_TEXT)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = {"markov: sample 1e6 tokens": lambda: MarkovSource().sample(1_000_000, seed=0)}
    if args.shakespeare.is_file():
        text = args.shakespeare.read_text(encoding="utf-8")
        path = str(args.shakespeare)
        cases["char: fit + encode tinyshakespeare"] = lambda: CharTokenizer.fit(text).encode(text)
        cases["text corpus: load tinyshakespeare (char)"] = lambda: load_corpus(
            DataConfig(corpus="text", path=path))
        cases["text corpus: load tinyshakespeare (bpe 512)"] = lambda: load_corpus(
            DataConfig(corpus="text", path=path, tokenizer="bpe"))
    else:
        print(f"(no {args.shakespeare}: text cases skipped; pass --shakespeare PATH)")
    print(f"| operation | median s | min–max s (n={args.repeats}) |\n|---|---:|---:|")
    for name, fn in cases.items():
        t = timed(fn, args.repeats)
        print(f"| {name} | {statistics.median(t):.3f} | {min(t):.3f}–{max(t):.3f} |")


if __name__ == "__main__":
    main()
