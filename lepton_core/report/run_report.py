"""The run report: one section per stage, written into the run's folder when the run ends."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lepton_core.fsutil import atomic_write_text


class StageResult(BaseModel):
    """What one stage of a run did."""

    model_config = ConfigDict(frozen=True)

    stage: str = Field(description="Stage name.")
    status: Literal["ok", "skipped", "failed"] = Field(description="Outcome.")
    summary: str = Field(description="One line on what happened.")
    details: tuple[tuple[str, str], ...] = Field(default=(), description="Name/value rows shown as a table.")
    images: tuple[tuple[str, str], ...] = Field(default=(), description="(caption, path relative to the run folder) of charts.")


class RunReport(BaseModel):
    """Everything the report shows about one run."""

    model_config = ConfigDict(frozen=True)

    run_name: str
    spec_name: str
    spec_path: str
    spec_sha256: str
    started_at: dt.datetime
    finished_at: dt.datetime
    stages: tuple[StageResult, ...]

    @property
    def status(self) -> str:
        return "failed" if any(s.status == "failed" for s in self.stages) else "ok"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: RunReport) -> str:
    """The report as markdown: a header, a stage overview table, then each stage's details."""
    took = (report.finished_at - report.started_at).total_seconds()
    out = [
        f"# Lepton migration report: {report.spec_name}",
        "",
        f"- run: `{report.run_name}`",
        f"- spec: `{report.spec_path}` (sha256 `{report.spec_sha256[:12]}`)",
        f"- started: {report.started_at:%Y-%m-%d %H:%M:%S %Z}, took {took:.1f} s",
        f"- status: **{report.status}**",
        "",
        "| stage | status | summary |",
        "|---|---|---|",
        *(f"| {_cell(s.stage)} | {s.status} | {_cell(s.summary)} |" for s in report.stages),
    ]
    for s in report.stages:
        if not s.details and not s.images:
            continue
        out += ["", f"## {s.stage}"]
        if s.details:
            out += ["", "| | |", "|---|---|", *(f"| {_cell(k)} | {_cell(v)} |" for k, v in s.details)]
        out += [line for caption, path in s.images for line in ("", f"![{caption}]({path})")]
    return "\n".join(out) + "\n"


def write_report(report: RunReport, run_dir: str | os.PathLike) -> Path:
    """Write ``report.md`` and ``report.json`` into ``run_dir``, each atomically; the markdown's path."""
    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "report.json", report.model_dump_json(indent=2))
    return atomic_write_text(run_dir / "report.md", render_markdown(report))
