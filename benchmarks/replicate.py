"""Run the replication suites (suites/replicate/*.toml) and print the README's table.

    python benchmarks/replicate.py                      # every part, then the table
    python benchmarks/replicate.py --table-only         # the table of finished results
    python benchmarks/replicate.py --shakespeare path/to/tinyshakespeare.txt
    python benchmarks/replicate.py --only repetition    # one part (repeatable)

Each part is an ordinary `lossbench run` (resumable: rerun to finish, finished runs are
skipped) into results/<suite name>/, whose report tests the suite's [[claims]]. The table
reads the latest experiment of each results directory: claim, source, published effect
(from the claim's source), lossbench's effect (a − b with its range or 95% CI), the two
sides' means, seeds, scale and verdict. Wall times are of this machine under its load at
the time: say so with any number quoted from here.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lossbench.report.claims import effect_text  # noqa: E402
from lossbench.report.document import fmt  # noqa: E402
from lossbench.report.evidence import gather  # noqa: E402

SUITES = sorted((ROOT / "suites" / "replicate").glob("*.toml"))


def scale(ev) -> str:
    """'tinyshakespeare char, 2×64 GPT, 1,200 steps' from the experiment's config."""
    c = ev.meta.get("config", {})
    source = c.get("data.corpus", "?")
    if source == "text":
        source = Path(str(c.get("data.path", "text"))).stem
    elif source == "markov":
        source = f"markov V={c.get('data.markov_vocab')} order {c.get('data.markov_order')}"
    elif source == "stdlib":
        source = f"stdlib {int(c.get('data.stdlib_max_bytes', 0)) // 1000} kB"
    return (f"{source}, {c.get('model.n_layer')}×{c.get('model.n_embd')} GPT, "
            f"{int(c.get('train.steps', 0)):,} steps")


def side_mean(ev, label, column) -> str:
    runs = ev.scores.runs
    values = runs[(runs.label == label) & (runs.status == "done")][column].astype(float)
    if len(values) and (values == math.inf).any():
        return f"∞ ({int((values == math.inf).sum())} of {len(values)} never)"
    finite = values[values.map(math.isfinite)]
    return fmt(float(finite.mean()), 4) if len(finite) else "–"


def table(out_dirs: list[Path]) -> str:
    rows = ["| claim | source | published | lossbench: b → a (means) | Δ = a − b | seeds | "
            "scale | verdict |", "|---|---|---|---|---|---|---|---|"]
    for out in out_dirs:
        ev = gather(out, with_results=False)
        for r in ev.claims:
            c = r.claim
            published = re.search(r"\(([^()]*)\)\s*$", c.source)
            source = re.sub(r"\s*\([^()]*\)\s*$", "", c.source)
            b_mean = f"{c.b:g}" if c.b_is_constant else side_mean(ev, c.b, c.metric)
            verdict = r.verdict + (f" ({r.seeds_needed} seeds would decide)"
                                   if r.verdict == "inconclusive" and r.seeds_needed > r.n_pairs
                                   else "")
            seeds = f"{r.n_pairs}" + (f" ({r.against} unfinished)" if r.against else "")
            rows.append((f"| {c.name} ({c.statement()}) | {source} | "
                        f"{published.group(1) if published else '–'} | "
                        f"{b_mean} → {side_mean(ev, c.a, c.metric)} | {effect_text(r)} | "
                        f"{seeds} | {scale(ev)} | {verdict} |").replace("|log Z|", "\\|log Z\\|"))
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--shakespeare", default=None, help="path to tinyshakespeare.txt")
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--only", action="append", default=[], metavar="STEM",
                        help="only this part, e.g. --only repetition (repeatable)")
    args = parser.parse_args()
    outs = []
    total = time.perf_counter()
    for suite in [s for s in SUITES if not args.only or s.stem in args.only]:
        out = ROOT / "results" / tomllib.loads(suite.read_text(encoding="utf-8"))["name"]
        outs.append(out)
        if args.table_only:
            continue
        cmd = [sys.executable, "-m", "lossbench", "run", str(suite), "--out", str(out),
               "--workers", args.workers]
        if args.shakespeare and "tinyshakespeare" in suite.read_text(encoding="utf-8"):
            cmd += ["--set", f'data.path="{args.shakespeare}"']
        start = time.perf_counter()
        code = subprocess.run(cmd, cwd=ROOT).returncode
        print(f"== {suite.name}: exit {code}, {time.perf_counter() - start:.0f} s wall",
              flush=True)
        if code not in (0, 3):
            sys.exit(code)
    if not args.table_only:
        print(f"== all parts: {time.perf_counter() - total:.0f} s wall", flush=True)
    print(table(outs))


if __name__ == "__main__":
    main()
