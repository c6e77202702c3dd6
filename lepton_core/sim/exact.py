"""The exact planner: the cheapest migration plan, proved with OR-Tools CP-SAT.

The model is the simulator with its link run as a pipeline: transfers take the link one after
another, and the next one may start in the hour the previous one ends, taking what that hour has
left. That is exactly what the env does when two transfers share the last hour of the first and
the first still finishes in it (its remainder is at most half the hour's capacity, or both
finish), so the model's plans replay in the env at the model's cost. In detail:

- the link's bandwidth is known hour by hour (the scenario's seeded profile, the forecast the env
  steps through; the deterministic version of the world). Volumes are counted in MB on the
  cumulative capacity curve ``CAP(t)``: a transfer starting when the link is free at hour ``s``
  finishes at mark ``CAP(s) + data``; one that starts in its predecessor's last hour finishes at
  the predecessor's mark ``+ data``; it ends in the first hour whose ``CAP`` reaches its mark;
- transfers are ordered (a circuit over them), start one per hour, and a workload starts only
  after every workload it depends on has started (the env's rule); all are in the cloud by the
  horizon;
- each workload runs on the cheapest instance type that fits it: nothing else in the world depends
  on the type, and its price is paid from its cutover to the horizon, so a dearer type never wins;
- the objective is the env's total cost term by term: on-prem hours until each workload is in the
  cloud, cloud hours from cutover to the horizon, the link's port price for every hour it carries
  a transfer, the price per GB, downtime at each cutover, and the cross-site penalty for every
  hour a workload and one of its dependencies are on different sides (from the first of the
  group to reach the cloud to the last).

Dollars are scaled to hundredths of a cent. The plans the model leaves out are those that run
three or more transfers at once, or two for more than an hour; the tests check on small scenarios
that no heuristic (``lift-shift`` overlaps freely) beats the proved plan.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from lepton_core.errors import UsageError
from lepton_core.sim.plan import Outcome, Plan, PlanStep, cheapest_types, fixed_cost, plan_rank, replay
from lepton_core.sim.scenario import Scenario

SCALE = 10_000  # model units per dollar
MB_PER_GB = 1000


class NoPlanFound(UsageError):
    """The solver found no plan in its time (or none exists that moves everything within the horizon)."""


@dataclass(frozen=True)
class ExactResult:
    plan: Plan
    optimal: bool  # the solver proved it optimal (over pipelined plans)
    objective: float  # the model's cost of the plan, dollars
    bound: float  # the solver's lower bound, dollars
    seconds: float
    model_steps: tuple[PlanStep, ...] = ()  # the solver's plan, before the local search in the env

    @property
    def gap(self) -> float:
        return 0.0 if self.optimal else max(0.0, (self.objective - self.bound) / max(abs(self.objective), 1e-9))


def capacity_curve(scenario: Scenario) -> tuple[np.ndarray, np.ndarray]:
    """(MB the link moves in each hour 0..horizon-1, cumulative MB before each hour 0..horizon)."""
    per_hour = np.array([round(scenario.link_gb_per_hour(h) * MB_PER_GB) for h in range(scenario.horizon)], dtype=np.int64)
    return per_hour, np.concatenate([[0], np.cumsum(per_hour)])


def solve(scenario: Scenario, time_limit_s: float = 30.0, workers: int = 2, seed: int = 0,
          hint: Plan | None = None) -> ExactResult:
    """The cheapest pipelined plan for ``scenario``, proved optimal when the solver finishes within
    ``time_limit_s``, else the best found with its bound. ``hint`` (a plan, such as a heuristic's)
    seeds the search. UsageError when a workload fits no instance type or no plan moves every
    workload within the horizon."""
    s = scenario
    fits = s.fits()
    for i in np.flatnonzero(~fits.any(axis=1)):
        raise UsageError(f"workload {s.names[i]!r} fits no instance type in the catalogue "
                         f"({s.cpu[i]:g} vCPU, {s.memory_gb[i]:g} GB, {s.gpu[i]:g} GPU)")
    instance = cheapest_types(s)
    price = s.instance_price[instance]
    per_hour, CAP = capacity_curve(s)
    data = np.maximum(np.round(s.data_gb * MB_PER_GB).astype(np.int64), 1)  # an empty transfer still takes its hour
    last_end = s.horizon - s.cutover_hours
    earliest = np.searchsorted(CAP, data, side="left")  # the end of each transfer alone from hour 0
    for i in np.flatnonzero(earliest > last_end):
        raise UsageError(f"workload {s.names[i]!r}: {s.data_gb[i]:g} GB cannot cross the link within the {s.horizon} h horizon")
    saving = np.round((s.onprem_cost - price) * SCALE) / SCALE  # $ per hour in the cloud saves, as the model counts it
    began = time.perf_counter()
    solved = _solve_model(s, saving, instance, per_hour, CAP, data, last_end, time_limit_s, workers, seed, hint)
    seconds = time.perf_counter() - began
    if solved is None and hint is not None and hint.outcome is not None:
        # nothing found in time (on large scenarios the presolve alone can take that long): the hint stands
        plan = _polished(s, hint.steps, hint.outcome, f"no plan better than {hint.method}'s found in {seconds:.1f} s (no bound)",
                         time_limit_s)
        return ExactResult(plan=plan, optimal=False, objective=hint.outcome.total_cost, bound=float("nan"),
                           seconds=seconds, model_steps=hint.steps)
    if solved is None:
        raise NoPlanFound(f"exact planner: no plan found within {time_limit_s:g} s, or none moves all {s.n} workloads within the {s.horizon} h horizon")
    steps, objective, bound, optimal = solved
    note = (f"optimal among pipelined plans, proved in {seconds:.2f} s" if optimal else
            f"best found in {seconds:.1f} s; lower bound ${bound:,.2f} (gap {(objective - bound) / max(objective, 1e-9):.1%})")
    model_steps, outcome = steps, replay(s, steps)
    if hint is not None and hint.outcome is not None and plan_rank(hint.outcome) < plan_rank(outcome):
        steps, outcome = hint.steps, hint.outcome  # a plan that overlaps transfers more can be cheaper
        note += f"; the {hint.method} plan is cheaper"
    plan = _polished(s, steps, outcome, note, time_limit_s)
    return ExactResult(plan=plan, optimal=optimal, objective=objective, bound=bound, seconds=seconds, model_steps=model_steps)


def _polished(s: Scenario, steps: tuple[PlanStep, ...], outcome: Outcome, note: str, time_limit_s: float) -> Plan:
    """The exact planner's plan: ``steps`` after the local search, its note saying what that gained."""
    polished, polished_outcome = polish(s, steps, outcome, replays=_polish_replays(time_limit_s))
    if polished_outcome.total_cost < outcome.total_cost - 1e-9:
        note += f"; overlapping transfers lowers it from ${outcome.total_cost:,.2f} to ${polished_outcome.total_cost:,.2f}"
    return Plan("exact", polished, polished_outcome, notes=(note,))


def polish(scenario: Scenario, steps: tuple[PlanStep, ...], outcome: Outcome, replays: int = 200,
           reach: int = 3) -> tuple[tuple[PlanStep, ...], Outcome]:
    """Local search in the env itself: move one step, or every step from one on, or every step up
    to one, by up to ``reach`` hours either way; take the move that lowers the replayed cost most,
    until none does or ``replays`` replays are spent (a count, not a time: the same input gives the
    same plan on any machine); a plan that moved every workload keeps doing so. It
    reaches the plans the model leaves out: a small transfer started in the middle of a large one
    takes its share of the link and both go on."""
    best, best_outcome = tuple(steps), outcome
    n = len(best)
    left = replays
    while left > 0:
        found = None
        for i in range(n):
            for d in (d for r in range(1, reach + 1) for d in (-r, r)):
                for block in (range(i, i + 1), range(i, n), range(0, i + 1)):
                    trial = tuple(sorted((PlanStep(st.workload, st.instance_type, st.start_hour + d) if j in block else st
                                          for j, st in enumerate(best)), key=lambda st: st.start_hour))
                    hours = [st.start_hour for st in trial]
                    if hours[0] < 0 or len(set(hours)) < n:
                        continue
                    left -= 1
                    try:
                        trial_outcome = replay(scenario, trial)
                    except ValueError:  # a dependency would start after its dependent: not a plan the env allows
                        continue
                    if outcome.finish_hour is not None and trial_outcome.finish_hour is None:
                        continue  # a plan that moves everything stays one that does
                    if trial_outcome.total_cost < (found[1] if found else best_outcome).total_cost - 1e-9:
                        found = (trial, trial_outcome)
            if left <= 0:
                break
        if found is None:
            break
        best, best_outcome = found
    return best, best_outcome


def _polish_replays(time_limit_s: float) -> int:
    """The local search's budget: 40 replays per second the solver may take (a replay of a 12-service
    plan over 14 days takes about 15 ms here, so about 60% of the solver's time), at least 100."""
    return max(100, int(40 * time_limit_s))


def _solve_model(s: Scenario, saving: np.ndarray, instance: np.ndarray, per_hour: np.ndarray, CAP: np.ndarray,
                  data: np.ndarray, last_end: int, time_limit_s: float, workers: int, seed: int, hint: Plan | None):
    """The CP-SAT model with every transfer ended by hour ``last_end``: (steps, objective $, bound $,
    optimal), or None when no such plan exists or none was found in time."""
    from ortools.sat.python import cp_model

    n, T = s.n, last_end
    CAP = CAP[:T + 1]
    top = int(CAP[T]) + int(data.max())

    def units(dollars: float) -> int:
        return int(round(dollars * SCALE))

    m = cp_model.CpModel()
    start, end, mark, variables = [], [], [], []
    for i in range(n):
        alone = np.searchsorted(CAP, CAP[:T] + data[i], side="left")  # end hour of a transfer alone on the link
        allowed = np.flatnonzero(alone <= T)
        if not len(allowed):
            return None
        st = m.NewIntVarFromDomain(cp_model.Domain.FromValues(allowed.tolist()), f"start_{i}")
        en = m.NewIntVar(1, T, f"end_{i}")
        m.Add(en >= st + 1)
        cap_at_start = m.NewIntVar(0, top, f"cap_at_start_{i}")
        m.AddElement(st, CAP[:T].tolist(), cap_at_start)
        before = m.NewIntVar(0, top, f"pred_mark_{i}")  # where the previous transfer left the link
        begin = m.NewIntVar(0, top, f"begin_{i}")
        m.AddMaxEquality(begin, [cap_at_start, before])
        fin = m.NewIntVar(0, top, f"mark_{i}")
        m.Add(fin == begin + int(data[i]))
        # the end hour is the first whose cumulative capacity reaches the mark
        cap_at_end, cap_before_end = m.NewIntVar(0, top, f"cap_end_{i}"), m.NewIntVar(0, top, f"cap_end1_{i}")
        m.AddElement(en, CAP.tolist(), cap_at_end)
        m.AddElement(en - 1, CAP.tolist(), cap_before_end)
        m.Add(fin <= cap_at_end)
        m.Add(fin > cap_before_end)
        cap_there = m.NewIntVar(0, int(per_hour.max()), f"cap_there_{i}")  # the link's MB in its first hour
        m.AddElement(st, per_hour[:T].tolist(), cap_there)
        start.append(st), end.append(en), mark.append((fin, before, cap_at_start, cap_there))
        variables.append(dict(start=st, end=en, cap_at_start=cap_at_start, before=before, begin=begin, fin=fin,
                              cap_at_end=cap_at_end, cap_before_end=cap_before_end, cap_there=cap_there))

    # the order of the transfers: a circuit through them from node 0 (before the first, after the last)
    arcs, joins, links = [], [], {}
    for j in range(n):
        first, lastj = m.NewBoolVar(f"first_{j}"), m.NewBoolVar(f"last_{j}")
        arcs += [(0, j + 1, first), (j + 1, 0, lastj)]
        variables[j].update(first=first, last=lastj)
        m.Add(mark[j][1] == 0).OnlyEnforceIf(first)
    quick = []
    for j in range(n):
        q = m.NewBoolVar(f"quick_{j}")  # it ends in the hour it starts
        m.Add(end[j] == start[j] + 1).OnlyEnforceIf(q)
        m.Add(end[j] >= start[j] + 2).OnlyEnforceIf(q.Not())
        quick.append(q)
        variables[j]["quick"] = q
    for i in range(n):
        for j in range(n):
            if i == j or s.depends[i, j]:  # i depends on j: i cannot come before j
                continue
            arc, join = m.NewBoolVar(f"arc_{i}_{j}"), m.NewBoolVar(f"join_{i}_{j}")
            arcs.append((i + 1, j + 1, arc))
            m.AddImplication(join, arc)
            m.Add(mark[j][1] == mark[i][0]).OnlyEnforceIf(arc)
            m.Add(start[j] >= start[i] + 1).OnlyEnforceIf(arc)
            m.Add(start[j] >= end[i]).OnlyEnforceIf([arc, join.Not()])
            m.Add(start[j] == end[i] - 1).OnlyEnforceIf(join)
            # sharing that hour, i still finishes in it: its remainder is at most half the hour, or both finish
            m.Add(2 * (mark[i][0] - mark[j][2]) <= mark[j][3]).OnlyEnforceIf([join, quick[j].Not()])
            joins.append(join)
            links[i, j] = (arc, join)
    m.AddCircuit(arcs)
    for i, j in zip(*np.nonzero(s.depends)):
        m.Add(start[i] >= start[j] + 1)

    # the env's cost, term by term (constants apart); a workload is in the cloud from end + C
    terms = []
    for i in range(n):
        terms.append(units(saving[i]) * end[i])  # on-prem until it is in the cloud, cloud from cutover
        terms.append(units(s.link_price) * (end[i] - start[i]))  # the port, while the link carries it ...
        deps = np.flatnonzero(s.depends[i])
        if len(deps) and s.traffic_rps[i] > 0:
            group = [end[i]] + [end[j] for j in deps]
            lo, hi = m.NewIntVar(0, T, f"first_cloud_{i}"), m.NewIntVar(0, T, f"last_cloud_{i}")
            m.AddMinEquality(lo, group)
            m.AddMaxEquality(hi, group)
            terms.append(units(s.cross_site_cost_per_krps_hour * s.traffic_rps[i] / 1000) * (hi - lo))
    terms += [-units(s.link_price) * join for join in joins]  # ... counting a shared hour once
    m.Minimize(sum(terms))

    if hint is not None:
        _add_hint(m, s, hint, variables, links, CAP, per_hour, data)

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(float(time_limit_s), 0.1)
    solver.parameters.num_workers = int(workers)
    solver.parameters.random_seed = int(seed)
    status = solver.Solve(m)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    order = sorted(range(n), key=lambda i: solver.Value(start[i]))
    steps = tuple(PlanStep(s.names[i], s.instance_names[instance[i]], int(solver.Value(start[i]))) for i in order)
    constant = fixed_cost(s, s.instance_price[instance])
    return (steps, solver.ObjectiveValue() / SCALE + constant, solver.BestObjectiveBound() / SCALE + constant,
            status == cp_model.OPTIMAL)


def _add_hint(m, s: Scenario, hint: Plan, variables: list[dict], links: dict, CAP: np.ndarray, per_hour: np.ndarray,
              data: np.ndarray) -> None:
    """Hint every variable when ``hint`` is a plan the model holds (a serial or pipelined plan, such as
    greedy's), so the search starts from it even on large scenarios; else hint the start hours."""
    index = {name: i for i, name in enumerate(s.names)}
    order = [index[st.workload] for st in sorted(hint.steps, key=lambda st: st.start_hour) if st.workload in index]
    hours = {index[st.workload]: st.start_hour for st in hint.steps if st.workload in index}
    values: dict = {}
    prev, prev_fin, prev_end = None, 0, 0
    for i in order:
        st = hours[i]
        if st >= len(CAP) - 1:
            values = None
            break
        begin = max(int(CAP[st]), prev_fin)
        fin = begin + int(data[i])
        en = int(np.searchsorted(CAP, fin, side="left"))
        join = prev is not None and st == prev_end - 1
        quick = en == st + 1
        if en >= len(CAP) or (prev is not None and st < prev_end - 1) or \
                (join and not quick and 2 * (prev_fin - int(CAP[st])) > int(per_hour[st])) or \
                (prev is not None and (prev, i) not in links):
            values = None  # not a plan the model holds
            break
        v = variables[i]
        values.update({v["start"]: st, v["end"]: en, v["cap_at_start"]: int(CAP[st]), v["before"]: prev_fin, v["begin"]: begin,
                       v["fin"]: fin, v["cap_at_end"]: int(CAP[en]), v["cap_before_end"]: int(CAP[en - 1]),
                       v["cap_there"]: int(per_hour[st]), v["quick"]: int(quick), v["first"]: int(prev is None), v["last"]: 0})
        if prev is not None:
            values[links[prev, i][0]], values[links[prev, i][1]] = 1, int(join)
        prev, prev_fin, prev_end = i, fin, en
    if values and len(order) == s.n:
        values[variables[prev]["last"]] = 1
        for (i, j), (arc, join) in links.items():
            values.setdefault(arc, 0), values.setdefault(join, 0)
        for var, value in values.items():
            m.AddHint(var, value)
    else:
        for i, st in hours.items():
            m.AddHint(variables[i]["start"], st)
