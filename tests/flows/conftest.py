"""A real Prefect API on a temporary database for the whole session (prefect_test_harness)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def flow_home(state_root: Path) -> Iterator[Path]:
    """A LEPTON_HOME for one flow run; the embedded store the run starts is stopped afterwards."""
    from lepton_core.state import store_dir
    from lepton_core.store import EmbeddedStore

    try:
        yield state_root
    finally:
        EmbeddedStore(store_dir(state_root)).down()
