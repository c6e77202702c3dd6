"""The run report task: markdown and JSON in the run folder, and a Prefect markdown artifact."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from lepton_core.report import RunReport, render_markdown, write_report


@task(name="write-run-report")
def write_run_report(report: RunReport, run_dir: str) -> str:
    """Write the report into ``run_dir`` and publish it as the run's ``migration-report`` artifact."""
    path = write_report(report, run_dir)
    create_markdown_artifact(key="migration-report", markdown=render_markdown(report),
                             description=f"Migration report for {report.spec_name}")
    return str(path)
