"""Migration plans: one type that every method outputs, the simulator replays and the report shows.

A plan is an ordered list of steps (workload, instance type, start hour). ``replay`` runs one
through ``CloudMigrationEnv`` and returns its outcome: the total cost and its breakdown, the hour
the last workload reached the cloud, and the downtime. The yardsticks here are policies run
through the same env: ``lift-shift`` (every workload as early as the rules allow, on the
like-for-like general-purpose size), ``waves`` (dependency levels one after another, each wave
finished before the next starts, right-sized) and ``greedy`` (one transfer at a time, the best
savings per migration cost first, right-sized). ``exact`` (in ``lepton_core.sim.exact``) proves
the cheapest plan with CP-SAT; ``make_plan`` runs any of them by name and ``compare`` runs them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lepton_core.sim.env import CLOUD, CUTOVER, ONPREM, TRANSFER, CloudMigrationEnv
from lepton_core.sim.scenario import Scenario

HEURISTICS = ("lift-shift", "waves", "greedy")
METHODS = (*HEURISTICS, "ppo", "exact")


@dataclass(frozen=True)
class PlanStep:
    workload: str
    instance_type: str
    start_hour: int


@dataclass(frozen=True)
class Outcome:
    """What a plan costs in the simulator."""

    total_cost: float
    breakdown: dict[str, float]
    finish_hour: int | None  # the hour the last workload was in the cloud; None when the horizon ran out first
    downtime_minutes: float
    hours: int
    # per workload, in plan order: (name, hour its transfer starts, first hour of cutover, first hour in the
    # cloud); -1 for a phase not reached within the horizon
    schedule: tuple[tuple[str, int, int, int], ...] = ()


@dataclass(frozen=True)
class Plan:
    method: str
    steps: tuple[PlanStep, ...]
    outcome: Outcome | None = None
    notes: tuple[str, ...] = field(default=())

    def table(self) -> list[tuple[str, str, int]]:
        return [(s.workload, s.instance_type, s.start_hour) for s in self.steps]


def run_episode(env: CloudMigrationEnv, choose: Callable[[CloudMigrationEnv, np.ndarray], int]) -> tuple[tuple[PlanStep, ...], Outcome]:
    """Run ``choose`` (env, mask -> action) from the env's current reset state to the episode's end."""
    s = env.scenario
    steps, totals = [], {}
    downtime = 0.0
    info = {"action_mask": env.action_mask()}
    began, over, cloud = np.full(s.n, -1), np.full(s.n, -1), np.full(s.n, -1)
    while True:
        action = choose(env, info["action_mask"])
        hour = env.hour
        _, _, terminated, truncated, info = env.step(action)
        if "refused" in info:
            raise ValueError(info["refused"])
        if action:
            i, k = env.decode(action)
            steps.append(PlanStep(s.names[i], s.instance_names[k], hour))
        for key, value in info["cost"].items():
            totals[key] = totals.get(key, 0.0) + value
        downtime += s.downtime_minutes * float(((env.phase >= CUTOVER) & (env.cutover_left == s.cutover_hours)).sum())
        began[(env.phase >= TRANSFER) & (began < 0)] = hour
        over[(env.phase >= CUTOVER) & (over < 0)] = env.hour
        cloud[(env.phase == CLOUD) & (cloud < 0)] = env.hour
        if terminated or truncated:
            order = [s.names.index(st.workload) for st in steps]
            schedule = tuple((s.names[i], int(began[i]), int(over[i]), int(cloud[i])) for i in order)
            outcome = Outcome(total_cost=info["total_cost"], breakdown=totals, finish_hour=env.hour if terminated else None,
                              downtime_minutes=downtime, hours=env.hour, schedule=schedule)
            return tuple(steps), outcome


def replay(scenario: Scenario, plan: Plan | tuple[PlanStep, ...]) -> Outcome:
    """Run a plan's steps in the simulator (waiting in every other hour); ValueError when a step is
    not allowed at its hour or names an unknown workload or instance type."""
    steps = plan.steps if isinstance(plan, Plan) else plan
    env = CloudMigrationEnv(scenario, max_workloads=max(scenario.n, 1), strict=True)
    env.reset(seed=scenario.seed)
    by_hour: dict[int, PlanStep] = {}
    for st in steps:
        if st.start_hour in by_hour:
            raise ValueError(f"two steps start at hour {st.start_hour} ({by_hour[st.start_hour].workload}, {st.workload}); one start per hour")
        if st.workload not in scenario.names:
            raise ValueError(f"unknown workload {st.workload!r}")
        if st.instance_type not in scenario.instance_names:
            raise ValueError(f"unknown instance type {st.instance_type!r}")
        by_hour[st.start_hour] = st

    def choose(env: CloudMigrationEnv, mask: np.ndarray) -> int:
        st = by_hour.get(env.hour)
        if st is None:
            return 0
        return 1 + scenario.names.index(st.workload) * env.n_types + scenario.instance_names.index(st.instance_type)

    return run_episode(env, choose)[1]


# -- yardsticks ---------------------------------------------------------------------------------
def _like_for_like(s: Scenario) -> np.ndarray:
    """Per workload, the smallest general-purpose (GPU when it needs one) type that fits: what a
    lift-and-shift picks without right-sizing. Falls back to the cheapest type that fits."""
    fits = s.fits()
    names = s.instance_names
    if s.instance_family:
        general = np.array([f in ("general", "gpu") for f in s.instance_family])
    else:  # a scenario without families: AWS naming (m* general purpose, g* GPU)
        general = np.array([n.startswith(("m", "g")) for n in names])
    size = s.instance_vcpu * 1000 + s.instance_memory_gb
    choice = np.where(fits & general[None, :], size[None, :], np.inf).argmin(axis=1)
    cheapest = np.where(fits, s.instance_price[None, :], np.inf).argmin(axis=1)
    ok = (fits & general[None, :]).any(axis=1)
    return np.where(ok, choice, cheapest)


def cheapest_types(s: Scenario) -> np.ndarray:
    """Per workload, the index of the cheapest instance type that fits it."""
    return np.where(s.fits(), s.instance_price[None, :], np.inf).argmin(axis=1)


def _first_valid(env: CloudMigrationEnv, mask: np.ndarray, order: np.ndarray, instance: np.ndarray) -> int:
    for i in order:
        action = 1 + int(i) * env.n_types + int(instance[i])
        if mask[action]:
            return action
    return 0


def _levels(s: Scenario) -> np.ndarray:
    """Dependency level of each workload: 0 for none, else one more than its deepest dependency."""
    level = np.zeros(s.n, dtype=np.int64)
    for _ in range(s.n):
        deeper = np.where(s.depends, level[None, :] + 1, 0).max(axis=1, initial=0)
        if (deeper == level).all():
            break
        level = np.maximum(level, deeper)
    return level


def yardstick(scenario: Scenario, method: str) -> Plan:
    """The plan of one heuristic ``method`` (see ``METHODS``), with its outcome."""
    s = scenario
    env = CloudMigrationEnv(s, max_workloads=max(s.n, 1), strict=True)
    env.reset(seed=s.seed)
    if method == "lift-shift":
        instance = _like_for_like(s)
        order = np.arange(s.n)

        def choose(env, mask):
            return _first_valid(env, mask, order, instance)
    elif method == "waves":
        instance, level = cheapest_types(s), _levels(s)
        order = np.argsort(level, kind="stable")

        def choose(env, mask):
            unfinished = level[env.phase != CLOUD]
            wave = unfinished.min() if len(unfinished) else 0
            members = order[(level[order] == wave) & (env.phase[order] == ONPREM)]
            return _first_valid(env, mask, members, instance)
    elif method == "greedy":
        instance = cheapest_types(s)
        gb_per_hour = s.link_gbps * s.link_efficiency * 450.0 * float(np.mean(s.bandwidth_factor))
        hours = s.data_gb / gb_per_hour
        price = s.instance_price[instance]
        migration = (hours * (s.link_price + s.onprem_cost) + s.cutover_hours * price
                     + s.downtime_minutes * s.downtime_cost_per_krps_minute * s.traffic_rps / 1000 + s.transfer_per_gb * s.data_gb)
        ratio = (s.onprem_cost - price) / np.maximum(migration, 1e-6)
        order = np.argsort(-ratio, kind="stable")

        def choose(env, mask):
            if (env.phase == TRANSFER).any():
                return 0  # the link is the bottleneck: one transfer at a time finishes each one sooner
            return _first_valid(env, mask, order, instance)
    else:
        raise ValueError(f"unknown method {method!r}; one of {', '.join(HEURISTICS)}")
    steps, outcome = run_episode(env, choose)
    return Plan(method, steps, outcome)


def make_plan(scenario: Scenario, method: str, time_limit_s: float = 60.0, policy=None) -> Plan:
    """The plan of ``method`` (see ``METHODS``); ``ppo`` needs the trained ``policy``; ``exact``
    starts from the cheapest other plan and stops after ``time_limit_s`` with the best it found
    (its notes say whether it is proved)."""
    if method == "ppo":
        from lepton_core.errors import UsageError
        from lepton_core.planner.planner import policy_plan

        if policy is None:
            raise UsageError("the ppo method needs a trained planner policy (train one with `lepton train-planner`)")
        return policy_plan(policy, scenario)
    if method != "exact":
        return yardstick(scenario, method)
    return compare(scenario, time_limit_s=time_limit_s, policy=policy)[-1]


def fixed_cost(s: Scenario, price: np.ndarray) -> float:
    """The part of a plan's cost that no decision changes once every workload is moved, on instances
    of ``price`` ($/h a workload): each cut over at hour 0, with its downtime and data transfer."""
    return float((s.onprem_cost * s.cutover_hours).sum() + (price * s.horizon).sum() + s.transfer_per_gb * s.data_gb.sum()
                 + (s.downtime_minutes * s.downtime_cost_per_krps_minute * s.traffic_rps / 1000).sum())


def cost_lower_bound(scenario: Scenario) -> float:
    """A cost no plan that moves every workload within the horizon (the plans ``plan_rank`` puts
    first) can go below: the higher of two relaxations of the simulator, ``schedule_lower_bound``
    and ``lp_lower_bound``. Neither is always the higher; on the planner benchmark's twenty systems
    of 50 workloads the linear program's was, 10.3% under the best heuristic on average against
    11.3% (benchmarks/RESULTS.md, 2026-12-03)."""
    return max(schedule_lower_bound(scenario), lp_lower_bound(scenario))


# The largest linear program ``lp_lower_bound`` solves, in workloads x hours: 128 workloads over two
# weeks (about 3 s on one core here; 200 took 35 s). Larger scenarios get ``schedule_lower_bound``'s figure.
LP_MAX_CELLS = 128 * (14 * 24 + 1)


def _capacity(s: Scenario) -> np.ndarray:
    """(horizon,) GB the link moves in each hour."""
    return np.array([s.link_gb_per_hour(t) for t in range(s.horizon)])


def _port_floor(s: Scenario) -> float:
    """The link's port: a transfer hour moves at most that hour's capacity, so the port is paid for
    at least as many hours as the link's best hours take to carry all the data."""
    total = float(np.maximum(s.data_gb.astype(float), 0.0).sum())
    if total <= 0:
        return 0.0
    busiest = np.cumsum(np.sort(_capacity(s))[::-1])
    return s.link_price * min(int(np.searchsorted(busiest, total * (1 - 1e-12))) + 1, s.horizon)


def lp_lower_bound(scenario: Scenario) -> float:
    """A cost no plan that moves every workload within the horizon can go below: a linear program
    over whether each workload is in the cloud in each hour (``y[i, t]`` in [0, 1], never falling,
    1 at the horizon), that keeps the penalty for calls across the link, which
    ``schedule_lower_bound`` leaves out.

    What every such plan pays and the program charges no more than: on-prem for the hours before
    the cloud, the cheapest type that fits (no dearer type costs less) for the hours in it and for
    its hours of cutover, the data and downtime charges (fixed), the port as ``_port_floor`` says,
    and ``cross_site_cost_per_krps_hour`` for each hour a workload is on one side of the link and a
    dependency on the other (at least ``|y[i, t] - y[j, t]|`` for each dependency j). What every
    such plan obeys: one transfer starts an hour, takes an hour or more, and is followed by
    ``cutover_hours`` of cutover, so at most ``t - cutover_hours`` workloads are in the cloud at
    hour t, and their data has crossed the link by then (no more than its capacity until hour
    ``t - cutover_hours``). A plan's own ``y`` meets these, so the program's minimum is no more
    than its cost.

    Without dependencies it gives about what ``schedule_lower_bound`` gives; with them, the
    penalty is its gain (on the planner benchmark's 50-workload systems $40-160, 0.5-1.7% of the
    cost). Loose by what it leaves out: a transfer, once started, runs until its data is over (the
    program may line a caller's and its dependency's cutovers up when the link would not), types
    dearer than the cheapest, and fractional ``y``: half of a caller and half of its dependency in
    the cloud cross nothing, so the penalty binds only where moving them in step costs the rest of
    the plan more (on the tests' three-service hand scenario it adds nothing at any price). On a scenario no plan can finish (its data does
    not fit through the link in time) every bound holds: then ``schedule_lower_bound``'s figure, as
    for one larger than ``LP_MAX_CELLS`` workloads x hours (the program's time grows faster than its
    size)."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    s = scenario
    if s.n == 0:
        return 0.0
    n, H, h = s.n, s.horizon, s.cutover_hours
    T = H + 1  # hours 0..H; y[i, H] = 1: every workload in the cloud when the horizon ends
    if n * T > LP_MAX_CELLS:
        return schedule_lower_bound(s)
    price = s.instance_price[cheapest_types(s)]
    # every plan's constant: on-prem for the whole horizon and the cloud for its cutover hours, with
    # the data and downtime charges; each hour in the cloud then adds price - on-prem
    constant = fixed_cost(s, price) + float(((s.onprem_cost - price) * (H - h)).sum()) + _port_floor(s)
    data = np.maximum(s.data_gb.astype(float), 0.0)
    carried = np.concatenate([[0.0], np.cumsum(_capacity(s))])  # by the start of each hour
    callers, callees = np.nonzero(s.depends)
    paying = np.unique(callers)  # a z row per workload that calls another, per hour
    slot = np.full(n, -1)
    slot[paying] = np.arange(len(paying))
    y = lambda i, t: i * T + t  # noqa: E731
    z = lambda i, t: n * T + slot[i] * H + t  # noqa: E731

    cost = np.zeros(n * T + len(paying) * H)
    cost[:n * T].reshape(n, T)[:, :H] = (price - s.onprem_cost)[:, None]
    cost[n * T:].reshape(len(paying), H)[:] = (s.cross_site_cost_per_krps_hour * s.traffic_rps[paying] / 1000)[:, None]

    rows, cols, vals, rhs = [], [], [], []

    def constrain(row: np.ndarray, var: np.ndarray, coeff, bound: np.ndarray) -> None:
        """Rows ``sum(coeff * x[var]) <= bound``; ``row`` numbers them from 0 within this block."""
        rows.append(sum(len(r) for r in rhs) + row)
        cols.append(var)
        vals.append(np.broadcast_to(np.asarray(coeff, dtype=float), var.shape))
        rhs.append(np.asarray(bound, dtype=float))

    i, t = np.repeat(np.arange(n), H), np.tile(np.arange(H), n)  # once in the cloud, it stays
    r = np.arange(n * H)
    constrain(np.concatenate([r, r]), np.concatenate([y(i, t), y(i, t + 1)]), np.repeat([1.0, -1.0], n * H), np.zeros(n * H))
    i, t = np.repeat(np.arange(n), T), np.tile(np.arange(T), n)
    ahead = np.clip(np.arange(T) - h, 0, H)  # the starts (and link hours) before the cutover that ends by hour t
    constrain(t, y(i, t), 1.0, ahead)  # at most one workload a start
    constrain(t, y(i, t), np.repeat(data, T), carried[ahead])  # no more data than the link has carried
    e, t = np.repeat(np.arange(len(callers)), H), np.tile(np.arange(H), len(callers))
    a, d = callers[e], callees[e]
    r = np.arange(len(e))
    for one, other in ((a, d), (d, a)):  # z[a, t] >= y[one, t] - y[other, t]
        constrain(np.concatenate([r, r, r]), np.concatenate([y(one, t), y(other, t), z(a, t)]),
                  np.repeat([1.0, -1.0, -1.0], len(e)), np.zeros(len(e)))

    b = np.concatenate(rhs)
    A = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(b), len(cost))).tocsr()
    lower, upper = np.zeros(len(cost)), np.ones(len(cost))
    lower[y(np.arange(n), H)] = 1.0
    res = linprog(cost, A_ub=A, b_ub=b, bounds=np.column_stack([lower, upper]), method="highs-ds")  # dual simplex: 0.3 s at 50, ipm 5.6
    if res.status != 0:  # infeasible: no plan finishes, and any figure bounds none
        return schedule_lower_bound(s)
    return constant + float(res.fun) - 1e-7 * max(1.0, abs(constant + float(res.fun)))  # HiGHS's tolerance, on the safe side


def schedule_lower_bound(scenario: Scenario) -> float:
    """A cost no plan that moves every workload within the horizon can go below, from a relaxation
    of the simulator as a single machine.

    A workload whose cutover begins at hour c pays on-prem for c + cutover_hours hours and its
    cloud instance, no cheaper than the cheapest type that fits, for horizon - c hours: a constant
    (with its downtime and data transfer) plus w * c, w being its on-prem price less that cheapest
    cloud price. Every plan pays the constants; this bounds the rest from below:

    - the link's port, as ``_port_floor`` says;
    - the sum of w * c over the workloads (those with w > 0; one with w < 0 at its latest
      cutover): one transfer starts an hour and each takes an hour or more, so the k-th cutover is
      at hour k or later, and only once the link has carried the data of the first k, at hour
      g(tau_k) or later (tau_k their data, g the first hour by which the link has carried that
      much). For any line a + b * tau under g and any lam in [0, 1], the k-th is no earlier than
      lam * k + (1 - lam) * (a + b * tau_k): a single machine with processing times
      lam + (1 - lam) * b * data, where Smith's rule (the largest weight per unit of time first)
      gives the cheapest order exactly. The bound takes the best over a grid of (lam, b).

    Left out, so the bound is loose by them: the penalty for calls across the link, dependencies,
    types dearer than the cheapest, and the link's sharing beyond its total capacity."""
    s = scenario
    if s.n == 0:
        return 0.0
    H, h = s.horizon, s.cutover_hours
    price = s.instance_price[cheapest_types(s)]
    constant = fixed_cost(s, price)
    data = np.maximum(s.data_gb.astype(float), 0.0)
    total = float(data.sum())
    capacity = _capacity(s)
    port = _port_floor(s)
    w = s.onprem_cost - price
    late = float((w[w < 0] * (H - h)).sum())  # cutting over as late as a finished plan can
    keep = w > 0
    w, data = w[keep], data[keep]
    if not len(w):
        return constant + port + late
    kept = float(data.sum())
    # cumulative capacity F(t) after t hours, far enough for all the data (the profile repeats)
    reps = 1
    while capacity.sum() * reps < total:
        reps *= 2
    F = np.concatenate([[0.0], np.cumsum(np.tile(capacity, reps))])
    last = max(int(np.searchsorted(F, total * (1 - 1e-12))), 1)  # g(total): the hour the link has carried it all
    hours = np.arange(1, last + 1)
    reach = np.minimum(F[1:last + 1], kept)
    slopes = np.linspace(0.0, 1.5, 61) * (last / max(kept, 1e-12))  # b, hours per GB: the mean rate's among them
    a = (hours[None, :] - slopes[:, None] * reach[None, :]).min(axis=1)  # the highest line under g of each slope
    lam = np.linspace(0.0, 1.0, 11)
    L, B = np.meshgrid(lam, slopes, indexing="ij")
    A = np.broadcast_to(a[None, :], L.shape)
    L, B, A = L.ravel(), B.ravel(), A.ravel()
    p = L[:, None] + ((1 - L) * B)[:, None] * data[None, :]  # (grid, n) processing times
    order = np.argsort(-(w[None, :] / np.maximum(p, 1e-300)), axis=1, kind="stable")
    ps, ws = np.take_along_axis(p, order, 1), w[order]
    scheduled = (ws * np.cumsum(ps, axis=1)).sum(axis=1) + (1 - L) * A * w.sum()
    return constant + port + late + float(max(scheduled.max(), w.sum()))  # (every cutover is at hour 1 or later)


def compare(scenario: Scenario, exact: bool = True, time_limit_s: float = 60.0, policy=None) -> list[Plan]:
    """Every heuristic's plan, the trained PPO policy's when one is given that applies (a
    ``MigrationAgent`` large enough for the scenario, trained on its instance types), then the
    exact planner's (started from the cheapest of them; when it finds nothing better in its time,
    it returns that one, and says so in its notes)."""
    from lepton_core.sim.exact import solve

    plans = [yardstick(scenario, m) for m in HEURISTICS]
    if policy is not None:
        from lepton_core.planner.planner import policy_applies, policy_plan

        if policy_applies(policy, scenario):
            plans.append(policy_plan(policy, scenario))
    if exact:
        plans.append(solve(scenario, time_limit_s=time_limit_s, hint=cheapest(plans)).plan)
    return plans


def plan_lines(plan: Plan, scenario: Scenario) -> list[str]:
    """The plan as text: one line per step, then the outcome and its cost breakdown."""
    price = dict(zip(scenario.instance_names, scenario.instance_price, strict=True))
    onprem = dict(zip(scenario.names, scenario.onprem_cost, strict=True))
    width = max((len(st.workload) for st in plan.steps), default=8)
    iw = max([12] + [len(st.instance_type) + 1 for st in plan.steps])
    out = [f"plan ({plan.method}): {len(plan.steps)} workloads",
           f"  {'hour':>5}  {'workload':<{width}}  {'instance':<{iw}} {'$/h cloud':>9} {'$/h on-prem':>11}"]
    for st in plan.steps:
        out.append(f"  {st.start_hour:>5}  {st.workload:<{width}}  {st.instance_type:<{iw}} {price[st.instance_type]:>9.3f} {onprem[st.workload]:>11.3f}")
    o = plan.outcome
    if o is not None:
        finish = f"all in the cloud after {o.finish_hour} h" if o.finish_hour is not None else f"not finished within {o.hours} h"
        out.append(f"cost over {scenario.horizon} h: ${o.total_cost:,.2f}; {finish}; downtime {o.downtime_minutes:g} min in all")
        out.append("  " + ", ".join(f"{k} ${v:,.2f}" for k, v in sorted(o.breakdown.items(), key=lambda kv: -kv[1])))
    out += list(plan.notes)
    return out


def plan_rank(outcome: Outcome) -> tuple[bool, float]:
    """How plans compare, by their outcomes (or anything with an outcome's ``finish_hour`` and
    ``total_cost``): one that moves every workload within the horizon before one that does not
    (moving nothing costs only on-prem hours: less than any migration), then by cost."""
    return outcome.finish_hour is None, outcome.total_cost


def cheapest(plans: list[Plan]) -> Plan:
    """The best plan by ``plan_rank``; on a tie the exact planner's (it says what it proved)."""
    return min(plans, key=lambda p: (*plan_rank(p.outcome), p.method != "exact"))


def best_heuristic(scenario: Scenario) -> Plan:
    """The cheapest of the heuristics' plans (``HEURISTICS``): the yardstick a planner has to beat."""
    return cheapest([yardstick(scenario, m) for m in HEURISTICS])


def comparison_lines(plans: list[Plan], floor: float | None = None) -> list[str]:
    """One line per plan: cost, finish, downtime, how far above the cheapest it is, and, when the
    exact planner proved its optimum, the gap to that optimum. Without a proof, ``floor`` (the
    scenario's ``cost_lower_bound``) adds a line that says how far above the optimum the cheapest
    plan that moves every workload can at most be (none when no plan here does)."""
    best = min(p.outcome.total_cost for p in plans)
    proved = next((p for p in plans if p.method == "exact" and p.notes and p.notes[0].startswith("optimal")), None)
    out = [f"  {'method':<11} {'cost':>12} {'finish':>9} {'downtime':>9} {'vs best':>8}" + (f" {'vs exact':>9}" if proved else "")]
    for p in plans:
        o = p.outcome
        finish = f"{o.finish_hour} h" if o.finish_hour is not None else "not done"
        gap = f" {(o.total_cost - proved.outcome.total_cost) / proved.outcome.total_cost:>+9.1%}" if proved else ""
        out.append(f"  {p.method:<11} {'$' + format(o.total_cost, ',.2f'):>12} {finish:>9} {o.downtime_minutes:>7g} m "
                   f"{(o.total_cost - best) / best:>+8.1%}{gap}")
    done = [p.outcome.total_cost for p in plans if p.outcome.finish_hour is not None]
    if floor is not None and proved is None and floor > 0 and done:
        out.append(f"  no plan that moves every workload costs less than ${floor:,.2f} (cost_lower_bound): the cheapest "
                   f"here is at most {max(min(done) / floor - 1, 0.0):.1%} above the optimum")
    return out


def dataset_order(spec, plan: Plan) -> list[str]:
    """The spec's datasets in the order the plan moves their owners (a dataset goes with the first
    of its owners to start; datasets no service owns go last, in the spec's order)."""
    start = {st.workload: st.start_hour for st in plan.steps}
    owner_start: dict[str, int] = {}
    for service in spec.services:
        for name in service.datasets:
            hour = start.get(service.name)
            if hour is not None:
                owner_start[name] = min(owner_start.get(name, hour), hour)
    names = [d.name for d in spec.datasets]
    late = max(owner_start.values(), default=0) + 1
    return sorted(names, key=lambda n: (owner_start.get(n, late), names.index(n)))
