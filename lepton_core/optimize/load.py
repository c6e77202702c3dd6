"""An open-loop load generator, run in its own process so that it does not share an interpreter
(or a GIL) with what it measures.

Requests leave on a schedule whatever the server does (open loop: a slow server is not given
fewer requests, as a closed loop of clients would), and each latency is counted from the moment
the request was *due*, not from when it was sent, so that a generator that falls behind shows up
as latency instead of hiding it (coordinated omission). The first ``warm_up`` seconds of requests
are sent but not counted.

The schedule is a seeded Poisson process by default (independent, exponentially distributed gaps
at the offered rate, as MLPerf's LoadGen sends its server scenario): the arrivals of many
independent users, and, unlike requests at a fixed interval, arrivals that cannot fall into step
with a periodic server. A server that gathers batches in fixed windows would otherwise see every
request at the same point of its window, and its latency would be whatever that point happened to
give (a 400 ms window has passed a 150 ms p95 that way). ``--arrivals constant`` sends at a fixed interval.

Run: ``python -m lepton_core.optimize.load URL --rate R --duration S --body FILE [--body FILE ...]
[--arrivals poisson|constant] [--seed N]`` (each FILE a JSON request body, sent in turn). Prints
one JSON object: the offered rate and the rate requests actually left at, the latest a request
left against its schedule, counts of answers and errors, latency percentiles in ms, and the
counted window (epoch seconds: from when the first counted request was due to when the last
answer came).
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


ARRIVALS = ("poisson", "constant")


def schedule(count: int, rate: float, arrivals: str = "poisson", seed: int = 0) -> np.ndarray:
    """Seconds from the start at which each of ``count`` requests is due: at a fixed interval of
    ``1 / rate``, or a Poisson process of that rate (exponential gaps, seeded), the first at 0."""
    if arrivals not in ARRIVALS:
        raise ValueError(f"arrivals must be one of {', '.join(ARRIVALS)}, not {arrivals!r}")
    if arrivals == "constant":
        return np.arange(count) / rate
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, max(0, count - 1))
    return np.concatenate([[0.0], np.cumsum(gaps)])


async def _run(url: str, bodies: list[bytes], rate: float, duration: float, warm_up: float, timeout: float,
               arrivals: str, seed: int) -> dict:
    import httpx

    total = max(1, int(round(rate * (duration + warm_up))))
    counted_from = min(int(round(rate * warm_up)), total - 1)
    offsets = schedule(total, rate, arrivals, seed).tolist()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent: list[float] = []  # when each request actually left
    lags: list[float] = []  # how late it left against when it was due
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        start = time.perf_counter() + 0.05
        to_epoch = time.time() - time.perf_counter()

        async def one(i: int) -> None:
            due = start + offsets[i]
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
        window = (round(to_epoch + start + offsets[counted_from], 4), round(to_epoch + time.perf_counter(), 4))
    counted = total - counted_from
    span = max(sent) - min(sent) if len(sent) > 1 else 0.0
    return {"offered_rps": rate, "requests": counted, "ok": len(latencies), "errors": sum(errors.values()),
            "error_kinds": errors, "achieved_rps": round((len(sent) - 1) / span, 3) if span > 0 else None,
            "max_send_lag_ms": round(1000 * max(lags), 3) if lags else None, "latency_ms": percentiles(latencies),
            "window": window}


def run_load(url: str, bodies: list[bytes], rate: float, duration: float, warm_up: float = 0.5,
             timeout: float = 30.0, arrivals: str = "poisson", seed: int = 0) -> dict:
    """Send ``rate`` requests a second (on average, for Poisson arrivals) for ``warm_up + duration``
    seconds; the figures of the requests due in the last ``duration`` seconds."""
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    return asyncio.run(_run(url, bodies, rate, duration, warm_up, timeout, arrivals, seed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lepton_core.optimize.load", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds counted")
    parser.add_argument("--warm-up", type=float, default=0.5, help="seconds sent first and not counted")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--arrivals", choices=ARRIVALS, default="poisson",
                        help="a Poisson process at the rate (the default) or a fixed interval")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Poisson arrivals")
    parser.add_argument("--body", action="append", required=True, help="a JSON request body file (repeat)")
    args = parser.parse_args(argv)
    bodies = []
    for path in args.body:
        with open(path, "rb") as f:
            bodies.append(f.read())
    print(json.dumps(run_load(args.url, bodies, args.rate, args.duration, args.warm_up, args.timeout,
                                args.arrivals, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
