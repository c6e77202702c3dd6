"""Run reports: what each stage did, as markdown for people and JSON for programs."""

from lepton_core.report.run_report import RunReport, StageResult, render_markdown, write_report

__all__ = ["RunReport", "StageResult", "render_markdown", "write_report"]
