"""The data-migration task: one run per dataset, retried only on transient errors (it resumes)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from lepton_core.data.engine import TransferSummary
from lepton_core.data.stage import migrate_dataset
from lepton_core.spec import LoadedSpec
from tasks.policies import JITTER, TRANSIENT_DELAYS, TRANSIENT_RETRIES, retry_if_transient


_ARTIFACTS: dict[tuple[str, str], object] = {}  # (task run id, dataset) -> its progress artifact's id


class ArtifactProgress:
    """A Prefect progress artifact for one dataset, updated at most once a second. A retry of the
    same task run (which runs in the same process) carries on with the artifact it made first."""

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset
        self._lock = threading.Lock()
        self._done_bytes = 0
        self._total = 0
        self._last = 0.0
        self._id = None

    def start(self, files: int, nbytes: int) -> None:
        from prefect.context import TaskRunContext

        self._total = max(nbytes, 1)
        ctx = TaskRunContext.get()
        key = (str(ctx.task_run.id) if ctx else "", self.dataset)
        if ctx and key in _ARTIFACTS:
            self._id = _ARTIFACTS[key]
            update_progress_artifact(artifact_id=self._id, progress=0.0)
            return
        self._id = _ARTIFACTS[key] = create_progress_artifact(
            progress=0.0, description=f"Copying {self.dataset}: {files} files, {nbytes / 1e6:.1f} MB")

    def advance(self, files: int, nbytes: int) -> None:
        with self._lock:
            self._done_bytes += nbytes
            now = time.monotonic()
            if now - self._last < 1.0 and self._done_bytes < self._total:
                return
            self._last = now
            pct = min(100.0, 100.0 * self._done_bytes / self._total)
        update_progress_artifact(artifact_id=self._id, progress=pct)


@task(name="migrate-dataset", retries=TRANSIENT_RETRIES, retry_delay_seconds=TRANSIENT_DELAYS,
      retry_jitter_factor=JITTER, retry_condition_fn=retry_if_transient, task_run_name="migrate-{name}")
def migrate_dataset_task(loaded: LoadedSpec, name: str, state_root: str) -> TransferSummary:
    """Copy one dataset to the target, checksummed and verified; a retry resumes where it stopped."""
    summary = migrate_dataset(loaded, name, Path(state_root), ArtifactProgress(name))
    get_run_logger().info(summary.line())
    return summary
