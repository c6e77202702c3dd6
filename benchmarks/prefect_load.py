"""Prefect under load: N concurrent runs of the deployed `validate` flow against one server and
two process workers; every run must complete (none lost), and the time to drain is the figure.

What it starts, all on 127.0.0.1 and stopped at the end: a `prefect server start` (SQLite, its
own PREFECT_HOME), the work pools and limit (`deployments/setup.py`), the deployments
(`prefect deploy`), and `--workers` process workers on the `cpu` pool, each taking at most
`--limit` runs at once. The runs check the source side of the bundled demo's data (no model, no
object store), so each is a short flow run of its own process: the load is on the server, the
workers and the machine's two cores.

Run: .venv/bin/python benchmarks/prefect_load.py [--runs 50] [--workers 2] [--limit 2] [--database-url URL]
(``--database-url postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB``: the server on PostgreSQL
instead of SQLite; the database must exist and be empty.)
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from lepton_core.procs import free_port, stop_group

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=2, help="flow runs one worker runs at once")
    parser.add_argument("--deadline", type=float, default=3600, help="seconds to wait for the runs to drain")
    parser.add_argument("--database-url", default=None, help="the server's database (default: SQLite in its PREFECT_HOME)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lepton-load-"))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp / "prefect"), PREFECT_API_URL=api, PREFECT_SERVER_EPHEMERAL_ENABLED="false",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", LEPTON_HOME=str(tmp / "home"), LEPTON_PROJECT_DIR=str(REPO),
               PREFECT_WORKER_QUERY_SECONDS="2")
    from lepton_core.demo.sample import build_sample

    spec = build_sample(tmp / "demo", train_model=False)
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        server_env = {**env, "PREFECT_API_DATABASE_CONNECTION_URL": args.database_url} if args.database_url else env
        procs.append(subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                      env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("prefect server did not start in 120 s") from None
                time.sleep(0.5)
        for cmd in ([sys.executable, "deployments/setup.py"],
                    [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml",
                     "--name", "validate-nightly"]):
            subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
        for i in range(args.workers):
            log = open(tmp / f"worker-{i}.log", "w")
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "cpu", "--limit", str(args.limit),
                                           "--name", f"load-{i}"], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))

        os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=env["PREFECT_HOME"])
        from prefect import get_client

        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("validate/validate-nightly")
            started = time.monotonic()
            ids = [client.create_flow_run_from_deployment(deployment.id, parameters={"spec": {"path": str(spec)}, "side": "source"}).id
                   for _ in range(args.runs)]
            created_s = time.monotonic() - started
            while True:
                states = [client.read_flow_run(i).state for i in ids]
                done = [s for s in states if s is not None and s.is_final()]
                if len(done) == len(ids) or time.monotonic() - started > args.deadline:
                    break
                time.sleep(2)
            drain_s = time.monotonic() - started
        counts = collections.Counter(s.name if s else "none" for s in states)
    finally:
        for p in reversed(procs):
            stop_group(p)
        for log in logs:
            log.close()
    completed = counts.get("Completed", 0)
    print(f"{args.runs} runs of validate on {args.workers} workers (at most {args.limit} runs each): "
          f"{dict(counts)}; created in {created_s:.1f} s, drained in {drain_s:.1f} s")
    database = args.database_url.split(":", 1)[0].split("+", 1)[0] if args.database_url else "sqlite"
    print(json.dumps({"runs": args.runs, "workers": args.workers, "limit_per_worker": args.limit, "database": database, "completed": completed,
                      "not_completed": args.runs - completed,
                      "states": dict(counts), "create_s": round(created_s, 1), "drain_s": round(drain_s, 1),
                      "runs_per_min": round(completed / drain_s * 60, 1), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                      "date": time.strftime("%Y-%m-%d")}))


if __name__ == "__main__":
    main()
