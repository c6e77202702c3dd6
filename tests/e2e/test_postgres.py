"""PostgreSQL, the scaled option for the Prefect server's database: the same deployment and
workers against a server on Debian's PostgreSQL instead of SQLite, several runs at once.

The cluster is a private one on a free port (``postgres_url`` in conftest.py); the runs' rows are
read back from PostgreSQL itself, so the test fails if the server quietly kept SQLite.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.conftest import deploy_one, psql, running_prefect_server, stop_group
from tests.e2e.test_deployments import REPO

RUNS = 5  # one more than the two workers take at once (2 x 2): one waits for a slot


def test_runs_on_a_postgres_backed_server_all_complete(demo_data: Path, user_env: dict[str, str], postgres_url: str,
                                                       tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with running_prefect_server(user_env, database_url=postgres_url) as api:
        env = {**user_env, "PREFECT_API_URL": api, "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
               "LEPTON_PROJECT_DIR": str(REPO), "PREFECT_WORKER_QUERY_SECONDS": "1"}
        deploy_one(env, REPO, "validate-nightly")
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("validate/validate-nightly")
            ids = {client.create_flow_run_from_deployment(deployment.id, name=f"pg-{i}", parameters={
                "spec": {"path": str(demo_data)}, "side": "source"}).id for i in range(RUNS)}
            logs = [open(tmp_path / f"worker-{i}.log", "w") for i in range(2)]
            workers = [subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "cpu", "--limit", "2"],
                                        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                       for log in logs]
            started = time.monotonic()
            try:
                while True:
                    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
                    states = {r.id: r.state.type.value for r in runs if r.state}
                    if all(states.get(i) in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for i in ids):
                        break
                    assert time.monotonic() - started < 900, f"not drained after 900 s: {sorted(states.values())}"
                    time.sleep(2)
            finally:
                for worker in workers:
                    stop_group(worker)
                for log in logs:
                    log.close()
        assert {states[i] for i in ids} == {"COMPLETED"}, (tmp_path / "worker-0.log").read_text()[-3000:]
        # the runs live in PostgreSQL: one row each, all Completed, and nothing else of this deployment
        rows = psql(postgres_url, "select name, state_type from flow_run order by name")
        assert rows.splitlines() == [f"pg-{i}|COMPLETED" for i in range(RUNS)]
        assert int(psql(postgres_url, "select count(*) from task_run where state_type = 'COMPLETED'")) >= RUNS * 4
