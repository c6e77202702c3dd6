"""Validation gate tasks. A failed gate fails the run and is never retried: bad data is not transient.

Each gate writes its Data Docs into the run's folder and publishes a markdown artifact (passed and
failed expectations, up to ten examples each, the Data Docs link); a source gate also saves the
dataset's profile with the run. The drift task compares two profiles; it fails only over a limit.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from lepton_core.spec import LoadedSpec
from lepton_core.validation.drift import DriftReport, drift_gate, drift_report
from lepton_core.validation.gate import GateResult, ValidationFailed, validate_local
from lepton_core.validation.outputs import docs_dir, save_profile, upload_docs
from lepton_core.validation.parity import validate_target
from lepton_core.validation.report import drift_markdown, gate_markdown
from tasks.policies import JITTER, TRANSIENT_DELAYS, TRANSIENT_RETRIES, retry_if_transient


def _key(*parts: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower())


def _publish(result: GateResult) -> None:
    create_markdown_artifact(key=_key("validation", result.side, result.dataset), markdown=gate_markdown(result),
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
def validate_source_task(loaded: LoadedSpec, name: str, run_dir: str) -> GateResult:
    """Check a dataset where it lives now, before any of it moves; save its profile with the run."""
    result = _gate(lambda: validate_local(loaded, name, "source", docs_dir(run_dir, "source", name)), name)
    if result.profile is not None:
        save_profile(run_dir, name, result.profile)
    return result


@task(name="validate-target", task_run_name="validate-target-{name}", retries=TRANSIENT_RETRIES,
      retry_delay_seconds=TRANSIENT_DELAYS, retry_jitter_factor=JITTER, retry_condition_fn=retry_if_transient)
def validate_target_task(loaded: LoadedSpec, name: str, state_root: str, run_dir: str) -> GateResult:
    """Check a dataset's cloud copy against its source and manifest (a store outage is retried;
    a copy that differs is not)."""
    return _gate(lambda: validate_target(loaded, name, Path(state_root), docs_dir(run_dir, "target", name)), name)


@task(name="drift", task_run_name="drift-{name}-vs-{baseline}")
def drift_task(name: str, profile: dict[str, Any], baseline: str, baseline_profile: dict[str, Any],
               limit: float | None, run_dir: str) -> DriftReport:
    """Report how far ``name``'s distribution is from ``baseline``'s; fail only over the spec's limit."""
    report = drift_report(name, profile, baseline, baseline_profile, limit)
    result = None
    try:
        result = drift_gate(report, docs_dir(run_dir, "drift", name))
    except ValidationFailed as exc:
        result = exc.result
        raise
    finally:
        create_markdown_artifact(key=_key("drift", name), markdown=drift_markdown(report, result.docs if result else None),
                                 description=f"drift of {name} from {baseline}")
    get_run_logger().info("drift: %s", report.summary())
    return report


@task(name="publish-data-docs", retries=TRANSIENT_RETRIES, retry_delay_seconds=TRANSIENT_DELAYS,
      retry_jitter_factor=JITTER, retry_condition_fn=retry_if_transient)
def publish_data_docs_task(loaded: LoadedSpec, state_root: str, run_dir: str, run_name: str) -> str | None:
    """Upload the run's Data Docs next to the data; their s3:// folder."""
    uri = upload_docs(loaded, state_root, run_dir, run_name)
    if uri:
        get_run_logger().info("Data Docs uploaded to %s", uri)
    return uri
