"""The suite-key reference (docs/reference/suite-keys.md) is generated from the code that
validates suites (lossbench.suite.keys, run by the docs build): every key a suite accepts
must be on it with its own description, and the rows must say what the fields declare."""

import dataclasses
from pathlib import Path

import pytest

from lossbench.core.config import DataConfig, TrainConfig
from lossbench.core.fields import doc_of
from lossbench.suite import keys
from lossbench.suite.claims import KEYS as CLAIM_KEYS
from lossbench.suite.load import SECTIONS, TOP_LEVEL
from lossbench.suite.scale import SCALE_KEYS
from lossbench.suite.tuning import TUNE_KEYS


def _row(page: str, key: str, section: str) -> str:
    """The table row of ``key`` under the heading of ``section``."""
    part = page.split(f"## `[{section}]`", 1)[1].split("\n## ", 1)[0]
    return next(line for line in part.splitlines() if line.startswith(f"| `{key}` |"))


COMMITTED = Path(__file__).resolve().parent.parent / "docs" / "reference" / "suite-keys.md"


def test_the_committed_page_is_current():
    assert COMMITTED.read_text(encoding="utf-8") == keys.suite_keys_markdown(), (
        "docs/reference/suite-keys.md is stale: python -m lossbench.suite.keys > "
        "docs/reference/suite-keys.md")


def test_every_field_of_every_section_has_a_description():
    missing = [f"{cls.__name__}.{f.name}" for cls in SECTIONS.values()
               for f in dataclasses.fields(cls) if not doc_of(f).strip()]
    assert missing == []


def test_every_accepted_key_is_on_the_page():
    page = keys.suite_keys_markdown()
    for key in TOP_LEVEL:
        assert f"| `{key}` |" in page.split("## `[data]`")[0], key
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f"`{f.name}`" in page.split(f"## `[{name}]`", 1)[1].split("\n## ")[0], \
                (name, f.name)
    for section, names in (("tune", TUNE_KEYS), ("scale", SCALE_KEYS), ("[claims]", CLAIM_KEYS)):
        for key in names:
            assert _row(page, key, section), (section, key)


def test_rows_show_the_declared_default_range_and_description():
    page = keys.suite_keys_markdown()
    lr = _row(page, "lr", "train")
    assert "`0.001`" in lr and "> 0" in lr.replace("&gt;", ">") and "peak learning rate" in lr
    assert "[0.0, 1.0)" in _row(page, "beta2", "train")  # (0 included, 1 excluded)
    corpus = _row(page, "corpus", "data")
    assert '`"markov"`' in corpus and '`"hf"`' in corpus
    assert "string or unset" in _row(page, "path", "data")
    # a computed field is listed as computed, never as a key a suite may set
    assert "| `content_hash` |" not in page and "`content_hash`:" in page
    # pipes inside a description are escaped, so the row keeps its five cells
    assert _row(page, "teacher", "data").replace("\\|", "").count("|") == 6


def test_a_key_without_a_description_stops_the_build(monkeypatch):
    monkeypatch.setattr(keys, "TOP_LEVEL_DOCS",
                        {k: v for k, v in keys.TOP_LEVEL_DOCS.items() if k != "baseline"})
    with pytest.raises(ValueError, match="baseline"):
        keys.suite_keys_markdown()
    monkeypatch.undo()
    undocumented = dataclasses.make_dataclass(
        "Undocumented", [("x", int, dataclasses.field(default=1))])
    monkeypatch.setitem(SECTIONS, "train", undocumented)
    with pytest.raises(ValueError, match="Undocumented.x has no description"):
        keys.suite_keys_markdown()


def test_field_docs_stay_out_of_the_config_and_its_id():
    # metadata is not part of to_dict(): describing a field cannot change a run id
    assert "doc" not in str(TrainConfig().__dict__)
    assert doc_of(next(f for f in dataclasses.fields(DataConfig) if f.name == "corpus"))
