"""The load generator's schedule: a seeded Poisson process by default, a fixed interval on request,
and why the default is Poisson: against a server that answers at the end of fixed windows (as
LitServe does while it gathers a batch), requests at a fixed interval all land at one point of the
window and measure whatever that point gives, while Poisson arrivals see the whole window."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from lepton_core.optimize.load import run_load, schedule


def test_poisson_arrivals_have_exponential_gaps_at_the_rate_and_repeat_with_the_seed():
    due = schedule(20_000, 50.0, "poisson", seed=3)
    gaps = np.diff(due)
    assert due[0] == 0.0 and np.all(gaps >= 0)
    assert gaps.mean() == pytest.approx(1 / 50, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.03)  # an exponential's coefficient of variation
    assert np.array_equal(due, schedule(20_000, 50.0, "poisson", seed=3))
    assert not np.array_equal(due, schedule(20_000, 50.0, "poisson", seed=4))


def test_constant_arrivals_are_a_fixed_interval_and_other_kinds_are_refused():
    assert np.allclose(schedule(5, 4.0, "constant"), [0, 0.25, 0.5, 0.75, 1.0])
    with pytest.raises(ValueError, match="arrivals must be one of poisson, constant, not 'burst'"):
        schedule(5, 4.0, "burst")


WINDOW = 0.2  # seconds


class _Windowed(BaseHTTPRequestHandler):
    """Answers each request at the end of the window it arrived in; the windows are laid out from
    the first request's arrival, which falls in the middle of the first one."""

    grid: list[float] = []
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        now = time.monotonic()
        with self.lock:
            if not self.grid:
                self.grid.append(now - WINDOW / 2)
            origin = self.grid[0]
        time.sleep(WINDOW - (now - origin) % WINDOW)
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


def _measure(arrivals: str) -> dict:
    _Windowed.grid = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Windowed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        return run_load(url, [b"{}"], rate=1 / WINDOW, duration=5.0, warm_up=0.4, arrivals=arrivals, seed=0)
    finally:
        server.shutdown()
        server.server_close()


def test_poisson_arrivals_see_a_batching_window_that_a_fixed_interval_steps_over():
    constant, poisson = _measure("constant"), _measure("poisson")
    assert constant["errors"] == poisson["errors"] == 0 and constant["ok"] == poisson["ok"] == 25
    # at one request a window, each lands where the first did: every request waits about half a window
    c = constant["latency_ms"]
    assert 75 <= c["p50"] <= c["p95"] < c["p50"] + 25, c
    # the same rate as a Poisson process: the waits spread over the whole window, as a server's
    # users would see them. Wherever the window's edges fall, this schedule's waits (seed 0) have
    # a p95 of at least 156 ms and at least 70 ms above their median
    p = poisson["latency_ms"]
    assert p["p95"] > 150 and p["p95"] - p["p50"] > 50, p
