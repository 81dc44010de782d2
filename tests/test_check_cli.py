"""`lossbench check` and `lossbench losses` as a user runs them (subprocess, real exit codes)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lossbench.checks import PROPERTIES, LossCase, resolve_targets, run_property

FIXTURES = Path(__file__).parent / "fixtures"
BROKEN = FIXTURES / "broken_losses.py"


def lossbench(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lossbench", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("fn,prop", [
    ("naive_ce", "finite_at_extremes"),
    ("unmasked_ce", "output_contract"),
    ("row_mixing_ce", "batch_permutation_equivariant"),
    ("wrong_gradient_ce", "gradient_matches_finite_differences"),
])
def test_broken_loss_is_caught_with_a_runnable_counterexample(fn, prop):
    (spec,) = resolve_targets(f"{BROKEN}:{fn}")
    result = run_property(spec, prop, max_examples=200)
    assert not result.passed
    # The printed counterexample is runnable Python that reproduces the failure.
    case = eval(result.counterexample, {"torch": torch, "LossCase": LossCase})
    assert isinstance(case, LossCase)
    assert repr(case) == result.counterexample
    with pytest.raises(AssertionError):
        PROPERTIES[prop].check(spec, case)


def test_check_cli_reports_failure_table_and_exit_1():
    proc = lossbench("check", f"{BROKEN}:naive_ce", "--max-examples", "100")
    assert proc.returncode == 1, proc.stderr
    assert "finite_at_extremes" in proc.stdout and "FAIL" in proc.stdout
    assert "Falsifying example" in proc.stdout and "case = LossCase(" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].endswith("failed")


def test_check_cli_passes_a_registered_loss():
    proc = lossbench("check", "cross_entropy", "--max-examples", "10")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 failed" in proc.stdout


def test_check_cli_module_function_target():
    proc = lossbench("check", "lossbench.losses.likelihood:cross_entropy", "--max-examples", "5")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_plugin_loss_claiming_a_false_property_fails():
    proc = lossbench("check", "fixture_negative_ce", "--plugin", str(FIXTURES / "broken_plugin.py"),
                     "--max-examples", "50")
    assert proc.returncode == 1
    assert "nonnegative" in proc.stdout and "FAIL" in proc.stdout


@pytest.mark.parametrize("args,fragment", [
    (["check", "cross_entropyy"], "did you mean cross_entropy"),
    (["check", "missing_file.py:fn"], "no such file: missing_file.py"),
    (["check", f"{BROKEN}:nope"], "has no function 'nope'"),
    (["check", f"{BROKEN}:not_a_loss"], "expected signature"),
    (["check", "no_such_module_xyz:fn"], "cannot import module"),
    (["check", "all", "--property", "bogus"], "--property: unknown"),
    (["losses", "--plugin", "missing_plugin.py"], "--plugin: no such file: missing_plugin.py"),
    (["check"], "Missing argument"),
])
def test_bad_input_exits_2_with_one_line(args, fragment):
    proc = lossbench(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("lossbench: error:") and fragment in lines[0], lines[0]


def test_losses_json_lists_every_registered_loss():
    proc = lossbench("losses", "--json")
    assert proc.returncode == 0
    names = {row["name"] for row in json.loads(proc.stdout)}
    from lossbench.losses import list_losses
    assert names == {s.name for s in list_losses()}


def test_losses_table_has_references():
    proc = lossbench("losses")
    assert proc.returncode == 0
    assert "Welleck" in proc.stdout and "Crammer" in proc.stdout and "focal" in proc.stdout
