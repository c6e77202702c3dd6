"""Gate results as markdown, for the Prefect artifact of each gate and the run report."""

from __future__ import annotations

from lepton_core.validation.gate import GateResult


def gate_markdown(result: GateResult) -> str:
    """A heading with the verdict, then one row per expectation with up to ten failing examples."""
    verdict = "passed" if result.success else f"FAILED ({len(result.failures)} of {len(result.checks)} expectations)"
    out = [f"# {result.side.capitalize()} validation of `{result.dataset}`: {verdict}", "",
           f"{len(result.checks)} expectations on {result.rows_text()}, {result.seconds:.1f} s.", "",
           "| table | expectation | result | unexpected | examples |", "|---|---|---|---|---|"]
    for c in sorted(result.checks, key=lambda c: c.success):
        examples = "<br>".join(e.replace("|", "\\|") for e in c.examples)
        out.append(f"| {c.table} | `{c.expectation}` | {'ok' if c.success else '**failed**'} | {c.unexpected} | {examples} |")
    return "\n".join(out) + "\n"
