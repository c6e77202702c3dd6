"""Garbage collection paused from the first entry to the last exit, then back as it was."""

from __future__ import annotations

import gc
import threading

from lepton_core.gcpause import gc_paused


def test_nested_blocks_and_decorated_functions_restore_collection_at_the_last_exit() -> None:
    @gc_paused()
    def inner() -> bool:
        return gc.isenabled()

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        assert inner() is False
        assert not gc.isenabled()  # the inner exit did not turn it back on
    assert gc.isenabled()
    assert inner() is False and gc.isenabled()


def test_collection_left_off_by_the_caller_stays_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_threads_keep_it_off_until_the_last_one_leaves() -> None:
    entered, release_first, first_left = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def first() -> None:
        with gc_paused():
            entered.set()
            release_first.wait(5)
        first_left.set()

    thread = threading.Thread(target=first)
    thread.start()
    assert entered.wait(5)
    with gc_paused():
        release_first.set()
        assert first_left.wait(5)
        seen["after the first left"] = gc.isenabled()
    thread.join(5)
    assert seen == {"after the first left": False} and gc.isenabled()
