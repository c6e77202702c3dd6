"""Drift: how far one dataset's distribution is from another's, from their profiles.

Every distance is on one scale, 0 (the same distribution) to 1 (nothing in common), so one limit
in the spec applies to all of them:

- images, per class: the total variation distance between the two 32-bin greyscale intensity
  histograms (half the sum of the absolute differences), beside the pixel mean and standard
  deviation of each side. A class that only one side has is at distance 1.
- tables, per column: numbers and times by the two-sample Kolmogorov-Smirnov statistic (the largest
  gap between the two cumulative distributions, read off each side's 101 quantiles); other values
  by the total variation distance between their frequencies. A column that only one side has is at
  distance 1.

The report is always made; it fails the gate only where the spec sets a limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lepton_core.validation.gate import CheckResult, GateResult, ValidationFailed, docs_index, run_suites


@dataclass(frozen=True)
class DriftReport:
    """The distances between a dataset and its baseline, one row per class or column."""

    dataset: str
    baseline: str
    kind: str
    limit: float | None
    rows: tuple[dict[str, Any], ...]

    @property
    def max_distance(self) -> float:
        return max((r["distance"] for r in self.rows), default=0.0)

    @property
    def mean_distance(self) -> float:
        return float(np.mean([r["distance"] for r in self.rows])) if self.rows else 0.0

    def distances(self) -> str:
        """``mean distance 0.571, largest 0.636 (class 1) (no limit set)``."""
        limit = f", limit {self.limit:.3f}" if self.limit is not None else " (no limit set)"
        unit = "class" if self.kind == "images" else "column"
        worst = max(self.rows, key=lambda r: r["distance"])[unit] if self.rows else "-"
        return f"mean distance {self.mean_distance:.3f}, largest {self.max_distance:.3f} ({unit} {worst}){limit}"

    def summary(self) -> str:
        return f"{self.dataset} vs {self.baseline}: {self.distances()}"


def total_variation(p: dict[str, float] | np.ndarray, q: dict[str, float] | np.ndarray) -> float:
    """Half the L1 distance between two distributions (arrays of equal length, or value -> frequency)."""
    if isinstance(p, dict):
        keys = set(p) | set(q)
        return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)
    return float(0.5 * np.abs(np.asarray(p, float) - np.asarray(q, float)).sum())


def ks_from_quantiles(a: list[float], b: list[float]) -> float:
    """The Kolmogorov-Smirnov statistic of two samples known by their quantiles at 0, 0.01, ..., 1."""
    qa, qb = np.asarray(a, float), np.asarray(b, float)
    probs = np.linspace(0.0, 1.0, len(qa))
    grid = np.union1d(qa, qb)

    def cdf(q: np.ndarray, x: np.ndarray) -> np.ndarray:
        # right-continuous CDF from the quantile function: the largest p whose quantile is <= x
        idx = np.searchsorted(q, x, side="right")
        return np.where(idx == 0, 0.0, probs[np.clip(idx - 1, 0, len(probs) - 1)])

    return float(np.max(np.abs(cdf(qa, grid) - cdf(qb, grid))))


def _image_rows(current: dict[str, Any], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    cur, base = current["classes"], baseline["classes"]
    for cls in sorted(set(cur) | set(base)):
        c, b = cur.get(cls), base.get(cls)
        usable = c and b and c["pixels"] and b["pixels"]
        rows.append({
            "class": cls,
            "baseline_images": b["images"] if b else 0, "images": c["images"] if c else 0,
            "baseline_mean": b["mean"] if b else None, "mean": c["mean"] if c else None,
            "baseline_std": b["std"] if b else None, "std": c["std"] if c else None,
            "distance": round(total_variation(c["histogram"], b["histogram"]), 4) if usable else 1.0,
        })
    return rows


def _table_rows(current: dict[str, Any], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    cur, base = current["columns"], baseline["columns"]
    for col in sorted(set(cur) | set(base)):
        c, b = cur.get(col), base.get(col)
        if not c or not b or c["numeric"] != b["numeric"]:
            rows.append({"column": col, "measure": "missing or other type", "baseline": None, "current": None, "distance": 1.0})
        elif c["numeric"]:
            usable = "quantiles" in c and "quantiles" in b
            rows.append({"column": col, "measure": "Kolmogorov-Smirnov",
                         "baseline": round(b["mean"], 4) if usable else None, "current": round(c["mean"], 4) if usable else None,
                         "distance": round(ks_from_quantiles(c["quantiles"], b["quantiles"]), 4) if usable else 1.0})
        else:
            rows.append({"column": col, "measure": "total variation", "baseline": b["unique"], "current": c["unique"],
                         "distance": round(total_variation(c["values"], b["values"]), 4)})
    return rows


def drift_report(dataset: str, profile: dict[str, Any], baseline: str, baseline_profile: dict[str, Any],
                 limit: float | None = None) -> DriftReport:
    """Compare two profiles of the same kind (see ``profile``)."""
    if profile["kind"] != baseline_profile["kind"]:
        raise ValueError(f"cannot compare {profile['kind']} {dataset!r} with {baseline_profile['kind']} {baseline!r}")
    rows = _image_rows(profile, baseline_profile) if profile["kind"] == "images" else _table_rows(profile, baseline_profile)
    return DriftReport(dataset, baseline, profile["kind"], limit, tuple(rows))


def comparisons(spec: Any, profiles: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any], str, dict[str, Any], float | None]]:
    """(dataset, its profile, baseline, its profile, limit) for each of the spec's drift pairs
    (``MigrationSpec.drift_pairs``) whose two profiles are in ``profiles``: the arguments of
    ``drift_report``."""
    return [(name, profiles[name], base, profiles[base], limit)
            for name, base, limit in spec.drift_pairs() if name in profiles and base in profiles]


def drift_gate(report: DriftReport, docs_dir: Path | None = None) -> GateResult:
    """The drift report as a gate: with a limit, every class or column must be within it (checked
    with Great Expectations, so a failure names the classes or columns); without one it passes."""
    import great_expectations as gx

    t0 = time.perf_counter()
    frame = pd.DataFrame(list(report.rows))
    unit = "class" if report.kind == "images" else "column"
    checks: list[CheckResult] = []
    if report.limit is not None and len(frame):
        E = gx.expectations
        checks = run_suites(f"drift-{report.dataset}", {"drift": frame},
                            {"drift": [E.ExpectColumnValuesToBeBetween(column="distance", min_value=0, max_value=report.limit)]},
                            {"drift": lambda i: f"{frame[unit].iat[i]} ({frame['distance'].iat[i]:.3f})"}, docs_dir)
    result = GateResult(dataset=report.dataset, side="drift", rows={"drift": len(frame)}, checks=tuple(checks),
                        seconds=time.perf_counter() - t0,
                        docs=docs_index(docs_dir) if checks else None)
    if not result.success:
        raise ValidationFailed(result)
    return result
