"""A results directory written by an earlier lossbench is reused, never retrained.

tests/fixtures/results_361ad7b/ was written by ``lossbench run legacy.toml --out . --no-report``
at commit 361ad7b (before the package layout change). Rerunning the same suite into a copy
must find every run finished (nothing trained, no file of a run touched), and its tables and
report must read as they did.
"""

import shutil
from pathlib import Path

import pytest

from helpers import lossbench_cli

from lossbench.store.tables import load

LEGACY = Path(__file__).parent / "fixtures" / "results_361ad7b"


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted((root / "runs").rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.slow
def test_rerun_of_a_legacy_results_directory_trains_nothing(tmp_path):
    out = tmp_path / "legacy"
    shutil.copytree(LEGACY, out)
    before = snapshot(out)
    summary_before, curves_before = load(out)
    proc = lossbench_cli("run", out / "legacy.toml", "--out", out, "--no-report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "6 runs (6 already finished)" in proc.stdout + proc.stderr
    assert snapshot(out) == before  # no run folder file rewritten, no attempt recorded
    summary, curves = load(out)
    assert sorted(summary.run_id) == sorted(summary_before.run_id)
    assert len(curves) == len(curves_before)
    report = lossbench_cli("report", out, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
