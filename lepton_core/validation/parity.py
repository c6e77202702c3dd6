"""The cloud-copy gate: is the copy on the target the same data as the source?

One row per object that the source, the migration manifest or the target's listing knows of,
checked with Great Expectations: every source file has a manifest entry and an object on the
target; the object's size and ETag are those recorded when the copy was verified (a truncated or
altered object fails); the manifest's SHA-256 is the source file's (a source changed since the
copy fails); the target holds no object that the manifest does not list.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from lepton_core.data.engine import dataset_prefix, read_manifest
from lepton_core.data.inventory import inventory
from lepton_core.data.manifest import MANIFEST_NAME
from lepton_core.data.stage import hash_cache
from lepton_core.errors import UsageError
from lepton_core.spec import LoadedSpec, is_s3
from lepton_core.store.target import open_store
from lepton_core.validation.gate import CheckResult, GateResult, ValidationFailed, run_suites


def parity_table(loaded: LoadedSpec, name: str, state_root: Path) -> pd.DataFrame:
    """One row per relative path: what the source, the manifest and the target's listing say."""
    spec = loaded.spec
    dataset = spec.dataset(name)
    if is_s3(dataset.location):
        raise UsageError(f"dataset {name!r} is at {dataset.location}; it was not copied, so it has no cloud copy to check")
    prefix = dataset_prefix(spec.target.prefix, name)
    store = open_store(spec.target, state_root, start=True)
    manifest = read_manifest(store, spec.target.bucket, prefix)
    if manifest is None:
        raise ValidationFailed(GateResult(dataset=name, side="target", rows={}, seconds=0.0, checks=(CheckResult(
            "copy", "manifest_exists", False, 1, (f"s3://{spec.target.bucket}/{prefix}/{MANIFEST_NAME}: no complete copy",)),)))
    files = inventory(loaded.resolve(dataset.location))
    cache = hash_cache(state_root)
    try:
        source = cache.hashes(files)
    finally:
        cache.close()
    listed = {o.key[len(prefix) + 1:]: o for o in store.list(spec.target.bucket, prefix + "/") if not o.key.endswith("/" + MANIFEST_NAME)}
    entries = {e.rel: e for e in manifest.objects}
    rows = []
    for rel in sorted(set(source) | set(entries) | set(listed)):
        entry, obj = entries.get(rel), listed.get(rel)
        rows.append({
            "path": rel,
            "in_source": rel in source,
            "in_manifest": entry is not None,
            "on_target": obj is not None,
            "size_as_verified": bool(entry and obj and obj.size == entry.size),
            "etag_as_verified": bool(entry and obj and obj.etag == entry.etag),
            "hash_matches_source": bool(entry and rel in source and source[rel] == entry.sha256),
        })
    return pd.DataFrame(rows)


def validate_target(loaded: LoadedSpec, name: str, state_root: Path) -> GateResult:
    """Check the cloud copy of a dataset against its source and manifest; ValidationFailed if it differs."""
    import great_expectations as gx

    t0 = time.perf_counter()
    table = parity_table(loaded, name, state_root)
    E = gx.expectations
    expectations = [E.ExpectColumnValuesToBeInSet(column=c, value_set=[True])
                    for c in ("in_source", "in_manifest", "on_target", "size_as_verified", "etag_as_verified", "hash_matches_source")]
    checks = run_suites(f"target-{name}", {"copy": table}, {"copy": expectations}, {"copy": lambda i: table["path"].iat[i]})
    result = GateResult(dataset=name, side="target", rows={"copy": len(table)}, checks=tuple(checks), seconds=time.perf_counter() - t0)
    if not result.success:
        raise ValidationFailed(result)
    return result
