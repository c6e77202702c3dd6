"""The serving configurations the optimisation loop searches, and what each costs on the
catalogue's instances.

A configuration is what ``ServeConfig`` tunes: runtime (eager, torch.compile, ONNX Runtime),
precision (int8 through ONNX Runtime's quantization on a CPU), memory format, LitServe's batch size and batching timeout, threads per worker and
workers. The space is conditional: a precision is chosen among those its runtime serves on this
machine, and a memory format among those that runtime and precision take (``combinations``), so no
proposal is a combination that cannot run here (int8 outside ONNX Runtime, bf16 or channels_last in
it, bf16 on a CPU without bf16 instructions, torch.compile without a C++ compiler); the study names
those once instead. Likewise the threads per worker are chosen once the workers are, so that
together they use at most the machine's cores (``threads_for``): oversubscribed workers wait on
each other's threads, and the demo model's eager server with 2 workers of 2 threads on 2 cores
answered 8-15 requests/s at the SLO against 151-175 with 1 thread each (benchmarks/RESULTS.md,
2026-12-06). The instance type is the last choice of the space, and it is made exactly rather than
sampled: once a configuration's throughput at the SLO is measured, every instance of the
catalogue is priced for it (as many replicas of the measured server as the instance's vCPUs, or
GPUs, hold, and as its memory holds) and the cheapest is taken.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

from lepton_core.serving.runtime import PRECISIONS, RUNTIMES, device_kind, unsupported

BATCH_SIZES = (1, 2, 4, 8, 16, 32)
BATCH_TIMEOUTS_MS = (1, 5, 20)


@dataclass(frozen=True)
class Candidate:
    """One serving configuration (the fields of ``ServeConfig`` the loop tunes)."""

    runtime: str = "eager"
    precision: str = "fp32"
    channels_last: bool = False
    max_batch_size: int = 1
    batch_timeout_ms: int = 5
    threads: int = 0
    workers: int = 1

    def serve_config(self, calibration: str = ""):
        """The server's configuration; ``calibration`` (a .npy of preprocessed images) is used by int8 alone."""
        from lepton_core.serving.server import ServeConfig

        return ServeConfig(max_batch_size=self.max_batch_size, batch_timeout=self.batch_timeout_ms / 1000,
                           workers=self.workers, threads=self.threads, runtime=self.runtime,
                           precision=self.precision, channels_last=self.channels_last,
                           calibration=calibration if self.precision == "int8" else "")

    def canonical(self) -> Candidate:
        """The same configuration with the fields that make no difference set to their defaults: the
        batching wait when batches are of one request, so that such twins are measured once."""
        return replace(self, batch_timeout_ms=Candidate.batch_timeout_ms) if self.max_batch_size == 1 else self

    def cores(self, machine_cores: int) -> int:
        """CPU cores it occupies: threads per worker (all of the machine's when 0) times workers, at
        most the machine's."""
        per_worker = self.threads or machine_cores
        return max(1, min(machine_cores, per_worker * self.workers))

    def label(self) -> str:
        parts = [self.runtime, self.precision] + (["channels_last"] if self.channels_last else [])
        parts += [f"batch {self.max_batch_size}"] + ([f"wait {self.batch_timeout_ms} ms"] if self.max_batch_size > 1 else [])
        parts += [f"{self.threads or 'all'} thread{'' if self.threads == 1 else 's'}", f"{self.workers} worker{'s' if self.workers > 1 else ''}"]
        return ", ".join(parts)

    def record(self) -> dict:
        return asdict(self)


def baseline(cores: int) -> Candidate:
    """Serving as it was before tuning: eager fp32, one request per forward pass, one worker with
    all the machine's cores (torch's default)."""
    return Candidate(threads=cores)


def first_guesses(device: str, cores: int) -> list[Candidate]:
    """Configurations measured right after the baseline, before the sampler's own proposals: what
    usually serves a convolutional network best (batched ONNX Runtime with one thread a server on
    a CPU, batched reduced precision on a GPU). They are measured like any other, so a wrong guess
    costs one trial.

    One thread, not all the cores: a batched server of one thread answers more requests, and far
    more per core busy, than one whose threads split each batch and wait on each other. On 2 cores
    (benchmarks/RESULTS.md, serving, 2026-12-06) ONNX Runtime at batch 8 served the demo model at
    274-297 req/s on 0.8 cores with one thread in int8 against 176-177 on 1.5 with two, and 218-230
    against 166-207 in fp32. Cost is priced by the cores busy, so more replicas of the small server
    fill a bigger instance."""
    if device_kind(device) == "cuda":
        return [Candidate(precision="fp16", channels_last=True, max_batch_size=32, batch_timeout_ms=5, threads=cores)]
    return [Candidate(runtime="onnx", max_batch_size=8, batch_timeout_ms=5, threads=1),
            Candidate(runtime="onnx", precision="int8", max_batch_size=8, batch_timeout_ms=5, threads=1)]


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_for(workers: int, cores: int) -> tuple[int, ...]:
    """The threads per worker the space offers ``workers`` workers on ``cores`` cores: 1, 2, 4, 8 and
    all the cores, as long as threads x workers is at most the cores (1 whatever they are)."""
    return tuple(sorted({t for t in (1, 2, 4, 8, cores) if t * workers <= cores} | {1}))


def space(device: str, cores: int) -> dict[str, tuple]:
    """The choices for each field on this device (fp16 only where a GPU serves, int8 only on a CPU);
    which runtimes, precisions and memory formats go together is ``combinations``' to say, and
    which threads go with how many workers ``threads_for``'s."""
    threads = threads_for(1, cores)
    workers = tuple(w for w in (1, 2, 4) if w <= max(1, cores))
    gpu = device_kind(device) == "cuda"
    precisions = tuple(p for p in PRECISIONS if p != ("int8" if gpu else "fp16"))
    return {"runtime": RUNTIMES, "precision": precisions, "channels_last": (False, True), "max_batch_size": BATCH_SIZES,
            "batch_timeout_ms": BATCH_TIMEOUTS_MS, "threads": tuple(threads), "workers": workers}


Combinations = dict[str, dict[str, tuple[bool, ...]]]  # runtime -> precision -> memory formats (channels_last)
CONDITIONAL = ("runtime", "precision", "channels_last", "workers", "threads")


def combinations(device: str, cores: int) -> tuple[Combinations, dict[str, str]]:
    """What this machine serves with: each runnable runtime's precisions and, for each of those, the
    memory formats (channels_last False, True) it takes; and why each combination left out cannot
    run here, by its label ('onnx, bf16', 'eager, int8, channels_last'), from ``runtime.unsupported``."""
    choices = space(device, cores)
    runnable: Combinations = {}
    left_out: dict[str, str] = {}
    for runtime in choices["runtime"]:
        for precision in choices["precision"]:
            for channels_last in choices["channels_last"]:
                reason = unsupported(runtime, precision, channels_last, device)
                if reason:
                    left_out[", ".join([runtime, precision] + (["channels_last"] if channels_last else []))] = reason
                else:
                    runnable.setdefault(runtime, {}).setdefault(precision, ())
                    runnable[runtime][precision] += (channels_last,)
    return runnable, left_out


def param_names(runtime: str, precision: str) -> tuple[str, str]:
    """The study's names of the precision chosen for ``runtime`` and of the memory format chosen for
    ``runtime`` and ``precision``: one parameter per branch of the conditional space, so that each
    has one fixed set of choices (as Optuna's distributions must)."""
    return f"precision[{runtime}]", f"channels_last[{runtime},{precision}]"


def threads_name(workers: int) -> str:
    """The study's name of the threads per worker chosen for ``workers`` workers (one parameter per
    number of workers, each with its own choices)."""
    return f"threads[{workers} workers]"


def params(candidate: Candidate, runnable: Combinations, cores: int) -> dict:
    """The study's parameters for ``candidate`` (to enqueue it) on ``cores`` cores; a memory format,
    or a number of threads, with one choice is not a parameter."""
    precision_name, format_name = param_names(candidate.runtime, candidate.precision)
    out = {"runtime": candidate.runtime, precision_name: candidate.precision, "workers": candidate.workers}
    if len(runnable.get(candidate.runtime, {}).get(candidate.precision, ())) > 1:
        out[format_name] = candidate.channels_last
    if len(threads_for(candidate.workers, cores)) > 1:
        out[threads_name(candidate.workers)] = candidate.threads
    return out | {k: v for k, v in candidate.record().items() if k not in CONDITIONAL}


def propose(trial, device: str, cores: int, runnable: Combinations) -> Candidate:
    """A configuration from an Optuna trial (define-by-run): the runtime, then a precision it serves
    here, then a memory format that pair takes; the workers, then threads per worker that fit the
    cores beside them; then the fields that go with anything."""
    runtime = trial.suggest_categorical("runtime", tuple(runnable))
    precision_name, _ = param_names(runtime, "")
    precision = trial.suggest_categorical(precision_name, tuple(runnable[runtime]))
    formats = runnable[runtime][precision]
    channels_last = (trial.suggest_categorical(param_names(runtime, precision)[1], formats) if len(formats) > 1
                     else formats[0])
    choices = space(device, cores)
    workers = trial.suggest_categorical("workers", choices["workers"])
    offered = threads_for(workers, cores)
    threads = trial.suggest_categorical(threads_name(workers), offered) if len(offered) > 1 else offered[0]
    rest = {k: trial.suggest_categorical(k, v) for k, v in choices.items() if k not in CONDITIONAL}
    return Candidate(runtime=runtime, precision=precision, channels_last=channels_last, workers=workers, threads=threads,
                     **rest)


@dataclass(frozen=True)
class Placement:
    """A measured configuration on one instance type."""

    instance: str
    replicas: int
    throughput_rps: float  # replicas times the measured rate at the SLO
    price_per_hour: float
    usd_per_million: float


def place(rate_rps: float, cores_used: float, peak_memory_mb: float, gpu: bool, catalogue) -> Placement | None:
    """The cheapest instance of ``catalogue`` for a server measured at ``rate_rps`` (at the SLO)
    on ``cores_used`` cores (or one GPU) with ``peak_memory_mb``; None when no instance holds one
    replica. Replicas per instance: vCPUs // cores (GPUs for a GPU server), fewer if memory is short
    (10% of the instance's memory is left to the system). Of equal prices per prediction, the
    instance with fewer vCPUs (the finer unit to scale by)."""
    if rate_rps <= 0:
        return None
    best: Placement | None = None
    for it in catalogue.instances:
        if gpu != (it.gpu > 0):
            continue
        replicas = it.gpu if gpu else int(it.vcpu // max(cores_used, 0.05))
        if peak_memory_mb > 0:
            replicas = min(replicas, int(0.9 * it.memory_gb * 1024 // peak_memory_mb))
        if replicas < 1:
            continue
        throughput = replicas * rate_rps
        usd = it.price_per_hour / (throughput * 3600) * 1e6
        if best is None or round(usd, 6) < best.usd_per_million or (
                round(usd, 6) == best.usd_per_million and it.vcpu < catalogue.instance(best.instance).vcpu):
            best = Placement(it.name, replicas, round(throughput, 3), it.price_per_hour, round(usd, 6))
    return best
