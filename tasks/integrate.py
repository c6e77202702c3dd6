"""The integration task: parity of the adapted candidate against the on-prem model, both served with
the same API; the candidate promoted and the cutover bundle written only when it passes. The
servers it starts are stopped when it ends, also on failure. A failed parity check is not retried
(it would fail the same way)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from lepton_core.spec import LoadedSpec
from lepton_core.spec.params import IntegrateOptions
from tasks.policies import JITTER, TRANSIENT_DELAYS, TRANSIENT_RETRIES, retry_if_transient


@task(name="integrate", retries=TRANSIENT_RETRIES, retry_delay_seconds=TRANSIENT_DELAYS, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_if_transient)
def integrate_task(loaded: LoadedSpec, candidate: str, options: IntegrateOptions, state_root: str, run_dir: str):
    """Returns the ``IntegrationResult``; the parity table is an artifact whether it passes or not."""
    from pathlib import Path

    from lepton_core.serving.integrate import integrate
    from lepton_core.serving.parity import ParityFailed

    logger = get_run_logger()
    try:
        result = integrate(loaded, candidate, options, state_root, run_dir, say=logger.info)
    except ParityFailed as exc:
        table = Path(run_dir) / "integrate" / "parity.md"
        create_markdown_artifact(key="parity", description=f"Parity of {candidate}: failed",
                                 markdown=(table.read_text() if table.is_file() else "") + f"\n\n**Failed**: {exc}\n")
        raise
    create_markdown_artifact(key="parity", description=f"Parity of {candidate}: passed", markdown=(
        f"# Parity: {result.model} {candidate} against {result.onprem}\n\n{result.parity.table()}\n\n"
        f"Promoted to `candidate`. Cutover bundle: `{result.bundle_uri}`\n"))
    logger.info(result.summary())
    return result
