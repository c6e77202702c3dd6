"""The latency-versus-cost chart of a serving study, its Pareto front drawn through it."""

from __future__ import annotations

import io
from pathlib import Path

from lepton_core.fsutil import atomic_write_bytes
from lepton_core.optimize.study import StudyResult


def pareto_png(result: StudyResult, slo_p95_ms: float, path: str | Path, title: str) -> Path:
    """Every measured configuration that met the SLO as a point (cost of a million predictions at
    the SLO against its p95 latency there), the Pareto front as a line, the baseline and the choice
    marked, the SLO as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [t for t in result.trials if t.placement and t.reused_from is None]
    front = result.pareto()
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    if ok:
        ax.scatter([t.cost for t in ok], [t.measurement.latency_ms["p95"] for t in ok], s=28, color="#8c8c8c",
                   label="configurations measured", zorder=2)
        ax.plot([t.cost for t in front], [t.measurement.latency_ms["p95"] for t in front], "-o", color="#1f77b4",
                markersize=5, label="Pareto front", zorder=3)
        for trial, colour, name in ((result.baseline, "#d62728", "baseline (eager fp32, batch 1)"),
                                    (result.best, "#2ca02c", "chosen")):
            if trial is not None and trial.placement:
                ax.scatter([trial.cost], [trial.measurement.latency_ms["p95"]], s=110, facecolors="none",
                           edgecolors=colour, linewidths=2, label=name, zorder=4)
        ax.set_xscale("log")
    ax.axhline(slo_p95_ms, color="#444444", linestyle="--", linewidth=1, label=f"SLO p95 {slo_p95_ms:g} ms")
    ax.set_xlabel("USD per million predictions at the SLO (log scale)")
    ax.set_ylabel("p95 latency at that rate, ms")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
