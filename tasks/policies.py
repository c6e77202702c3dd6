"""Policies shared by the tasks: retry with exponential backoff and jitter on transient errors
only; hold a slot of the GPU concurrency limit while training on a GPU pool."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

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


@contextlib.contextmanager
def gpu_slot() -> Iterator[None]:
    """Hold one slot of the global concurrency limit that ``LEPTON_GPU_LIMIT`` names (the gpu work
    pool's job variables set it) for the duration; nothing elsewhere. ``strict``: a limit that does
    not exist on the server is an error (run ``deployments/setup.py``), not silently no limit."""
    name = os.environ.get("LEPTON_GPU_LIMIT")
    if not name:
        yield
        return
    from prefect.concurrency.sync import concurrency

    with concurrency(name, occupy=1, strict=True):
        yield
