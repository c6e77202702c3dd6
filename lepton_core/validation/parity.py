"""The cloud-copy gate: is the copy on the target the same data as the source?

One row per object that the source, the migration manifest or the target's listing knows of,
checked with Great Expectations: every source file has a manifest entry and an object on the
target; the object's size and ETag are those recorded when the copy was verified (a truncated or
altered object fails); the manifest's SHA-256 is the source file's (a source changed since the
copy fails); the target holds no object that the manifest does not list. A table's copy is also
read back from the target and profiled: the same row count, and each column's nulls, mean,
standard deviation, minimum and maximum within a relative tolerance of the source's.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from lepton_core.data.engine import dataset_prefix, read_manifest
from lepton_core.data.inventory import inventory
from lepton_core.data.manifest import MANIFEST_NAME
from lepton_core.data.stage import hash_cache
from lepton_core.errors import UsageError
from lepton_core.gcpause import gc_paused
from lepton_core.spec import LoadedSpec, is_s3
from lepton_core.store.objectstore import ObjectStore
from lepton_core.store.target import open_store
from lepton_core.validation.gate import CheckResult, GateResult, ValidationFailed, docs_index, run_suites
from lepton_core.validation.manifest import read_table
from lepton_core.validation.profile import table_profile

STAT_TOLERANCE = 1e-9  # relative: a faithful copy reads back bit for bit; this only absorbs float summation order
STATS = ("nulls", "mean", "std", "min", "max")
OBJECT_CHECKS = ("in_source", "in_manifest", "on_target", "size_as_verified", "etag_as_verified", "hash_matches_source")


@gc_paused()
def parity_table(loaded: LoadedSpec, name: str, state_root: Path, store: ObjectStore) -> pd.DataFrame:
    """One row per relative path: what the source, the manifest and the target's listing say."""
    spec = loaded.spec
    dataset = spec.dataset(name)
    prefix = dataset_prefix(spec.target.prefix, name)
    # The listing (several requests at a time) starts first: it mostly waits on the server while
    # this thread walks the source and reads the manifest and the source's hashes.
    with ThreadPoolExecutor(1) as pool:
        listing = pool.submit(lambda: {o.key[len(prefix) + 1:]: o for o in store.list_all(spec.target.bucket, prefix + "/")
                                       if not o.key.endswith("/" + MANIFEST_NAME)})
        files = inventory(loaded.resolve(dataset.location))
        manifest = read_manifest(store, spec.target.bucket, prefix)
        if manifest is None:
            raise ValidationFailed(GateResult(dataset=name, side="target", rows={}, seconds=0.0, checks=(CheckResult(
                "copy", "manifest_exists", False, 1, (f"s3://{spec.target.bucket}/{prefix}/{MANIFEST_NAME}: no complete copy",)),)))
        cache = hash_cache(state_root)
        try:
            source = cache.hashes(files)
        finally:
            cache.close()
        listed = listing.result()
    entries = {e.rel: e for e in manifest.objects}
    paths = sorted(source.keys() | entries.keys() | listed.keys())
    entry = [entries.get(rel) for rel in paths]
    obj = [listed.get(rel) for rel in paths]
    sha = [source.get(rel) for rel in paths]
    columns = {
        "path": paths,
        "in_source": [h is not None for h in sha],
        "in_manifest": [e is not None for e in entry],
        "on_target": [o is not None for o in obj],
        "size_as_verified": [e is not None and o is not None and o.size == e.size for e, o in zip(entry, obj, strict=True)],
        "etag_as_verified": [e is not None and o is not None and o.etag == e.etag for e, o in zip(entry, obj, strict=True)],
        "hash_matches_source": [e is not None and h is not None and h == e.sha256 for e, h in zip(entry, sha, strict=True)],
    }
    return pd.DataFrame(columns)


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=STAT_TOLERANCE, abs_tol=STAT_TOLERANCE)


def column_stats_table(source: dict[str, Any], copy: dict[str, Any]) -> pd.DataFrame:
    """One row per (column, statistic) of two table profiles, with whether they agree."""
    rows = [{"column": "(table)", "statistic": "rows", "source": source["rows"], "copy": copy["rows"],
             "within_tolerance": source["rows"] == copy["rows"]}]
    for col in sorted(set(source["columns"]) | set(copy["columns"])):
        a, b = source["columns"].get(col, {}), copy["columns"].get(col, {})
        for stat in STATS:
            if stat in a or stat in b:
                rows.append({"column": col, "statistic": stat, "source": a.get(stat), "copy": b.get(stat),
                             "within_tolerance": _close(a.get(stat), b.get(stat))})
    return pd.DataFrame(rows)


def read_table_copy(loaded: LoadedSpec, name: str, state_root: Path, store: ObjectStore) -> pd.DataFrame:
    """A table dataset's cloud copy, read back from the target."""
    spec = loaded.spec
    filename = Path(spec.dataset(name).location).name
    scratch = Path(state_root) / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    local = scratch / f".{name}-copy{Path(filename).suffix}"
    try:
        store.download_file(spec.target.bucket, f"{dataset_prefix(spec.target.prefix, name)}/{filename}", local)
        return read_table(local)
    finally:
        local.unlink(missing_ok=True)


def validate_target(loaded: LoadedSpec, name: str, state_root: Path, docs_dir: Path | None = None) -> GateResult:
    """Check the cloud copy of a dataset against its source and manifest; ValidationFailed if it differs.
    With ``docs_dir``, the gate's Data Docs are written there."""
    import great_expectations as gx

    t0 = time.perf_counter()
    dataset = loaded.spec.dataset(name)
    if is_s3(dataset.location):
        raise UsageError(f"dataset {name!r} is at {dataset.location}; it was not copied, so it has no cloud copy to check")
    store = open_store(loaded.spec.target, state_root, start=True)  # one client for the listing and the read-back
    table = parity_table(loaded, name, state_root, store)
    E = gx.expectations
    tables = {"copy": table}
    expectations = {"copy": [E.ExpectColumnValuesToBeInSet(column=c, value_set=[True]) for c in OBJECT_CHECKS]}
    labels = {"copy": lambda i: table["path"].iat[i]}
    profile = None
    objects_ok = bool(len(table)) and bool(table[list(OBJECT_CHECKS)].all().all())
    if dataset.kind == "table" and objects_ok:  # a copy that differs as objects is not read back as a table
        source_profile = table_profile(read_table(loaded.resolve(dataset.location)))
        profile = table_profile(read_table_copy(loaded, name, state_root, store))
        stats = column_stats_table(source_profile, profile)
        tables["columns"] = stats
        expectations["columns"] = [E.ExpectColumnValuesToBeInSet(column="within_tolerance", value_set=[True])]
        labels["columns"] = lambda i: f"{stats['column'].iat[i]} {stats['statistic'].iat[i]}: {stats['source'].iat[i]} vs {stats['copy'].iat[i]}"
    checks = run_suites(f"target-{name}", tables, expectations, labels, docs_dir)
    result = GateResult(dataset=name, side="target", rows={k: len(v) for k, v in tables.items()}, checks=tuple(checks),
                        seconds=time.perf_counter() - t0, profile=profile,
                        docs=docs_index(docs_dir))
    if not result.success:
        raise ValidationFailed(result)
    return result
