"""Cloud choice: the same migration planned onto every candidate provider and region, side by side.

For each candidate catalogue the spec's services are planned in the simulator on that cloud's
instance types, prices and links (every yardstick, the trained PPO planner when it was trained on
that catalogue's instance types, the exact planner when the system is small; the cheapest plan is
the cloud's, over the cheapest of its links). From the plan and the catalogue:

- one-off cost: the data's transfer price, the link's port hours, dual running (the cloud
  instances paid while a workload is in cutover and its on-prem twin still runs), the downtime
  and cross-site penalties of the simulator;
- time to finish (the hour the last workload is in the cloud) and downtime;
- monthly cost once there: the instances the plan chose (730 hours a month), the data in the
  object store, and the services' declared egress at the cloud's rate;
- break-even month against staying on-prem, and the total over the spec's horizon:
  ``one-off + running while migrating + monthly x (horizon - migration time)``.

Candidates are ranked by the spec's objective (``total_cost``, or ``time_under_budget``: the
soonest finish among those within the migration and monthly budgets); the recommendation states
its margin to the runner-up. Whether lepton's boto3 data path reaches each cloud's object store is
part of the answer: a store that is not S3-compatible needs an S3 endpoint in the spec.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from lepton_core.errors import UsageError
from lepton_core.sim.exact import solve
from lepton_core.sim.plan import Plan, cheapest, compare, plan_rank
from lepton_core.sim.scenario import DAY, Scenario, from_spec
from lepton_core.spec import Catalogue, LoadedSpec

HOURS_PER_MONTH = 730.0
ONE_OFF_PARTS = ("transfer", "link", "dual_running", "downtime", "cross_site")
MONTHLY_PARTS = ("compute", "storage", "egress")
LONG_HORIZON = 90 * DAY  # planning horizon tried when a cloud cannot finish within the default two weeks


class NoCloudFits(UsageError):
    """No candidate can take the system (within the budget, for ``time_under_budget``; reachable by
    lepton's data path, for the migrate flow's choice)."""


@dataclass(frozen=True)
class CloudOption:
    """One candidate cloud and region, planned and priced."""

    ref: str  # the candidate as the spec names it (a bundled name or a path)
    catalogue: str  # provider-region
    provider: str
    region: str
    as_of: str
    method: str  # the planner whose plan the figures come from
    link: str
    one_off: float
    one_off_parts: dict[str, float]
    finish_hours: int | None  # None: not everything reached the cloud within the planning horizon
    downtime_minutes: float
    running_while_migrating: float  # on-prem and cloud running cost until the last workload is over
    monthly: float
    monthly_parts: dict[str, float]
    onprem_monthly: float
    break_even_months: float | None  # None: the cloud never costs less than staying
    horizon_months: int
    total: float  # one-off + running over the horizon
    onprem_total: float
    within_budget: bool
    budget_notes: tuple[str, ...]
    store: dict[str, object]
    reachable: bool  # lepton's boto3 data path reaches its object store for this spec
    instances: dict[str, str] = field(default_factory=dict)  # service -> instance type
    plans: dict[str, float] = field(default_factory=dict)  # planner -> simulated cost, for this cloud's chosen link
    notes: tuple[str, ...] = ()

    @property
    def finish_text(self) -> str:
        if self.finish_hours is None:
            return "not finished"
        return f"{self.finish_hours} h" if self.finish_hours < 48 else f"{self.finish_hours / 24:.1f} d"


@dataclass(frozen=True)
class Comparison:
    """Every candidate, ranked by the objective, and the recommendation."""

    spec_name: str
    objective: str
    horizon_months: int
    ranked: tuple[CloudOption, ...]
    recommended: CloudOption | None  # None only when nothing meets the objective's conditions
    runner_up: CloudOption | None
    margin: str  # the recommendation's lead over the runner-up, in words

    def option(self, ref: str) -> CloudOption:
        return next(o for o in self.ranked if o.ref == ref)

    def recommendation(self) -> str:
        if self.recommended is None:
            if self.objective == "total_cost" or not any(o.finish_hours is not None for o in self.ranked):
                return f"no candidate cloud takes the whole system within {LONG_HORIZON // DAY} days"
            least = min(o.one_off for o in self.ranked)
            return (f"no candidate cloud is within the budget (the least one-off cost is ${least:,.0f}); raise "
                    "budget.migration_usd or budget.monthly_usd, or rank by total_cost")
        r = self.recommended
        what = (f"${r.total:,.0f} over {self.horizon_months} months" if self.objective == "total_cost"
                else f"done in {r.finish_text} within budget")
        return f"recommended: {r.catalogue} ({what}); {self.margin}"

    def choice_for_migration(self) -> CloudOption:
        """The candidate the migrate flow moves to: the recommended one when lepton's data path
        reaches its object store, else the best ranked one it reaches. NoCloudFits when none."""
        if self.recommended is None:
            raise NoCloudFits(f"{self.spec_name}: {self.recommendation()}")
        eligible = [o for o in self.ranked if o.reachable and (o.within_budget or self.objective != "time_under_budget")]
        if not eligible:
            raise NoCloudFits(f"{self.spec_name}: none of the candidate clouds' object stores is S3-compatible and the spec "
                              "gives no target.endpoint_url; set one (an S3 gateway) or add an S3-compatible candidate")
        return eligible[0]

    @classmethod
    def from_dict(cls, d: dict) -> Comparison:
        """The comparison ``to_dict`` wrote (JSON round trip)."""
        ranked = tuple(CloudOption(**{**o, "budget_notes": tuple(o["budget_notes"]), "notes": tuple(o["notes"])})
                       for o in d["options"])
        by_ref = {o.ref: o for o in ranked}
        return cls(spec_name=d["spec"], objective=d["objective"], horizon_months=d["horizon_months"], ranked=ranked,
                   recommended=by_ref.get(d["recommended"]), runner_up=by_ref.get(d["runner_up"]), margin=d["margin"])

    def to_dict(self) -> dict:
        return {"spec": self.spec_name, "objective": self.objective, "horizon_months": self.horizon_months,
                "recommended": self.recommended.ref if self.recommended else None,
                "runner_up": self.runner_up.ref if self.runner_up else None, "margin": self.margin,
                "recommendation": self.recommendation(), "options": [asdict(o) for o in self.ranked]}


def plan_on(loaded: LoadedSpec, catalogue: Catalogue, *, policy=None, exact_max_workloads: int = 12,
            exact_seconds: float = 10.0, seed: int = 0) -> tuple[Scenario, str, Plan, dict[str, float], tuple[str, ...]]:
    """The cheapest plan of the spec's services on ``catalogue``: every link's yardsticks (and the
    policy's, when it applies), then the exact planner on the cheapest link when the system has at
    most ``exact_max_workloads`` services. Returns the scenario, its link, the plan, each planner's
    cost on that link, and notes."""
    if not catalogue.links:
        raise UsageError(f"catalogue {catalogue.name}: no network link to move data over")
    notes: list[str] = []
    best: tuple[Scenario, str, list[Plan]] | None = None
    for horizon in (14 * DAY, LONG_HORIZON):
        for link in catalogue.links:
            scenario = from_spec(loaded, link=link.name, seed=seed, horizon=horizon, catalogue=catalogue)
            _check_fits(scenario, catalogue)
            plans = compare(scenario, exact=False, policy=policy)
            if best is None or plan_rank(cheapest(plans).outcome) < plan_rank(cheapest(best[2]).outcome):
                best = (scenario, link.name, plans)
        if cheapest(best[2]).outcome.finish_hour is not None:
            break
        notes.append(f"not done within {horizon // DAY} days on any link; planned over {LONG_HORIZON // DAY} days")
    scenario, link_name, plans = best
    pinned = [s.name for s in loaded.spec.services if s.instance_type and s.instance_type not in catalogue.instance_names]
    if pinned:
        notes.append(f"pins not held here (no such instance type): {', '.join(pinned)}")
    if exact_seconds > 0 and scenario.n <= exact_max_workloads:  # started from the cheapest plan already made
        plans = [*plans, solve(scenario, time_limit_s=exact_seconds, hint=cheapest(plans)).plan]
    plan = cheapest(plans)
    return scenario, link_name, plan, {p.method: round(p.outcome.total_cost, 2) for p in plans}, tuple(notes)


def _check_fits(scenario: Scenario, catalogue: Catalogue) -> None:
    fits = scenario.fits().any(axis=1)
    for i in range(scenario.n):
        if not fits[i]:
            raise UsageError(f"catalogue {catalogue.name}: no instance type fits service {scenario.names[i]!r} "
                             f"({scenario.cpu[i]:g} vCPU, {scenario.memory_gb[i]:g} GB, {scenario.gpu[i]:g} GPU)")


def price(loaded: LoadedSpec, ref: str, catalogue: Catalogue, link: str, plan: Plan,
          plans: dict[str, float] | None = None, notes: tuple[str, ...] = ()) -> CloudOption:
    """The figures of one cloud from its plan (see the module's docstring for each)."""
    spec = loaded.spec
    o = plan.outcome
    instance = {st.workload: st.instance_type for st in plan.steps}
    hourly = {it.name: it.price_per_hour for it in catalogue.instances}
    dual = 0.0
    for name, _, over, cloud in o.schedule:
        if over >= 0:
            dual += ((cloud if cloud >= 0 else o.hours) - over) * hourly[instance[name]]
    parts = {"transfer": o.breakdown.get("transfer", 0.0), "link": o.breakdown.get("link", 0.0), "dual_running": dual,
             "downtime": o.breakdown.get("downtime", 0.0), "cross_site": o.breakdown.get("cross_site", 0.0)}
    one_off = sum(parts.values())
    running = o.breakdown.get("onprem", 0.0) + o.breakdown.get("cloud", 0.0) - dual
    monthly_parts = {
        "compute": HOURS_PER_MONTH * sum(hourly[instance[s.name]] for s in spec.services if s.name in instance),
        "storage": catalogue.storage_gb_month * sum(s.data_gb for s in spec.services),
        "egress": catalogue.transfer_out_per_gb * sum(s.egress_gb_month for s in spec.services),
    }
    monthly = sum(monthly_parts.values())
    onprem_monthly = HOURS_PER_MONTH * sum(s.onprem_cost_per_hour for s in spec.services)
    horizon = spec.budget.horizon_months
    finished = o.finish_hour is not None and len(instance) == len(spec.services)
    f = o.finish_hour / HOURS_PER_MONTH if finished else math.inf
    total = one_off + running + monthly * max(horizon - f, 0.0) if finished else math.inf
    saving = onprem_monthly - monthly
    break_even = max((one_off + running - monthly * f) / saving, f) if finished and saving > 0 else None
    budget_notes = []
    if one_off > spec.budget.migration_usd:
        budget_notes.append(f"one-off ${one_off:,.0f} is over the migration budget ${spec.budget.migration_usd:,.0f}")
    if monthly > spec.budget.monthly_usd:
        budget_notes.append(f"monthly ${monthly:,.0f} is over the monthly budget ${spec.budget.monthly_usd:,.0f}")
    store = catalogue.object_store
    endpoint_given = spec.target.endpoint_url is not None
    reachable = endpoint_given or store.s3_compatible
    return CloudOption(
        ref=ref, catalogue=catalogue.name, provider=catalogue.provider, region=catalogue.region, as_of=str(catalogue.as_of),
        method=plan.method, link=link, one_off=round(one_off, 2),
        one_off_parts={k: round(v, 2) for k, v in parts.items()},
        finish_hours=o.finish_hour if finished else None, downtime_minutes=o.downtime_minutes,
        running_while_migrating=round(running, 2), monthly=round(monthly, 2),
        monthly_parts={k: round(v, 2) for k, v in monthly_parts.items()}, onprem_monthly=round(onprem_monthly, 2),
        break_even_months=None if break_even is None else round(break_even, 2), horizon_months=horizon,
        total=round(total, 2) if finished else math.inf, onprem_total=round(onprem_monthly * horizon, 2),
        within_budget=finished and not budget_notes, budget_notes=tuple(budget_notes),
        store={"name": store.name, "s3_compatible": store.s3_compatible, "endpoint": store.endpoint, "access": store.access},
        reachable=reachable, instances=instance, plans=dict(plans or {}),
        notes=notes + ((f"target.endpoint_url {spec.target.endpoint_url!r} is set: the data goes there",)
                       if endpoint_given and not store.s3_compatible else ()),
    )


def rank(options: list[CloudOption], objective: str) -> list[CloudOption]:
    """Best first. ``total_cost``: by total over the horizon. ``time_under_budget``: those within
    budget by finish (then total), then the others the same way. Ties keep the spec's order."""
    order = {o.ref: i for i, o in enumerate(options)}
    if objective == "total_cost":
        return sorted(options, key=lambda o: (o.total, order[o.ref]))
    if objective == "time_under_budget":
        return sorted(options, key=lambda o: (not o.within_budget, o.finish_hours if o.finish_hours is not None else math.inf,
                                              o.total, order[o.ref]))
    raise ValueError(f"unknown objective {objective!r}")


def margin(best: CloudOption, runner_up: CloudOption | None, objective: str) -> str:
    """The lead of ``best`` over ``runner_up`` in the objective's terms."""
    if runner_up is None:
        return "the only candidate"
    if objective == "total_cost":
        if math.isinf(runner_up.total):
            return f"{runner_up.catalogue}, the runner-up, does not finish"
        lead = runner_up.total - best.total
        return f"${lead:,.0f} ({lead / runner_up.total:.1%}) less than the runner-up, {runner_up.catalogue}"
    if not runner_up.within_budget:
        return f"the only candidate within budget (the runner-up, {runner_up.catalogue}: {'; '.join(runner_up.budget_notes)})"
    hours = (runner_up.finish_hours or 0) - (best.finish_hours or 0)
    cost = runner_up.total - best.total
    return (f"{hours} h sooner than the runner-up, {runner_up.catalogue}" if hours else
            f"as soon as the runner-up, {runner_up.catalogue}") + f", and ${cost:,.0f} {'less' if cost >= 0 else 'more'} over the horizon"


def compare_clouds(loaded: LoadedSpec, refs: list[str] | None = None, objective: str | None = None, policy=None,
                   seed: int = 0, progress=None) -> Comparison:
    """Plan and price the spec's system on each candidate (the spec's ``cloud_choice.candidates``,
    or those of ``refs``) and rank them by ``objective`` (the spec's unless given)."""
    spec = loaded.spec
    if not spec.services:
        raise UsageError(f"{loaded.path}: the spec has no services to compare clouds for")
    choice = spec.cloud_choice
    objective = objective or choice.objective
    refs = list(refs or choice.candidates)
    options = []
    for ref in refs:
        catalogue = loaded.candidate(ref)
        _, link, plan, plans, notes = plan_on(loaded, catalogue, policy=policy, exact_max_workloads=choice.exact_max_workloads,
                                               exact_seconds=choice.exact_seconds, seed=seed)
        options.append(price(loaded, ref, catalogue, link, plan, plans, notes))
        if progress:
            progress(options[-1])
    ranked = rank(options, objective)
    best = ranked[0] if objective == "total_cost" or ranked[0].within_budget else None
    if best is not None and math.isinf(best.total):
        best = None
    runner_up = ranked[1] if len(ranked) > 1 else None
    return Comparison(spec_name=spec.name, objective=objective, horizon_months=spec.budget.horizon_months, ranked=tuple(ranked),
                      recommended=best, runner_up=runner_up, margin=margin(best, runner_up, objective) if best else "")


def comparison_lines(c: Comparison) -> list[str]:
    """The comparison as a text table, best first, then the recommendation and each store's path."""
    head = (f"  {'cloud':<18} {'plan':<10} {'one-off':>9} {'finish':>8} {'down':>6} {'monthly':>9} {'on-prem/mo':>10} "
            f"{'break-even':>10} {f'total {c.horizon_months} mo':>12}  store")
    out = [f"clouds for {c.spec_name}, ranked by {c.objective.replace('_', ' ')}:", head]
    for o in c.ranked:
        be = f"{o.break_even_months:.1f} mo" if o.break_even_months is not None else "never"
        total = f"${o.total:,.0f}" if not math.isinf(o.total) else "-"
        flag = "" if o.within_budget else " (over budget)"
        store = "S3 API" if o.store["s3_compatible"] else "not S3"
        out.append(f"  {o.catalogue:<18} {o.method:<10} {'$' + format(o.one_off, ',.0f'):>9} {o.finish_text:>8} "
                   f"{o.downtime_minutes:>4g} m {'$' + format(o.monthly, ',.0f'):>9} {'$' + format(o.onprem_monthly, ',.0f'):>10} "
                   f"{be:>10} {total:>12}  {store}{flag}")
    out += ["", c.recommendation()]
    for o in c.ranked:
        if not o.reachable:
            out.append(f"  {o.catalogue}: {o.store['name']} is {o.store['access']}")
    return out


def comparison_table(c: Comparison) -> list[dict]:
    """One row per candidate, best first, for a table artifact."""
    rows = []
    for i, o in enumerate(c.ranked, 1):
        rows.append({"rank": i, "cloud": o.catalogue, "plan": o.method, "link": o.link, "one_off_usd": o.one_off,
                     **{f"{k}_usd": v for k, v in o.one_off_parts.items()},
                     "finish_hours": o.finish_hours, "downtime_minutes": o.downtime_minutes, "monthly_usd": o.monthly,
                     "onprem_monthly_usd": o.onprem_monthly, "break_even_months": o.break_even_months,
                     f"total_{o.horizon_months}_months_usd": None if math.isinf(o.total) else o.total,
                     "within_budget": o.within_budget, "object_store": o.store["name"],
                     "s3_compatible": o.store["s3_compatible"], "prices_as_of": o.as_of})
    return rows
