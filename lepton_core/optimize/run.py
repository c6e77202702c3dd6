"""The serving-optimisation stage: which model, measured on which images against what SLO; the
study; and what it leaves: the trials, the chosen configuration, the latency-versus-cost chart,
and the chosen configuration written into the integration stage's cutover bundle.

Three steps, so that a flow can make each measurement its own task: ``prepare`` (resolve the
model version, fetch its checkpoint, fix the evaluation set and its fp32 reference), the study
(``study.run_study`` with ``job.measure`` or a task around it), ``finish`` (outputs and bundle).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from lepton_core.errors import LeptonError, UsageError
from lepton_core.fsutil import atomic_write_text
from lepton_core.optimize.harness import SKIPPED, EvalSet, HarnessSettings, Measurement, Reference, measure, reference
from lepton_core.optimize.space import Candidate, combinations, machine_cores
from lepton_core.optimize.study import StudyResult, StudySettings, Trial
from lepton_core.spec import LoadedSpec
from lepton_core.spec.params import OptimizeOptions


class NoConfigurationMeetsSLO(LeptonError):
    """Every configuration tried was skipped, broke the accuracy tolerance or missed the SLO."""


@dataclass(frozen=True)
class OptimizeJob:
    """Everything a measurement needs, fixed before the study starts (and the same on a retry)."""

    model: str
    version: str
    registered: bool  # a registry version (its cutover bundle is updated) or a local checkpoint
    checkpoint: str
    checkpoint_sha256: str
    evalset: EvalSet
    ref: Reference
    harness: HarnessSettings
    study: StudySettings
    cores: int
    study_name: str
    journal: str
    work_dir: str
    calibration: str = ""  # int8's calibration images (.npy), "" when the data has no train split
    calibration_sha256: str = ""

    def key(self, candidate: Candidate) -> str:
        """What a measurement depends on: the checkpoint, the configuration, the harness, the images
        (and, for int8, the calibration images)."""
        blob = json.dumps([self.checkpoint_sha256, candidate.record(), self.harness.digest(), self.evalset.digest(),
                           self.cores] + ([self.calibration_sha256] if candidate.precision == "int8" else []), sort_keys=True)
        return "serving-" + hashlib.sha256(blob.encode()).hexdigest()[:32]

    def measure(self, candidate: Candidate) -> Measurement:
        return measure(self.checkpoint, candidate, self.evalset, self.ref, self.harness, self.work_dir, self.calibration)


def _device(choice: str) -> str:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError("optimisation: device cuda asked for, but this machine has no CUDA GPU")
    return "cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu"


def resolve_version(registry, model_name: str, model: str | None):
    """The registry version to tune: ``model`` as a version name or a ``s3://.../MODEL/versions/V/``
    URI; by default the version holding ``candidate`` (else ``production``)."""
    if model is None:
        for stage in ("candidate", "production"):
            pointer = registry.stage(model_name, stage)
            if pointer is not None:
                return registry.get(model_name, pointer.version)
        raise UsageError(f"{model_name}: no version holds candidate or production; name one to optimise")
    if model.startswith("s3://"):
        m = re.search(r"([^/]+)/versions/([^/]+)/?(?:model\.pt)?$", model)
        if not m:
            raise UsageError(f"{model}: not a registered version (expected s3://BUCKET/ROOT/MODEL/versions/VERSION/)")
        if m.group(1) != model_name:
            raise UsageError(f"{model}: a version of {m.group(1)}, but the spec's model is {model_name}")
        return registry.get(model_name, m.group(2))
    return registry.get(model_name, model)


def prepare(loaded: LoadedSpec, model: str | None, options: OptimizeOptions, state_root: str | Path,
            out_dir: str | Path, *, say: Callable[[str], None] | None = None) -> OptimizeJob:
    """Resolve what is tuned and how it is measured. ``model``: a registered version (name or URI),
    a local checkpoint file, or None for the version holding ``candidate``."""
    from lepton_core.data.inventory import sha256_file
    from lepton_core.optimize.harness import eval_set_from_folder, write_calibration
    from lepton_core.registry import Registry
    from lepton_core.store.target import open_store
    from lepton_core.transfer.adapt import dataset_images

    say = say or (lambda _m: None)
    spec, state_root = loaded.spec, Path(state_root)
    if spec.model is None:
        raise UsageError(f"{loaded.path}: the spec has no model whose serving to optimise")
    store_fn = functools.cache(lambda: open_store(spec.target, state_root, start=True))  # opened once, if at all
    if model is not None and not model.startswith("s3://") and Path(model).is_file():
        checkpoint, version, registered = Path(model), Path(model).stem, False
    else:
        registry = Registry.for_target(spec.target, store_fn())
        v = resolve_version(registry, spec.model.name, model)
        checkpoint, version, registered = registry.fetch(v, state_root / "cache" / "registry"), v.version, True
    images = dataset_images(loaded, spec.model.target_dataset, options.data, state_root, store_fn)
    evalset = eval_set_from_folder(images.root, spec.model.classes, options.eval_images, spec.model.target_dataset)
    if not evalset.images:
        raise UsageError(f"{spec.model.target_dataset}: no test images to evaluate serving configurations on")
    say(f"optimising how {spec.model.name} {version} is served: {len(evalset.images)} evaluation images, "
        f"SLO p95 {spec.slo.p95_latency_ms:g} ms")
    ref = reference(checkpoint, evalset)
    device = _device(options.device)
    harness = HarnessSettings(slo_p95_ms=spec.slo.p95_latency_ms, accuracy_tolerance=options.accuracy_tolerance,
                              step_seconds=options.step_seconds, max_steps=options.max_steps, arrivals=options.arrivals,
                              load_seed=options.seed, device=device)
    study = StudySettings(trials=options.trials, patience=options.patience, time_budget_s=60 * options.time_budget_minutes,
                          seed=options.seed)
    sha = sha256_file(checkpoint)
    cores = machine_cores()
    # what this machine can serve with is part of the study: a machine that gains a compiler (or bf16)
    # searches a space of other choices, a study of its own (Optuna's choices cannot change mid-study)
    runnable, _ = combinations(device, cores)
    ident = hashlib.sha256(json.dumps([sha, harness.digest(), evalset.digest(), cores, options.seed, runnable]).encode()
                           ).hexdigest()[:12]
    journal = state_root / "optimize" / spec.model.name / version / f"study-{ident}.journal"
    if options.fresh and journal.exists():
        journal.unlink()
    work = Path(out_dir) / "optimize"
    work.mkdir(parents=True, exist_ok=True)
    calibration = write_calibration(images.root, spec.model.classes, checkpoint, work / "calibration.npy")
    return OptimizeJob(spec.model.name, version, registered, str(checkpoint), sha, evalset, ref, harness, study, cores,
                       f"{spec.model.name}-{version}-{ident}", str(journal), str(work), calibration,
                       sha256_file(calibration) if calibration else "")


@dataclass(frozen=True)
class OptimizationResult:
    model: str
    version: str
    device: str
    slo_p95_ms: float
    chosen: dict  # the trial: configuration, measurement, placement
    baseline: dict | None
    speedup_vs_baseline: float | None  # throughput per core at the SLO, chosen over baseline
    cost_ratio: float | None  # baseline's cost per million over the chosen's
    trials: int
    skipped: int
    rejected: int
    stopped: str
    out_dir: str
    chart: str
    bundle_uri: str | None
    rows: tuple[tuple, ...]  # the trials table

    def summary(self) -> str:
        p, m = self.chosen["placement"], self.chosen["measurement"]
        text = (f"{self.model} {self.version}: {Candidate(**m['candidate']).label()} serves {m['rate_rps']:.1f} req/s "
                f"at p95 {m['latency_ms']['p95']:.1f} ms (SLO {self.slo_p95_ms:g} ms); ${p['usd_per_million']:.4f} per million "
                f"on {p['replicas']} x {p['instance']}")
        if self.speedup_vs_baseline:
            text += f"; {self.speedup_vs_baseline:.2f}x the baseline's throughput per core"
        return text


TABLE_COLUMNS = ("trial", "configuration", "status", "req/s at SLO", "p95 ms", "cores busy", "accuracy delta (points)",
                 "peak MB", "start s", "instance", "USD per million", "note")


def trial_row(t: Trial) -> tuple:
    m = t.measurement
    return (t.number, m.candidate.label(), m.status if t.reused_from is None else f"repeat of {t.reused_from}",
            round(m.rate_rps, 2), m.latency_ms.get("p95"), m.cpu_cores, m.accuracy_delta, m.peak_memory_mb, m.startup_s,
            f"{t.placement.replicas} x {t.placement.instance}" if t.placement else None,
            t.placement.usd_per_million if t.placement else None, m.reason or "")


def finish(loaded: LoadedSpec, job: OptimizeJob, study: StudyResult, state_root: str | Path,
           *, say: Callable[[str], None] | None = None) -> OptimizationResult:
    """Write the trials, the chart and the chosen configuration; put it in the cutover bundle."""
    from lepton_core.optimize.chart import pareto_png

    say = say or (lambda _m: None)
    out = Path(job.work_dir)
    rows = tuple(trial_row(t) for t in study.trials)
    atomic_write_text(out / "trials.json", json.dumps(study.record(), indent=2))
    table = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    table += ["| " + " | ".join("" if v is None else str(v) for v in r) + " |" for r in rows]
    atomic_write_text(out / "trials.md", f"# Serving trials: {job.model} {job.version}\n\nStopped: {study.stopped}.\n\n"
                      + "\n".join(table) + "\n")
    chart = pareto_png(study, job.harness.slo_p95_ms, out / "pareto.png",
                       f"{job.model} {job.version}: cost and latency of serving configurations ({job.harness.device})")
    measured = [t for t in study.trials if t.reused_from is None]
    skipped = sum(t.measurement.status == SKIPPED for t in measured)
    rejected = sum(t.measurement.status == "rejected" for t in measured)
    if study.best is None:
        raise NoConfigurationMeetsSLO(
            f"{job.model} {job.version}: none of {len(measured)} serving configurations met the SLO's p95 "
            f"{job.harness.slo_p95_ms:g} ms within the accuracy tolerance; see {out / 'trials.md'}")
    best, base = study.best, study.baseline
    speedup = cost_ratio = None
    if base is not None and base.placement:
        speedup = round((best.measurement.rate_rps / best.measurement.cores_used)
                        / (base.measurement.rate_rps / base.measurement.cores_used), 3)
        cost_ratio = round(base.cost / best.cost, 3)
    chosen = best.record()
    serving = {"format": "lepton-serving/1", "model": job.model, "version": job.version,
               "chosen_at": dt.datetime.now(dt.timezone.utc).isoformat(), "device": job.harness.device,
               "serving": asdict(best.measurement.candidate.serve_config(job.calibration)), "measurement": chosen["measurement"],
               "placement": chosen["placement"], "slo_p95_ms": job.harness.slo_p95_ms,
               "speedup_vs_baseline": speedup, "cost_ratio_vs_baseline": cost_ratio, "study": job.study_name,
               "command": serve_command(job, best.measurement.candidate)}
    atomic_write_text(out / "serving.json", json.dumps(serving, indent=2))
    bundle_uri = update_bundle(loaded, job, serving, out / "cutover", state_root) if job.registered else None
    result = OptimizationResult(job.model, job.version, job.harness.device, job.harness.slo_p95_ms, chosen,
                                base.record() if base else None, speedup, cost_ratio, len(measured), skipped, rejected,
                                study.stopped, str(out), str(chart), bundle_uri, rows)
    say(result.summary())
    return result


def serve_command(job: OptimizeJob, c: Candidate) -> list[str]:
    """``lepton serve`` with the chosen configuration."""
    cmd = ["lepton", "serve", "MODEL_URI", "--host", "0.0.0.0", "--port", "8000", "--runtime", c.runtime,
           "--precision", c.precision, "--max-batch-size", str(c.max_batch_size),
           "--batch-timeout", f"{c.batch_timeout_ms / 1000:g}", "--workers", str(c.workers), "--threads", str(c.threads)]
    return (cmd + (["--channels-last"] if c.channels_last else [])
            + (["--calibration", job.calibration] if c.precision == "int8" else []))


def update_bundle(loaded: LoadedSpec, job: OptimizeJob, serving: dict, out: Path, state_root: str | Path) -> str:
    """Put the chosen configuration into the version's cutover bundle (``cutover.json``'s endpoint,
    the deployment manifest's command, instance type and replicas) and upload it with
    ``serving.json``. A version with no bundle yet (not through integration) gets ``serving.json``
    alone."""
    from lepton_core.store.objectstore import ObjectNotFound
    from lepton_core.store.target import open_store

    spec = loaded.spec
    store = open_store(spec.target, Path(state_root), start=True)
    prefix = "/".join(p for p in (spec.target.prefix, "cutover", job.model, job.version) if p)
    out.mkdir(parents=True, exist_ok=True)
    if serving["serving"]["precision"] == "int8":  # the calibration images go with the bundle: int8 is quantized on them
        calibration = f"s3://{spec.target.bucket}/{prefix}/calibration.npy"
        store.put_file(spec.target.bucket, f"{prefix}/calibration.npy", serving["serving"]["calibration"])
        serving = {**serving, "serving": {**serving["serving"], "calibration": calibration},
                   "command": [calibration if a == serving["serving"]["calibration"] else a for a in serving["command"]]}
    files = {"serving.json": json.dumps(serving, indent=2)}
    try:
        cutover = json.loads(store.get_bytes(spec.target.bucket, f"{prefix}/cutover.json"))
        deployment = yaml.safe_load(store.get_bytes(spec.target.bucket, f"{prefix}/deployment.yaml"))
    except ObjectNotFound:
        cutover = deployment = None
    if cutover is not None:
        uri = cutover["to"]["uri"]
        command = [uri if a == "MODEL_URI" else a for a in serving["command"]]
        cutover["endpoint"]["serving"] = serving["serving"]
        cutover["optimisation"] = {k: serving[k] for k in ("chosen_at", "device", "placement", "speedup_vs_baseline",
                                                           "cost_ratio_vs_baseline", "study")}
        cutover["optimisation"]["measured"] = {k: serving["measurement"][k] for k in ("rate_rps", "latency_ms", "accuracy_delta",
                                                                                      "peak_memory_mb", "startup_s")}
        cutover["steps"][0] = (f"start the server: {' '.join(command)} (credentials from the machine's role or AWS_* "
                               "variables, never from this bundle)")
        place = serving["placement"]
        deployment["spec"]["command"] = command
        deployment["spec"]["replicas"] = max(2, int(deployment["spec"].get("replicas", 2)))
        deployment["spec"]["replicasPerInstance"] = place["replicas"]
        deployment["spec"]["nodeSelector"] = {"node.kubernetes.io/instance-type": place["instance"]}
        m = serving["measurement"]
        cores = m["cpu_cores"] or m["cores"]
        deployment["spec"]["resources"] = {"requests": {"cpu": f"{int(1000 * cores + 0.999)}m",
                                                        "memory": f"{int(serving['measurement']['peak_memory_mb'] or 512) + 256}Mi"}}
        files["cutover.json"] = json.dumps(cutover, indent=2)
        files["deployment.yaml"] = yaml.safe_dump(deployment, sort_keys=False)
    for name, text in files.items():
        atomic_write_text(out / name, text)
        store.put_bytes(spec.target.bucket, f"{prefix}/{name}", text.encode(),
                        content_type="application/json" if name.endswith(".json") else "application/yaml")
    return f"s3://{spec.target.bucket}/{prefix}/"


def optimize_serving(loaded: LoadedSpec, model: str | None, options: OptimizeOptions, state_root: str | Path,
                     out_dir: str | Path, *, say: Callable[[str], None] | None = None) -> OptimizationResult:
    """The stage without Prefect: prepare, study (measuring in this process), finish."""
    from lepton_core.optimize.study import run_study

    job = prepare(loaded, model, options, state_root, out_dir, say=say)
    study = run_study(job.study_name, job.journal, job.measure, loaded.catalogue, device=job.harness.device,
                      cores=job.cores, settings=job.study, say=say)
    return finish(loaded, job, study, state_root, say=say)

