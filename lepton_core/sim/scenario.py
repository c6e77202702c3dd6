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
    hours = np.arange(horizon) % DAY
    business = np.clip(np.sin((hours - 8) / 11 * np.pi), 0, None) * ((hours >= 8) & (hours <= 19))
    factor = 1.0 - dip * business + rng.normal(0.0, noise, horizon)
    return np.clip(factor, 0.05, 1.0)


def from_spec(loaded: LoadedSpec, link: str | None = None, seed: int = 0, horizon: int = 14 * DAY) -> Scenario:
    """The spec's services on its catalogue's instances, over one of its links (the first by default)."""
    spec, cat = loaded.spec, loaded.catalogue
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
        pinned=np.array([names.index(s.instance_type) if s.instance_type else -1 for s in services], dtype=np.int64),
    )


@functools.cache
def bundled_catalogue():
    """The catalogue lepton ships (``aws-us-east-1``), for generated scenarios (read once)."""
    import yaml

    from lepton_core.spec.catalogue import Catalogue, catalogue_path

    return Catalogue.model_validate(yaml.safe_load(catalogue_path("aws-us-east-1", Path(".")).read_text()))


def generate(rng: np.random.Generator, n: int, horizon: int = 14 * DAY, price_jitter: float = 0.2,
             catalogue=None) -> Scenario:
    """A random but plausible system of ``n`` workloads for training and tests, from ``rng`` alone.

    Demands are drawn from the sizes AI systems run at (web and API services, databases, GPU
    inference), data sizes are log-normal between about 5 GB and 5 TB, dependencies form a DAG
    (each workload calls up to three earlier ones), on-prem running costs are 1.2-2.5 times the
    cheapest cloud instance that fits, instance prices are jittered by ``price_jitter``, and the
    link is 1 or 10 Gbit/s."""
    cat = catalogue or bundled_catalogue()

    def pick(values, p=None) -> np.ndarray:  # rng.choice, one call for all n (choice is slow per call)
        cdf = np.cumsum(p if p is not None else np.full(len(values), 1 / len(values)))
        return np.asarray(values)[np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(values) - 1)]

    kind = pick([0, 1, 2], [0.6, 0.25, 0.15])  # service, database, GPU inference
    cpu = np.where(kind == 2, pick([4, 8]), pick([1, 2, 4, 8, 16], [0.2, 0.3, 0.3, 0.15, 0.05])).astype(float)
    memory = cpu * np.where(kind == 1, pick([4.0, 8.0]), pick([2.0, 4.0]))
    gpu = (kind == 2).astype(float)
    data = np.exp(rng.uniform(np.log(5), np.log(5000), size=n)) * np.where(kind == 1, 1.0, 0.3)
    traffic = pick([0.0, 50.0, 200.0, 1000.0, 3000.0], [0.2, 0.3, 0.25, 0.2, 0.05])
    # each workload calls up to three earlier ones, chosen at random: a DAG
    calls = np.minimum(rng.integers(0, 4, size=n), np.arange(n))
    keys = np.where(np.tri(n, k=-1, dtype=bool), rng.random((n, n)), np.inf)
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)
    depends = (rank < calls[:, None]) & np.isfinite(keys)
    vcpu = np.array([it.vcpu for it in cat.instances], float)
    mem = np.array([it.memory_gb for it in cat.instances], float)
    gpus = np.array([it.gpu for it in cat.instances], float)
    price = np.array([it.price_per_hour for it in cat.instances], float) * rng.uniform(1 - price_jitter, 1 + price_jitter, len(cat.instances))
    fits = (vcpu[None, :] >= cpu[:, None]) & (mem[None, :] >= memory[:, None]) & (gpus[None, :] >= gpu[:, None])
    cheapest = np.where(fits, price[None, :], np.inf).min(axis=1)
    onprem = np.round(cheapest * rng.uniform(1.2, 2.5, size=n), 4)
    link = cat.links[int(rng.integers(len(cat.links)))] if cat.links else None
    return Scenario(
        names=tuple(f"w{i:02d}" for i in range(n)), cpu=cpu, memory_gb=memory, gpu=gpu, data_gb=np.round(data, 1),
        traffic_rps=traffic, onprem_cost=onprem, depends=depends, instance_names=cat.instance_names,
        instance_vcpu=vcpu, instance_memory_gb=mem, instance_gpu=gpus, instance_price=np.round(price, 4),
        link_gbps=link.gbps if link else 1.0, link_efficiency=link.efficiency if link else 0.75,
        link_price=link.price_per_hour if link else 0.3, bandwidth_factor=bandwidth_profile(rng, horizon),
        transfer_per_gb=cat.transfer_in_per_gb, horizon=horizon, seed=int(rng.integers(2**31)),
        pinned=np.full(n, -1, dtype=np.int64),
    )
