"""Task results in the migration's object store (tasks/results.py): what makes Retry resume.

A result that is not written makes a later Retry run its task again; one that cannot be read counts
as "not cached". So reads and writes wait out a store that is down, and give up only after
``RESULT_PATIENCE_S``; an object that is not there is answered at once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from lepton_core.state import store_dir
from lepton_core.store import EmbeddedStore, ObjectNotFound, ObjectStore, StoreError
from tasks import results
from tasks.results import LeptonObjectStore


@pytest.fixture
def server(state_root: Path):
    s = EmbeddedStore(store_dir(state_root))
    s.up()
    ObjectStore(s.settings()).ensure_bucket("results")
    try:
        yield s
    finally:
        s.down()


def block() -> LeptonObjectStore:
    return LeptonObjectStore(endpoint_url="embedded", bucket="results", prefix="mig/one")


def test_round_trip_under_the_prefix(server: EmbeddedStore) -> None:
    key = block().write_path("abc123", b"a result")
    assert key == "mig/one/_lepton/prefect-results/abc123"
    assert block().read_path("abc123") == b"a result"
    assert ObjectStore(server.settings()).get_bytes("results", key) == b"a result"


def test_a_missing_result_is_answered_at_once(server: EmbeddedStore) -> None:
    started = time.monotonic()
    with pytest.raises(ObjectNotFound):
        block().read_path("never-written")
    assert time.monotonic() - started < 5  # not waited on: "not cached" is an answer, not an outage


def test_a_write_waits_for_the_store_to_come_back(server: EmbeddedStore) -> None:
    assert server.down()
    restarted = threading.Timer(3.0, server.up)
    restarted.start()
    started = time.monotonic()
    try:
        block().write_path("during-outage", b"kept")
    finally:
        restarted.join()
    assert time.monotonic() - started >= 2.5  # it really waited for the restart
    assert block().read_path("during-outage") == b"kept"


def test_a_read_waits_for_the_store_to_come_back(server: EmbeddedStore) -> None:
    block().write_path("before-outage", b"cached")
    assert server.down()
    restarted = threading.Timer(2.0, server.up)
    restarted.start()
    try:
        assert block().read_path("before-outage") == b"cached"  # not mistaken for "not cached"
    finally:
        restarted.join()


def test_patience_runs_out_with_the_stores_error(server: EmbeddedStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "RESULT_PATIENCE_S", 2.0)
    assert server.down()
    started = time.monotonic()
    with pytest.raises(StoreError, match="not running") as err:
        block().write_path("lost", b"x")
    assert err.value.transient and 2.0 <= time.monotonic() - started < 15
