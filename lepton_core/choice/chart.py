"""The cloud comparison as a bar chart: each candidate's cost over the horizon, split into the
one-off migration, running while migrating and running after, against staying on-prem."""

from __future__ import annotations

import math
from pathlib import Path

from lepton_core.choice.compare import Comparison
from lepton_core.fsutil import write_figure_png

COLOURS = {"one-off migration": "#dd8452", "running while migrating": "#8c8c8c", "running in the cloud": "#4c72b0"}


def comparison_png(c: Comparison, path: str | Path) -> Path:
    """One stacked bar per candidate (best first; the recommended one outlined), the on-prem cost
    over the same horizon as a dashed line; written atomically to ``path``."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, safe in worker threads
    from matplotlib.patches import Patch

    options = [o for o in c.ranked if not math.isinf(o.total)]
    fig = Figure(figsize=(max(9.0, 2.0 * len(options) + 3), 4.6), dpi=110)
    ax, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    x = list(range(len(options)))
    one_off = [o.one_off for o in options]
    during = [o.running_while_migrating for o in options]
    after = [o.total - o.one_off - o.running_while_migrating for o in options]
    ax.bar(x, one_off, color=COLOURS["one-off migration"])
    ax.bar(x, during, bottom=one_off, color=COLOURS["running while migrating"])
    bars = ax.bar(x, after, bottom=[a + b for a, b in zip(one_off, during, strict=True)], color=COLOURS["running in the cloud"])
    for o, bar in zip(options, bars, strict=True):
        top = o.total
        ax.annotate(f"${top / 1000:,.1f}k", (bar.get_x() + bar.get_width() / 2, top), ha="center", va="bottom", fontsize=8)
        if c.recommended is not None and o.ref == c.recommended.ref:
            ax.bar([bar.get_x() + bar.get_width() / 2], [top], fill=False, edgecolor="#2ca02c", linewidth=2.2)
        if not o.within_budget:
            ax.annotate("over budget", (bar.get_x() + bar.get_width() / 2, top * 0.5), ha="center", fontsize=7,
                        rotation=90, color="white")
    handles = [Patch(color=col, label=name) for name, col in COLOURS.items()]
    if options:
        onprem = options[0].onprem_total
        ax.axhline(onprem, color="#d62728", linestyle="--", linewidth=1.2)
        handles.append(Patch(color="#d62728", label=f"staying on-prem (${onprem / 1000:,.1f}k)"))
    if c.recommended is not None:
        handles.append(Patch(facecolor="none", edgecolor="#2ca02c", linewidth=2, label="recommended"))
    ax.set_xticks(x, [o.catalogue + ("" if o.store["s3_compatible"] else "\n(not S3)") for o in options], fontsize=8)
    ax.set_ylabel(f"cost over {c.horizon_months} months ($)")
    ax.set_title(f"{c.spec_name}: clouds ranked by {c.objective.replace('_', ' ')}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="upper left")
    # the one-off cost is small beside a year of running: its own panel, with the time to finish
    right.bar(x, one_off, color=COLOURS["one-off migration"])
    for i, o in enumerate(options):
        right.annotate(f"${o.one_off:,.0f}\n{o.finish_text}", (i, o.one_off), ha="center", va="bottom", fontsize=7)
    right.set_xticks(x, [o.catalogue for o in options], fontsize=7, rotation=30, ha="right")
    right.set_ylabel("one-off migration cost ($)")
    right.set_title("one-off cost and time to finish", fontsize=10)
    right.margins(y=0.2)
    right.grid(axis="y", alpha=0.3)
    return write_figure_png(fig, path)
