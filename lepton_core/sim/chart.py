"""A Gantt-style chart of a migration plan (PNG), from the schedule its replay recorded."""

from __future__ import annotations

from pathlib import Path

from lepton_core.fsutil import write_figure_png
from lepton_core.sim.plan import Plan

PHASE_COLOURS = {"transfer": "#4c72b0", "cutover": "#dd8452", "cloud": "#55a868"}


def gantt_png(plan: Plan, path: str | Path, title: str | None = None) -> Path:
    """Draw one row per workload (in plan order): its transfer, its cutover and its first hours in
    the cloud, hour by hour; written atomically to ``path``. ValueError for a plan never replayed."""

    from matplotlib.figure import Figure  # the object API: no pyplot state, safe in worker threads
    from matplotlib.patches import Patch

    if plan.outcome is None:
        raise ValueError(f"plan {plan.method!r} has no outcome to draw; replay it first")
    rows = plan.outcome.schedule
    end = max([plan.outcome.hours] + [c for *_, c in rows if c >= 0])
    tail = max(2, end // 20)  # how much of the cloud phase to show after each cutover
    fig = Figure(figsize=(9, 1.2 + 0.32 * max(len(rows), 1)), dpi=110)
    ax = fig.add_subplot()
    for y, (name, start, over, cloud) in enumerate(rows):
        stop = end if over < 0 else over
        ax.broken_barh([(start, stop - start)], (y - 0.35, 0.7), color=PHASE_COLOURS["transfer"])
        if over >= 0:
            ax.broken_barh([(over, (end if cloud < 0 else cloud) - over)], (y - 0.35, 0.7), color=PHASE_COLOURS["cutover"])
        if cloud >= 0:
            ax.broken_barh([(cloud, tail)], (y - 0.35, 0.7), color=PHASE_COLOURS["cloud"], alpha=0.5)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, end + tail)
    ax.set_xlabel("simulated hour")
    ax.grid(axis="x", alpha=0.3)
    o = plan.outcome
    ax.set_title(title or f"{plan.method} plan: ${o.total_cost:,.2f}, "
                 + (f"all in the cloud after {o.finish_hour} h" if o.finish_hour is not None else "not finished"), fontsize=10)
    ax.legend(handles=[Patch(color=c, label=k) for k, c in PHASE_COLOURS.items()], loc="lower right", fontsize=8)
    return write_figure_png(fig, path)
