"""The demo system's services: a dozen parts of an ML platform with realistic demand and links."""

from __future__ import annotations

from typing import Any


def _svc(name: str, cpu: float, memory_gb: float, *, gpu: int = 0, rps: float = 0, data_gb: float = 0,
         datasets: tuple[str, ...] = (), deps: tuple[str, ...] = ()) -> dict[str, Any]:
    # On-prem cost per hour: amortised hardware, power and operations, per vCPU, GB and GPU.
    onprem = round(0.045 * cpu + 0.006 * memory_gb + 1.10 * gpu + 0.0004 * data_gb, 4)
    out: dict[str, Any] = {"name": name, "cpu": cpu, "memory_gb": memory_gb}
    if gpu:
        out["gpu"] = gpu
    out.update(traffic_rps=rps, data_gb=data_gb)
    if datasets:
        out["datasets"] = list(datasets)
    if deps:
        out["depends_on"] = list(deps)
    out["onprem_cost_per_hour"] = onprem
    return out


def demo_services(source: str, target: str, table: str) -> list[dict[str, Any]]:
    """Twelve services; the dataset names tie the image stores and the request log to their owners."""
    return [
        _svc("user-db", 4, 16, rps=400, data_gb=250),
        _svc("auth", 1, 2, rps=300, data_gb=1, deps=("user-db",)),
        _svc("ingest-gateway", 2, 4, rps=120, data_gb=5, deps=("auth",)),
        _svc("image-store", 2, 8, rps=60, data_gb=1200, datasets=(source, target)),
        _svc("feature-store", 8, 64, rps=200, data_gb=800, deps=("user-db",)),
        _svc("labeling-tool", 2, 4, rps=5, data_gb=2, deps=("image-store", "auth")),
        _svc("training-pipeline", 16, 64, gpu=1, data_gb=50, deps=("image-store", "feature-store")),
        _svc("model-registry", 1, 2, rps=10, data_gb=40, deps=("image-store",)),
        _svc("model-server", 4, 16, gpu=1, rps=150, data_gb=3, deps=("model-registry", "feature-store")),
        _svc("batch-scorer", 8, 32, data_gb=20, deps=("model-server", "feature-store")),
        _svc("monitoring", 2, 8, rps=50, data_gb=100, datasets=(table,), deps=("model-server",)),
        _svc("reporting-ui", 1, 2, rps=20, data_gb=1, deps=("monitoring", "auth")),
    ]
