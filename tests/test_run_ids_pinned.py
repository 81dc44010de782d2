"""Run ids are the cache key of every results directory: a refactor must not change them.

tests/fixtures/pinned_run_ids.json was written from the code before the layout change
(commit 361ad7b) by loading every shipped suite and example that loads without extra files:
each suite's runs, and for a [tune] suite every grid point's final run at every seed. A
changed id would retrain (or orphan) every result written by an earlier lossbench.
"""

import json
import platform
from pathlib import Path

import pytest

from lossbench.core.config import RunConfig
from lossbench.suite.load import load_suite
from lossbench.suite.tuning import apply_setting, settings

ROOT = Path(__file__).resolve().parent.parent
PINNED = json.loads((Path(__file__).parent / "fixtures" / "pinned_run_ids.json").read_text())
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def run_ids(path: Path) -> list[str]:
    suite = load_suite(path)
    ids = [r.run_id() for r in suite.runs]
    if suite.tune is not None:
        ids += [apply_setting(e, s, seed=seed).run_id()
                for e in suite.entries for s in settings(suite.tune, e) for seed in suite.seeds]
    return ids


def test_default_config_id_is_pinned():
    assert RunConfig().run_id() == PINNED["default"]


@pytest.mark.parametrize("rel", sorted(PINNED["suites"]))
def test_shipped_suite_run_ids_are_pinned(rel, monkeypatch):
    path = ROOT / rel
    text = path.read_text()
    if "tinyshakespeare" in text and not SHAKESPEARE.exists():
        pytest.skip(f"{SHAKESPEARE} is not beside the project")
    if "stdlib" in text and platform.python_version() != PINNED["python"]:
        pytest.skip(f"the stdlib corpus is this Python's sources: pinned on {PINNED['python']}")
    monkeypatch.chdir(ROOT)  # suites name their data relative to the repository root
    # a suite may gain runs (a new loss, a new seed); every pinned run must still be one of
    # its runs, with the same id
    ids = set(run_ids(Path(rel)))
    assert [i for i in PINNED["suites"][rel] if i not in ids] == []
