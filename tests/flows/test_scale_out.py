"""Fan-out tasks on Dask: the runner a flow gets from LEPTON_DASK, and a flow run on a local cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from lepton_core.spec.params import SpecRef


def test_the_runner_follows_lepton_dask(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows._run import fan_out_runner

    monkeypatch.delenv("LEPTON_DASK", raising=False)
    assert isinstance(fan_out_runner(), ThreadPoolTaskRunner)
    monkeypatch.setenv("LEPTON_DASK", "local")
    local = fan_out_runner()
    assert isinstance(local, DaskTaskRunner) and local.address is None and local.cluster_kwargs["processes"] is True
    monkeypatch.setenv("LEPTON_DASK", "tcp://10.1.2.3:8786")
    assert fan_out_runner().address == "tcp://10.1.2.3:8786"
    monkeypatch.setenv("LEPTON_DASK", "10.1.2.3")
    with pytest.raises(ValueError, match=r"LEPTON_DASK='10.1.2.3': expected 'local' or a Dask scheduler address"):
        fan_out_runner()


def test_the_validate_flow_fans_out_on_a_dask_cluster(demo_data: Path, flow_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import Client, LocalCluster, get_task_stream

    from flows._run import fan_out_runner
    from flows.validate import validate

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        monkeypatch.setenv("LEPTON_DASK", cluster.scheduler_address)
        with Client(cluster) as client, get_task_stream(client) as stream:  # what the cluster's workers ran
            lines = validate.with_options(task_runner=fan_out_runner())(spec=SpecRef(path=str(demo_data)), side="source")
            workers = set(client.scheduler_info()["workers"])
    assert lines[:3] == ["digits-onprem: 11 source expectations passed", "digits-cloud: 11 source expectations passed",
                         "request-log: 23 source expectations passed"]
    ran = [(t["key"], t["worker"]) for t in stream.data]
    gates = [(key, worker) for key, worker in ran if "validate_source_task" in str(key)]
    assert len(gates) == 3 and {worker for _, worker in gates} <= workers  # the three gates ran on the cluster's workers
    assert sum("drift_task" in str(key) for key, _ in ran) == 1
