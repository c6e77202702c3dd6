"""Gate results and drift reports as markdown, for the Prefect artifacts and the run report."""

from __future__ import annotations

from pathlib import Path

from lepton_core.validation.drift import DriftReport
from lepton_core.validation.gate import GateResult


def _docs_line(docs: str | None) -> list[str]:
    return [f"Data Docs: [{docs}]({Path(docs).as_uri()})", ""] if docs else []


def gate_markdown(result: GateResult) -> str:
    """A heading with the verdict, then one row per expectation with up to ten failing examples."""
    verdict = "passed" if result.success else f"FAILED ({len(result.failures)} of {len(result.checks)} expectations)"
    out = [f"# {result.side.capitalize()} validation of `{result.dataset}`: {verdict}", "",
           f"{len(result.checks)} expectations on {result.rows_text()}, {result.seconds:.1f} s.", "",
           *_docs_line(result.docs),
           "| table | expectation | result | unexpected | examples |", "|---|---|---|---|---|"]
    for c in sorted(result.checks, key=lambda c: c.success):
        examples = "<br>".join(e.replace("|", "\\|") for e in c.examples)
        out.append(f"| {c.table} | `{c.expectation}` | {'ok' if c.success else '**failed**'} | {c.unexpected} | {examples} |")
    return "\n".join(out) + "\n"


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def drift_markdown(report: DriftReport, docs: str | None = None) -> str:
    """The drift report: a summary line, then one row per class (images) or column (tables)."""
    over = [r for r in report.rows if report.limit is not None and r["distance"] > report.limit]
    verdict = "over the limit" if over else ("within the limit" if report.limit is not None else "reported (no limit set)")
    out = [f"# Drift of `{report.dataset}` from `{report.baseline}`: {verdict}", "", report.summary() + ".", "",
           "Distances run from 0 (the same distribution) to 1 (nothing in common).", "", *_docs_line(docs)]
    if report.kind == "images":
        out += ["| class | images (baseline / this) | pixel mean (baseline / this) | pixel std (baseline / this) | histogram distance |",
                "|---|---|---|---|---|"]
        for r in report.rows:
            out.append(f"| {r['class']} | {r['baseline_images']} / {r['images']} | {_fmt(r['baseline_mean'])} / {_fmt(r['mean'])} "
                       f"| {_fmt(r['baseline_std'])} / {_fmt(r['std'])} | {r['distance']:.3f} |")
    else:
        out += ["| column | measure | baseline | this | distance |", "|---|---|---|---|---|"]
        for r in report.rows:
            out.append(f"| {r['column']} | {r['measure']} | {_fmt(r['baseline'])} | {_fmt(r['current'])} | {r['distance']:.3f} |")
    return "\n".join(out) + "\n"
