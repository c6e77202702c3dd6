"""Tables that Great Expectations can check: one row per image (GX has no image datasource), one
row per (split, class) with its count, and a table dataset read as a DataFrame."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lepton_core.data.inventory import file_paths
from lepton_core.errors import UsageError
from lepton_core.gcpause import gc_paused
from lepton_core.spec.models import DatasetSpec
from lepton_core.validation.decode import COLUMNS, describe_parallel

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class ImageScan:
    """What one pass over an image folder learns: the manifest and each class's pixel histogram."""

    manifest: pd.DataFrame
    histograms: dict[str, np.ndarray]


@gc_paused()
def scan_images(root: str | Path, dataset: DatasetSpec) -> ImageScan:
    """Read and decode every file under ``root`` once. The manifest has one row per file: path,
    split, class, bytes, sha256, decodes, width, height, mode, error, and ``classes_with_same_hash``
    (how many classes hold an image with these bytes)."""
    root = Path(root)
    files = file_paths(root)  # every file is read below: no need to ask the file system about each first
    depth = 2 if dataset.splits else 1
    paths, splits, classes, suffixes = [], [], [], []
    for rel, _ in files:
        parts = rel.split("/")
        paths.append(rel)
        splits.append(parts[0] if dataset.splits else "")
        classes.append(parts[depth - 1] if len(parts) > depth else "")  # a file outside any class folder: class ""
        suffixes.append(os.path.splitext(rel)[1].lower())
    described, histograms = describe_parallel([(fspath, cls) for (_, fspath), cls in zip(files, classes, strict=True)])
    table = pd.DataFrame({"path": paths, "split": splits, "class": classes, "suffix": suffixes, **described},
                         columns=["path", "split", "class", "suffix", *COLUMNS])
    table["classes_with_same_hash"] = table.groupby("sha256")["class"].transform("nunique").astype("int64")
    return ImageScan(table, histograms)


def class_counts(root: str | Path, dataset: DatasetSpec, manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per (split, class) expected by the spec or found on disk: whether its folder exists
    and how many images it holds. A missing or empty class shows up here, not in the image rows."""
    root = Path(root)
    splits = list(dataset.splits) or [""]
    expected = list(dataset.classes or [])
    rows = []
    for split in splits:
        base = root / split if split else root
        found = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        for cls in dict.fromkeys(expected + found):
            n = int(((manifest["split"] == split) & (manifest["class"] == cls)).sum())
            rows.append({"split": split, "class": cls, "folder_exists": (base / cls).is_dir(), "images": n})
    return pd.DataFrame(rows, columns=["split", "class", "folder_exists", "images"])


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV or Parquet table as a DataFrame; an unreadable file is a clear error."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read the table ({type(exc).__name__}: {str(exc)[:120]})") from None
