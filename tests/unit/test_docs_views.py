"""Data Docs built with lepton's page views: GX's pages, with Jinja's compiled templates reused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lepton_core.validation import docs_views
from lepton_core.validation.gate import run_suites


def _build(docs: Path) -> list:
    import great_expectations as gx

    frame = pd.DataFrame({"x": [1, 2, 3, 40]})
    expectations = {"t": [gx.expectations.ExpectColumnValuesToBeBetween(column="x", min_value=0, max_value=10)]}
    return run_suites("docs-test", {"t": frame}, expectations, {"t": lambda i: f"row {i}"}, docs)


def _pages(docs: Path) -> list[str]:
    return sorted(str(p.relative_to(docs).parts[0]) for p in docs.rglob("*.html"))


def test_a_second_build_compiles_no_template_and_writes_the_same_pages(tmp_path: Path, monkeypatch) -> None:
    compiled: list[str] = []
    dump = docs_views.MemoryBytecodeCache.dump_bytecode
    monkeypatch.setattr(docs_views.MemoryBytecodeCache, "dump_bytecode",
                        lambda self, bucket: (compiled.append(bucket.key), dump(self, bucket))[1])
    docs_views.COMPILED.clear()
    first = _build(tmp_path / "a")
    assert compiled  # the first build compiled GX's templates, into the cache
    n = len(compiled)
    second = _build(tmp_path / "b")
    assert len(compiled) == n  # the second compiled none
    assert [(c.expectation, c.success, c.unexpected, c.examples) for c in first] == \
           [(c.expectation, c.success, c.unexpected, c.examples) for c in second] == \
           [("expect_column_values_to_be_between(column=x)", False, 1, ("row 3",))]
    # the pages of GX's site: the index, the suite, the validation result, in both builds
    assert _pages(tmp_path / "a") == _pages(tmp_path / "b") == ["expectations", "index.html", "validations"]
    index = (tmp_path / "b" / "index.html").read_text()
    assert "docs-test-t" in index and "Great Expectations" in index
    validation = next((tmp_path / "b" / "validations").rglob("*.html")).read_text()
    # the expectation and its unexpected value, as GX's templates render them
    assert "values must be greater than or equal to" in validation and "Unexpected Value" in validation and "40" in validation
