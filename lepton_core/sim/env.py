"""``CloudMigrationEnv``: the migration of a system's workloads to a cloud, one simulated hour per step."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lepton_core.sim.scenario import DAY, Scenario, generate, generate_batch, next_keys, seed_state

ONPREM, TRANSFER, CUTOVER, CLOUD = 0, 1, 2, 3
WORKLOAD_FEATURES = 16
GLOBAL_FEATURES = 8
REWARD_SCALE = 100.0  # dollars per unit of reward
FEATURE_MAX = 1e6  # observation bound (features are scaled to about 0-1; this only caps the extreme)


def water_fill_flows(need: np.ndarray, row: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """GB each transfer moves this hour when the transfers of each link share its ``capacity``
    fairly: equal shares, and what a transfer needs less of goes to the others (max-min fairness,
    as TCP flows on one link). ``need`` (T,) is what each transfer has left, ``row`` (T,) the link
    (row of ``capacity``, (N,)) it crosses; the transfers come as a flat list so that the work is
    proportional to the transfers, not to every workload slot.

    By rounds: the transfers that need no more than the equal share of what is left take their
    need, until a round satisfies no one; the others get that share. The first round runs on every
    link; the later ones only on the links where it satisfied some transfers but not all."""
    N = len(capacity)
    count = np.bincount(row, minlength=N)
    level = capacity / np.maximum(count, 1)  # (links without transfers: any level, they have none)
    satisfied = need <= level[row]
    took = np.bincount(row, satisfied, minlength=N)
    again = (took > 0) & (took < count)
    if again.any():
        on = again[row]
        need_a, row_a, sat = need[on], row[on], satisfied[on]
        while True:
            left = count - np.bincount(row_a, sat, minlength=N)  # open transfers (none: every one has its need)
            sub = (capacity - np.bincount(row_a, np.where(sat, need_a, 0.0), minlength=N)) / np.maximum(left, 1)
            np.putmask(sub, left <= 0, np.inf)
            new = ~sat & (need_a <= sub[row_a])
            if not new.any():
                break
            sat |= new
        level[again] = sub[again]
    # a satisfied transfer needs no more than the final level: min() gives it its need
    return np.minimum(need, level[row])


def water_fill_rows(remaining: np.ndarray, active: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """``water_fill_flows`` over (N, M) slots, the ``active`` ones transferring on their row's link."""
    at = np.flatnonzero(active)
    moved = np.zeros(remaining.shape)
    moved.reshape(-1)[at] = water_fill_flows(remaining.reshape(-1)[at], at // remaining.shape[1], capacity)
    return moved


def water_fill(remaining: np.ndarray, capacity: float) -> np.ndarray:
    """``water_fill_flows`` for one set of transfers on one link."""
    return water_fill_flows(np.asarray(remaining, float), np.zeros(len(remaining), np.int64), np.array([capacity]))


class CloudMigrationEnv(gym.Env):
    """Move a system's workloads from an on-prem site to a cloud at the least cost.

    The world is a ``Scenario``: workloads with CPU, memory, GPU demand, data to move, traffic, an
    hourly on-prem cost and dependencies; the cloud's priced instance types; one network link whose
    bandwidth varies hour by hour (seeded, lower in business hours). A workload goes on-prem ->
    transfer (its data crosses the link; concurrent transfers share it fairly) -> cutover (dual
    running for ``cutover_hours``, with ``downtime_minutes`` of downtime in its first hour) -> cloud.

    ## Action Space

    ``Discrete(1 + max_workloads * K)`` for K instance types. Action 0 waits. Action
    ``1 + i * K + k`` starts migrating workload ``i`` onto instance type ``k``. It is valid when
    workload ``i`` exists and is still on-prem, every workload it depends on has started, and type
    ``k`` meets its CPU, memory and GPU demand (and its pin, if the spec pins one). Waiting is
    always valid. ``info["action_mask"]`` (int8, one entry per action) says which are. An invalid
    action is refused: nothing starts, the hour passes as a wait, and ``info["refused"]`` says why
    (with ``strict=True``, ``step`` raises a ``ValueError`` with that reason instead).

    ## Observation Space

    A ``Dict`` of fixed-size arrays, so that one policy serves every scenario up to
    ``max_workloads``:

    - ``workloads``: ``Box((max_workloads, 16), float32)``, one row per workload slot: CPU/64,
      memory/512, GPUs/8, log1p(data GB)/10, share of its data still to move, traffic/5000,
      on-prem $/h/10, $/h/10 of the cheapest instance that fits, its phase one-hot (4), number of
      dependencies/8, number of dependents/8, whether all its dependencies have started, and $/h/10
      of the instance it was given (0 until then). Rows past the scenario's size are zero.
    - ``workload_mask``: ``MultiBinary(max_workloads)``, 1 for the slots that hold a workload.
    - ``globals``: ``Box((8,), float32)``: the link's GB this hour/1000, its nominal GB/h/1000, the
      hour of day as sine and cosine, elapsed share of the horizon, cost so far/10,000, transfers in
      flight/workloads, share of workloads in the cloud.
    - ``instance_price``: ``Box((K,), float32)``, each instance type's $/h/10 in this scenario (prices
      differ from one scenario to the next), so a policy can tell which type that fits is cheapest.

    ## Rewards

    Minus the hour's cost in hundreds of dollars: on-prem running cost of every workload not yet in
    the cloud, cloud instances of workloads in cutover or in the cloud (so cutover pays both), the
    link's port price in any hour with a transfer, the price per GB moved, and SLA penalties: a
    workload whose dependency is on the other side of the link pays ``cross_site_cost_per_krps_hour``
    per 1,000 requests/s it serves, and a cutover pays ``downtime_cost_per_krps_minute`` per minute
    down per 1,000 requests/s. The step that moves the last workload to the cloud also pays its
    cloud instances for the rest of the horizon (``cloud_after``), so every episode costs the same
    span of time and finishing early cannot hide oversized instances. ``info["cost"]`` has the
    hour's breakdown in dollars and ``info["total_cost"]`` the episode's so far.

    ## Starting State

    Every workload on-prem at hour 0. The scenario is the one given to the constructor, or one
    drawn by ``generate_batch`` (between ``min_workloads`` and ``max_workloads`` workloads) from
    the next key of a generator that the reset's seed sets: reset with seed ``s`` and then without
    a seed, it plays the same scenarios as the vector twin's copy seeded ``s``.
    ``reset(options={"scenario": s})`` replaces it.

    ## Episode End

    Terminated when every workload is in the cloud. Truncated when the scenario's horizon (hours)
    runs out first; the workloads left on-prem simply stay there (the cost so far is the episode's).
    """

    metadata = {"render_modes": []}

    def __init__(self, scenario: Scenario | None = None, max_workloads: int = 16, min_workloads: int = 4,
                 horizon: int = 14 * DAY, strict: bool = False) -> None:
        if scenario is not None and scenario.n > max_workloads:
            raise ValueError(f"the scenario has {scenario.n} workloads; this env holds at most {max_workloads}")
        self.fixed = scenario
        self.strict = strict
        self.max_workloads = max_workloads
        self.min_workloads = min_workloads
        self.horizon = scenario.horizon if scenario is not None else horizon
        self.scenario = scenario if scenario is not None else generate(np.random.default_rng(0), max_workloads, horizon)
        self._state = seed_state([int(np.random.default_rng().integers(2**62))])  # generator of scenario keys
        self.n_types = self.scenario.k
        self.action_space = spaces.Discrete(1 + max_workloads * self.n_types)
        self.observation_space = spaces.Dict({
            "workloads": spaces.Box(0.0, FEATURE_MAX, (max_workloads, WORKLOAD_FEATURES), np.float32),
            "workload_mask": spaces.MultiBinary(max_workloads),
            "globals": spaces.Box(-1.0, FEATURE_MAX, (GLOBAL_FEATURES,), np.float32),
            "instance_price": spaces.Box(0.0, FEATURE_MAX, (self.n_types,), np.float32),
        })

    # -- episode --------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._state = seed_state([seed])
        if options and "scenario" in options:
            self.scenario = options["scenario"]
        elif self.fixed is None:
            self.scenario = generate_batch(next_keys(self._state), self.min_workloads, self.max_workloads,
                                           horizon=self.horizon).scenario(0)
        s = self.scenario
        if s.n > self.max_workloads or s.k != self.n_types:
            raise ValueError(f"the scenario has {s.n} workloads and {s.k} instance types; this env holds at most "
                             f"{self.max_workloads} workloads on {self.n_types} types")
        self._fits = s.fits()
        self._cheapest = np.where(self._fits, s.instance_price[None, :], np.inf).min(axis=1)
        self.phase = np.zeros(s.n, dtype=np.int64)
        self.instance = np.full(s.n, -1, dtype=np.int64)
        self.remaining = s.data_gb.astype(np.float64).copy()
        self.cutover_left = np.zeros(s.n, dtype=np.int64)
        self.hour = 0
        self.total_cost = 0.0
        self._last_gb = s.link_gb_per_hour(0)
        return self._observation(), self._info({})

    def action_mask(self) -> np.ndarray:
        """int8 mask over the action space: 1 where the action is valid now."""
        s = self.scenario
        mask = np.zeros(self.action_space.n, dtype=np.int8)
        mask[0] = 1
        started = self.phase >= TRANSFER
        ready = (self.phase == ONPREM) & ~(s.depends & ~started[None, :]).any(axis=1)
        grid = (ready[:, None] & self._fits).astype(np.int8)
        mask[1:1 + s.n * self.n_types] = grid.reshape(-1)
        return mask

    def observe(self) -> dict[str, np.ndarray]:
        """The observation of the current state (what the last ``reset`` or ``step`` returned)."""
        return self._observation()

    def decode(self, action: int) -> tuple[int, int] | None:
        """(workload, instance type) of a start action; None for waiting."""
        return None if action == 0 else divmod(int(action) - 1, self.n_types)

    def step(self, action: int):
        s = self.scenario
        action = int(action)
        refused = None
        if not 0 <= action < self.action_space.n or not self.action_mask()[action]:
            refused = f"action {action} is not valid at hour {self.hour}: {self._why_invalid(action)}"
            if self.strict:
                raise ValueError(refused)
            action = 0
        if action:
            i, k = self.decode(action)
            self.phase[i], self.instance[i] = TRANSFER, k

        # costs of this hour, from the phases as the hour begins
        in_cloud = self.phase == CLOUD
        dual = self.phase == CUTOVER
        transferring = self.phase == TRANSFER
        cost = {
            "onprem": float(s.onprem_cost[~in_cloud].sum()),
            "cloud": float(s.instance_price[self.instance[in_cloud | dual]].sum()),
            "link": s.link_price if transferring.any() else 0.0,
        }
        first_hour = dual & (self.cutover_left == s.cutover_hours)
        cost["downtime"] = float(s.downtime_minutes * s.downtime_cost_per_krps_minute * s.traffic_rps[first_hour].sum() / 1000)
        split = s.depends & (in_cloud[:, None] != in_cloud[None, :])
        cost["cross_site"] = float(s.cross_site_cost_per_krps_hour * (s.traffic_rps * split.any(axis=1)).sum() / 1000)

        # data moves; cutovers run
        capacity = s.link_gb_per_hour(self.hour)
        moved = np.zeros(s.n)
        if transferring.any():
            moved[transferring] = water_fill(self.remaining[transferring], capacity)
        self.remaining -= moved
        self.remaining[transferring & (self.remaining < 1e-9)] = 0.0  # (float residue of what moved; never negative)
        cost["transfer"] = float(s.transfer_per_gb * moved.sum())

        self.cutover_left[dual] -= 1
        self.phase[dual & (self.cutover_left <= 0)] = CLOUD
        done_moving = transferring & (self.remaining <= 0)
        self.phase[done_moving] = CUTOVER
        self.cutover_left[done_moving] = s.cutover_hours

        self.hour += 1
        terminated = bool((self.phase == CLOUD).all())
        truncated = not terminated and self.hour >= s.horizon
        # every episode is charged over the same horizon: a plan that finishes early still pays its
        # cloud instances to the end, so a cheap finish is not bought with oversized instances
        cost["cloud_after"] = float(s.instance_price[self.instance].sum() * max(0, s.horizon - self.hour)) if terminated else 0.0
        hour_cost = sum(cost.values())
        self.total_cost += hour_cost
        self._last_gb = s.link_gb_per_hour(self.hour)
        info = self._info(cost)
        if refused:
            info["refused"] = refused
        return self._observation(), -hour_cost / REWARD_SCALE, terminated, truncated, info

    # -- views ----------------------------------------------------------------------------------
    def _why_invalid(self, action: int) -> str:
        if not 0 <= action < self.action_space.n:
            return f"outside 0..{self.action_space.n - 1}"
        i, k = self.decode(action)
        s = self.scenario
        if i >= s.n:
            return f"there is no workload {i} (the scenario has {s.n})"
        name, itype = s.names[i], s.instance_names[k]
        if self.phase[i] != ONPREM:
            return f"workload {name!r} has already started"
        reasons = []
        waiting = [s.names[j] for j in np.flatnonzero(s.depends[i] & (self.phase == ONPREM))]
        if waiting:
            reasons.append(f"workload {name!r} depends on {', '.join(waiting)}, not started yet")
        if not self._fits[i, k]:
            pin = f"; it is pinned to {s.instance_names[s.pinned[i]]}" if len(s.pinned) and s.pinned[i] >= 0 else ""
            reasons.append(f"{itype} does not fit workload {name!r} ({s.cpu[i]:g} vCPU, {s.memory_gb[i]:g} GB, {s.gpu[i]:g} GPU{pin})")
        return "; ".join(reasons)

    def _observation(self) -> dict[str, np.ndarray]:
        s = self.scenario
        m = self.max_workloads
        rows = np.zeros((m, WORKLOAD_FEATURES), dtype=np.float32)
        started = self.phase >= TRANSFER
        n = s.n
        rows[:n, 0] = s.cpu / 64
        rows[:n, 1] = s.memory_gb / 512
        rows[:n, 2] = s.gpu / 8
        rows[:n, 3] = np.log1p(s.data_gb) / 10
        rows[:n, 4] = np.where(s.data_gb > 0, self.remaining / np.maximum(s.data_gb, 1e-9), 0.0)
        rows[:n, 5] = s.traffic_rps / 5000
        rows[:n, 6] = s.onprem_cost / 10
        rows[:n, 7] = self._cheapest / 10
        rows[np.arange(n), 8 + self.phase] = 1.0
        rows[:n, 12] = s.depends.sum(axis=1) / 8
        rows[:n, 13] = s.depends.sum(axis=0) / 8
        rows[:n, 14] = ~(s.depends & ~started[None, :]).any(axis=1)
        rows[:n, 15] = np.where(self.instance >= 0, s.instance_price[np.maximum(self.instance, 0)], 0.0) / 10
        mask = np.zeros(m, dtype=np.int8)
        mask[:n] = 1
        hour_of_day = self.hour % DAY
        nominal = s.link_gbps * s.link_efficiency * 450.0
        glob = np.array([
            self._last_gb / 1000, nominal / 1000, np.sin(2 * np.pi * hour_of_day / DAY), np.cos(2 * np.pi * hour_of_day / DAY),
            self.hour / s.horizon, self.total_cost / 10_000, (self.phase == TRANSFER).sum() / n, (self.phase == CLOUD).sum() / n,
        ], dtype=np.float32)
        return {"workloads": np.clip(rows, 0.0, FEATURE_MAX), "workload_mask": mask, "globals": np.clip(glob, -1.0, FEATURE_MAX),
                "instance_price": np.minimum(s.instance_price / 10, FEATURE_MAX).astype(np.float32)}

    def _info(self, cost: dict[str, float]) -> dict[str, Any]:
        return {"action_mask": self.action_mask(), "cost": cost, "total_cost": self.total_cost, "hour": self.hour}


gym.register(id="lepton/CloudMigration-v0", entry_point="lepton_core.sim.env:CloudMigrationEnv")
