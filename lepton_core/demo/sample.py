"""``lepton sample DIR``: write the demo migration (images, table, model, services, spec).

Deterministic for a seed: the same seed writes the same image and table bytes. Everything is
written into a temporary sibling folder that is renamed to DIR at the end, so an interrupted run
leaves no half-built demo behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lepton_core.errors import UsageError
from lepton_core.fsutil import default_mode

SOURCE, TARGET, TABLE = "digits-onprem", "digits-cloud", "request-log"
CLASSES = [str(c) for c in range(10)]
SPEC_NAME = "spec.yaml"
MODEL_PATH = "models/onprem-resnet18.pt"

Progress = Callable[[str], None]


def build_sample(dest: str | os.PathLike, *, seed: int = 0, epochs: int = 4, train_model: bool = True,
                 force: bool = False, progress: Progress | None = None) -> Path:
    """Write the demo into ``dest`` (which must be missing or empty unless ``force``); its spec's path."""
    dest = Path(dest).expanduser().resolve()
    say = progress or (lambda _msg: None)
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest}: exists and is not a folder")
    if dest.exists() and any(dest.iterdir()) and not force:
        raise UsageError(f"{dest}: folder exists and is not empty (use --force to replace it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial-"))
    try:
        _write(work, seed=seed, epochs=epochs, train_model=train_model, say=say)
        os.chmod(work, default_mode(directory=True))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dest / SPEC_NAME


def _write(root: Path, *, seed: int, epochs: int, train_model: bool, say: Progress) -> None:
    from lepton_core.demo.digits import digit_images
    from lepton_core.demo.services import demo_services

    say("rendering 1,797 digits in the source and target domains")
    images = digit_images(seed)
    for d in images:
        name = f"{d.split}/{d.label}/{d.index:04d}.png"
        for domain, img in ((SOURCE, d.source), (TARGET, d.target)):
            path = root / "data" / domain / name
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, format="PNG", optimize=False)
    say("writing the request-log table")
    write_request_log(root / "data" / f"{TABLE}.parquet", seed=seed)
    if train_model:
        from lepton_core.demo.train import train_source_model
        from lepton_core.transfer.checkpoint import save_checkpoint

        say(f"training the on-prem resnet18 on the source domain ({epochs} epochs)")
        result = train_source_model(images, epochs=epochs, seed=seed,
                                    progress=lambda e, n, loss: say(f"  epoch {e}/{n}: loss {loss:.4f}"))
        save_checkpoint(root / MODEL_PATH, result.state_dict, result.meta)
        m = result.meta.metrics
        say(f"  source test accuracy {m['source_test_accuracy']:.3f}, target test accuracy {m['target_test_accuracy']:.3f}")
    spec = demo_spec(demo_services(SOURCE, TARGET, TABLE), with_model=train_model)
    header = ("# The lepton demo: scikit-learn's digits as the on-prem image data, a shifted copy as the\n"
              "# cloud's data, a request-log table, a resnet18 trained on-prem, and twelve services.\n"
              "# Paths are relative to this file. Written by `lepton sample`.\n")
    (root / SPEC_NAME).write_text(header + yaml.dump(spec, Dumper=_SpecDumper, sort_keys=False, width=110))


class _SpecDumper(yaml.SafeDumper):
    """No anchors/aliases; lists of scalars on one line, as a person would write them."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(v, (dict, list)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_SpecDumper.add_representer(list, _represent_list)


def write_request_log(path: Path, *, seed: int, rows: int = 5000) -> None:
    """A model server's request log: one row per prediction served on-prem."""
    import pandas as pd

    rng = np.random.default_rng(seed + 1)
    start = np.datetime64("2026-10-01T00:00:00", "ms")
    gaps = rng.exponential(500.0, size=rows).astype("int64")  # ms between requests
    latency = np.round(rng.gamma(4.0, 6.0, size=rows), 3)
    status = rng.choice([200, 400, 429, 500], size=rows, p=[0.95, 0.02, 0.02, 0.01])
    table = pd.DataFrame({
        "request_id": np.arange(1, rows + 1, dtype=np.int64),
        "timestamp": start + np.cumsum(gaps).astype("timedelta64[ms]"),
        "client": rng.choice(["web", "mobile", "batch", "partner"], size=rows, p=[0.5, 0.3, 0.15, 0.05]),
        "latency_ms": latency,
        "status": status.astype(np.int64),
        "predicted_class": rng.integers(0, 10, size=rows, dtype=np.int64),
        "confidence": np.round(rng.beta(8.0, 1.5, size=rows), 4),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False, engine="pyarrow", compression="zstd")


REQUEST_LOG_COLUMNS: list[dict[str, Any]] = [  # the request log's declared columns
    {"name": "request_id", "dtype": "int", "nullable": False, "unique": True, "min": 1},
    {"name": "timestamp", "dtype": "datetime", "nullable": False},
    {"name": "client", "dtype": "str", "nullable": False, "values": ["web", "mobile", "batch", "partner"]},
    {"name": "latency_ms", "dtype": "float", "nullable": False, "min": 0},
    {"name": "status", "dtype": "int", "nullable": False, "values": [200, 400, 429, 500]},
    {"name": "predicted_class", "dtype": "int", "nullable": False, "min": 0, "max": 9},
    {"name": "confidence", "dtype": "float", "nullable": False, "min": 0, "max": 1},
]


def demo_spec(services: list[dict[str, Any]], *, with_model: bool) -> dict[str, Any]:
    images = {"kind": "images", "splits": ["train", "val", "test"], "classes": CLASSES, "image_size": [32, 32], "image_mode": "L"}
    spec: dict[str, Any] = {
        "version": 1,
        "name": "digits-demo",
        "description": "Move a handwritten-digit recognition system and its data from on-prem to the cloud.",
        "datasets": [
            {"name": SOURCE, "location": f"data/{SOURCE}", **images},
            {"name": TARGET, "location": f"data/{TARGET}", **images, "drift": {"baseline": SOURCE}},
            {"name": TABLE, "location": f"data/{TABLE}.parquet", "kind": "table", "columns": REQUEST_LOG_COLUMNS},
        ],
    }
    if with_model:
        spec["model"] = {"name": "digits-classifier", "architecture": "resnet18", "checkpoint": MODEL_PATH,
                         "classes": CLASSES, "input_size": 32, "source_dataset": SOURCE, "target_dataset": TARGET}
    spec["services"] = services
    # provider auto: the run compares the bundled clouds and regions and moves to the recommended
    # one; the embedded object store stands in for that cloud's store
    spec["target"] = {"provider": "auto", "bucket": "lepton-demo", "prefix": "digits-demo",
                      "endpoint_url": "embedded", "encryption": "AES256"}
    spec["cloud_choice"] = {"objective": "total_cost", "exact_seconds": 3}
    spec["slo"] = {"p95_latency_ms": 150, "max_downtime_minutes": 15, "min_agreement": 0.97}
    spec["budget"] = {"migration_usd": 2500, "monthly_usd": 6000, "horizon_months": 12}
    return spec
