"""Profiles: a dataset's distribution in a small JSON document, saved with the run.

An image profile holds per-class counts and pixel statistics (mean, standard deviation and a
32-bin intensity histogram over every decodable image, in greyscale). A table profile holds the
row count and, per column, nulls and either numeric statistics with 101 quantiles or the value
frequencies. Profiles are what the drift report compares and what the cloud-copy parity check
holds a table's copy to.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

HIST_BINS = 32
QUANTILES = np.linspace(0.0, 1.0, 101)
MAX_VALUES = 200  # categorical columns: the most frequent values kept; the rest are summed as "(other)"
OTHER = "(other)"


def histogram_stats(hist: np.ndarray) -> dict[str, Any]:
    """Mean, standard deviation and the 32-bin normalised histogram of a 256-bin intensity histogram."""
    total = float(hist.sum())
    if total == 0:
        return {"pixels": 0, "mean": None, "std": None, "histogram": [0.0] * HIST_BINS}
    levels = np.arange(256, dtype=np.float64)
    mean = float((hist * levels).sum() / total)
    std = float(math.sqrt(max(0.0, (hist * (levels - mean) ** 2).sum() / total)))
    coarse = hist.reshape(HIST_BINS, 256 // HIST_BINS).sum(axis=1) / total
    return {"pixels": int(total), "mean": round(mean, 4), "std": round(std, 4), "histogram": [round(float(x), 6) for x in coarse]}


def image_profile(manifest: pd.DataFrame, histograms: dict[str, np.ndarray]) -> dict[str, Any]:
    """The profile of an image dataset from its manifest and per-class 256-bin pixel histograms."""
    counts = manifest.groupby("class").size().to_dict() if len(manifest) else {}
    splits = manifest.groupby("split").size().to_dict() if len(manifest) else {}
    classes = {}
    for cls in sorted(set(counts) | set(histograms)):
        hist = histograms.get(cls, np.zeros(256, dtype=np.int64))
        classes[str(cls)] = {"images": int(counts.get(cls, 0)), **histogram_stats(hist)}
    total = sum(histograms.values(), np.zeros(256, dtype=np.int64))
    return {"kind": "images", "rows": int(len(manifest)), "splits": {str(k): int(v) for k, v in splits.items()},
            "pixels": histogram_stats(total), "classes": classes}


def _numeric(series: pd.Series) -> pd.Series | None:
    """The column as float64 when it is numbers or times (times as seconds since the epoch); None otherwise."""
    if pd.api.types.is_bool_dtype(series):
        return None
    if pd.api.types.is_datetime64_any_dtype(series):
        values = series.dropna()
        return (values - pd.Timestamp(0, tz=values.dt.tz)).dt.total_seconds()
    if pd.api.types.is_numeric_dtype(series):
        return series.dropna().astype("float64")
    return None


def column_profile(series: pd.Series) -> dict[str, Any]:
    """Nulls plus numeric statistics and quantiles, or value frequencies, of one column."""
    out: dict[str, Any] = {"dtype": str(series.dtype), "nulls": int(series.isna().sum())}
    values = _numeric(series)
    if values is not None:
        out["numeric"] = True
        if len(values):
            arr = values.to_numpy()
            out.update(min=float(arr.min()), max=float(arr.max()), mean=float(arr.mean()), std=float(arr.std()),
                       quantiles=[float(q) for q in np.quantile(arr, QUANTILES)])
        return out
    counts = series.dropna().astype(str).value_counts()
    total = int(counts.sum())
    kept = counts.iloc[:MAX_VALUES]
    freqs = {str(k): float(v) / total for k, v in kept.items()} if total else {}
    if len(counts) > MAX_VALUES:
        freqs[OTHER] = float(counts.iloc[MAX_VALUES:].sum()) / total
    out.update(numeric=False, unique=int(len(counts)), values=freqs)
    return out


def table_profile(frame: pd.DataFrame) -> dict[str, Any]:
    """The profile of a table: its row count and every column's profile."""
    return {"kind": "table", "rows": int(len(frame)), "columns": {str(c): column_profile(frame[c]) for c in frame.columns}}
