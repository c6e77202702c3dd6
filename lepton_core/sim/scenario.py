"""Migration scenarios: the world the simulator steps through, as plain numpy arrays.

A scenario holds the workloads (the spec's services: CPU, memory, GPU demand, data to move,
traffic, on-prem cost, dependencies), the cloud's priced instance types, the network link (its
nominal rate, the share of it achieved, its port price, and a seeded hour-by-hour bandwidth factor
that dips in business hours), and the penalty prices. It comes from a spec and its catalogue
(``from_spec``) or from a seeded generator for training and tests (``generate``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lepton_core.errors import UsageError
from lepton_core.spec import LoadedSpec

GB_PER_HOUR_PER_GBPS = 450.0  # 1 Gbit/s = 0.125 GB/s = 450 GB/h
DAY = 24


@dataclass(frozen=True)
class Scenario:
    """Everything the simulator needs; arrays are indexed by workload (n) and instance type (k)."""

    names: tuple[str, ...]
    cpu: np.ndarray  # (n,) vCPUs
    memory_gb: np.ndarray  # (n,)
    gpu: np.ndarray  # (n,) GPUs
    data_gb: np.ndarray  # (n,) data that must move with the workload
    traffic_rps: np.ndarray  # (n,) requests per second it serves
    onprem_cost: np.ndarray  # (n,) $ per hour while it runs on-prem
    depends: np.ndarray  # (n, n) bool: depends[i, j] when workload i calls workload j
    instance_names: tuple[str, ...]
    instance_vcpu: np.ndarray  # (k,)
    instance_memory_gb: np.ndarray  # (k,)
    instance_gpu: np.ndarray  # (k,)
    instance_price: np.ndarray  # (k,) $ per hour
    link_gbps: float
    link_efficiency: float
    link_price: float  # $ per hour while any transfer is in flight
    bandwidth_factor: np.ndarray  # (horizon,) share of the achieved rate available in each hour
    transfer_per_gb: float = 0.0  # $ per GB moved into the cloud
    cutover_hours: int = 1  # hours of dual running (on-prem and cloud) once a workload's data is over
    downtime_minutes: float = 5.0  # minutes a workload is down at its cutover
    downtime_cost_per_krps_minute: float = 20.0  # $ per minute down per 1,000 requests/s served
    cross_site_cost_per_krps_hour: float = 2.0  # $ per hour per 1,000 requests/s that cross the link
    horizon: int = 14 * DAY  # hours before the episode is truncated
    seed: int = 0
    pinned: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (n,) instance or -1
    instance_family: tuple[str, ...] = ()  # (k,) general, compute, memory or gpu; empty when unknown

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def k(self) -> int:
        return len(self.instance_names)

    def fits(self) -> np.ndarray:
        """(n, k) bool: instance type k meets workload i's CPU, memory and GPU demand (and its pin)."""
        ok = ((self.instance_vcpu[None, :] >= self.cpu[:, None])
              & (self.instance_memory_gb[None, :] >= self.memory_gb[:, None])
              & (self.instance_gpu[None, :] >= self.gpu[:, None]))
        if len(self.pinned):
            pinned = self.pinned[:, None]
            ok &= (pinned < 0) | (np.arange(self.k)[None, :] == pinned)
        return ok

    def link_gb_per_hour(self, hour: int) -> float:
        """GB the link moves in simulated hour ``hour`` (the factor repeats after the horizon)."""
        return self.link_gbps * self.link_efficiency * GB_PER_HOUR_PER_GBPS * float(self.bandwidth_factor[hour % len(self.bandwidth_factor)])


def bandwidth_profile(rng: np.random.Generator, horizon: int, dip: float = 0.4, noise: float = 0.1) -> np.ndarray:
    """Share of the link available each hour: full at night, down by up to ``dip`` in business hours
    (09:00-18:00, a smooth bump), times seeded noise; always within [0.05, 1]."""
    return _bandwidth(rng.normal(0.0, 1.0, horizon), horizon, dip, noise)


def from_spec(loaded: LoadedSpec, link: str | None = None, seed: int = 0, horizon: int = 14 * DAY,
              catalogue=None) -> Scenario:
    """The spec's services on its catalogue's instances (or ``catalogue``'s, to compare clouds),
    over one of its links (the first by default). A service pinned to an instance type that
    ``catalogue`` does not have (a pin names the spec's own cloud's type) is left free."""
    spec, cat = loaded.spec, catalogue or loaded.catalogue
    services = spec.services
    if not services:
        raise UsageError(f"{loaded.path}: the spec has no services to plan")
    if not cat.links:
        raise UsageError(f"catalogue {cat.provider} {cat.region}: no network link to move data over")
    chosen = next((lk for lk in cat.links if lk.name == link), None) if link else cat.links[0]
    if chosen is None:
        raise UsageError(f"catalogue {cat.provider} {cat.region}: no link {link!r} (known: {', '.join(lk.name for lk in cat.links)})")
    index = {s.name: i for i, s in enumerate(services)}
    depends = np.zeros((len(services), len(services)), dtype=bool)
    for i, s in enumerate(services):
        for dep in s.depends_on:
            depends[i, index[dep]] = True
    names = cat.instance_names
    return Scenario(
        names=tuple(s.name for s in services),
        cpu=np.array([s.cpu for s in services], float), memory_gb=np.array([s.memory_gb for s in services], float),
        gpu=np.array([s.gpu for s in services], float), data_gb=np.array([s.data_gb for s in services], float),
        traffic_rps=np.array([s.traffic_rps for s in services], float),
        onprem_cost=np.array([s.onprem_cost_per_hour for s in services], float), depends=depends,
        instance_names=names,
        instance_vcpu=np.array([it.vcpu for it in cat.instances], float),
        instance_memory_gb=np.array([it.memory_gb for it in cat.instances], float),
        instance_gpu=np.array([it.gpu for it in cat.instances], float),
        instance_price=np.array([it.price_per_hour for it in cat.instances], float),
        link_gbps=chosen.gbps, link_efficiency=chosen.efficiency, link_price=chosen.price_per_hour,
        bandwidth_factor=bandwidth_profile(np.random.default_rng(seed), horizon),
        transfer_per_gb=cat.transfer_in_per_gb, horizon=horizon, seed=seed,
        pinned=np.array([names.index(s.instance_type) if s.instance_type in names else -1 for s in services], dtype=np.int64),
        instance_family=tuple(it.family for it in cat.instances),
    )


@functools.cache
def bundled_catalogue():
    """The catalogue lepton ships (``aws-us-east-1``), for generated scenarios (read once)."""
    from lepton_core.spec.catalogue import catalogue_path
    from lepton_core.spec.loader import read_catalogue

    return read_catalogue(catalogue_path("aws-us-east-1", Path(".")))


# -- seeded, counter-based randomness -------------------------------------------------------------
# A generated scenario is a pure function of one 64-bit key: every number in it is SplitMix64 of
# (key, stream, index). So the scenarios of many simulator copies are drawn in one batch of array
# operations (no Python loop over copies, no per-copy Generator), and a copy draws the same
# scenario whether it runs alone (``CloudMigrationEnv``) or in the vector twin.

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_STREAM = np.uint64(0xD1B54A32D192ED03)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


def mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser over a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def seed_state(seeds) -> np.ndarray:
    """(n,) uint64 generator states for integer seeds (one per simulator copy)."""
    return mix64(np.asarray(seeds, dtype=np.int64).reshape(-1).astype(np.uint64) ^ _STREAM)


def next_keys(states: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
    """Advance ``states`` (those at ``idx``, or all) in place by one episode and return each one's
    scenario key for it."""
    if idx is None:
        states += _GOLDEN
        return mix64(states.copy())
    sub = states[idx] + _GOLDEN
    states[idx] = sub
    return mix64(sub)


def uniforms(keys: np.ndarray, stream: int, count: int) -> np.ndarray:
    """(len(keys), count) floats in (0, 1): draw ``index`` of stream ``stream`` of each key, at
    16-bit resolution (four draws from each 64-bit hash). Draw i is the same whatever ``count`` is,
    so padding a scenario to more slots does not change it."""
    base = mix64(keys ^ np.uint64((stream * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF))
    z = mix64(base[:, None] + np.arange(1, -(-count // 4) + 1, dtype=np.uint64)[None, :] * _GOLDEN)
    parts = z.astype("<u8").view("<u2")[:, :count]
    return (parts + 0.5) * (1.0 / 65536)


def _pick(u: np.ndarray, values: tuple, p: tuple | None = None) -> np.ndarray:
    """values[i] with probability p[i] for uniforms ``u`` (the first i whose cumulative p exceeds u)."""
    bounds, table = _pick_tables(values, p)
    index = np.zeros(u.shape, np.int64)
    for c in bounds:
        index += u >= c
    return table[index]


@functools.lru_cache(maxsize=64)
def _pick_tables(values: tuple, p: tuple | None) -> tuple[np.ndarray, np.ndarray]:
    """The cumulative probabilities that ``_pick`` compares with (all but the last) and its values."""
    cdf = np.cumsum(p if p is not None else np.full(len(values), 1 / len(values)))
    bounds, table = cdf[:-1], np.asarray(values, dtype=float)
    bounds.flags.writeable = table.flags.writeable = False  # (shared by every call)
    return bounds, table


NOISE_TABLE_SIZE = 1 << 16


@functools.lru_cache(maxsize=8)
def bandwidth_table(horizon: int) -> np.ndarray:
    """Bandwidth factors that generated scenarios take a window of: entry x is ``bandwidth_profile``'s
    day curve at hour x mod 24 plus seeded noise (a fixed seed), and a scenario's factors are the
    ``horizon + 1`` entries from a keyed offset that is a multiple of 24. So drawing a profile is
    one contiguous copy, not 2 x horizon random draws and a clip."""
    size = NOISE_TABLE_SIZE + horizon + 1
    noise = np.random.default_rng(0x1EB70).standard_normal(NOISE_TABLE_SIZE)
    return _bandwidth(noise[np.arange(size) % NOISE_TABLE_SIZE], size)


@functools.lru_cache(maxsize=8)
def _bandwidth_windows(horizon: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(bandwidth_table(horizon), horizon + 1)


def bandwidth_rows(offsets: np.ndarray, horizon: int) -> np.ndarray:
    """(R, horizon + 1) factors from ``bandwidth_table`` at ``offsets``; the last equals the first
    (the profile repeats after the horizon, as ``Scenario.link_gb_per_hour`` reads it)."""
    rows = _bandwidth_windows(horizon)[offsets]
    rows[:, horizon] = rows[:, 0]
    return rows


@dataclass(frozen=True)
class ScenarioBatch:
    """Generated scenarios padded to ``m`` workload slots (slots past ``n[r]`` are zero), for the
    vector twin to load in one go; ``scenario(r)`` is row ``r`` as a ``Scenario``."""

    n: np.ndarray  # (R,)
    cpu: np.ndarray  # (R, m)
    memory_gb: np.ndarray
    gpu: np.ndarray
    data_gb: np.ndarray
    traffic_rps: np.ndarray
    onprem_cost: np.ndarray
    depends: np.ndarray  # (R, m, m) bool
    fits: np.ndarray  # (R, m, k) bool: instance type k meets the workload's demand
    instance_price: np.ndarray  # (R, k)
    link: np.ndarray  # (R,) index into the catalogue's links
    cheapest: np.ndarray  # (R, m): $ per hour of the cheapest type that fits (0 in empty slots)
    bandwidth_offset: np.ndarray  # (R,) where in ``bandwidth_table(horizon)`` the profile starts
    horizon: int
    keys: np.ndarray  # (R,) uint64
    catalogue: object

    def links(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each row's link: nominal Gbit/s, share of it achieved, port $ per hour (1 Gbit/s at 75%
        for $0.30 when the catalogue has no link)."""
        table = np.array([[lk.gbps, lk.efficiency, lk.price_per_hour] for lk in self.catalogue.links] or [[1.0, 0.75, 0.3]])
        return tuple(table[self.link].T)

    def scenario(self, r: int) -> Scenario:
        cat, n = self.catalogue, int(self.n[r])
        vcpu, mem, gpus, _ = _instance_arrays(cat)
        gbps, efficiency, port = (float(x[r]) for x in self.links())
        return Scenario(
            names=tuple(f"w{i:02d}" for i in range(n)), cpu=self.cpu[r, :n].copy(), memory_gb=self.memory_gb[r, :n].copy(),
            gpu=self.gpu[r, :n].copy(), data_gb=self.data_gb[r, :n].copy(), traffic_rps=self.traffic_rps[r, :n].copy(),
            onprem_cost=self.onprem_cost[r, :n].copy(), depends=self.depends[r, :n, :n].copy(),
            instance_names=cat.instance_names, instance_vcpu=vcpu, instance_memory_gb=mem, instance_gpu=gpus,
            instance_price=self.instance_price[r].copy(),
            link_gbps=gbps, link_efficiency=efficiency, link_price=port, bandwidth_factor=bandwidth_rows(self.bandwidth_offset[r:r + 1], self.horizon)[0, :-1],
            transfer_per_gb=cat.transfer_in_per_gb, horizon=self.horizon, seed=int(self.keys[r] >> np.uint64(33)),
            pinned=np.full(n, -1, dtype=np.int64), instance_family=tuple(it.family for it in cat.instances),
        )


_ARRAYS: dict[int, tuple] = {}


def _instance_arrays(cat) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """vCPUs, memory, GPUs and price of a catalogue's instance types (built once per catalogue)."""
    hit = _ARRAYS.get(id(cat))
    if hit is None or hit[0] is not cat:
        its = cat.instances
        hit = _ARRAYS[id(cat)] = (cat, np.array([it.vcpu for it in its], float), np.array([it.memory_gb for it in its], float),
                                  np.array([it.gpu for it in its], float), np.array([it.price_per_hour for it in its], float))
    return hit[1:]


_DRAWS = 12  # uniform draws per workload


def generate_batch(keys: np.ndarray, min_workloads: int, max_workloads: int, slots: int | None = None,
                   horizon: int = 14 * DAY, price_jitter: float = 0.2, catalogue=None) -> ScenarioBatch:
    """One random but plausible system per key, between ``min_workloads`` and ``max_workloads``
    workloads, padded to ``slots`` (default ``max_workloads``), all in array operations.

    Demands are drawn from the sizes AI systems run at (web and API services, databases, GPU
    inference), data sizes are log-normal between about 5 GB and 5 TB, dependencies form a DAG
    (each workload calls up to three earlier ones), on-prem running costs are 1.2-2.5 times the
    cheapest cloud instance that fits, instance prices are jittered by ``price_jitter``, the link
    is one of the catalogue's, and its hour-by-hour bandwidth is ``bandwidth_profile``'s."""
    cat = catalogue or bundled_catalogue()
    keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
    m = slots or max_workloads
    if max_workloads > m or min_workloads > max_workloads or min_workloads < 1:
        raise ValueError(f"workloads between {min_workloads} and {max_workloads} in {m} slots: not a valid range")
    per_system = uniforms(keys, 0, 3 + len(cat.instances))  # size, link, noise offset, price jitter
    per_workload = uniforms(keys, 1, m * _DRAWS).reshape(len(keys), m, _DRAWS)  # draw i * _DRAWS + f: independent of m
    w = lambda f: per_workload[:, :, f]  # noqa: E731
    n = min_workloads + np.minimum((per_system[:, 0] * (max_workloads - min_workloads + 1)).astype(np.int64),
                                   max_workloads - min_workloads)
    slot = np.arange(m)
    valid = slot[None, :] < n[:, None]
    kind = _pick(w(0), (0, 1, 2), (0.6, 0.25, 0.15))  # service, database, GPU inference
    cpu = np.where(kind == 2, _pick(w(1), (4, 8)), _pick(w(2), (1, 2, 4, 8, 16), (0.2, 0.3, 0.3, 0.15, 0.05)))
    memory = cpu * np.where(kind == 1, _pick(w(3), (4.0, 8.0)), _pick(w(4), (2.0, 4.0)))
    gpu = (kind == 2).astype(float)
    data = np.round(np.exp(np.log(5) + w(5) * (np.log(5000) - np.log(5))) * np.where(kind == 1, 1.0, 0.3), 1)
    traffic = _pick(w(6), (0.0, 50.0, 200.0, 1000.0, 3000.0), (0.2, 0.3, 0.25, 0.2, 0.05))
    # each workload calls up to three earlier ones, drawn at random (a repeated draw calls the same
    # one): a DAG
    calls = (w(7) * 4).astype(np.int64)
    callee = (per_workload[:, :, 8:11] * slot[None, :, None]).astype(np.int64)  # (R, m, 3), each < i
    use = (np.arange(3)[None, None, :] < calls[:, :, None]) & (slot[None, :, None] > 0) & valid[:, :, None]
    depends = np.zeros((len(keys), m, m), dtype=bool)
    at = np.flatnonzero(use)  # (flat: numpy's 3-D nonzero costs several times more)
    depends.reshape(len(keys), -1)[at // (m * 3), at % (m * 3) // 3 * m + callee.reshape(-1)[at]] = True
    vcpu, mem, gpus, base_price = _instance_arrays(cat)
    price = np.round(base_price[None, :] * (1 - price_jitter + 2 * price_jitter * per_system[:, 3:]), 4)
    # instance types first: the fit test and the cheapest fit are then whole-plane operations
    fits_k = ((vcpu[:, None, None] >= cpu[None]) & (mem[:, None, None] >= memory[None]) & (gpus[:, None, None] >= gpu[None])
              & valid[None])
    cheapest = np.minimum.reduce(np.where(fits_k, price.T[:, :, None], np.inf), axis=0)
    cheapest[~valid] = 0.0
    onprem = np.round(cheapest * (1.2 + 1.3 * w(11)), 4)
    links = max(len(cat.links), 1)
    link = np.minimum((per_system[:, 1] * links).astype(np.int64), links - 1)
    offset = DAY * (per_system[:, 2] * (NOISE_TABLE_SIZE // DAY)).astype(np.int64)
    zero = lambda a: np.where(valid, a, 0.0)  # noqa: E731
    return ScenarioBatch(n=n, cpu=zero(cpu), memory_gb=zero(memory), gpu=zero(gpu), data_gb=zero(data),
                         traffic_rps=zero(traffic), onprem_cost=onprem, depends=depends,
                         fits=np.ascontiguousarray(fits_k.transpose(1, 2, 0)), instance_price=price, link=link,
                         cheapest=cheapest, bandwidth_offset=offset, horizon=horizon, keys=keys, catalogue=cat)


def _bandwidth(standard_normal: np.ndarray, horizon: int, dip: float = 0.4, noise: float = 0.1) -> np.ndarray:
    hours = np.arange(horizon) % DAY
    business = np.clip(np.sin((hours - 8) / 11 * np.pi), 0, None) * ((hours >= 8) & (hours <= 19))
    return np.clip(1.0 - dip * business + noise * standard_normal, 0.05, 1.0)


def generate(rng: np.random.Generator, n: int, horizon: int = 14 * DAY, price_jitter: float = 0.2,
             catalogue=None) -> Scenario:
    """A random but plausible system of ``n`` workloads (see ``generate_batch``), keyed by one draw of ``rng``."""
    key = rng.integers(0, 2**63, dtype=np.uint64, size=1)
    return generate_batch(key, n, n, horizon=horizon, price_jitter=price_jitter, catalogue=catalogue).scenario(0)
