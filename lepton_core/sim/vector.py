"""``VectorCloudMigrationEnv``: N copies of ``CloudMigrationEnv`` stepped together in numpy.

Every copy's scenario is padded to ``max_workloads`` slots and stacked, so a step is a fixed number
of array operations whatever N is: no Python loop over the copies. Sub-env ``j`` reset with seed
``s + j`` draws the same scenarios and follows the same dynamics as a ``CloudMigrationEnv`` reset
with seed ``s + j`` (the tests check them step by step, autoresets included).

Autoreset is ``SAME_STEP``: when a copy's episode ends, the step returns its first observation of
the next episode; the last observation of the finished one is in ``info["final_obs"]`` (a dict of
batched arrays, valid where ``info["_final_obs"]``, zero elsewhere), with
``info["final_total_cost"]`` and ``info["final_hours"]`` for logging. The time limit is the
scenario's horizon, so a truncated episode can be bootstrapped from ``final_obs``.

How it is fast (the PPO planner trains on it; ``benchmarks/simulator.py`` measures it):

- dependencies are bit sets (a uint64 word per 64 workloads), so "have all its dependencies
  started" and "does it call across the link" are a few integer operations per copy, not
  (N, M, M) arrays;
- sums over a copy's workloads are matrix-vector products (BLAS), not reductions along a short axis;
- the workload features and the action mask are kept up to date where phases change, and copied
  out once a step; the features are stored feature-major, so ``obs["workloads"]`` is an (N, M, F)
  view of an (N, F, M) array;
- the link is shared by an iterative water-filling over only the copies with two or more transfers;
- new episodes come from a bank that holds each copy's next scenario, generated
  (``generate_batch``, counter-based randomness) and prepared for many copies in one batch once an
  eighth of the bank is used, so a step that ends episodes only copies rows.

Slots past a copy's workloads hold the phase ``PAD``; ``phase``, ``valid``, ``hour`` and
``total_cost`` are public, for tests and tools.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from lepton_core.sim.env import (
    CLOUD, CUTOVER, DAY, FEATURE_MAX, GLOBAL_FEATURES, ONPREM, REWARD_SCALE, TRANSFER, WORKLOAD_FEATURES,
    CloudMigrationEnv, water_fill_rows,
)
from lepton_core.sim.scenario import (
    GB_PER_HOUR_PER_GBPS, Scenario, bandwidth_rows, bundled_catalogue, generate_batch, next_keys, seed_state,
)

PAD = 4  # the phase of an empty slot
_ONE_HOT = np.eye(4, dtype=np.float32)
_HOUR_SIN = np.sin(2 * np.pi * np.arange(DAY) / DAY)
_HOUR_COS = np.cos(2 * np.pi * np.arange(DAY) / DAY)

# per-copy blocks that a new episode replaces (few, so that starting episodes copies few arrays):
# name -> (shape after N, dtype); M workload slots, K instance types, W words of dependency bits
_WL = ("onprem_cost", "traffic", "data_gb", "data_safe")  # rows of the "wl" block
_SC = ("n", "nominal_gb", "link_price", "per_gb", "cutover_hours", "downtime_rate", "cross_rate", "horizon",
       "bandwidth_offset")  # columns of the "sc" block
_BLOCKS = {"wl": ("4M", np.float64), "dep_bits": ("MW", np.uint64), "fits": ("MK", bool),
           "static": ("FM", np.float32), "price": ("K", np.float64), "sc": ("S", np.float64)}
_DEFAULTS = Scenario.__dataclass_fields__  # generated scenarios take the Scenario defaults for penalties


class VectorCloudMigrationEnv(VectorEnv):
    """N cloud-migration simulations in lockstep; see the module docstring and ``CloudMigrationEnv``."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int, max_workloads: int = 16, min_workloads: int = 4, horizon: int = 14 * DAY,
                 bank_refill: float = 0.125) -> None:
        self.num_envs = num_envs
        self.max_workloads, self.min_workloads, self.horizon = max_workloads, min_workloads, horizon
        single = CloudMigrationEnv(max_workloads=max_workloads, min_workloads=min_workloads, horizon=horizon)
        self.catalogue = bundled_catalogue()
        self.n_types = single.n_types
        self.single_observation_space = single.observation_space
        self.single_action_space = single.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        N, M = num_envs, max_workloads
        self._words = -(-M // 64)
        self._refill_at = max(1, int(N * bank_refill))
        self.ep = self._blocks(N)  # the episodes running now
        self.bank = self._blocks(N)  # each copy's next generated episode, prepared
        self.fresh = np.zeros(N, bool)  # bank rows not yet used
        self.states = seed_state(seeding.np_random(None)[0].integers(0, 2**62, size=N))  # scenario-key generators
        self.bandwidth = np.zeros((N, horizon + 1))  # each copy's link factor by hour (the last repeats the first)
        self.valid = np.zeros((N, M), bool)  # the slots that hold a workload
        self._slots = np.arange(M)
        self._link_now = np.zeros(N)  # GB the link moves in each copy's current hour
        self.phase = np.full((N, M), PAD, np.int8)
        self.inst_price = np.zeros((N, M))  # $ per hour of each workload's chosen instance (0 until it starts)
        self.remaining = np.zeros((N, M))
        self.cutover_left = np.zeros((N, M), np.int64)
        self.hour, self.total_cost = np.zeros(N, np.int64), np.zeros(N)
        self._mask = np.zeros((N, 1 + M * self.n_types), np.int8)  # the action mask now (a new array each step)
        self._mask[:, 0] = 1
        self._can = np.zeros((N, M), bool)  # the workloads that may start now
        self._buf = np.zeros((N, WORKLOAD_FEATURES, M), np.float32)  # the workload features now, feature-major
        self._rows, self._ones = np.arange(N), np.ones(M)

    def _blocks(self, rows: int) -> dict[str, np.ndarray]:
        dims = {"M": self.max_workloads, "W": self._words, "K": self.n_types, "F": WORKLOAD_FEATURES, "4": len(_WL), "S": len(_SC)}
        return {name: np.zeros((rows, *(dims[d] for d in shape)), dtype) for name, (shape, dtype) in _BLOCKS.items()}

    def _col(self, name: str, block: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """A per-copy scalar (a column of the "sc" block) of the running episodes."""
        return (block or self.ep)["sc"][:, _SC.index(name)]

    # -- scenarios ------------------------------------------------------------------------------
    def _bits(self, x: np.ndarray) -> np.ndarray:
        """(..., M) bool -> (..., W) uint64 bit sets (bit i % 64 of word i // 64 for slot i)."""
        M, lead = self.max_workloads, x.shape[:-1]
        if M in (8, 16, 32, 64):  # whole bytes per row: one flat packbits, then a view
            packed = np.packbits(x.reshape(-1), bitorder="little").view(f"<u{M // 8}")
            return packed.astype(np.uint64).reshape(*lead, 1)
        packed = np.packbits(x.reshape(-1, M), axis=1, bitorder="little")
        full = np.zeros((packed.shape[0], 8 * self._words), np.uint8)
        full[:, :packed.shape[1]] = packed
        return full.view("<u8").reshape(*lead, self._words)

    def _prepare(self, out: dict[str, np.ndarray], idx: np.ndarray, cpu, memory_gb, gpu, data_gb, traffic, onprem,
                 depends, fits, cheapest, price, scalars: dict[str, np.ndarray]) -> None:
        """Write rows ``idx`` of the blocks ``out`` from padded (R, M...) scenario arrays (zero in
        empty slots) and the per-copy ``scalars`` (``_SC``)."""
        M, R = self.max_workloads, len(idx)
        static = np.zeros((R, WORKLOAD_FEATURES, M), np.float32)  # feature-major: see _observation
        static[:, 0], static[:, 1], static[:, 2] = cpu / 64, memory_gb / 512, gpu / 8
        static[:, 3], static[:, 5], static[:, 6] = np.log1p(data_gb) / 10, traffic / 5000, onprem / 10
        static[:, 7] = cheapest / 10
        dep = depends.astype(np.float32)
        static[:, 12], static[:, 13] = (dep @ np.ones(M, np.float32)) / 8, (np.ones(M, np.float32) @ dep) / 8
        np.minimum(static, FEATURE_MAX, out=static)
        out["wl"][idx] = np.stack([onprem, traffic, data_gb, np.maximum(data_gb, 1e-9)], axis=1)
        out["dep_bits"][idx] = self._bits(depends)
        out["fits"][idx] = fits
        out["static"][idx] = static
        out["price"][idx] = price
        out["sc"][idx] = np.stack([np.broadcast_to(np.asarray(scalars[name], float), (R,)) for name in _SC], axis=1)

    def _refill(self, idx: np.ndarray) -> None:
        """Generate and prepare the next scenario of copies ``idx`` into the bank."""
        b = generate_batch(next_keys(self.states, idx), self.min_workloads, self.max_workloads, horizon=self.horizon,
                           catalogue=self.catalogue)
        gbps, efficiency, port = b.links()
        d = _DEFAULTS
        self._prepare(self.bank, idx, b.cpu, b.memory_gb, b.gpu, b.data_gb, b.traffic_rps, b.onprem_cost, b.depends,
                      b.fits, b.cheapest, b.instance_price, {
                          "n": b.n, "nominal_gb": gbps * efficiency * GB_PER_HOUR_PER_GBPS, "link_price": port,
                          "per_gb": self.catalogue.transfer_in_per_gb, "cutover_hours": d["cutover_hours"].default,
                          "downtime_rate": d["downtime_minutes"].default * d["downtime_cost_per_krps_minute"].default,
                          "cross_rate": d["cross_site_cost_per_krps_hour"].default, "horizon": self.horizon,
                          "bandwidth_offset": b.bandwidth_offset})
        self.fresh[idx] = True

    def _load_scenarios(self, idx: np.ndarray, scenarios: list[Scenario]) -> None:
        """Episodes of given scenarios (``reset(options={"scenarios": [...]})``) for copies ``idx``."""
        M, K, H, R = self.max_workloads, self.n_types, self.horizon, len(idx)
        pad = {name: np.zeros((R, M)) for name in ("cpu", "memory_gb", "gpu", "data_gb", "traffic_rps", "onprem_cost", "cheapest")}
        depends, fits, price = np.zeros((R, M, M), bool), np.zeros((R, M, K), bool), np.zeros((R, K))
        for r, s in enumerate(scenarios):
            if s.n > M or s.k != K or len(s.bandwidth_factor) < 1 or s.horizon > H:
                raise ValueError(f"scenario for env {int(idx[r])}: {s.n} workloads on {s.k} types over {s.horizon} h; "
                                 f"this env holds {M} on {K} over {H} h")
            for name in ("cpu", "memory_gb", "gpu", "data_gb", "traffic_rps", "onprem_cost"):
                pad[name][r, :s.n] = getattr(s, name)
            depends[r, :s.n, :s.n], fits[r, :s.n] = s.depends, s.fits()
            pad["cheapest"][r, :s.n] = np.where(fits[r, :s.n], s.instance_price[None, :], np.inf).min(axis=1)
            price[r] = s.instance_price
            self.bandwidth[idx[r]] = s.bandwidth_factor[np.arange(H + 1) % len(s.bandwidth_factor)]
        col = lambda attr: np.array([getattr(s, attr) for s in scenarios], float)  # noqa: E731
        self._prepare(self.ep, idx, pad["cpu"], pad["memory_gb"], pad["gpu"], pad["data_gb"], pad["traffic_rps"],
                      pad["onprem_cost"], depends, fits, pad["cheapest"], price, {
                          "n": col("n"), "nominal_gb": col("link_gbps") * col("link_efficiency") * GB_PER_HOUR_PER_GBPS,
                          "link_price": col("link_price"), "per_gb": col("transfer_per_gb"), "cutover_hours": col("cutover_hours"),
                          "downtime_rate": col("downtime_minutes") * col("downtime_cost_per_krps_minute"),
                          "cross_rate": col("cross_site_cost_per_krps_hour"), "horizon": col("horizon"), "bandwidth_offset": -1.0})
        self._start(idx)

    def _new_episodes(self, idx: np.ndarray) -> None:
        """Start the next generated episode of copies ``idx`` (from the bank)."""
        stale = ~self.fresh[idx]
        if stale.any():
            self._refill(np.union1d(idx[stale], np.flatnonzero(~self.fresh)))
        for name, block in self.ep.items():
            block[idx] = self.bank[name][idx]
        self.fresh[idx] = False
        self.bandwidth[idx] = bandwidth_rows(self._col("bandwidth_offset")[idx].astype(np.int64), self.horizon)
        self._start(idx)

    def _start(self, idx: np.ndarray) -> None:
        """Put copies ``idx`` at hour 0 of the episodes now in ``ep``: state, feature rows, mask rows."""
        ep, R = self.ep, len(idx)
        valid = self._slots[None, :] < ep["sc"][idx, _SC.index("n"), None]
        self.valid[idx] = valid
        self.phase[idx] = np.where(valid, ONPREM, PAD)
        self.inst_price[idx] = 0.0
        wl = ep["wl"][idx]
        self.remaining[idx] = wl[:, 2]
        self.cutover_left[idx] = 0
        self.hour[idx], self.total_cost[idx] = 0, 0.0
        self._link_now[idx] = ep["sc"][idx, _SC.index("nominal_gb")] * self.bandwidth[idx, 0]
        ready = self._ready(idx)
        buf = ep["static"][idx]  # (R, F, M) with the dynamic features still zero
        buf[:, 4] = wl[:, 2] / wl[:, 3]
        buf[:, 8 + ONPREM] = valid
        buf[:, 14] = valid & ready
        self._buf[idx] = buf
        can = valid & ready
        self._can[idx] = can
        self._mask[idx, 1:] = (can[:, :, None] & ep["fits"][idx]).reshape(R, -1)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            seeds = seed if isinstance(seed, list) else [seed + j for j in range(self.num_envs)]
            self.states = seed_state(seeds)
            self.fresh[:] = False  # the bank's scenarios came from the old seeds
        self._mask = self._mask.copy()  # the last step's info keeps its own
        everyone = np.arange(self.num_envs)
        scenarios = (options or {}).get("scenarios")
        if scenarios is not None:
            self._load_scenarios(everyone, list(scenarios))
        else:
            self._new_episodes(everyone)
        if not self.fresh.all():  # the next episodes now, while nobody is timing steps
            self._refill(np.flatnonzero(~self.fresh))
        return self._observation(), self._info()

    # -- dynamics -------------------------------------------------------------------------------
    def _ready(self, idx: np.ndarray | None = None) -> np.ndarray:
        """(N, M), or (len(idx), M): every dependency of the workload has started."""
        sel = slice(None) if idx is None else idx
        unstarted = self._bits(self.phase[sel] == ONPREM)
        dep = self.ep["dep_bits"][sel]
        if self._words == 1:
            return (dep[:, :, 0] & unstarted) == 0
        return ((dep & unstarted[:, None, :]) == 0).all(axis=2)

    def action_mask(self) -> np.ndarray:
        """(N, 1 + M*K) int8: 1 where the action is valid now (waiting always is)."""
        return self._mask.copy()

    def _split(self, in_cloud: np.ndarray) -> np.ndarray:
        """(N, M): the workload calls a dependency on the other side of the link."""
        cloud = self._bits(in_cloud)
        dep = self.ep["dep_bits"]
        if self._words == 1:  # the others' side: the cloud set for a workload on-prem, its complement for one in the cloud
            return (dep[:, :, 0] & (cloud ^ np.negative(in_cloud.astype(np.uint64)))) != 0
        return (dep & np.where(in_cloud[:, :, None], ~cloud[:, None, :], cloud[:, None, :]) != 0).any(axis=2)

    def step(self, actions):
        N, K, ep, rows, ones = self.num_envs, self.n_types, self.ep, self._rows, self._ones
        onprem_cost, traffic, data_safe = ep["wl"][:, 0], ep["wl"][:, 1], ep["wl"][:, 3]
        horizon, cutover_hours = self._col("horizon"), self._col("cutover_hours")
        actions = np.asarray(actions, dtype=np.int64).reshape(N)
        inside = (actions >= 0) & (actions < self._mask.shape[1])
        ok = inside & (self._mask[rows, np.where(inside, actions, 0)] == 1)
        refused = ~ok
        start = ok & (actions > 0)
        before = self.phase.copy()
        if start.any():
            j = rows[start]
            i, k = np.divmod(actions[start] - 1, K)
            self.phase[j, i] = TRANSFER
            self.inst_price[j, i] = ep["price"][j, k]
            self._buf[j, 15, i] = self.inst_price[j, i] / 10

        in_cloud = self.phase == CLOUD
        dual = self.phase == CUTOVER
        transferring = self.phase == TRANSFER
        any_dual, flows = dual.any(), transferring @ ones
        onprem = (onprem_cost * ~in_cloud) @ ones
        cloud = (self.inst_price * (in_cloud | dual)) @ ones
        link = np.where(flows > 0, self._col("link_price"), 0.0)
        downtime = np.zeros(N)  # (each cost its own array: info["cost"] hands them out)
        if any_dual:
            first_hour = dual & (self.cutover_left == cutover_hours[:, None])
            downtime = self._col("downtime_rate") * ((traffic * first_hour) @ ones) / 1000
        cross = np.zeros(N)
        if in_cloud.any():
            cross = self._col("cross_rate") * ((traffic * self._split(in_cloud)) @ ones) / 1000

        transfer = np.zeros(N)
        if flows.any():
            moved = water_fill_rows(self.remaining, transferring, self._link_now, flows)
            self.remaining -= moved
            self.remaining[self.remaining < 1e-9] = 0.0  # (never negative: a transfer moves at most what is left)
            transfer = self._col("per_gb") * (moved @ ones)

        if any_dual:
            self.cutover_left -= dual
            self.phase[dual & (self.cutover_left <= 0)] = CLOUD
        if flows.any():
            done_moving = transferring & (self.remaining <= 0)
            self.phase[done_moving] = CUTOVER
            self.cutover_left = np.where(done_moving, cutover_hours[:, None].astype(np.int64), self.cutover_left)

        self.hour += 1
        self._link_now = self._col("nominal_gb") * self.bandwidth[rows, self.hour]
        terminated = ~((self.phase < CLOUD) @ ones).astype(bool)
        truncated = ~terminated & (self.hour >= horizon)
        after = np.zeros(N)
        if terminated.any():
            # the finishing step pays the cloud instances to the end of the horizon (instances do not change after a start)
            after[terminated] = (self.inst_price[terminated] @ ones) * np.maximum(0, horizon - self.hour)[terminated]
        hour_cost = onprem + cloud + link + downtime + cross + transfer + after
        self.total_cost += hour_cost
        rewards = -hour_cost / REWARD_SCALE

        # the features and the mask follow what changed: a workload's phase, or whether it may start
        # (which is also where its "dependencies started" feature can change: it only turns on,
        # and only for a workload still on-prem)
        self._buf[:, 4] = self.remaining / data_safe
        ready = self._ready()
        can = (self.phase == ONPREM) & ready
        r, i = np.nonzero((self.phase != before) | (can != self._can))
        self._buf[r, 8:12, i] = _ONE_HOT[self.phase[r, i]]  # (a slot is never PAD here: PAD slots do not change)
        self._buf[r, 14, i] = ready[r, i]
        self._mask = self._mask.copy()
        self._mask[:, 1:].reshape(N, -1, K)[r, i] = can[r, i][:, None] & ep["fits"][r, i]
        self._can = can

        done = terminated | truncated
        info: dict[str, Any] = {"cost": {"onprem": onprem, "cloud": cloud, "link": link, "downtime": downtime,
                                         "cross_site": cross, "transfer": transfer, "cloud_after": after},
                                "refused": refused, "_refused": refused}
        if done.any():
            ended = np.flatnonzero(done)
            last = self._observation(ended)
            final = {}
            for key, value in last.items():
                final[key] = np.zeros((N, *value.shape[1:]), value.dtype)
                final[key][ended] = value
            info["final_obs"], info["_final_obs"] = final, done
            info["final_total_cost"], info["final_hours"] = self.total_cost.copy(), self.hour.copy()
            self._new_episodes(ended)
            if len(self.fresh) - np.count_nonzero(self.fresh) >= self._refill_at:
                self._refill(np.flatnonzero(~self.fresh))
        info.update(self._info())
        return self._observation(), rewards, terminated, truncated, info

    # -- views ----------------------------------------------------------------------------------
    def _observation(self, idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The observation of every copy, or of copies ``idx``. ``workloads`` is a (R, M, F) view
        of an (R, F, M) copy of the feature buffer."""
        sel = slice(None) if idx is None else idx
        phase, hour, sc = self.phase[sel], self.hour[sel], self.ep["sc"][sel]
        nominal = sc[:, _SC.index("nominal_gb")]
        n = np.maximum(sc[:, _SC.index("n")], 1)
        glob = np.empty((len(hour), GLOBAL_FEATURES), np.float32)
        glob[:, 0] = self._link_now[sel] / 1000
        glob[:, 1] = nominal / 1000
        day = hour % DAY
        glob[:, 2], glob[:, 3] = _HOUR_SIN[day], _HOUR_COS[day]
        glob[:, 4] = hour / sc[:, _SC.index("horizon")]
        glob[:, 5] = self.total_cost[sel] / 10_000
        glob[:, 6] = ((phase == TRANSFER) @ self._ones) / n
        glob[:, 7] = ((phase == CLOUD) @ self._ones) / n
        np.clip(glob, -1.0, FEATURE_MAX, out=glob)
        return {"workloads": self._buf[sel].copy().transpose(0, 2, 1),
                "workload_mask": self.valid[sel].view(np.int8).copy(), "globals": glob}

    def _info(self) -> dict[str, Any]:
        return {"action_mask": self._mask, "total_cost": self.total_cost.copy(), "hour": self.hour.copy()}
