"""The planning task: every yardstick, the trained PPO planner (when the train-planner flow has
made one) and the exact planner on the spec's services, side by side.

The cheapest plan is the run's; its table, the comparison and a Gantt chart go into the run's
folder and a Prefect artifact. Bad input (no services, an unknown link) fails fast, never retried.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from lepton_core.fsutil import atomic_write_bytes, atomic_write_text
from lepton_core.sim.plan import Plan, cheapest, compare, comparison_lines, cost_lower_bound, plan_lines
from lepton_core.spec import LoadedSpec
from lepton_core.spec.params import PlanOptions
from lepton_core.state import planner_dir
from tasks.artifacts import publish_chart


@task(name="plan-migration")
def plan_migration_task(loaded: LoadedSpec, options: PlanOptions, run_dir: str) -> list[Plan]:
    """Every plan (the heuristics, the trained policy's when there is one, then the exact planner's); the
    run follows the cheapest.
    Writes ``plan/gantt.png``, ``plan/plans.json`` and ``plan/plan.txt`` under ``run_dir``."""
    from lepton_core.planner.planner import find_policy  # the train-planner flow's policy, when it has made one
    from lepton_core.sim.chart import gantt_png
    from lepton_core.sim.scenario import from_spec

    scenario = from_spec(loaded, link=options.link, seed=options.seed)
    plans = compare(scenario, exact=options.exact_seconds > 0, time_limit_s=options.exact_seconds, policy=find_policy())
    best = cheapest(plans)
    out = Path(run_dir) / "plan"
    gantt_png(best, out / "gantt.png")
    curve = planner_dir() / "learning_curve.png"
    if any(p.method == "ppo" for p in plans) and curve.is_file():  # the policy's learning curve, with the run
        atomic_write_bytes(out / "learning_curve.png", curve.read_bytes())
    atomic_write_text(out / "plans.json", json.dumps([plan_record(p) for p in plans], indent=2))
    text = comparison_lines(plans, floor=cost_lower_bound(scenario)) + [""] + plan_lines(best, scenario)
    atomic_write_text(out / "plan.txt", "\n".join(text) + "\n")
    get_run_logger().info("plan: %s, $%.2f over %d h", best.method, best.outcome.total_cost, scenario.horizon)
    create_markdown_artifact(key="migration-plan", markdown="```\n" + "\n".join(text) + "\n```\n",
                             description=f"Migration plan for {loaded.spec.name}")
    create_table_artifact(key="migration-plans", table=plan_table(plans), description=f"Every plan for {loaded.spec.name}, cheapest first")
    publish_chart(out / "gantt.png", "migration-gantt", f"The {best.method} plan for {loaded.spec.name}, service by service")
    return plans


def plan_table(plans: list[Plan]) -> list[dict]:
    """One row per plan, cheapest first: its cost, cost breakdown, finish and downtime."""
    rows = []
    for plan in sorted(plans, key=lambda p: p.outcome.total_cost):
        o = plan.outcome
        rows.append({"method": plan.method, "total_cost": round(o.total_cost, 2), "finish_hour": o.finish_hour,
                     "downtime_minutes": round(o.downtime_minutes, 1), "steps": len(plan.steps),
                     **{k: round(v, 2) for k, v in o.breakdown.items()}})
    return rows


def plan_record(plan: Plan) -> dict:
    o = plan.outcome
    return {"method": plan.method, "notes": list(plan.notes),
            "steps": [{"workload": s.workload, "instance_type": s.instance_type, "start_hour": s.start_hour} for s in plan.steps],
            "total_cost": o.total_cost, "breakdown": o.breakdown, "finish_hour": o.finish_hour,
            "downtime_minutes": o.downtime_minutes,
            "schedule": [dict(zip(("workload", "transfer_from", "cutover_from", "cloud_from"), row, strict=True)) for row in o.schedule]}
