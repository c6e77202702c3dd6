"""Where a run keeps what its gates produced: profiles, Data Docs, and their copy next to the data.

In the run's folder: ``profiles/<dataset>.json`` (see ``profile``) and ``data-docs/<side>-<dataset>/``
(GX Data Docs, ``index.html`` first). The Data Docs are uploaded to
``s3://<bucket>/<prefix>/data-docs/<run>/`` so that whoever reads the data can read its checks.
"""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path
from typing import Any

from lepton_core.fsutil import atomic_write_text
from lepton_core.spec import LoadedSpec

DOCS_FOLDER = "data-docs"
PROFILES_FOLDER = "profiles"


def docs_dir(run_dir: str | Path, side: str, dataset: str) -> Path:
    """The Data Docs folder of one gate of a run."""
    return Path(run_dir) / DOCS_FOLDER / f"{side}-{dataset}"


def save_profile(run_dir: str | Path, dataset: str, profile: dict[str, Any]) -> Path:
    """Write a dataset's profile into the run's folder (atomically); its path."""
    path = Path(run_dir) / PROFILES_FOLDER / f"{dataset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(profile, indent=1, sort_keys=True))
    return path


def upload_docs(loaded: LoadedSpec, state_root: str | Path, run_dir: str | Path, run_name: str) -> str | None:
    """Copy the run's Data Docs next to the data; the folder's s3:// URI, or None when there are none.
    Re-running uploads the same keys again (idempotent)."""
    from lepton_core.store.target import open_store

    root = Path(run_dir) / DOCS_FOLDER
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    if not files:
        return None
    target = loaded.spec.target
    store = open_store(target, Path(state_root), start=True)
    base = f"{target.prefix}/{DOCS_FOLDER}/{run_name}" if target.prefix else f"{DOCS_FOLDER}/{run_name}"
    for path in files:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        store.put_file(target.bucket, f"{base}/{path.relative_to(root).as_posix()}", path, content_type=content_type)
    return f"s3://{target.bucket}/{base}/"
