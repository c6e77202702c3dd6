"""Validation gate tasks. A failed gate fails the run and is never retried: bad data is not transient."""

from __future__ import annotations

import re

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from lepton_core.spec import LoadedSpec
from lepton_core.validation.gate import GateResult, ValidationFailed, validate_local
from lepton_core.validation.report import gate_markdown


def _publish(result: GateResult) -> None:
    key = re.sub(r"[^a-z0-9-]+", "-", f"validation-{result.side}-{result.dataset}".lower())
    create_markdown_artifact(key=key, markdown=gate_markdown(result),
                             description=f"{result.side} validation of {result.dataset}")


@task(name="validate-source", task_run_name="validate-source-{name}")
def validate_source_task(loaded: LoadedSpec, name: str) -> GateResult:
    """Check a dataset where it lives now, before any of it moves."""
    try:
        result = validate_local(loaded, name, "source")
    except ValidationFailed as exc:
        _publish(exc.result)
        raise
    _publish(result)
    get_run_logger().info("%s: %d expectations passed", name, len(result.checks))
    return result
