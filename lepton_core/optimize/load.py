"""An open-loop load generator, run in its own process so that it does not share an interpreter
(or a GIL) with what it measures.

Requests leave at a fixed rate whatever the server does (open loop: a slow server is not given
fewer requests, as a closed loop of clients would), and each latency is counted from the moment
the request was *due*, not from when it was sent, so that a generator that falls behind shows up
as latency instead of hiding it (coordinated omission). The first ``warm_up`` seconds of requests
are sent but not counted.

Run: ``python -m lepton_core.optimize.load URL --rate R --duration S --body FILE [--body FILE ...]``
(each FILE a JSON request body, sent in turn). Prints one JSON object: the offered rate and the
rate requests actually left at, the latest a request left against its schedule, counts of answers
and errors, latency percentiles in ms, and the counted window (epoch seconds: from when the first
counted request was due to when the last answer came).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import numpy as np


def percentiles(latencies_ms: list[float]) -> dict[str, float | None]:
    if not latencies_ms:
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    a = np.asarray(latencies_ms)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3),
            "mean": round(float(a.mean()), 3)}


async def _run(url: str, bodies: list[bytes], rate: float, duration: float, warm_up: float, timeout: float) -> dict:
    import httpx

    total = max(1, int(round(rate * (duration + warm_up))))
    counted_from = int(round(rate * warm_up))
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent: list[float] = []  # when each request actually left
    lags: list[float] = []  # how late it left against when it was due
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        start = time.perf_counter() + 0.05
        to_epoch = time.time() - time.perf_counter()

        async def one(i: int) -> None:
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter()
            sent.append(now)
            lags.append(now - due)
            try:
                r = await client.post(url, content=bodies[i % len(bodies)], headers={"content-type": "application/json"})
                outcome = None if r.status_code == 200 else f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            done = time.perf_counter()
            if i >= counted_from:
                if outcome is None:
                    latencies.append(1000 * (done - due))
                else:
                    errors[outcome] = errors.get(outcome, 0) + 1

        await asyncio.gather(*(one(i) for i in range(total)))
        window = (round(to_epoch + start + counted_from / rate, 4), round(to_epoch + time.perf_counter(), 4))
    counted = total - counted_from
    span = max(sent) - min(sent) if len(sent) > 1 else 0.0
    return {"offered_rps": rate, "requests": counted, "ok": len(latencies), "errors": sum(errors.values()),
            "error_kinds": errors, "achieved_rps": round((len(sent) - 1) / span, 3) if span > 0 else None,
            "max_send_lag_ms": round(1000 * max(lags), 3) if lags else None, "latency_ms": percentiles(latencies),
            "window": window}


def run_load(url: str, bodies: list[bytes], rate: float, duration: float, warm_up: float = 0.5,
             timeout: float = 30.0) -> dict:
    """Send ``rate`` requests a second for ``warm_up + duration`` seconds; the figures of the last
    ``duration`` seconds."""
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    return asyncio.run(_run(url, bodies, rate, duration, warm_up, timeout))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lepton_core.optimize.load", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds counted")
    parser.add_argument("--warm-up", type=float, default=0.5, help="seconds sent first and not counted")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--body", action="append", required=True, help="a JSON request body file (repeat)")
    args = parser.parse_args(argv)
    bodies = []
    for path in args.body:
        with open(path, "rb") as f:
            bodies.append(f.read())
    print(json.dumps(run_load(args.url, bodies, args.rate, args.duration, args.warm_up, args.timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
