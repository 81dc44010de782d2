"""What checking a result.json field by field costs (lossbench.store.records.RunRecord).

    python benchmarks/record_read.py [--steps 20000] [--repeats 5]

Builds a result.json of ``--steps`` updates (one evaluation every 100, each with the
reliability table and samples of a real run, from tests/fixtures/results_361ad7b) and
prints the median and range of a plain ``json.loads`` of it and of ``RunRecord.read``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from lossbench.store.records import RunRecord

RUN = Path(__file__).parent.parent / "tests/fixtures/results_361ad7b/runs/cross_entropy-61b5b4de922c"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    record = json.loads((RUN / "result.json").read_text())
    n = args.steps
    record["steps"] = {k: [v[0]] * n for k, v in record["steps"].items()}
    record["steps"]["step"] = list(range(1, n + 1))
    record["evals"] = [dict(record["evals"][-1], step=s) for s in range(0, n + 1, 100)]
    folder = Path(tempfile.mkdtemp()) / RUN.name
    folder.mkdir()
    (folder / "result.json").write_text(json.dumps(record))
    size = (folder / "result.json").stat().st_size
    print(f"result.json of {n} steps: {size / 1e6:.1f} MB")
    for name, read in (("json.loads", lambda: json.loads((folder / "result.json").read_text())),
                       ("RunRecord.read", lambda: RunRecord.read(folder))):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            read()
            times.append((time.perf_counter() - start) * 1000)
        print(f"{name:15s} median {statistics.median(times):6.1f} ms "
              f"(range {min(times):.1f}-{max(times):.1f})")


if __name__ == "__main__":
    main()
