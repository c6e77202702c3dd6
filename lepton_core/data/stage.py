"""The data-migration stage for a spec: copy each dataset to ``<target prefix>/datasets/<name>/``."""

from __future__ import annotations

from pathlib import Path

from lepton_core.data.crt import CrtTransfer
from lepton_core.data.engine import Progress, TransferSummary, dataset_prefix, upload_dataset
from lepton_core.data.inventory import HashCache
from lepton_core.spec import LoadedSpec, is_s3
from lepton_core.store.target import open_store


def hash_cache(state_root: Path) -> HashCache:
    """The hash cache shared by every run that uses this state folder."""
    return HashCache(Path(state_root) / "cache" / "hashes.sqlite")


def migrate_dataset(loaded: LoadedSpec, name: str, state_root: Path, progress: Progress | None = None) -> TransferSummary:
    """Copy one dataset of the spec to its target; idempotent and resumable (see ``engine``)."""
    spec = loaded.spec
    dataset = spec.dataset(name)
    prefix = dataset_prefix(spec.target.prefix, name)
    if is_s3(dataset.location):
        return TransferSummary(dataset=name, source=dataset.location, destination=dataset.location,
                               note="already in object storage; not copied")
    store = open_store(spec.target, state_root, start=True)
    store.ensure_bucket(spec.target.bucket)
    transfer = CrtTransfer(store.settings, encryption=spec.target.encryption, kms_key_id=spec.target.kms_key_id)
    cache = hash_cache(state_root)
    try:
        return upload_dataset(name, loaded.resolve(dataset.location), store, transfer, spec.target.bucket, prefix, cache, progress)
    finally:
        cache.close()
