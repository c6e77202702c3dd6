"""The cloud a migration with an open provider is bound to, once chosen.

A spec with ``target.provider: auto`` is compared once: the first migrate run that chooses a cloud
records it (with the comparison it came from) in the state folder, per spec and target bucket and
prefix, and every later run of that migration (a Retry, a re-run, the nightly validation, the
weekly serving tune) uses the same cloud, so that its data never ends up split between two
clouds because prices moved in between. ``lepton compare-clouds`` compares afresh without
changing the record; to choose again, delete the record or pin ``target.provider``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from lepton_core.errors import UsageError
from lepton_core.fsutil import atomic_write_text
from lepton_core.spec import LoadedSpec
from lepton_core.state import clouds_dir


@dataclass(frozen=True)
class CloudRecord:
    path: Path
    chosen: str  # the candidate, as the spec names it
    run: str  # the run that chose it
    chosen_at: str
    comparison: dict  # Comparison.to_dict()
    how: str = ""  # how the run chose it


def record_path(loaded: LoadedSpec, root: Path | None = None) -> Path:
    t = loaded.spec.target
    key = hashlib.sha256(f"{t.bucket}/{t.prefix}".encode()).hexdigest()[:10]
    return clouds_dir(root) / f"{loaded.spec.name}-{key}.json"


def read_record(loaded: LoadedSpec, root: Path | None = None) -> CloudRecord | None:
    """The recorded choice for this migration, or None. A record whose cloud is no longer among the
    spec's candidates is an error: the spec would move the data elsewhere."""
    path = record_path(loaded, root)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable cloud-choice record ({exc}); delete it to compare the clouds again") from None
    if data.get("chosen") not in loaded.spec.cloud_choice.candidates:
        raise UsageError(f"{path}: this migration moved to {data.get('chosen')!r}, which is no longer among the spec's "
                         "cloud_choice.candidates; add it back, pin target.provider, or delete the record to choose again")
    return CloudRecord(path=path, chosen=data["chosen"], run=data.get("run", "?"), chosen_at=data.get("chosen_at", "?"),
                       comparison=data["comparison"], how=data.get("how", ""))


def write_record(loaded: LoadedSpec, chosen: str, run: str, comparison: dict, how: str = "", root: Path | None = None) -> Path:
    t = loaded.spec.target
    body = {"spec": loaded.spec.name, "bucket": t.bucket, "prefix": t.prefix, "chosen": chosen, "run": run,
            "chosen_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "how": how, "comparison": comparison}
    return atomic_write_text(record_path(loaded, root), json.dumps(body, indent=2))


def settled(loaded: LoadedSpec, root: Path | None = None, *, required: bool | None = None) -> LoadedSpec:
    """The spec on the cloud its migration moved to, for the flows and commands that follow one
    (validation of the cloud copy, serving, the registry). A pinned provider is returned as is.
    With an open provider and no record: UsageError when ``required`` (by default, when the spec
    gives no endpoint_url: where the data lives depends on the cloud), else the spec as is (its
    store is the endpoint it names, whatever the cloud)."""
    if not loaded.cloud_open:
        return loaded
    record = read_record(loaded, root)
    if required is None:
        required = loaded.spec.target.endpoint_url is None
    if record is None:
        if required:
            raise UsageError(f"{loaded.path}: target.provider is 'auto' and no migration of it has chosen a cloud yet; "
                             "run the migrate flow first, or pin target.provider")
        return loaded
    return loaded.with_cloud(record.chosen)
