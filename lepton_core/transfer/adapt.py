"""The adaptation stage for a spec: fine-tune the on-prem model to the target's images, train the
same architecture from scratch on the same labels and budget, compare both with the on-prem model
as it is, and register the adapted model (checkpoint, then its model card) under the registry prefix.

Training runs live in the state folder under ``adapt/<model>/<key>-<run>/``, where the key is a hash
of everything the result depends on (settings, the data's hashes, the initial weights' hash): a
retried or repeated run goes on from its last checkpoint, or returns at once when it finished.
Bad input (no model, a mismatched checkpoint, classes the model does not know, an unreadable image)
fails before anything is registered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lepton_core.errors import UsageError
from lepton_core.fsutil import atomic_write_text
from lepton_core.spec import LoadedSpec, is_s3
from lepton_core.spec.params import AdaptOptions
from lepton_core.transfer.checkpoint import Preprocess
from lepton_core.transfer.evaluate import Metrics
from lepton_core.transfer.fit import FitJob, FitResult

UNADAPTED, ADAPTED, SCRATCH = "on-prem (unadapted)", "adapted", "scratch"
CARD_NAME = "model-card.json"

Say = Callable[[str], None]


@dataclass(frozen=True)
class DatasetImages:
    root: Path  # a local ImageFolder tree
    source: str  # where it came from (s3:// URI or path)
    digest: str  # SHA-256 over the sorted (path, SHA-256) pairs: the same for a copy and its source
    files: int


@dataclass(frozen=True)
class AdaptResult:
    model: str
    version: str
    metrics: dict[str, Metrics]  # on the target's test split
    on_source: dict[str, Metrics]  # on the source's test split (when replayed)
    adapted: FitResult
    scratch: FitResult | None
    counts: dict[str, int]
    checkpoint: Path
    card: dict
    registry_uri: str | None
    table: str
    curve: Path

    def summary(self) -> str:
        a, u = self.metrics[ADAPTED], self.metrics[UNADAPTED]
        s = self.metrics.get(SCRATCH)
        vs = f", scratch {s.accuracy:.1%}" if s else ""
        return (f"{self.model}: target test accuracy {a.accuracy:.1%} adapted vs {u.accuracy:.1%} unadapted{vs} "
                f"({self.counts['train']} labelled images, {self.adapted.epochs} epochs)")


def digest_pairs(pairs: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for rel, sha in sorted(pairs):
        h.update(f"{rel}\t{sha}\n".encode())
    return h.hexdigest()


def dataset_images(loaded: LoadedSpec, name: str, data: str, state_root: Path, store_fn: Callable) -> DatasetImages:
    """A dataset of the spec as a local folder: its verified cloud copy (``data="cloud-copy"``:
    downloaded once into the cache, every file checked against the migration manifest's SHA-256),
    or its location in the spec (``data="location"``)."""
    from lepton_core.data.engine import dataset_prefix, download_dataset, read_manifest
    from lepton_core.store.objectstore import S3Uri

    spec = loaded.spec
    dataset = spec.dataset(name)
    location = loaded.resolve(dataset.location)
    if data == "location" and not is_s3(location):
        from lepton_core.data.inventory import inventory
        from lepton_core.data.stage import hash_cache

        files = inventory(location)
        cache = hash_cache(state_root)
        try:
            hashes = cache.hashes(files)
        finally:
            cache.close()
        return DatasetImages(Path(location), location, digest_pairs([(f.rel, hashes[f.rel]) for f in files]), len(files))
    if data == "location":
        uri = S3Uri.parse(location)
        bucket, prefix = uri.bucket, uri.key.strip("/")
    else:
        bucket, prefix = spec.target.bucket, dataset_prefix(spec.target.prefix, dataset.name)
    from lepton_core.data.crt import CrtTransfer

    store = store_fn()
    if read_manifest(store, bucket, prefix) is None:
        hint = "migrate it first (`lepton migrate-data SPEC`) or use the spec's location" if data == "cloud-copy" else "copy it with lepton first"
        raise UsageError(f"s3://{bucket}/{prefix}: no complete copy of dataset {dataset.name!r} there; {hint}")
    dest = state_root / "cache" / "datasets" / bucket / prefix
    transfer = CrtTransfer(store.settings, encryption=spec.target.encryption, kms_key_id=spec.target.kms_key_id)
    download_dataset(store, transfer, bucket, prefix, dest)
    manifest = read_manifest(store, bucket, prefix)
    return DatasetImages(dest, f"s3://{bucket}/{prefix}", digest_pairs([(e.rel, e.sha256) for e in manifest.objects]),
                        len(manifest.objects))


def onprem_checkpoint(loaded: LoadedSpec, state_root: Path, store_fn: Callable) -> Path:
    """The on-prem checkpoint as a local file (an s3:// one is downloaded into the cache once)."""
    from lepton_core.store.objectstore import ObjectNotFound, S3Uri

    location = loaded.resolve(loaded.spec.model.checkpoint)
    if not is_s3(location):
        if not Path(location).is_file():
            raise UsageError(f"model.checkpoint: {location}: no such file")
        return Path(location)
    uri = S3Uri.parse(location)
    dest = state_root / "cache" / "models" / f"{hashlib.sha256(location.encode()).hexdigest()[:16]}.pt"
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            store_fn().download_file(uri.bucket, uri.key, dest)
        except ObjectNotFound:
            raise UsageError(f"model.checkpoint: {location}: no such object") from None
    return dest


def check_local_onprem(loaded: LoadedSpec) -> None:
    """Fail now, with the file's one-line error, when the spec's on-prem checkpoint is a local file
    that is missing or does not fit its model (every adaptation reads it: it is the unadapted
    model). An s3:// one is checked once fetched, inside the flow. For commands to call before
    Prefect starts."""
    from lepton_core.transfer.checkpoint import onprem_weights

    model = loaded.spec.model
    if model is None or is_s3(loaded.resolve(model.checkpoint)):
        return
    path = onprem_checkpoint(loaded, Path(), lambda: None)  # (a local file: no store is opened)
    onprem_weights(path, model.architecture, model.classes, model.input_size)


def file_sha256(path: Path) -> str:
    from lepton_core.data.inventory import sha256_file

    return sha256_file(path)


def adapt_model(loaded: LoadedSpec, options: AdaptOptions, state_root: str | Path, out_dir: str | Path, *,
                flow_run_id: str | None = None, say: Say | None = None) -> AdaptResult:
    """Adapt the spec's model to its target dataset; compare, save and register. See the module docstring."""
    from lepton_core.store.target import open_store
    from lepton_core.transfer.checkpoint import onprem_weights

    say = say or (lambda _m: None)
    spec = loaded.spec
    if spec.model is None:
        raise UsageError(f"{loaded.path}: the spec has no model to adapt")
    model = spec.model
    state_root, out_dir = Path(state_root), Path(out_dir)
    stores: list = []

    def store_fn():
        if not stores:
            stores.append(open_store(spec.target, state_root, start=True))
        return stores[0]

    ckpt = onprem_checkpoint(loaded, state_root, store_fn)
    onprem_state, onprem_pre = onprem_weights(ckpt, model.architecture, model.classes, model.input_size)
    init_path = {"onprem": str(ckpt), "none": None}.get(options.init)
    if options.init == "imagenet":  # a bad weights file fails now, before the images are fetched
        from lepton_core.transfer.backbones import checked_pretrained

        init_path = str(checked_pretrained(model.architecture, len(model.classes), model.input_size, options.pretrained_weights))
    images = dataset_images(loaded, model.target_dataset, options.data, state_root, store_fn)
    replay = (dataset_images(loaded, model.source_dataset, options.data, state_root, store_fn)
              if options.source_replay and model.source_dataset != model.target_dataset else None)
    say(f"target images: {images.files} files from {images.source}")
    pre = _preprocess(options, onprem_pre)
    base = dict(data_root=str(images.root), data_name=model.target_dataset, classes=model.classes,
                architecture=model.architecture, input_size=model.input_size, mode=pre.mode, mean=pre.mean, std=pre.std,
                labelled_fraction=options.labelled_fraction, max_epochs=options.max_epochs, patience=options.patience,
                batch_size=options.batch_size, lr=options.lr, seed=options.seed, precision=options.precision,
                num_workers=options.num_workers, progress_bar=options.progress_bar)
    replayed = (dict(replay_root=str(replay.root), replay_name=model.source_dataset, replay_fraction=options.replay_fraction)
                if replay else {})
    adapted_job, version = _job("adapted", base, dict(init=options.init, init_path=init_path, strategy=options.strategy,
                                                      calibrate=options.calibrate, probe=options.probe, **replayed,
                                                      pseudo_label_threshold=options.pseudo_label_threshold,
                                                      relabel_every=options.relabel_every,
                                                      labelled_share=options.labelled_share,
                                                      val_every_n_steps=options.val_every_n_steps),
                                [images.digest, replay.digest if replay else ""], state_root, model.name, options.fresh)
    say(f"fine-tuning {model.architecture} ({options.strategy}, from {options.init} weights) on "
        f"{options.labelled_fraction:.0%} of the labels")
    from lepton_core.transfer.fit import fit

    adapted = fit(adapted_job, say)
    scratch = None
    if options.compare_scratch:
        scratch_job, _ = _job("scratch", base | {"lr": options.scratch_lr}, dict(init="none", strategy="full"),
                              [images.digest], state_root, model.name, options.fresh)
        say("training the same architecture from scratch on the same labels and budget")
        scratch = fit(scratch_job, say)
    results, on_source = _evaluate(images, replay, model, onprem_state, onprem_pre, pre, adapted, scratch)
    return _save(loaded, options, images, replay, adapted_job, adapted, scratch, results, on_source, ckpt, version,
                 out_dir, store_fn, flow_run_id, say)


def _preprocess(options: AdaptOptions, onprem: Preprocess) -> Preprocess:
    from lepton_core.transfer.backbones import IMAGENET_MEAN, IMAGENET_STD

    if options.init == "imagenet":
        return Preprocess(mode=onprem.mode, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return onprem


def _job(name: str, base: dict, extra: dict, digests: list[str], state_root: Path, model: str,
         fresh: bool) -> tuple[FitJob, str]:
    """The job, in a work folder named by a hash of everything its result depends on (that hash is
    also the registered version)."""
    job = FitJob(name=name, work_dir="-", **base, **extra)
    init_hash = file_sha256(Path(job.init_path)) if job.init_path else ""
    key = hashlib.sha256(json.dumps([job.settings(), digests, init_hash], sort_keys=True).encode()).hexdigest()[:16]
    work = state_root / "adapt" / model / f"{key}-{name}"
    if fresh and work.exists():
        shutil.rmtree(work)
    return job.model_copy(update={"work_dir": str(work)}), key


def _evaluate(images: DatasetImages, replay: DatasetImages | None, model, onprem_state: dict, onprem_pre: Preprocess,
              pre: Preprocess, adapted: FitResult, scratch: FitResult | None) -> tuple[dict[str, Metrics], dict[str, Metrics]]:
    """The three models on the target's test split, each with its own preprocessing; and, when the
    on-prem images were replayed, the on-prem and adapted models on the source's test split."""
    from lepton_core.transfer.backbones import build_model
    from lepton_core.transfer.data import ImageDataModule
    from lepton_core.transfer.evaluate import metrics, predict
    from lepton_core.transfer.fit import trained_state

    def score(state: dict, p: Preprocess, where: DatasetImages, name: str) -> Metrics:
        net = build_model(model.architecture, len(model.classes), model.input_size)
        net.load_state_dict(state)
        data = ImageDataModule(where.root, model.classes, model.input_size, p, batch_size=256, name=name)
        return metrics(*predict(net, data.test_dataloader()))

    adapted_state = trained_state(adapted)
    results = {UNADAPTED: score(onprem_state, onprem_pre, images, model.target_dataset),
               ADAPTED: score(adapted_state, pre, images, model.target_dataset)}
    if scratch is not None:
        results[SCRATCH] = score(trained_state(scratch), pre, images, model.target_dataset)
    on_source = {}
    if replay is not None:
        on_source = {UNADAPTED: score(onprem_state, onprem_pre, replay, model.source_dataset),
                     ADAPTED: score(adapted_state, pre, replay, model.source_dataset)}
    return results, on_source


def _code_version() -> dict:
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("lepton")
    except PackageNotFoundError:
        package = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"lepton": package, "git_commit": commit}


def _save(loaded: LoadedSpec, options: AdaptOptions, images: DatasetImages, replay: DatasetImages | None, job: FitJob, adapted: FitResult,
          scratch: FitResult | None, results: dict[str, Metrics], on_source: dict[str, Metrics], onprem_ckpt: Path,
          version: str, out_dir: Path,
          store_fn: Callable, flow_run_id: str | None, say: Say) -> AdaptResult:
    """Write the checkpoint, comparison, learning curve and model card into ``out_dir/adapt``; then
    upload the checkpoint and, last, the card (a card on S3 means its checkpoint is complete)."""
    from lepton_core.registry import Registry
    from lepton_core.transfer.checkpoint import CheckpointMeta, save_checkpoint
    from lepton_core.transfer.evaluate import comparison_table, confusion_text, learning_curve_png
    from lepton_core.transfer.fit import trained_state

    spec, model = loaded.spec, loaded.spec.model
    out = out_dir / "adapt"
    a = results[ADAPTED]
    counts = _counts(images, job)
    meta = CheckpointMeta(architecture=model.architecture, classes=model.classes, input_size=model.input_size,
                          preprocess=Preprocess(job.mode, job.mean, job.std),
                          metrics={"target_test_accuracy": a.accuracy, "target_test_macro_f1": a.macro_f1,
                                   "target_test_calibration_error": a.calibration_error})
    checkpoint = save_checkpoint(out / f"{model.name}-adapted.pt", trained_state(adapted), meta)
    table = comparison_table(results)
    if on_source:
        table += (f"\n\nOn the on-prem images ({model.source_dataset}, test split), replayed while adapting:\n\n"
                  + comparison_table(on_source))
    atomic_write_text(out / "comparison.md", table + "\n\nConfusion matrix of the adapted model (rows: true class):\n\n```\n"
                      + confusion_text(a, model.classes) + "\n```\n")
    curves = {ADAPTED: adapted.history} | ({SCRATCH: scratch.history} if scratch else {})
    curve = learning_curve_png(curves, out / "learning_curve.png", f"{model.name} on {model.target_dataset}")
    checkpoint_sha = file_sha256(checkpoint)
    card = {
        "format": "lepton-model-card/1",
        "model": model.name, "version": version, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "architecture": model.architecture, "classes": list(model.classes), "input_size": model.input_size,
        "preprocess": {"mode": job.mode, "mean": list(job.mean), "std": list(job.std)},
        "checkpoint": {"sha256": checkpoint_sha},
        "initial_weights": {"kind": options.init, "sha256": file_sha256(Path(job.init_path)) if job.init_path else None,
                            "on_prem_checkpoint": spec.model.checkpoint, "on_prem_sha256": file_sha256(onprem_ckpt)},
        "training": {"strategy": options.strategy, "labelled_fraction": options.labelled_fraction,
                     "labelled_images": counts["train"], "epochs": adapted.epochs,
                     "best_val_acc": adapted.best_val_acc, "seconds": adapted.seconds, "precision": adapted.precision,
                     "device": adapted.device, "lr": options.lr, "batch_size": options.batch_size, "seed": options.seed,
                     "calibration": adapted.calibration},
        "data": {"dataset": model.target_dataset, "source": images.source, "files": images.files, "sha256": images.digest,
                 "replayed": {"dataset": model.source_dataset, "source": replay.source, "files": replay.files,
                              "sha256": replay.digest} if replay else None},
        "spec": {"name": spec.name, "sha256": loaded.sha256},
        "metrics": {name: m.record() for name, m in results.items()},
        "metrics_on_source": {name: m.record() for name, m in on_source.items()},
        "flow_run_id": flow_run_id,
        "code": _code_version(),
    }
    atomic_write_text(out / "metrics.json", json.dumps({n: m.record() for n, m in results.items()}, indent=2))
    uri = None
    if options.register_model:
        registered = Registry.for_target(spec.target, store_fn()).register(model.name, version, checkpoint, card)
        card, uri = registered.card, registered.uri
        say(f"registered {model.name} version {version} at {uri}")
    atomic_write_text(out / CARD_NAME, json.dumps(card, indent=2))
    return AdaptResult(model=model.name, version=version, metrics=results, on_source=on_source, adapted=adapted, scratch=scratch, counts=counts,
                       checkpoint=checkpoint, card=card, registry_uri=uri, table=table, curve=curve)


def _counts(images: DatasetImages, job: FitJob) -> dict[str, int]:
    from lepton_core.transfer.data import ImageDataModule

    data = ImageDataModule(images.root, job.classes, job.input_size, Preprocess(job.mode, job.mean, job.std),
                           labelled_fraction=job.labelled_fraction, seed=job.seed, name=job.data_name)
    return data.counts()

