"""Validation gates at scale: a 100,000-image manifest, a 1,000,000-row table, and the migration of
the same images, in one run.

Data (written once into benchmarks/.data/validation): 100,000 greyscale 32x32 PNGs in the
ImageFolder layout (3 splits x 10 classes, noisy digit-like strokes, about 1 KB each) and a
1,000,000-row Parquet table shaped like the demo's request log. Server: a fresh embedded SeaweedFS
on 127.0.0.1.

Measured, in this order, in one process:
1. the source gate on the images (read, SHA-256, full decode and pixel histogram of every file, then
   the GX suites on the manifest, then their Data Docs): ``manifest_rows_per_s``;
2. the source gate on the table (read, profile, GX suites): ``table_rows_per_s``;
3. the migration of the images to the server (lepton's engine, hash cache cold);
4. the cloud-copy gate on the images (the target's listing against the manifest and the source).
``gate_overhead_fraction`` is (1 + 4) over 3: what the gates add to moving the same data.

Run: .venv/bin/python benchmarks/validation.py [--images 100000] [--rows 1000000]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent
CLASSES = [str(i) for i in range(10)]
SPLITS = ["train", "val", "test"]


def make_images(dest: Path, n: int) -> None:
    marker = dest.parent / f".{dest.name}-complete-{n}"  # beside the dataset, not in it
    if marker.exists():
        return
    shutil.rmtree(dest, ignore_errors=True)
    from PIL import Image

    rng = np.random.default_rng(0)
    templates = rng.integers(0, 256, size=(10, 32, 32), dtype=np.uint8)

    def write(i: int) -> None:
        cls, split = i % 10, SPLITS[(i // 10) % 5 % 3]
        local = np.random.default_rng(i)
        img = np.clip(templates[cls].astype(np.int16) + local.integers(-20, 21, size=(32, 32)), 0, 255).astype(np.uint8)
        path = dest / split / str(cls) / f"{i:06d}.png"
        Image.fromarray(img, mode="L").save(path, optimize=False)

    for split in SPLITS:
        for cls in CLASSES:
            (dest / split / cls).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(n), chunksize=256))
    marker.touch()


def make_table(path: Path, rows: int) -> None:
    if path.exists() and len(pd.read_parquet(path, columns=["request_id"])) == rows:
        return
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({
        "request_id": np.arange(1, rows + 1, dtype=np.int64),
        "timestamp": pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 30 * 86400, rows)), unit="s"),
        "client": rng.choice(["web", "mobile", "batch", "partner"], rows),
        "latency_ms": rng.gamma(4.0, 6.0, rows),
        "status": rng.choice([200, 400, 429, 500], rows, p=[0.95, 0.02, 0.02, 0.01]),
        "predicted_class": rng.integers(0, 10, rows),
        "confidence": rng.beta(8, 2, rows),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)


def write_spec(folder: Path, images: Path, table: Path) -> Path:
    from lepton_core.demo.sample import REQUEST_LOG_COLUMNS

    spec = {
        "version": 1, "name": "validation-bench",
        "datasets": [
            {"name": "images", "location": str(images), "kind": "images", "splits": SPLITS, "classes": CLASSES,
             "image_size": [32, 32], "image_mode": "L"},
            {"name": "requests", "location": str(table), "kind": "table", "columns": REQUEST_LOG_COLUMNS},
        ],
        "target": {"provider": "aws", "bucket": "bench", "prefix": "v", "region": "us-east-1", "endpoint_url": "embedded",
                   "encryption": "AES256", "catalogue": "aws-us-east-1"},
        "budget": {"migration_usd": 1000, "monthly_usd": 1000},
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

    data = ROOT / ".data" / "validation"
    t = time.perf_counter()
    make_images(data / "images", args.images)
    make_table(data / f"requests-{args.rows}.parquet", args.rows)
    print(f"data ready in {time.perf_counter() - t:.1f} s", file=sys.stderr)

    import great_expectations  # noqa: F401  (its import, about 3 s, is not part of any gate's time)

    from lepton_core.data.stage import migrate_dataset
    from lepton_core.spec import load_spec
    from lepton_core.state import store_dir
    from lepton_core.store import EmbeddedStore
    from lepton_core.validation.gate import validate_local
    from lepton_core.validation.parity import validate_target

    work = Path(tempfile.mkdtemp(prefix="lepton-vbench-"))
    loaded = load_spec(write_spec(work, data / "images", data / f"requests-{args.rows}.parquet"))
    try:
        t = time.perf_counter()
        images_gate = validate_local(loaded, "images", docs_dir=work / "docs/source-images")
        source_s = time.perf_counter() - t
        print(f"source gate, images: {source_s:.1f} s ({images_gate.rows_text()})", file=sys.stderr)

        t = time.perf_counter()
        validate_local(loaded, "requests", docs_dir=work / "docs/source-requests")
        table_s = time.perf_counter() - t
        print(f"source gate, table: {table_s:.1f} s", file=sys.stderr)

        from lepton_core.store.target import open_store

        open_store(loaded.spec.target, work, start=True)  # the server's start-up is not the migration's time
        t = time.perf_counter()
        summary = migrate_dataset(loaded, "images", work)
        migrate_s = time.perf_counter() - t
        print(f"migration: {migrate_s:.1f} s ({summary.line()})", file=sys.stderr)

        t = time.perf_counter()
        validate_target(loaded, "images", work, work / "docs/target-images")
        target_s = time.perf_counter() - t
        print(f"target gate, images: {target_s:.1f} s", file=sys.stderr)
    finally:
        EmbeddedStore(store_dir(work)).down()
        shutil.rmtree(work, ignore_errors=True)

    print(json.dumps({
        "images": args.images, "table_rows": args.rows,
        "manifest_rows_per_s": round(args.images / source_s), "table_rows_per_s": round(args.rows / table_s),
        "source_gate_s": round(source_s, 2), "table_gate_s": round(table_s, 2), "migration_s": round(migrate_s, 2),
        "target_gate_s": round(target_s, 2), "gate_overhead_fraction": round((source_s + target_s) / migrate_s, 4),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
    }))


if __name__ == "__main__":
    main()
