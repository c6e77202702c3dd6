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


def test_stage_rows_read_as_sentences() -> None:
    """Counts take their noun's number ('1 object', not '1 objects'); a drift row does not repeat its
    own label; a gate names each table with its rows."""
    from lepton_core.data.engine import TransferSummary
    from lepton_core.report.stages import data_stage, drift_stage
    from lepton_core.validation.drift import DriftReport
    from lepton_core.validation.gate import GateResult

    table = TransferSummary("request-log", "/data/log", "s3://b/p/datasets/request-log", objects=1, total_bytes=120_000,
                            sent=1, sent_bytes=120_000, seconds=0.2)
    images = TransferSummary("digits", "/data/digits", "s3://b/p/datasets/digits", objects=3, total_bytes=3_000, skipped=3)
    stage = data_stage([table])
    assert stage.summary == "1 dataset, 1 object verified (1 sent this run)"
    assert stage.details[0][1].startswith("1 object, 0.1 MB -> s3://b/p/datasets/request-log; 1 sent (0 re-sent), 0 already there")
    assert data_stage([table, images]).summary == "2 datasets, 4 objects verified (1 sent this run)"
    assert table.line().startswith("request-log: 1 object (0.1 MB) at ")

    drift = DriftReport("digits-cloud", "digits-onprem", "images", None,
                        ({"class": "0", "distance": 0.5}, {"class": "1", "distance": 0.7}))
    label, text = drift_stage([drift]).details[0]
    assert (label, text) == ("digits-cloud vs digits-onprem", "mean distance 0.600, largest 0.700 (class 1) (no limit set)")
    assert drift.summary() == f"{label}: {text}"  # the command line's and the log's line keep the names

    gate = GateResult(dataset="request-log", side="target", rows={"copy": 1, "columns": 32}, checks=(), seconds=0.1)
    assert gate.rows_text() == "copy (1 row), columns (32 rows)"
