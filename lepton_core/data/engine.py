"""Copy a dataset to ``s3://bucket/prefix`` and back: checksummed, idempotent, resumable, verified.

Upload, in order:
1. inventory the source and hash it (hashes cached by path, size, change time and inode);
2. compare with what the target holds: an object whose size and ETag match the previous manifest's
   entry with the same SHA-256 is skipped; one present without such proof (a run interrupted before
   its manifest) is checked with HEAD against the SHA-256 stored in its metadata; anything else is
   (re-)sent;
3. send, each object carrying its SHA-256 for the server to check;
4. list the target and verify that every object is there with its size;
5. write the manifest, last, so that a manifest exists only for a complete, verified copy.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lepton_core.data.crt import CrtTransfer, GetJob, PutJob
from lepton_core.data.inventory import HashCache, SourceFile, inventory, sha256_file
from lepton_core.data.manifest import MANIFEST_NAME, Manifest, ManifestEntry
from lepton_core.errors import UsageError
from lepton_core.fsutil import atomic_write_bytes, default_mode
from lepton_core.gcpause import gc_paused
from lepton_core.store.objectstore import ObjectInfo, ObjectStore, StoreError
from lepton_core.text import counted

HEAD_THREADS = 16


class Progress(Protocol):
    """Told the totals once, then each finished object; may be called from several threads."""

    def start(self, files: int, nbytes: int) -> None: ...
    def advance(self, files: int, nbytes: int) -> None: ...


class NoProgress:
    def start(self, files: int, nbytes: int) -> None:
        pass

    def advance(self, files: int, nbytes: int) -> None:
        pass


@dataclass
class TransferSummary:
    """What one copy did. ``sent`` counts objects sent, ``resent`` those that replaced a different
    object already on the target, ``skipped`` those already there and verified."""

    dataset: str
    source: str
    destination: str
    objects: int = 0
    total_bytes: int = 0
    sent: int = 0
    sent_bytes: int = 0
    resent: int = 0
    skipped: int = 0
    extra_on_target: int = 0
    seconds: float = 0.0
    note: str = ""
    resent_keys: list[str] = field(default_factory=list)

    @property
    def mb_per_s(self) -> float:
        return self.sent_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        if self.note:
            return f"{self.dataset}: {self.note}"
        extra = f", {counted(self.extra_on_target, 'object')} on the target that the source does not have (kept)" if self.extra_on_target else ""
        return (f"{self.dataset}: {counted(self.objects, 'object')} ({self.total_bytes / 1e6:.1f} MB) at {self.destination}: "
                f"{self.sent} sent ({self.sent_bytes / 1e6:.1f} MB, {self.resent} re-sent), {self.skipped} already there{extra}, "
                f"{self.seconds:.1f} s, {self.mb_per_s:.1f} MB/s")


def dataset_prefix(target_prefix: str, dataset: str) -> str:
    """Where a dataset's copy lives under the target prefix."""
    return "/".join(p for p in (target_prefix.strip("/"), "datasets", dataset) if p)


@gc_paused()
def read_manifest(store: ObjectStore, bucket: str, prefix: str) -> Manifest | None:
    """The manifest of a complete copy under ``prefix``, or None when there is none (or it is unreadable)."""
    from lepton_core.store.objectstore import ObjectNotFound

    try:
        return Manifest.model_validate_json(store.get_bytes(bucket, f"{prefix}/{MANIFEST_NAME}"))
    except ObjectNotFound:
        return None
    except ValueError:
        return None  # damaged: treated as absent, so every object is checked again


def upload_dataset(name: str, source: str | os.PathLike, store: ObjectStore, transfer: CrtTransfer, bucket: str,
                   prefix: str, hashes: HashCache, progress: Progress | None = None) -> TransferSummary:
    """Copy the folder or file ``source`` to ``s3://bucket/prefix/`` (see the module docstring)."""
    progress = progress or NoProgress()
    t0 = time.perf_counter()
    files = inventory(source)
    if not files:
        raise UsageError(f"{source}: no files to migrate")
    summary = TransferSummary(dataset=name, source=str(source), destination=f"s3://{bucket}/{prefix}",
                              objects=len(files), total_bytes=sum(f.size for f in files))
    digests = hashes.hashes(files)
    previous = read_manifest(store, bucket, prefix)
    remote = {o.key: o for o in store.list_all(bucket, prefix + "/") if not o.key.endswith("/" + MANIFEST_NAME)}
    to_send = _plan(files, digests, prefix, remote, previous, store, bucket)
    summary.skipped = len(files) - len(to_send)
    summary.resent_keys = sorted(f"{prefix}/{f.rel}" for f in to_send if f"{prefix}/{f.rel}" in remote)
    summary.resent = len(summary.resent_keys)
    progress.start(len(files), summary.total_bytes)
    progress.advance(summary.skipped, sum(f.size for f in files) - sum(f.size for f in to_send))

    errors: list[StoreError] = []
    lock = threading.Lock()

    def done(job: PutJob, error: StoreError | None) -> None:
        if error is not None:
            with lock:
                errors.append(error)
            return
        with lock:
            summary.sent += 1
            summary.sent_bytes += job.size
        progress.advance(1, job.size)

    jobs = (PutJob(f.path, f"{prefix}/{f.rel}", f.size, digests[f.rel]) for f in to_send)
    transfer.put_files(bucket, jobs, done)
    _raise_first(errors)

    # With nothing sent, the listing above already proved every object; else list again.
    entries = _verify(files, digests, prefix, remote if not to_send else None, store, bucket)
    summary.extra_on_target = len(set(remote) - {e.key for e in entries})
    manifest = Manifest(dataset=name, source=str(source), destination=summary.destination,
                        created_at=dt.datetime.now(dt.timezone.utc), total_bytes=summary.total_bytes, objects=tuple(entries))
    if previous is None or to_send or previous.objects != manifest.objects:
        store.put_bytes(bucket, f"{prefix}/{MANIFEST_NAME}", manifest.model_dump_json(indent=1).encode(),
                        content_type="application/json")
    summary.seconds = time.perf_counter() - t0
    return summary


def _plan(files: list[SourceFile], digests: dict[str, str], prefix: str, remote: dict[str, ObjectInfo],
          previous: Manifest | None, store: ObjectStore, bucket: str) -> list[SourceFile]:
    """The files to send; those already on the target are skipped only when proven identical."""
    known = previous.by_key() if previous else {}
    to_send: list[SourceFile] = []
    unproven: list[SourceFile] = []
    for f in files:
        key = f"{prefix}/{f.rel}"
        obj = remote.get(key)
        if obj is None or obj.size != f.size:
            to_send.append(f)
            continue
        entry = known.get(key)
        if entry is not None and entry.sha256 == digests[f.rel] and entry.etag == obj.etag and entry.size == f.size:
            continue
        unproven.append(f)
    if unproven:  # e.g. a run killed before its manifest: ask each object for the SHA-256 it carries
        with ThreadPoolExecutor(max_workers=HEAD_THREADS) as pool:
            heads = list(pool.map(lambda f: store.head(bucket, f"{prefix}/{f.rel}"), unproven))
        for f, head in zip(unproven, heads, strict=True):
            if head is None or head.size != f.size or (head.metadata or {}).get("sha256") != digests[f.rel]:
                to_send.append(f)
    return to_send


def _verify(files: list[SourceFile], digests: dict[str, str], prefix: str, listed: dict[str, ObjectInfo] | None,
            store: ObjectStore, bucket: str) -> list[ManifestEntry]:
    """Every file must be on the target with its size (from ``listed``, or a new listing when None).
    Returns the manifest entries."""
    if listed is None:
        listed = {o.key: o for o in store.list_all(bucket, prefix + "/")}
    entries = []
    missing = []
    for f in files:
        key = f"{prefix}/{f.rel}"
        obj = listed.get(key)
        if obj is None or obj.size != f.size:
            missing.append(key)
            continue
        entries.append(ManifestEntry(key=key, rel=f.rel, size=f.size, sha256=digests[f.rel], etag=obj.etag))
    if missing:
        raise StoreError(f"verification failed: {len(missing)} objects missing or of the wrong size after upload, "
                         f"e.g. s3://{bucket}/{missing[0]}", transient=True)
    return entries


def download_dataset(store: ObjectStore, transfer: CrtTransfer, bucket: str, prefix: str, dest: str | os.PathLike,
                     progress: Progress | None = None) -> TransferSummary:
    """Copy a complete copy (one with a manifest) into ``dest``, verifying every file's SHA-256.
    Files already in ``dest`` with the right hash are kept; each download lands under a temporary
    name and takes its final name only once verified."""
    progress = progress or NoProgress()
    t0 = time.perf_counter()
    manifest = read_manifest(store, bucket, prefix)
    if manifest is None:
        raise UsageError(f"s3://{bucket}/{prefix}: no complete copy there (no {MANIFEST_NAME})")
    dest = Path(dest)
    summary = TransferSummary(dataset=manifest.dataset, source=f"s3://{bucket}/{prefix}", destination=str(dest),
                              objects=len(manifest.objects), total_bytes=manifest.total_bytes)
    todo = [e for e in manifest.objects if not _have(dest / e.rel, e)]
    summary.skipped = summary.objects - len(todo)
    progress.start(summary.objects, summary.total_bytes)
    progress.advance(summary.skipped, summary.total_bytes - sum(e.size for e in todo))
    fetched: list[tuple[GetJob, ManifestEntry]] = []
    errors: list[StoreError] = []
    lock = threading.Lock()
    by_key = {e.key: e for e in todo}

    def done(job: GetJob, error: StoreError | None) -> None:  # on a CRT thread: record only
        with lock:
            (errors.append(error) if error is not None else fetched.append((job, by_key[job.key])))

    for entry in (e for e in todo if e.size == 0):  # nothing to fetch (and a ranged GET of 0 bytes fails)
        atomic_write_bytes(dest / entry.rel, b"")
        summary.sent += 1
        progress.advance(1, 0)
    todo = [e for e in todo if e.size > 0]
    jobs = [GetJob(e.key, (dest / e.rel).with_name(f".{Path(e.rel).name}.part")) for e in todo]
    transfer.get_files(bucket, jobs, done)
    mode = default_mode()

    def land(item: tuple[GetJob, ManifestEntry]) -> None:
        job, entry = item
        if job.path.stat().st_size != entry.size or sha256_file(job.path) != entry.sha256:
            job.path.unlink(missing_ok=True)
            raise StoreError(f"s3://{bucket}/{job.key}: downloaded bytes do not match the manifest's SHA-256", transient=True)
        os.chmod(job.path, mode)
        os.replace(job.path, dest / entry.rel)
        progress.advance(1, entry.size)

    with ThreadPoolExecutor(max_workers=4) as pool:  # hashlib releases the GIL
        for item, outcome in zip(fetched, pool.map(_capture(land), fetched), strict=True):
            if outcome is not None:
                errors.append(outcome)
            else:
                summary.sent += 1
                summary.sent_bytes += item[1].size
    for job in jobs:
        job.path.unlink(missing_ok=True)  # nothing half-downloaded stays behind
    _raise_first(errors)
    summary.seconds = time.perf_counter() - t0
    return summary


def _capture(fn: Callable) -> Callable:
    def run(arg):
        try:
            fn(arg)
        except StoreError as exc:
            return exc
        return None
    return run


def _raise_first(errors: list[StoreError]) -> None:
    """Raise the first error, saying how many more objects failed."""
    if not errors:
        return
    first = errors[0]
    if len(errors) == 1:
        raise first
    raise type(first)(f"{first} (and {len(errors) - 1} more failed object{'' if len(errors) == 2 else 's'})", transient=first.transient)


def _have(path: Path, entry: ManifestEntry) -> bool:
    return path.is_file() and path.stat().st_size == entry.size and sha256_file(path) == entry.sha256

