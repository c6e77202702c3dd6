"""The integration stage: the on-prem model and the adapted candidate served side by side with the
same API, the parity check, the candidate promoted, and the cutover bundle.

The on-prem checkpoint is registered too (version ``onprem-<sha256 prefix>``) and holds
``production`` when no version does: that is what callers are served today. A candidate that
passes parity is promoted to ``candidate``; the cutover itself (promoting it to ``production``
and pointing callers at the cloud's server) is the bundle's last step, for a person to take. A
failed parity check writes its table, raises ParityFailed and promotes nothing. Both servers
are stopped when the stage ends, also on failure.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from lepton_core.errors import UsageError
from lepton_core.fsutil import atomic_write_text
from lepton_core.registry import Registry, StagePointer
from lepton_core.serving.parity import ParityFailed, ParityResult, check_parity, golden_set
from lepton_core.spec import LoadedSpec
from lepton_core.spec.params import IntegrateOptions


@dataclass(frozen=True)
class IntegrationResult:
    model: str
    candidate: str
    onprem: str
    parity: ParityResult
    promoted: StagePointer
    bundle: Path
    bundle_uri: str

    def summary(self) -> str:
        lat = self.parity.latency_ms["candidate"]["p95"]
        return (f"{self.model} {self.candidate} passed parity ({self.parity.agreement:.1%} of on-prem answers kept, "
                f"{self.parity.accuracy['candidate']['target']:.1%} on the cloud's images against "
                f"{self.parity.accuracy['on-prem']['target']:.1%}, p95 {lat:.1f} ms) and is the candidate")


def register_onprem(registry: Registry, loaded: LoadedSpec, checkpoint: Path) -> str:
    """The on-prem checkpoint as a registry version; it holds ``production`` when nothing does."""
    from lepton_core.data.inventory import sha256_file

    model = loaded.spec.model
    sha = sha256_file(checkpoint)
    version = f"onprem-{sha[:12]}"
    try:
        registry.get(model.name, version)
    except UsageError:
        card = {"format": "lepton-model-card/1", "kind": "on-prem", "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                "architecture": model.architecture, "classes": list(model.classes), "input_size": model.input_size,
                "checkpoint": {"sha256": sha}, "data": {"dataset": model.source_dataset},
                "spec": {"name": loaded.spec.name, "sha256": loaded.sha256}, "on_prem_checkpoint": model.checkpoint}
        registry.register(model.name, version, checkpoint, card)
    if registry.stage(model.name, "production") is None:
        registry.promote(model.name, version, "production", expected=None, note="the on-prem model, as served before the migration")
    return version


def integrate(loaded: LoadedSpec, candidate: str, options: IntegrateOptions, state_root: str | Path, out_dir: str | Path,
              *, say: Callable[[str], None] | None = None) -> IntegrationResult:
    """Parity of the registered ``candidate`` version against the on-prem model; promotion; the bundle."""
    from lepton_core.serving.client import ModelClient, ServerProcess
    from lepton_core.serving.server import ServeConfig
    from lepton_core.store.target import open_store
    from lepton_core.transfer.adapt import dataset_images, onprem_checkpoint

    say = say or (lambda _m: None)
    spec, model = loaded.spec, loaded.spec.model
    if model is None:
        raise UsageError(f"{loaded.path}: the spec has no model to integrate")
    state_root, out = Path(state_root), Path(out_dir) / "integrate"
    store = open_store(spec.target, state_root, start=True)
    registry = Registry.for_target(spec.target, store)
    version = registry.get(model.name, candidate)
    candidate_ckpt = registry.fetch(version, state_root / "cache" / "registry")
    onprem_ckpt = onprem_checkpoint(loaded, state_root, lambda: store)
    onprem = register_onprem(registry, loaded, onprem_ckpt)
    source = dataset_images(loaded, model.source_dataset, options.data, state_root, lambda: store)
    target = dataset_images(loaded, model.target_dataset, options.data, state_root, lambda: store)
    golden = golden_set(source.root, target.root, model.classes, options.golden_per_domain)
    config = ServeConfig(max_batch_size=options.max_batch_size, batch_timeout=options.batch_timeout)
    out.mkdir(parents=True, exist_ok=True)
    say(f"serving {onprem} and {candidate} side by side; {len(golden)} golden images")
    servers = [ServerProcess(ckpt, name=model.name, version=v, config=config, log=out / f"server-{label}.log")
               for label, ckpt, v in (("onprem", onprem_ckpt, onprem), ("candidate", candidate_ckpt, candidate))]
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready()
        with ModelClient(servers[0].url) as a, ModelClient(servers[1].url) as b:
            if a.info()["model"]["classes"] != b.info()["model"]["classes"]:
                raise ParityFailed(f"{candidate} and {onprem} do not answer with the same classes; nothing promoted")
            result = check_parity(a, b, golden, min_agreement=spec.slo.min_agreement, p95_ms=spec.slo.p95_latency_ms)
    finally:
        for server in servers:
            server.stop()
    atomic_write_text(out / "parity.md", f"# Parity: {model.name} {candidate} against {onprem}\n\n{result.table()}\n")
    atomic_write_text(out / "parity.json", json.dumps(result.record(), indent=2))
    if not result.passed:
        raise ParityFailed(f"{model.name} {candidate} failed the parity check: it " + "; it ".join(result.failures)
                           + "; nothing promoted")
    pointer = registry.promote(model.name, candidate, "candidate",
                               note=f"parity passed: {result.agreement:.1%} of on-prem answers kept")
    bundle, uri = cutover_bundle(loaded, version, onprem, result, config, out / "cutover", store)
    say(f"cutover bundle written: {uri}")  # (the task's last line says it passed and is the candidate)
    return IntegrationResult(model.name, candidate, onprem, result, pointer, bundle, uri)


def cutover_bundle(loaded: LoadedSpec, version, onprem: str, parity: ParityResult, config, out: Path, store) -> tuple[Path, str]:
    """What the cloud side needs to serve the candidate, with no secret in it: the version and its
    checksum, the endpoint's configuration and a deployment manifest; written locally and uploaded
    to ``s3://BUCKET/PREFIX/cutover/VERSION/``, where it replaces what an earlier run left (an
    earlier serving optimisation's ``serving.json`` and calibration images included)."""
    spec, model = loaded.spec, loaded.spec.model
    endpoint = {"port": 8000, "bind": "0.0.0.0 inside the cloud's network (lepton binds 127.0.0.1 unless told)",
                "predict": "POST /predict {\"image\": BASE64} or {\"images\": [BASE64, ...]}", "health": "GET /health",
                "info": "GET /info", "input_size": model.input_size, "classes": list(model.classes),
                "serving": asdict(config)}
    cutover = {
        "format": "lepton-cutover/1", "model": model.name, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "from": {"version": onprem, "stage": "production"},
        "to": {"version": version.version, "stage": "candidate", "uri": version.uri, "checkpoint_sha256": version.sha256},
        "endpoint": endpoint, "slo": spec.slo.model_dump(), "parity": parity.record(),
        "steps": [f"start the server: lepton serve {version.uri} --host 0.0.0.0 --port 8000 (credentials from the "
                  "machine's role or AWS_* variables, never from this bundle)",
                  "wait for GET /health to answer ok, then send a share of traffic and watch p95 latency",
                  f"promote: lepton registry promote SPEC {version.version} production",
                  "point callers at the cloud endpoint; keep the on-prem server until the downtime window closes"],
    }
    deployment = {
        "apiVersion": "lepton/v1", "kind": "ModelDeployment",
        "metadata": {"name": f"{model.name}-{version.version}", "labels": {"model": model.name, "stage": "candidate"}},
        "spec": {"replicas": 2, "model": {"uri": version.uri, "sha256": version.sha256},
                 "command": ["lepton", "serve", version.uri, "--host", "0.0.0.0", "--port", "8000"],
                 "ports": [{"name": "http", "containerPort": 8000}],
                 "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}},
                 "env": [{"name": "AWS_REGION", "value": spec.target.region}],
                 "secretsFrom": "the platform's workload identity (no keys in this file)"},
    }
    atomic_write_text(out / "cutover.json", json.dumps(cutover, indent=2))
    atomic_write_text(out / "deployment.yaml", yaml.safe_dump(deployment, sort_keys=False))
    prefix = "/".join(p for p in (spec.target.prefix, "cutover", version.model, version.version) if p)
    # An earlier run's serving optimisation of this version left its choice beside the bundle; this
    # bundle serves ``config``, so that choice goes. serving.json first (until the new files land,
    # the old bundle, which carries the same choice, stays whole), the int8 calibration images it
    # shipped last (the old bundle's command names them).
    # (each looked for first: a first bundle, the usual case, needs no permission to delete)
    stale = [name for name in ("serving.json", "calibration.npy") if store.head(spec.target.bucket, f"{prefix}/{name}")]
    if "serving.json" in stale:
        store.delete(spec.target.bucket, f"{prefix}/serving.json")
    for name in ("cutover.json", "deployment.yaml"):
        store.put_bytes(spec.target.bucket, f"{prefix}/{name}", (out / name).read_bytes(),
                        content_type="application/json" if name.endswith(".json") else "application/yaml")
    if "calibration.npy" in stale:
        store.delete(spec.target.bucket, f"{prefix}/calibration.npy")
    return out, f"s3://{spec.target.bucket}/{prefix}/"
