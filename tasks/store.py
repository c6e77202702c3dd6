"""Tasks for the object store."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from lepton_core.spec import TargetSpec
from lepton_core.store.target import TargetInfo, reach_target
from tasks.policies import JITTER, TRANSIENT_DELAYS, TRANSIENT_RETRIES, retry_if_transient


@task(name="reach-object-store", retries=TRANSIENT_RETRIES, retry_delay_seconds=TRANSIENT_DELAYS,
      retry_jitter_factor=JITTER, retry_condition_fn=retry_if_transient)
def reach_object_store(target: TargetSpec, state_root: str, spec_name: str) -> TargetInfo:
    """Start or reach the target's object store, make the bucket and prove a write works."""
    info = reach_target(target, Path(state_root), spec_name=spec_name)
    get_run_logger().info("object store %s: %s ready%s", info.endpoint, info.uri, " (bucket created)" if info.bucket_created else "")
    return info
