"""``VectorCloudMigrationEnv``: N copies of ``CloudMigrationEnv`` stepped together in numpy.

Every copy's scenario is padded to ``max_workloads`` and stacked, so a step is a fixed number of
array operations whatever N is: no Python loop over the copies. Sub-env ``j`` reset with seed
``s + j`` draws the same scenario and follows the same dynamics as a ``CloudMigrationEnv`` reset
with seed ``s + j`` (the tests check them step by step). Only resets, once per episode, draw each
new scenario in Python.

Autoreset is ``SAME_STEP``: when a copy's episode ends, the step returns its first observation of
the next episode; the last observation of the finished one is in ``info["final_obs"]`` (a dict of
batched arrays, valid where ``info["_final_obs"]``), with ``info["final_total_cost"]`` and
``info["final_hours"]`` for logging. The time limit is the scenario's horizon, so a truncated
episode can be bootstrapped from ``final_obs``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from lepton_core.sim.env import (
    CLOUD, CUTOVER, DAY, FEATURE_MAX, ONPREM, REWARD_SCALE, TRANSFER, WORKLOAD_FEATURES,
    CloudMigrationEnv, water_fill_batch,
)
from lepton_core.sim.scenario import GB_PER_HOUR_PER_GBPS, Scenario, generate


class VectorCloudMigrationEnv(VectorEnv):
    """N cloud-migration simulations in lockstep; see the module docstring and ``CloudMigrationEnv``."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int, max_workloads: int = 16, min_workloads: int = 4, horizon: int = 14 * DAY) -> None:
        self.num_envs = num_envs
        self.max_workloads, self.min_workloads, self.horizon = max_workloads, min_workloads, horizon
        single = CloudMigrationEnv(max_workloads=max_workloads, min_workloads=min_workloads, horizon=horizon)
        self.n_types = single.n_types
        self.single_observation_space = single.observation_space
        self.single_action_space = single.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        N, M, K = num_envs, max_workloads, self.n_types
        f = np.zeros
        self.valid = f((N, M), bool)
        self.cpu, self.memory_gb, self.gpu = f((N, M)), f((N, M)), f((N, M))
        self.data_gb, self.traffic, self.onprem_cost = f((N, M)), f((N, M)), f((N, M))
        self.depends = f((N, M, M), bool)
        self.depends_f = f((N, M, M), np.float32)  # for counting unstarted dependencies with one batched matmul
        self.static = f((N, M, WORKLOAD_FEATURES), np.float32)  # the features that do not change in an episode
        self.fits = f((N, M, K), bool)
        self.cheapest = f((N, M))
        self.price = f((N, K))
        self.link_gbps, self.link_eff, self.link_price, self.per_gb = f(N), f(N), f(N), f(N)
        self.bandwidth = f((N, horizon))
        self._factor_len = np.ones(N, np.int64)  # each scenario's own bandwidth period (hours)
        self.cutover_hours, self.downtime_minutes = f(N, np.int64), f(N)
        self.downtime_rate, self.cross_rate, self.horizons = f(N), f(N), f(N, np.int64)
        self.phase, self.instance = f((N, M), np.int64), np.full((N, M), -1, np.int64)
        self.remaining, self.cutover_left = f((N, M)), f((N, M), np.int64)
        self.hour, self.total_cost, self.n = f(N, np.int64), f(N), f(N, np.int64)
        self._rngs: list[np.random.Generator] = [seeding.np_random(None)[0] for _ in range(N)]

    # -- scenarios ------------------------------------------------------------------------------
    def _load(self, j: int, s: Scenario) -> None:
        if s.n > self.max_workloads or s.k != self.n_types or len(s.bandwidth_factor) < 1:
            raise ValueError(f"scenario for env {j}: {s.n} workloads on {s.k} types; this env holds {self.max_workloads} on {self.n_types}")
        n = s.n
        for arr in (self.valid, self.cpu, self.memory_gb, self.gpu, self.data_gb, self.traffic, self.onprem_cost, self.depends, self.fits):
            arr[j] = 0
        self.valid[j, :n] = True
        self.cpu[j, :n], self.memory_gb[j, :n], self.gpu[j, :n] = s.cpu, s.memory_gb, s.gpu
        self.data_gb[j, :n], self.traffic[j, :n], self.onprem_cost[j, :n] = s.data_gb, s.traffic_rps, s.onprem_cost
        self.depends[j, :n, :n] = s.depends
        self.fits[j, :n] = s.fits()
        self.cheapest[j] = 0.0
        self.cheapest[j, :n] = np.where(self.fits[j, :n], s.instance_price[None, :], np.inf).min(axis=1)
        self.depends_f[j] = self.depends[j]
        static = self.static[j]
        static[:] = 0.0
        static[:, 0], static[:, 1], static[:, 2] = self.cpu[j] / 64, self.memory_gb[j] / 512, self.gpu[j] / 8
        static[:, 3], static[:, 5], static[:, 6] = np.log1p(self.data_gb[j]) / 10, self.traffic[j] / 5000, self.onprem_cost[j] / 10
        static[:, 7] = self.cheapest[j] / 10
        static[:, 12], static[:, 13] = self.depends[j].sum(axis=1) / 8, self.depends[j].sum(axis=0) / 8
        self.price[j] = s.instance_price
        self.link_gbps[j], self.link_eff[j], self.link_price[j], self.per_gb[j] = s.link_gbps, s.link_efficiency, s.link_price, s.transfer_per_gb
        reps = -(-self.horizon // len(s.bandwidth_factor))
        self.bandwidth[j] = np.tile(s.bandwidth_factor, reps)[: self.horizon] if len(s.bandwidth_factor) != self.horizon else s.bandwidth_factor
        self._factor_len[j] = len(s.bandwidth_factor)
        self.cutover_hours[j], self.downtime_minutes[j] = s.cutover_hours, s.downtime_minutes
        self.downtime_rate[j], self.cross_rate[j], self.horizons[j] = s.downtime_cost_per_krps_minute, s.cross_site_cost_per_krps_hour, s.horizon
        self.phase[j], self.instance[j], self.remaining[j], self.cutover_left[j] = ONPREM, -1, 0.0, 0
        self.remaining[j, :n] = s.data_gb
        self.hour[j], self.total_cost[j], self.n[j] = 0, 0.0, n

    def _new_episode(self, j: int, options: dict[str, Any] | None) -> None:
        scenarios = (options or {}).get("scenarios")
        if scenarios is not None:
            self._load(j, scenarios[j])
            return
        rng = self._rngs[j]
        n = int(rng.integers(self.min_workloads, self.max_workloads + 1))
        self._load(j, generate(rng, n, self.horizon))

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            seeds = seed if isinstance(seed, list) else [seed + j for j in range(self.num_envs)]
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
        for j in range(self.num_envs):
            self._new_episode(j, options)
        return self._observation(), self._info()

    # -- dynamics -------------------------------------------------------------------------------
    def _ready(self) -> np.ndarray:
        """(N, M): every dependency of the workload has started."""
        unstarted = (self.phase == ONPREM).astype(np.float32)[:, :, None]
        return (self.depends_f @ unstarted)[:, :, 0] == 0

    def action_mask(self, ready: np.ndarray | None = None) -> np.ndarray:
        """(N, 1 + M*K) int8: 1 where the action is valid now (waiting always is)."""
        ready = self._ready() if ready is None else ready
        can = self.valid & (self.phase == ONPREM) & ready
        mask = np.empty((self.num_envs, 1 + self.max_workloads * self.n_types), np.int8)
        mask[:, 0] = 1
        mask[:, 1:] = (can[:, :, None] & self.fits).reshape(self.num_envs, -1)
        return mask

    def _link_gb(self, hour: np.ndarray) -> np.ndarray:
        rows = np.arange(self.num_envs)
        return self.link_gbps * self.link_eff * GB_PER_HOUR_PER_GBPS * self.bandwidth[rows, hour % self._factor_len]

    def step(self, actions):
        N, K = self.num_envs, self.n_types
        rows = np.arange(N)
        actions = np.asarray(actions, dtype=np.int64).reshape(N)
        mask = self.action_mask()
        inside = (actions >= 0) & (actions < mask.shape[1])
        ok = inside & (mask[rows, np.clip(actions, 0, mask.shape[1] - 1)] == 1)
        refused = ~ok
        actions = np.where(ok, actions, 0)
        start = actions > 0
        i, k = np.divmod(np.maximum(actions - 1, 0), K)
        self.phase[rows[start], i[start]] = TRANSFER
        self.instance[rows[start], i[start]] = k[start]

        in_cloud = self.valid & (self.phase == CLOUD)
        dual = self.valid & (self.phase == CUTOVER)
        transferring = self.valid & (self.phase == TRANSFER)
        inst_price = np.take_along_axis(self.price, np.maximum(self.instance, 0), axis=1)
        onprem = (self.onprem_cost * (self.valid & ~in_cloud)).sum(axis=1)
        cloud = (inst_price * (in_cloud | dual)).sum(axis=1)
        link = np.where(transferring.any(axis=1), self.link_price, 0.0)
        first_hour = dual & (self.cutover_left == self.cutover_hours[:, None])
        downtime = self.downtime_minutes * self.downtime_rate * (self.traffic * first_hour).sum(axis=1) / 1000
        split = (self.depends & (in_cloud[:, :, None] != in_cloud[:, None, :])).any(axis=2)
        cross = self.cross_rate * (self.traffic * split).sum(axis=1) / 1000

        moved = water_fill_batch(self.remaining, transferring, self._link_gb(self.hour))
        self.remaining = self.remaining - moved
        self.remaining[np.abs(self.remaining) < 1e-9] = 0.0
        transfer = self.per_gb * moved.sum(axis=1)

        self.cutover_left = np.where(dual, self.cutover_left - 1, self.cutover_left)
        self.phase[dual & (self.cutover_left <= 0)] = CLOUD
        done_moving = transferring & (self.remaining <= 0)
        self.phase[done_moving] = CUTOVER
        self.cutover_left[done_moving] = np.broadcast_to(self.cutover_hours[:, None], done_moving.shape)[done_moving]

        self.hour = self.hour + 1
        terminated = ((self.phase == CLOUD) | ~self.valid).all(axis=1)
        truncated = ~terminated & (self.hour >= self.horizons)
        # the finishing step pays the cloud instances to the end of the horizon (instances do not change after a start)
        after = np.where(terminated, (inst_price * self.valid).sum(axis=1) * np.maximum(0, self.horizons - self.hour), 0.0)
        hour_cost = onprem + cloud + link + downtime + cross + transfer + after
        self.total_cost = self.total_cost + hour_cost
        rewards = -hour_cost / REWARD_SCALE

        done = terminated | truncated
        ready = self._ready()
        info = self._info(ready)
        info["cost"] = {"onprem": onprem, "cloud": cloud, "link": link, "downtime": downtime, "cross_site": cross,
                        "transfer": transfer, "cloud_after": after}
        info["refused"], info["_refused"] = refused, refused
        if done.any():
            info["final_obs"], info["_final_obs"] = self._observation(ready), done
            info["final_total_cost"], info["final_hours"] = self.total_cost.copy(), self.hour.copy()
            for j in np.flatnonzero(done):
                self._new_episode(int(j), None)
            ready = self._ready()
            info.update(self._info(ready))
        return self._observation(ready), rewards, terminated, truncated, info

    # -- views ----------------------------------------------------------------------------------
    def _observation(self, ready: np.ndarray | None = None) -> dict[str, np.ndarray]:
        v = self.valid
        ready = self._ready() if ready is None else ready
        rows = self.static.copy()
        rows[..., 4] = np.where(self.data_gb > 0, self.remaining / np.maximum(self.data_gb, 1e-9), 0.0)
        rows[..., 8:12] = (self.phase[:, :, None] == np.arange(4)) & v[:, :, None]
        rows[..., 14] = v & ready
        price = np.take_along_axis(self.price, np.maximum(self.instance, 0), axis=1)
        rows[..., 15] = np.where(self.instance >= 0, price, 0.0) / 10
        hour_of_day = self.hour % DAY
        n = np.maximum(self.n, 1)
        nominal = self.link_gbps * self.link_eff * GB_PER_HOUR_PER_GBPS
        glob = np.stack([
            self._link_gb(self.hour) / 1000, nominal / 1000, np.sin(2 * np.pi * hour_of_day / DAY), np.cos(2 * np.pi * hour_of_day / DAY),
            self.hour / self.horizons, self.total_cost / 10_000, (v & (self.phase == TRANSFER)).sum(axis=1) / n,
            (v & (self.phase == CLOUD)).sum(axis=1) / n,
        ], axis=1).astype(np.float32)
        return {"workloads": np.minimum(rows, FEATURE_MAX), "workload_mask": v.astype(np.int8),
                "globals": np.clip(glob, -1.0, FEATURE_MAX)}

    def _info(self, ready: np.ndarray | None = None) -> dict[str, Any]:
        return {"action_mask": self.action_mask(ready), "total_cost": self.total_cost.copy(), "hour": self.hour.copy()}

