"""The run report renders every stage and is written atomically with ordinary permissions."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

from lepton_core.report import RunReport, StageResult, render_markdown, write_report


def report(*stages: StageResult) -> RunReport:
    t0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.timezone.utc)
    return RunReport(run_name="r1", spec_name="demo", spec_path="/x/spec.yaml", spec_sha256="ab" * 32,
                     started_at=t0, finished_at=t0 + dt.timedelta(seconds=42), stages=stages)


def test_markdown_has_overview_and_details() -> None:
    md = render_markdown(report(
        StageResult(stage="spec", status="ok", summary="3 datasets", details=(("model", "resnet18 | 10 classes"),)),
        StageResult(stage="object store", status="failed", summary="down"),
    ))
    assert "# Lepton migration report: demo" in md
    assert "- status: **failed**" in md and "took 42.0 s" in md
    assert "| spec | ok | 3 datasets |" in md
    assert "| model | resnet18 \\| 10 classes |" in md  # a pipe in a value does not break the table
    assert "## object store" not in md  # no details, no section


def test_written_files(tmp_path: Path) -> None:
    r = report(StageResult(stage="spec", status="ok", summary="fine"))
    path = write_report(r, tmp_path / "run")
    assert path.read_text() == render_markdown(r)
    assert json.loads((tmp_path / "run" / "report.json").read_text())["spec_name"] == "demo"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["report.json", "report.md"]
    assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044  # readable by others, like any report
