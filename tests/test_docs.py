"""What the docs promise and CI relies on: README's Quick-start commands (CI runs the
second verbatim), imports in the docs' Python examples that exist, and a CI script that
fails instead of skipping the browser tests when Chromium cannot be installed."""

import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICK_START = ('pip install torch==2.13.0 -e . && lossbench run suites/quick.toml\n'
               'pip install torch==2.13.0 -e ".[dev]" && python -m pytest -n 2\n')
FAST_LANE = 'python -m pytest -n 2 -m "not slow"'
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_readme_quick_start_is_the_two_commands_and_ci_runs_the_second_verbatim():
    readme = (ROOT / "README.md").read_text()
    assert f"## Quick start\n\n```bash\n{QUICK_START}```\n" in readme
    assert FAST_LANE in readme and FAST_LANE in (ROOT / "CONTRIBUTING.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert QUICK_START.splitlines()[1] in ci  # a line of its own, exactly
    assert "mkdocs build --strict" in "\n".join(ci)


def _imports(text: str):
    """(module, name) of every `from lossbench... import ...` in the text's code."""
    pattern = r"^\s*from (lossbench[\w.]*) import (?:\(([\w,\s]+)\)|([\w, ]+))"
    for module, wrapped, names in re.findall(pattern, text, re.M):
        for name in (wrapped or names).split(","):
            if name.strip():
                yield module, name.strip().split(" as ")[0]


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_import_in_the_docs_exists(page):
    missing = []
    for module, name in _imports(page.read_text()):
        try:
            if not hasattr(importlib.import_module(module), name):
                missing.append(f"from {module} import {name}")
        except ImportError:
            missing.append(f"from {module} import {name}")
    assert missing == []


def _ci_without_chromium(tmp_path, apt_get_status: int) -> subprocess.CompletedProcess:
    """Run a copy of .ci/run where no chromium is on PATH and apt-get exits with
    ``apt_get_status`` (installing nothing). PATH holds bash and dirname only, so a script
    that went on past the check would stop at its next command (pip: not found, 127)
    instead of installing anything."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    apt = bin_dir / "apt-get"
    apt.write_text(f"#!{shutil.which('bash')}\nexit {apt_get_status}\n")
    apt.chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    return subprocess.run([shutil.which("bash"), str(tmp_path / ".ci" / "run")], env=env,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)


@pytest.mark.skipif(os.name != "posix", reason="a bash script")
def test_ci_fails_when_chromium_cannot_be_installed(tmp_path):
    done = _ci_without_chromium(tmp_path, apt_get_status=100)
    assert done.returncode == 1, done.stderr
    assert "could not install chromium" in done.stderr


@pytest.mark.skipif(os.name != "posix", reason="a bash script")
def test_ci_fails_when_the_install_leaves_no_chromium_command(tmp_path):
    done = _ci_without_chromium(tmp_path, apt_get_status=0)
    assert done.returncode == 1, done.stderr
    assert "no 'chromium' command" in done.stderr
