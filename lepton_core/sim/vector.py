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

- a workload changes phase three times in an episode, so what depends only on phases is kept up to
  date where they change, not recomputed every hour: per copy, the on-prem and cloud $/h, the
  SLA penalty for calls across the link, the transfers and workloads in the cloud (counts), the
  downtime the next hour's new cutovers pay; the workload features and the action mask. A cutover
  is the hour it ends, compared with the clock, not a countdown;
- dependencies are bit sets (a uint64 word per 64 workloads), so "have all its dependencies
  started" and "does it call across the link" are a few integer operations per copy, not
  (N, M, M) arrays, and they are recomputed only for the copies where something started or
  reached the cloud;
- sums over a copy's workloads are matrix-vector products (BLAS), not reductions along a short axis;
  the positions of the few phase changes come from a flat ``flatnonzero`` (numpy's
  two-dimensional ``nonzero`` costs several times more at these sizes);
- the features are stored feature-major, so ``obs["workloads"]`` is an (N, M, F) view of an
  (N, F, M) array;
- the link is shared by a water-filling over a flat list of the transfers (a few per copy, not every
  slot), refined only on the links where a round satisfied some transfers but not all;
- new episodes come from a bank that holds each copy's next scenario with the state it starts in
  (features, mask, sums), generated (``generate_batch``, counter-based randomness) and prepared for
  many copies in one batch once a quarter of the bank is used, so a step that ends episodes only
  copies rows; a generated bandwidth profile is a window of one shared table, not a copy.

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
    CloudMigrationEnv, water_fill_flows,
)
from lepton_core.sim.scenario import (
    GB_PER_HOUR_PER_GBPS, Scenario, bandwidth_table, bundled_catalogue, generate_batch, next_keys, seed_state,
)

PAD = 4  # the phase of an empty slot
_NEVER = np.iinfo(np.int64).max  # the cutover end of a workload not in cutover
_HOUR_SIN = np.sin(2 * np.pi * np.arange(DAY) / DAY)
_HOUR_COS = np.cos(2 * np.pi * np.arange(DAY) / DAY)

# per-copy blocks of an episode: name -> (shape after N, dtype); M workload slots, K instance types,
# W words of dependency bits. The running episodes ("ep") hold
# the first six; the bank's prepared next episodes hold all, with the state each starts in, so that
# starting an episode is a copy of rows.
_WL = ("onprem_cost", "traffic", "data_gb", "data_safe")  # rows of the "wl" block
_SC = ("n", "nominal_gb", "link_price", "per_gb", "cutover_hours", "downtime_rate", "cross_rate", "horizon",
       "bandwidth_at", "bandwidth_wrap", "onprem_sum")  # columns of the "sc" block (see _prepare)
_EPISODE = {"wl": ("4M", np.float64), "dep_bits": ("MW", np.uint64), "fits": ("MK", bool), "price": ("K", np.float64),
            "sc": ("S", np.float64)}
_START = {"features": ("FM", np.float32), "mask": ("A", np.int8), "can": ("M", bool), "valid": ("M", bool)}
_DEFAULTS = Scenario.__dataclass_fields__  # generated scenarios take the Scenario defaults for penalties


def _nonzero(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a C-contiguous (N, M) array, in the same order: the flat form is a few
    times faster than numpy's two-dimensional one on these sizes."""
    return np.divmod(np.flatnonzero(mask), mask.shape[1])


def _distinct(sorted_rows: np.ndarray) -> np.ndarray:
    """The distinct values of a sorted array (``np.unique`` without its sort)."""
    return sorted_rows[np.concatenate(([True], sorted_rows[1:] != sorted_rows[:-1]))]


class VectorCloudMigrationEnv(VectorEnv):
    """N cloud-migration simulations in lockstep; see the module docstring and ``CloudMigrationEnv``."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int, max_workloads: int = 16, min_workloads: int = 4, horizon: int = 14 * DAY,
                 bank_refill: float = 0.25) -> None:
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
        self.ep = self._blocks(N, _EPISODE)  # the episodes running now
        self.bank = self._blocks(N, {**_EPISODE, **_START})  # each copy's next generated episode, prepared
        self._sc_cols = {name: self.ep["sc"][:, c] for c, name in enumerate(_SC)}  # (views: rows change in place)
        self.fresh = np.zeros(N, bool)  # bank rows not yet used
        self.states = seed_state(seeding.np_random(None)[0].integers(0, 2**62, size=N))  # scenario-key generators
        self.valid = np.zeros((N, M), bool)  # the slots that hold a workload
        self._slots = np.arange(M)
        self._link_now = np.zeros(N)  # GB the link moves in each copy's current hour
        self.phase = np.full((N, M), PAD, np.int8)
        self.inst_price = np.zeros((N, M))  # $ per hour of each workload's chosen instance (0 until it starts)
        self.remaining = np.zeros((N, M))
        self._cloud_at = np.full((N, M), _NEVER, np.int64)  # the hour whose step ends a workload's cutover
        self.hour, self.total_cost = np.zeros(N, np.int64), np.zeros(N)
        # per-copy sums that change only when a workload changes phase, kept up to date there
        self._n = np.zeros(N, np.int64)  # workloads
        self._in_transfer, self._in_cloud = np.zeros(N, np.int64), np.zeros(N, np.int64)
        self._onprem_sum, self._cloud_sum = np.zeros(N), np.zeros(N)  # $/h on-prem (not in the cloud); cloud (cutover or cloud)
        self._cross_sum = np.zeros(N)  # $/h of SLA penalty for calls across the link
        self._downtime_next = np.zeros(N)  # $ of downtime that the next hour's cutovers pay (their first hour)
        # the link's factor by hour: a generated scenario's profile is a window of the shared
        # table (``bandwidth_table``), a given one's a row after it; hour h of copy j is entry
        # _bw_at[j] + h, but at hour _bw_wrap[j] (the horizon of a generated one) the window's first
        self._bw_table = np.concatenate([bandwidth_table(horizon), np.zeros(N * (horizon + 1))])
        self._bw_given = len(self._bw_table) - N * (horizon + 1)
        self._bw_at, self._bw_wrap = np.zeros(N, np.int64), np.zeros(N, np.int64)
        self._mask = np.zeros((N, 1 + M * self.n_types), np.int8)  # the action mask now (a new array each step)
        self._mask[:, 0] = 1
        self._can = np.zeros((N, M), bool)  # the workloads that may start now
        self._buf = np.zeros((N, WORKLOAD_FEATURES, M), np.float32)  # the workload features now, feature-major
        self._rows, self._ones = np.arange(N), np.ones(M)

    def _blocks(self, rows: int, blocks: dict[str, tuple[str, type]]) -> dict[str, np.ndarray]:
        M, K = self.max_workloads, self.n_types
        dims = {"M": M, "W": self._words, "K": K, "F": WORKLOAD_FEATURES, "4": len(_WL), "S": len(_SC),
                "H": self.horizon + 1, "A": M * K}
        return {name: np.zeros((rows, *(dims[d] for d in shape)), dtype) for name, (shape, dtype) in blocks.items()}

    def _col(self, name: str) -> np.ndarray:
        """A per-copy scalar (a column of the "sc" block) of the running episodes."""
        return self._sc_cols[name]

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

    def _prepare(self, out: dict[str, np.ndarray], rows: np.ndarray | slice, cpu, memory_gb, gpu, data_gb, traffic,
                 onprem, depends, fits, cheapest, price, scalars: dict[str, np.ndarray]) -> None:
        """Write rows ``rows`` of the blocks ``out`` (``_EPISODE`` and ``_START``) from padded (R, M...)
        scenario arrays (zero in empty slots) and the per-copy ``scalars`` (``_SC`` but the on-prem
        sum): ``bandwidth_at``, where in the env's bandwidth table the episode's profile starts, and
        ``bandwidth_wrap``, the hour that reads the profile's first entry again."""
        M, R = self.max_workloads, len(cpu)
        valid = self._slots[None, :] < np.asarray(scalars["n"])[:, None]
        dep = depends.astype(np.float32)
        calls, called = dep @ np.ones(M, np.float32), np.ones(M, np.float32) @ dep  # dependencies, dependents
        ready = calls == 0  # at the start, a workload may start when it depends on nothing
        data_safe = np.maximum(data_gb, 1e-9)
        features = np.zeros((R, WORKLOAD_FEATURES, M), np.float32)  # feature-major: see _observation
        features[:, 0], features[:, 1], features[:, 2] = cpu / 64, memory_gb / 512, gpu / 8
        features[:, 3], features[:, 4] = np.log1p(data_gb) / 10, data_gb / data_safe
        features[:, 5], features[:, 6], features[:, 7] = traffic / 5000, onprem / 10, cheapest / 10
        features[:, 8 + ONPREM] = valid
        features[:, 12], features[:, 13] = calls / 8, called / 8
        features[:, 14] = valid & ready
        np.minimum(features, FEATURE_MAX, out=features)
        can = valid & ready
        out["wl"][rows] = np.stack([onprem, traffic, data_gb, data_safe], axis=1)
        out["dep_bits"][rows] = self._bits(depends)
        out["fits"][rows] = fits
        out["price"][rows] = price
        sc = out["sc"]
        for c, name in enumerate(_SC[:-1]):
            sc[rows, c] = scalars[name]
        sc[rows, len(_SC) - 1] = onprem @ self._ones
        out["features"][rows] = features
        out["mask"][rows] = (can[:, :, None] & fits).reshape(R, -1)
        out["can"][rows] = can
        out["valid"][rows] = valid

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
                          "bandwidth_at": b.bandwidth_offset, "bandwidth_wrap": self.horizon})
        self.fresh[idx] = True

    def _load_scenarios(self, idx: np.ndarray, scenarios: list[Scenario]) -> None:
        """Episodes of given scenarios (``reset(options={"scenarios": [...]})``) for copies ``idx``
        (prepared apart: the bank keeps the copies' next generated episodes)."""
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
            at = self._bw_given + int(idx[r]) * (H + 1)  # the copy's own row of the table
            self._bw_table[at:at + H + 1] = s.bandwidth_factor[np.arange(H + 1) % len(s.bandwidth_factor)]
        col = lambda attr: np.array([getattr(s, attr) for s in scenarios], float)  # noqa: E731
        given = self._blocks(R, {**_EPISODE, **_START})
        self._prepare(given, slice(None), pad["cpu"], pad["memory_gb"], pad["gpu"], pad["data_gb"], pad["traffic_rps"],
                      pad["onprem_cost"], depends, fits, pad["cheapest"], price, {
                          "n": col("n"), "nominal_gb": col("link_gbps") * col("link_efficiency") * GB_PER_HOUR_PER_GBPS,
                          "link_price": col("link_price"), "per_gb": col("transfer_per_gb"), "cutover_hours": col("cutover_hours"),
                          "downtime_rate": col("downtime_minutes") * col("downtime_cost_per_krps_minute"),
                          "cross_rate": col("cross_site_cost_per_krps_hour"), "horizon": col("horizon"),
                          "bandwidth_at": self._bw_given + idx * (H + 1), "bandwidth_wrap": H + 1})
        self._begin(idx, given, slice(None))

    def _new_episodes(self, idx: np.ndarray) -> None:
        """Start the next generated episode of copies ``idx`` (from the bank)."""
        stale = ~self.fresh[idx]
        if stale.any():
            self._refill(np.union1d(idx[stale], np.flatnonzero(~self.fresh)))
        self._begin(idx, self.bank, idx)
        self.fresh[idx] = False

    def _begin(self, idx: np.ndarray, prepared: dict[str, np.ndarray], rows: np.ndarray | slice) -> None:
        """Put copies ``idx`` at hour 0 of the episodes in rows ``rows`` of the ``prepared`` blocks:
        the episode's blocks, the state, the sums, the feature rows and the mask rows."""
        for name, block in self.ep.items():
            block[idx] = prepared[name][rows]
        self._buf[idx] = prepared["features"][rows]
        self._mask[idx, 1:] = prepared["mask"][rows]
        self._can[idx] = prepared["can"][rows]
        valid = prepared["valid"][rows]
        self.valid[idx] = valid
        self.phase[idx] = np.where(valid, ONPREM, PAD)
        self.inst_price[idx] = 0.0
        self.remaining[idx] = prepared["wl"][rows, 2]
        self._cloud_at[idx] = _NEVER
        sc = prepared["sc"][rows]
        self.hour[idx], self.total_cost[idx] = 0, 0.0
        self._n[idx], self._in_transfer[idx], self._in_cloud[idx] = sc[:, _SC.index("n")], 0, 0
        self._onprem_sum[idx] = sc[:, _SC.index("onprem_sum")]
        self._cloud_sum[idx], self._cross_sum[idx], self._downtime_next[idx] = 0.0, 0.0, 0.0
        self._bw_at[idx] = sc[:, _SC.index("bandwidth_at")]
        self._bw_wrap[idx] = sc[:, _SC.index("bandwidth_wrap")]
        self._link_now[idx] = sc[:, _SC.index("nominal_gb")] * self._bw_table[self._bw_at[idx]]

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

    # -- state, for a training checkpoint -------------------------------------------------------
    _CONSTANT = frozenset({"_rows", "_ones", "_slots"})  # arrays the constructor fixes; ``_sc_cols`` are views of ep["sc"]

    def _state_arrays(self) -> dict[str, np.ndarray]:
        """The arrays ``get_state`` copies, by name (the live ones)."""
        arrays = {}
        for name, value in vars(self).items():
            if isinstance(value, np.ndarray) and name not in self._CONSTANT:
                arrays[name] = value
            elif name in ("ep", "bank"):
                arrays.update({f"{name}.{block}": array for block, array in value.items()})
        return arrays

    def get_state(self) -> dict[str, np.ndarray]:
        """Everything that decides what the copies do next, as named arrays (copies): the running
        episodes, the bank of next ones, the scenario-key generators and the bandwidth table. A
        training checkpoint keeps it, so that a run resumed from it steps exactly as the run that
        saved it would have gone on (``set_state``)."""
        return {name: array.copy() for name, array in self._state_arrays().items()}

    def set_state(self, state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Put back what ``get_state`` returned (of an env of the same shape: ValueError naming the
        first array that differs otherwise); returns the observation and info of that moment, as
        ``reset`` does."""
        mine = self._state_arrays()
        if mine.keys() != state.keys():
            missing, extra = sorted(mine.keys() - state.keys()), sorted(state.keys() - mine.keys())
            raise ValueError(f"simulator state: {'missing ' + ', '.join(missing) if missing else ''}"
                             f"{'; ' if missing and extra else ''}{'unknown ' + ', '.join(extra) if extra else ''}")
        for name, array in state.items():
            array = np.asarray(array)
            if array.shape != mine[name].shape or array.dtype != mine[name].dtype:
                raise ValueError(f"simulator state: {name} is {array.dtype}{list(array.shape)}; this env's is "
                                 f"{mine[name].dtype}{list(mine[name].shape)} (another number of copies or workloads)")
        for name, array in state.items():
            if "." in name:  # in place: ``_sc_cols`` are views of ep["sc"]
                mine[name][...] = array
            else:  # a new array: the last step's info may hold the old one (the action mask)
                setattr(self, name, np.array(array))
        return self._observation(), self._info()

    # arrays of the running episodes that ``copy_episodes`` leaves alone: each copy's next generated
    # episodes (the bank and the generators) stay its own, and the bandwidth table is translated
    _OWN = frozenset({"fresh", "states", "_bw_table", "_bw_at"})

    def copy_episodes(self, rows: np.ndarray, source: VectorCloudMigrationEnv,
                      source_rows: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Put copies ``rows`` in the states that ``source``'s copies ``source_rows`` are in now (their
        episodes at the hour they have reached; ``source`` may be this env): a lookahead branches
        from a state without replaying the hours before it. ``source`` must hold as many workloads,
        types and hours (ValueError otherwise). Each copy keeps its own bank of next episodes.
        Returns the observation and info of every copy, as ``reset`` does."""
        rows, source_rows = np.asarray(rows, np.int64), np.asarray(source_rows, np.int64)
        if (source.max_workloads, source.n_types, source.horizon) != (self.max_workloads, self.n_types, self.horizon):
            raise ValueError(f"copy_episodes: the source holds {source.max_workloads} workloads on {source.n_types} types "
                             f"over {source.horizon} h; this env {self.max_workloads} on {self.n_types} over {self.horizon} h")
        if rows.shape != source_rows.shape:
            raise ValueError(f"copy_episodes: {len(rows)} copies to fill from {len(source_rows)}")
        self._mask = self._mask.copy()  # the last step's info keeps its own
        mine = self._state_arrays()
        for name, array in source._state_arrays().items():
            if name not in self._OWN and not name.startswith("bank."):
                mine[name][rows] = array[source_rows]
        # a given scenario's bandwidth profile is a row of the table of its own: copied into the
        # destination's rows; a generated one's is a window of the shared table, the same in both
        H1 = self.horizon + 1
        at = source._bw_at[source_rows]
        given = at >= source._bw_given
        profiles = [source._bw_table[a:a + H1].copy() for a in at[given]]  # (read before any is written: source may be self)
        for r, profile in zip(rows[given], profiles, strict=True):
            self._bw_table[self._bw_given + int(r) * H1:][:H1] = profile
        self._bw_at[rows] = np.where(given, self._bw_given + rows * H1, at)
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

    def _split(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), M): the workloads of copies ``idx`` that call a dependency on the other side of the link."""
        in_cloud = self.phase[idx] == CLOUD
        cloud = self._bits(in_cloud)
        dep = self.ep["dep_bits"][idx]
        if self._words == 1:  # the others' side: the cloud set for a workload on-prem, its complement for one in the cloud
            return (dep[:, :, 0] & (cloud ^ np.negative(in_cloud.astype(np.uint64)))) != 0
        return (dep & np.where(in_cloud[:, :, None], ~cloud[:, None, :], cloud[:, None, :]) != 0).any(axis=2)

    def step(self, actions):
        N, K, ep, rows, ones, buf = self.num_envs, self.n_types, self.ep, self._rows, self._ones, self._buf
        actions = np.asarray(actions, dtype=np.int64).reshape(N)
        inside = (actions >= 0) & (actions < self._mask.shape[1])
        ok = inside & (self._mask[rows, np.where(inside, actions, 0)] == 1)
        refused = ~ok
        start = ok & (actions > 0)
        j = rows[start]
        if len(j):
            i, k = np.divmod(actions[start] - 1, K)
            self.phase[j, i] = TRANSFER
            self.inst_price[j, i] = ep["price"][j, k]
            buf[j, 15, i] = self.inst_price[j, i] / 10
            buf[j, 8 + ONPREM, i], buf[j, 8 + TRANSFER, i] = 0.0, 1.0
            self._in_transfer[j] += 1  # (one action per copy: j holds each copy once)

        # the hour's costs, from the phases as it begins; each its own array (info["cost"] hands them out)
        flows = self._in_transfer
        onprem, cloud, cross, downtime = self._onprem_sum.copy(), self._cloud_sum.copy(), self._cross_sum.copy(), self._downtime_next
        link = np.where(flows > 0, self._col("link_price"), 0.0)
        transfer = np.zeros(N)
        hour = self.hour

        # the data moves, and the cutovers that started an earlier hour run on (the phases change
        # only after every cost of the hour is known)
        to_cloud = _nonzero(self._cloud_at == hour[:, None])
        to_cutover = None
        if flows.any():  # (as a flat list of the transfers: a few per copy, not every slot)
            at = np.flatnonzero(self.phase == TRANSFER)
            r, i = np.divmod(at, self.max_workloads)
            need = self.remaining.reshape(-1)[at]
            moved = water_fill_flows(need, r, self._link_now)
            left = need - moved
            left[left < 1e-9] = 0.0  # (float residue of a finished transfer; never negative)
            self.remaining.reshape(-1)[at] = left
            transfer = self._col("per_gb") * np.bincount(r, moved, minlength=N)
            buf[r, 4, i] = left / ep["wl"][r, 3, i]
            done = left <= 0
            to_cutover = (r[done], i[done])
        if len(to_cloud[0]):
            r, i = to_cloud
            self.phase[r, i] = CLOUD
            buf[r, 8 + CUTOVER, i], buf[r, 8 + CLOUD, i] = 0.0, 1.0
            self._cloud_at[r, i] = _NEVER
            self._in_cloud += np.bincount(r, minlength=N)
            c = _distinct(r)  # the copies
            self._onprem_sum[c] = (ep["wl"][c, 0] * (self.phase[c] != CLOUD)) @ ones
            self._cross_sum[c] = self._col("cross_rate")[c] * ((ep["wl"][c, 1] * self._split(c)) @ ones) / 1000
        self._downtime_next = np.zeros(N)
        if to_cutover is not None and len(to_cutover[0]):
            r, i = to_cutover
            self.phase[r, i] = CUTOVER
            buf[r, 8 + TRANSFER, i], buf[r, 8 + CUTOVER, i] = 0.0, 1.0
            # a cutover runs max(cutover_hours, 1) hours; its first (the next) pays the downtime
            self._cloud_at[r, i] = hour[r] + np.maximum(self._col("cutover_hours")[r], 1).astype(np.int64)
            self._in_transfer -= np.bincount(r, minlength=N)
            c = _distinct(r)
            self._cloud_sum[c] = (self.inst_price[c] * (self.phase[c] >= CUTOVER)) @ ones  # (empty slots cost nothing)
            self._downtime_next = self._col("downtime_rate") * np.bincount(r, ep["wl"][r, 1, i], minlength=N) / 1000

        self.hour = hour = hour + 1
        self._link_now = self._col("nominal_gb") * self._bw_table[self._bw_at + np.where(hour == self._bw_wrap, 0, hour)]
        horizon = self._col("horizon")
        terminated = self._in_cloud == self._n
        truncated = ~terminated & (hour >= horizon)
        after = np.zeros(N)
        if terminated.any():
            # the finishing step pays the cloud instances to the end of the horizon (instances do not change after a start)
            after[terminated] = self._cloud_sum[terminated] * np.maximum(0, horizon - hour)[terminated]
        hour_cost = onprem + cloud + link + downtime + cross + transfer + after
        self.total_cost += hour_cost
        rewards = -hour_cost / REWARD_SCALE

        # the mask and "dependencies started" follow the starts: they change only in copies that started one
        self._mask = self._mask.copy()
        if len(j):
            ready = self._ready(j)
            can = (self.phase[j] == ONPREM) & ready
            rr, i = _nonzero(can != self._can[j])
            r = j[rr]
            buf[r, 14, i] = ready[rr, i]
            self._mask[:, 1:].reshape(N, -1, K)[r, i] = can[rr, i][:, None] & ep["fits"][r, i]
            self._can[j] = can

        done = terminated | truncated
        info: dict[str, Any] = {"cost": {"onprem": onprem, "cloud": cloud, "link": link, "downtime": downtime,
                                         "cross_site": cross, "transfer": transfer, "cloud_after": after},
                                "refused": refused, "_refused": refused}
        if done.any():
            ended = np.flatnonzero(done)
            info["final_obs"], info["_final_obs"] = self._observation(only=ended), done
            info["final_total_cost"], info["final_hours"] = self.total_cost.copy(), self.hour.copy()
            self._new_episodes(ended)
            if len(self.fresh) - np.count_nonzero(self.fresh) >= self._refill_at:
                self._refill(np.flatnonzero(~self.fresh))
        info.update(self._info())
        return self._observation(), rewards, terminated, truncated, info

    # -- views ----------------------------------------------------------------------------------
    def _observation(self, only: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The observation of every copy; ``workloads`` is an (N, M, F) view of an (N, F, M) copy of
        the feature buffer. With ``only``, the observations of those copies and zeros elsewhere (for
        ``info["final_obs"]``)."""
        sc, hour = self.ep["sc"], self.hour
        n = np.maximum(sc[:, _SC.index("n")], 1)
        glob = np.empty((self.num_envs, GLOBAL_FEATURES), np.float32)
        # (the observation space's bounds: only the link and the cost could pass them, the rest are
        # shares of 0..1 and a sine and cosine)
        glob[:, 0] = np.minimum(self._link_now / 1000, FEATURE_MAX)
        glob[:, 1] = np.minimum(sc[:, _SC.index("nominal_gb")] / 1000, FEATURE_MAX)
        day = hour % DAY
        glob[:, 2], glob[:, 3] = _HOUR_SIN[day], _HOUR_COS[day]
        glob[:, 4] = hour / sc[:, _SC.index("horizon")]
        glob[:, 5] = np.minimum(self.total_cost / 10_000, FEATURE_MAX)
        glob[:, 6] = self._in_transfer / n
        glob[:, 7] = self._in_cloud / n
        price = np.minimum(self.ep["price"] / 10, FEATURE_MAX).astype(np.float32)
        if only is None:
            return {"workloads": self._buf.copy().transpose(0, 2, 1), "workload_mask": self.valid.view(np.int8).copy(),
                    "globals": glob, "instance_price": price}
        workloads, valid = np.zeros(self._buf.shape, np.float32), np.zeros(self.valid.shape, bool)
        final_glob, final_price = np.zeros(glob.shape, np.float32), np.zeros(price.shape, np.float32)
        workloads[only], valid[only], final_glob[only], final_price[only] = self._buf[only], self.valid[only], glob[only], price[only]
        return {"workloads": workloads.transpose(0, 2, 1), "workload_mask": valid.view(np.int8), "globals": final_glob,
                "instance_price": final_price}

    def _info(self) -> dict[str, Any]:
        return {"action_mask": self._mask, "total_cost": self.total_cost.copy(), "hour": self.hour.copy()}
