"""Retry policy shared by the tasks: back off exponentially, with jitter, on transient errors only."""

from __future__ import annotations

from prefect.tasks import exponential_backoff

from lepton_core.errors import is_transient

TRANSIENT_RETRIES = 3
TRANSIENT_DELAYS = exponential_backoff(backoff_factor=2)
JITTER = 0.5


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed run only when its error is transient."""
    try:
        state.result()
    except Exception as exc:  # the failed run's own exception
        return is_transient(exc)
    return False
