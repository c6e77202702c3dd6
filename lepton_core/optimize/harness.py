"""The measurement harness: one serving configuration, measured against the real model server.

For a configuration the harness (1) refuses, with the reason, what this machine cannot run; (2)
starts the model server with it and times the start (set-up and warm-up, which includes
``torch.compile``'s compilation, come from the server's own log line); (3) sends the fixed
evaluation set and compares the answers with the fp32 reference, rejecting a configuration whose
accuracy drops by more than the tolerance; (4) finds the highest request rate whose p95 latency
still meets the SLO, with an open-loop load from a separate process (``optimize.load``; Poisson
arrivals unless told otherwise): it doubles the rate while the SLO holds, then bisects; (5) samples the memory and CPU time of the
server's processes throughout, so that a configuration is charged for the cores it kept busy at
that rate (its HTTP front process included), not for the threads it asked for. The server is stopped when the measurement ends, also on error.

Anything that goes wrong with a configuration (the server exits at start-up, runs out of memory,
answers errors) is the measurement's outcome, ``skipped`` with the reason, never an exception.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lepton_core.optimize.space import Candidate, machine_cores
from lepton_core.serving.runtime import unsupported

OK, SKIPPED, REJECTED = "ok", "skipped", "rejected"


@dataclass(frozen=True)
class EvalSet:
    """Fixed labelled images (encoded PNG/JPEG bytes) that every configuration answers."""

    images: tuple[bytes, ...]
    labels: tuple[int, ...]
    name: str = "eval"

    def digest(self) -> str:
        h = hashlib.sha256()
        for img, y in zip(self.images, self.labels, strict=True):
            h.update(hashlib.sha256(img).digest() + y.to_bytes(4, "little"))
        return h.hexdigest()


def eval_set_from_folder(root: str | Path, classes: tuple[str, ...], limit: int = 200, name: str = "eval") -> EvalSet:
    """Up to ``limit`` images of the folder's test split (``test/LABEL/...``; all images when it has
    no splits), the same ones every time."""
    from lepton_core.transfer.data import _unit, index_splits

    items = sorted(index_splits(Path(root), classes, name)["test"], key=lambda i: _unit("eval", i.rel))[:limit]
    return EvalSet(tuple((Path(root) / i.rel).read_bytes() for i in items), tuple(i.label for i in items), name)


def write_calibration(root: str | Path, classes: tuple[str, ...], checkpoint: str | Path, path: str | Path,
                      limit: int = 64, name: str = "calibration") -> str:
    """Up to ``limit`` images of the folder's train split (never the test split the evaluation set
    comes from), the same ones every time, preprocessed as the server preprocesses requests and
    saved at ``path`` (.npy, float32, (n, 3, S, S)) for int8 quantization. Returns the path, or ""
    when the folder has no train split (int8 is then skipped)."""
    import numpy as np
    from PIL import Image

    from lepton_core.fsutil import atomic_write_bytes
    from lepton_core.transfer.checkpoint import load_checkpoint
    from lepton_core.transfer.data import _unit, index_splits

    items = sorted(index_splits(Path(root), classes, name)["train"], key=lambda i: _unit("calibration", i.rel))[:limit]
    if not items:
        return ""
    _, meta = load_checkpoint(checkpoint)
    images = meta.preprocess.tensor([Image.open(Path(root) / i.rel) for i in items]).numpy().astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, images, allow_pickle=False)
    atomic_write_bytes(Path(path), buf.getvalue())
    return str(path)


@dataclass(frozen=True)
class Reference:
    """The checkpoint served as it was trained (eager, fp32) on the evaluation set."""

    predictions: tuple[int, ...]
    accuracy: float


def reference(checkpoint: str | Path, evalset: EvalSet) -> Reference:
    """The eager fp32 answers of the checkpoint on the evaluation set, computed in this process
    with the server's preprocessing."""
    import torch
    from PIL import Image

    from lepton_core.transfer.checkpoint import load_network

    net, meta = load_network(checkpoint)
    preds: list[int] = []
    with torch.inference_mode():
        for start in range(0, len(evalset.images), 64):
            batch = [Image.open(io.BytesIO(b)) for b in evalset.images[start:start + 64]]
            preds += net(meta.preprocess.tensor(batch)).argmax(dim=1).tolist()
    acc = sum(p == y for p, y in zip(preds, evalset.labels, strict=True)) / max(1, len(preds))
    return Reference(tuple(preds), acc)


@dataclass(frozen=True)
class HarnessSettings:
    slo_p95_ms: float
    accuracy_tolerance: float = 0.5  # points of accuracy a configuration may lose against fp32
    step_seconds: float = 3.0  # counted seconds of load at each rate (longer when needed for min_requests)
    min_requests: int = 30  # counted requests at each rate, so that a slow rate still has a p95
    warm_up_seconds: float = 0.5  # seconds of load at each rate sent first and not counted
    max_steps: int = 9  # load steps per configuration
    min_rate: float = 0.5  # requests/s below which a configuration has no throughput at the SLO
    max_rate: float = 2000.0
    bodies: int = 16  # distinct request bodies the load cycles through
    arrivals: str = "poisson"  # how requests are spaced: a seeded Poisson process, or "constant" (optimize.load)
    load_seed: int = 0  # seed of the Poisson arrivals
    device: str = "cpu"
    start_timeout: float = 300.0

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Measurement:
    candidate: Candidate
    status: str  # ok, skipped (cannot run here) or rejected (runs, but breaks accuracy or the SLO)
    reason: str | None = None
    cores: int = 0
    startup_s: float | None = None  # launch until /health answers (includes set-up and warm-up)
    warm_up_s: float | None = None  # the server's warm-up passes (torch.compile compiles here)
    accuracy: float | None = None
    accuracy_delta: float | None = None  # points against the fp32 reference
    agreement: float | None = None  # share of the reference's answers it gives
    rate_rps: float = 0.0  # highest rate measured with p95 within the SLO
    latency_ms: dict = field(default_factory=dict)  # p50/p95/p99 at that rate
    peak_memory_mb: float | None = None
    cpu_cores: float | None = None  # CPU the server's processes used at that rate (CPU-seconds per second)
    steps: list = field(default_factory=list)  # every load step: rate, latency, errors, server CPU, passed

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def cores_used(self) -> float:
        """The cores a replica needs: the CPU its processes used at the rate it is measured at (the
        API process's request handling included), else what its threads and workers ask for."""
        return self.cpu_cores if self.cpu_cores else float(self.cores)

    def record(self) -> dict:
        return {**asdict(self), "candidate": self.candidate.record()}

    @classmethod
    def from_record(cls, record: dict) -> Measurement:
        return cls(**{**record, "candidate": Candidate(**record["candidate"])})


class _MemorySampler(threading.Thread):
    """Peak memory of a process and its children, sampled every ``every`` seconds: the sum of their
    proportional set sizes (PSS: shared pages split between the processes that share them, so the
    model server's processes are not each charged for the same libraries); RSS where PSS cannot be
    read. Their CPU time too, so that ``cpu_between`` says how many cores they kept busy."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peak = pid, every, 0
        self.cpu: list[tuple[float, float]] = []  # (epoch seconds, CPU seconds of every process so far)
        self._seen: dict[int, float] = {}  # CPU seconds of each process when last seen (exited ones kept)
        self._halt = threading.Event()

    def cpu_between(self, start: float, end: float) -> float | None:
        """Cores busy on average between two epoch times (linear between samples)."""
        import numpy as np

        if len(self.cpu) < 2 or end <= start:
            return None
        t, c = np.array(self.cpu).T
        if start < t[0] or end > t[-1] + 2 * self.every:
            return None
        used = np.interp(end, t, c) - np.interp(start, t, c)
        return round(float(used / (end - start)), 3)

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._halt.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        info = p.memory_full_info()
                        total += getattr(info, "pss", info.rss)
                        times = p.cpu_times()
                        self._seen[p.pid] = times.user + times.system
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
            except psutil.NoSuchProcess:
                return
            self.peak = max(self.peak, total)
            self.cpu.append((time.time(), sum(self._seen.values())))
            self._halt.wait(self.every)

    def stop(self) -> float:
        self._halt.set()
        self.join(timeout=2)
        return round(self.peak / 2**20, 1)


def _log_reason(log: Path) -> str:
    """The most telling line of a server log that ended badly."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    for marker in ("OutOfMemoryError", "out of memory", "Killed", "MemoryError"):
        if any(marker in ln for ln in lines):
            return "out of memory"
    errors = [ln for ln in lines if ("Error" in ln or "error" in ln) and not ln.startswith("File ")]
    return (errors or lines or ["no output"])[-1][:300]


def _setup_times(log: Path) -> float | None:
    from lepton_core.serving.server import SETUP_MARK

    warm = [json.loads(ln.split(SETUP_MARK, 1)[1])["warm_up_s"] for ln in log.read_text(errors="replace").splitlines()
            if ln.startswith(SETUP_MARK)]
    return max(warm) if warm else None


def request_bodies(evalset: EvalSet, count: int, folder: Path) -> list[Path]:
    from lepton_core.serving.client import encode

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(evalset.images[:count]):
        path = folder / f"body-{i:03d}.json"
        if not path.exists():
            path.write_text(json.dumps({"image": encode(img)}))
        paths.append(path)
    return paths


def load_step(url: str, bodies: list[Path], rate: float, settings: HarnessSettings) -> dict:
    """One open-loop load step from a separate process (``python -m lepton_core.optimize.load``)."""
    duration = max(settings.step_seconds, settings.min_requests / rate)
    cmd = [sys.executable, "-m", "lepton_core.optimize.load", url, "--rate", f"{rate:.4f}",
           "--duration", f"{duration:.3f}", "--warm-up", str(settings.warm_up_seconds),
           "--arrivals", settings.arrivals, "--seed", str(settings.load_seed)]
    for b in bodies:
        cmd += ["--body", str(b)]
    limit = 120 + 3 * (duration + settings.warm_up_seconds)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _passes(step: dict, slo_ms: float) -> bool:
    p95 = step["latency_ms"]["p95"]
    return step["errors"] == 0 and step["ok"] > 0 and p95 is not None and p95 <= slo_ms


def rate_at_slo(step_at, first_rate: float, settings: HarnessSettings) -> tuple[float, dict | None, list[dict]]:
    """The highest rate that passes, by doubling from ``first_rate`` while steps pass (halving
    while they fail), then bisecting between the last pass and the first failure until they are
    within 10% or the steps run out. ``step_at(rate)`` runs one step. Returns the rate, its step
    and every step.

    A first step that fails is run once more before the search goes below it. A step's p95 is
    decided by its slowest few requests, so one stall of the host fails it; after a failure the
    search never goes above that rate again, and the first rate can be far under what a batching
    configuration serves. A later failure bounds the search between two rates at most twice apart."""
    steps: list[dict] = []

    def run(rate: float) -> bool:
        step = step_at(rate)
        step["passed"] = _passes(step, settings.slo_p95_ms)
        steps.append(step)
        return step["passed"]

    lo, hi, best = 0.0, math.inf, None
    rate = min(max(first_rate, settings.min_rate), settings.max_rate)
    while len(steps) < settings.max_steps:
        if run(rate):
            lo, best = rate, steps[-1]
            if hi == math.inf:
                if rate >= settings.max_rate:
                    break
                rate = min(rate * 2, settings.max_rate)
                continue
        else:
            if len(steps) == 1:
                continue  # the first rate, once more
            hi = rate
            if lo == 0.0:
                rate /= 2
                if rate < settings.min_rate:
                    break
                continue
        if hi / lo <= 1.1:
            break
        rate = math.sqrt(lo * hi)  # bisect on a log scale
    return lo, best, steps


def measure(checkpoint: str | Path, candidate: Candidate, evalset: EvalSet, ref: Reference, settings: HarnessSettings,
            work_dir: str | Path, calibration: str = "") -> Measurement:
    """Measure ``candidate`` serving ``checkpoint``; see the module's docstring. ``calibration``: the
    .npy of images int8 is quantized on (see ``write_calibration``)."""
    from lepton_core.serving.client import ModelClient, ServerError, ServerProcess

    cores = candidate.cores(machine_cores())
    reason = unsupported(candidate.runtime, candidate.precision, candidate.channels_last, settings.device)
    if reason is None and candidate.precision == "int8" and not calibration:
        reason = "no calibration images for int8 (the target dataset has no train split)"
    if reason:
        return Measurement(candidate, SKIPPED, reason, cores)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(json.dumps(candidate.record(), sort_keys=True).encode()).hexdigest()[:10]
    log = work / f"server-{key}.log"
    log.unlink(missing_ok=True)
    config = candidate.serve_config(calibration)
    server = ServerProcess(checkpoint, name="optimize", version=key, config=config, log=log,
                           start_timeout=settings.start_timeout)
    t0 = time.perf_counter()
    server.launch()
    sampler = _MemorySampler(server.proc.pid)
    sampler.start()
    result = Measurement(candidate, OK, None, cores)
    try:
        try:
            server.wait_ready()
        except ServerError:
            return _skipped(result, _log_reason(log), sampler)
        result.startup_s = round(time.perf_counter() - t0, 3)
        result.warm_up_s = _setup_times(log)
        with ModelClient(server.url, timeout=60) as client:
            answers: list[int] = []
            chunk = min(32, config.max_images)
            for start in range(0, len(evalset.images), chunk):
                answers += [p["index"] for p in client.predict(list(evalset.images[start:start + chunk]))]
            n = max(1, len(answers))
            result.accuracy = round(sum(a == y for a, y in zip(answers, evalset.labels, strict=True)) / n, 6)
            result.agreement = round(sum(a == r for a, r in zip(answers, ref.predictions, strict=True)) / n, 6)
            result.accuracy_delta = round(100 * (result.accuracy - ref.accuracy), 3)
            if result.accuracy_delta < -settings.accuracy_tolerance:
                result.status = REJECTED
                result.reason = (f"accuracy {result.accuracy:.2%} is {-result.accuracy_delta:.2f} points below fp32's "
                                 f"{ref.accuracy:.2%} (tolerance {settings.accuracy_tolerance:g})")
                return result
            serial = []
            for img in evalset.images[:10]:
                t = time.perf_counter()
                client.predict_one(img)
                serial.append(1000 * (time.perf_counter() - t))
        one_at_a_time = statistics.median(serial)
        bodies = request_bodies(evalset, settings.bodies, work / "bodies")
        url = server.url + "/predict"

        def step_at(rate: float) -> dict:
            step = load_step(url, bodies, rate, settings)
            time.sleep(2 * sampler.every)  # a CPU sample after the window closes
            step["server_cpu_cores"] = sampler.cpu_between(*step["window"])
            return step

        rate, best, steps = rate_at_slo(step_at, 500 / one_at_a_time, settings)
        result.steps = steps
        if best is None:
            result.status = REJECTED
            result.reason = (f"p95 latency over the SLO's {settings.slo_p95_ms:g} ms even at "
                             f"{min(s['offered_rps'] for s in steps):.2f} requests/s")
        else:
            result.rate_rps, result.latency_ms = round(rate, 3), {k: best["latency_ms"][k] for k in ("p50", "p95", "p99")}
            result.cpu_cores = best.get("server_cpu_cores")
        if server.proc.poll() is not None:
            return _skipped(result, _log_reason(log), sampler)
    except (ServerError, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return _skipped(result, f"{type(exc).__name__}: {exc}"[:300], sampler)
    finally:
        server.stop()
        if sampler.is_alive():
            result.peak_memory_mb = sampler.stop()
    return result


def _skipped(result: Measurement, reason: str, sampler: _MemorySampler) -> Measurement:
    result.status, result.reason, result.rate_rps = SKIPPED, reason, 0.0
    result.peak_memory_mb = sampler.stop()
    return result
