"""Validation gate tasks. A failed gate fails the run and is never retried: bad data is not transient."""

from __future__ import annotations

import re
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from lepton_core.spec import LoadedSpec
from lepton_core.validation.gate import GateResult, ValidationFailed, validate_local
from lepton_core.validation.parity import validate_target
from lepton_core.validation.report import gate_markdown
from tasks.policies import JITTER, TRANSIENT_DELAYS, TRANSIENT_RETRIES, retry_if_transient


def _publish(result: GateResult) -> None:
    key = re.sub(r"[^a-z0-9-]+", "-", f"validation-{result.side}-{result.dataset}".lower())
    create_markdown_artifact(key=key, markdown=gate_markdown(result),
                             description=f"{result.side} validation of {result.dataset}")


def _gate(run, name: str) -> GateResult:
    """Run a gate, publish its artifact whether it passes or fails, and return its result."""
    try:
        result = run()
    except ValidationFailed as exc:
        _publish(exc.result)
        raise
    _publish(result)
    get_run_logger().info("%s: %d %s expectations passed", name, len(result.checks), result.side)
    return result


@task(name="validate-source", task_run_name="validate-source-{name}")
def validate_source_task(loaded: LoadedSpec, name: str) -> GateResult:
    """Check a dataset where it lives now, before any of it moves."""
    return _gate(lambda: validate_local(loaded, name, "source"), name)


@task(name="validate-target", task_run_name="validate-target-{name}", retries=TRANSIENT_RETRIES,
      retry_delay_seconds=TRANSIENT_DELAYS, retry_jitter_factor=JITTER, retry_condition_fn=retry_if_transient)
def validate_target_task(loaded: LoadedSpec, name: str, state_root: str) -> GateResult:
    """Check a dataset's cloud copy against its source and manifest (a store outage is retried;
    a copy that differs is not)."""
    return _gate(lambda: validate_target(loaded, name, Path(state_root)), name)
