"""MkDocs hooks: pages generated on every build, so none of them can go stale.

- ``reference/suite-keys.md`` from the config fields' metadata (lossbench.suite.keys),
  in place of the committed copy (which tests/test_suite_keys.py keeps equal to it);
- ``index.md``, ``benchmarks.md`` and ``contributing.md`` from README.md, BENCHMARKS.md
  and CONTRIBUTING.md at the repository root, with README's repository-relative links
  (``docs/sweeps.md``, ``BENCHMARKS.md``) rewritten to the site's pages. A link that
  then points nowhere fails ``mkdocs build --strict`` like any other.
- the docs pages' links to those root files (``../BENCHMARKS.md``, right on GitHub) go to
  their pages on the site;
- ``:class:`x``` and its kin (the docstrings' reStructuredText roles) are shown as code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's lossbench, whatever is installed

from lossbench.suite.keys import suite_keys_markdown  # noqa: E402

FROM_ROOT = {"index.md": "README.md", "benchmarks.md": "BENCHMARKS.md",
             "contributing.md": "CONTRIBUTING.md"}
ROOT_LINKS = {"BENCHMARKS.md": "benchmarks.md", "CONTRIBUTING.md": "contributing.md",
              "README.md": "index.md"}
_LINK = re.compile(r"\]\((?!https?:|#)([^)#\s]+)(#[^)\s]*)?\)")
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):(<code>)")


def site_links(markdown: str) -> str:
    """README's links as the site sees them: docs/x.md -> x.md, BENCHMARKS.md ->
    benchmarks.md; anything else is left for the strict build to check."""
    def move(match: re.Match) -> str:
        target, anchor = match.group(1), match.group(2) or ""
        target = ROOT_LINKS.get(target, target.removeprefix("docs/"))
        return f"]({target}{anchor})"
    return _LINK.sub(move, markdown)


def on_files(files, config):
    # the committed copy (for readers of the repository) is replaced by a fresh one;
    # tests/test_suite_keys.py fails when the two differ
    committed = files.get_file_from_path("reference/suite-keys.md")
    if committed is not None:
        files.remove(committed)
    files.append(File.generated(config, "reference/suite-keys.md",
                                content=suite_keys_markdown()))
    for page, source in FROM_ROOT.items():
        text = (ROOT / source).read_text(encoding="utf-8")
        files.append(File.generated(config, page, content=site_links(text)))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri in FROM_ROOT or page.file.generated_by:
        return markdown
    depth = page.file.src_uri.count("/")  # reference/x.md reaches the root with ../../
    up = "../" * (depth + 1)
    for source, target in ROOT_LINKS.items():
        markdown = markdown.replace(f"]({up}{source}", f"]({'../' * depth}{target}")
    return markdown


def on_page_content(html, page, config, files):
    return _ROLE.sub(r"\1", html)
