"""The deployments as operators use them: a real Prefect server, the pools and limit from
``deployments/setup.py``, ``prefect deploy``, a process worker, a run that fails, and Retry.

One test, in the order on-call staff live it: the `migrate` deployment runs on the demo with a
broken on-prem checkpoint, so it fails at the model's adaptation after the data has moved; the
object store is stopped mid-run, as soon as the first dataset is in, and started again ten seconds
later, while the other copies, their checks and the task results still need it; the checkpoint is
fixed and the run retried with ``prefect flow-run retry`` (what the UI's Retry button does). The
retried run must complete with every task that had finished coming back Cached, and nothing sent or
registered twice.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lepton_core.store import EmbeddedStore, ObjectStore
from tests.conftest import ONE_EPOCH_SLO, QUICK_PARITY_IMAGES, quick_cloud_choice
from tests.e2e.conftest import stop_group

REPO = Path(__file__).resolve().parents[2]
PREFIX = "e2e-deploy"


def wait_for(client, flow_run_id, terminal: set[str], deadline_s: float):
    """Poll the flow run until its state type is one of ``terminal``; the run on timeout fails the test."""
    deadline = time.monotonic() + deadline_s
    while True:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.type.value in terminal:
            return run
        assert time.monotonic() < deadline, f"flow run still {run.state.name if run.state else None} after {deadline_s:.0f} s"
        time.sleep(2)


def task_runs(client, flow_run_id) -> list:
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    return client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id])))


def wait_for_task(client, flow_run_id, prefix: str, state: str, deadline_s: float):
    """Poll until a task run of the flow run whose name starts with ``prefix`` is in ``state``."""
    deadline = time.monotonic() + deadline_s
    while True:
        runs = [r for r in task_runs(client, flow_run_id) if r.name.startswith(prefix) and r.state and r.state.name == state]
        if runs:
            return runs[0]
        assert time.monotonic() < deadline, f"no {prefix}* task run {state} after {deadline_s:.0f} s"
        time.sleep(0.25)


def latest_states(client, flow_run_id) -> dict[str, list[str]]:
    """Task run names (without Prefect's numeric suffix) -> state names, oldest first."""
    out: dict[str, list[str]] = {}
    for r in sorted(task_runs(client, flow_run_id), key=lambda r: r.created):
        name = r.name if r.name.startswith(("migrate-", "validate-", "drift-")) else r.name.rsplit("-", 1)[0]
        out.setdefault(name, []).append(r.state.name if r.state else "?")
    return out


def demo_copy(demo_full: Path, dest: Path) -> Path:
    """The full demo in a folder of its own (its checkpoint is about to be broken), with
    ``ONE_EPOCH_SLO`` and a quick cloud choice."""
    shutil.copytree(demo_full.parent / "data", dest / "data")
    shutil.copytree(demo_full.parent / "models", dest / "models")
    data = quick_cloud_choice(yaml.safe_load(demo_full.read_text()))
    data["slo"] = {**data["slo"], **ONE_EPOCH_SLO}
    spec = dest / "spec.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    return spec


def test_a_failed_deployment_run_resumes_on_retry(demo_full: Path, user_env: dict[str, str], prefect_server: str,
                                                  tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    spec = demo_copy(demo_full, tmp_path / "demo")
    checkpoint = next((tmp_path / "demo" / "models").glob("*.pt"))
    good = checkpoint.read_bytes()
    env = {**user_env, "PREFECT_API_URL": prefect_server, "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
           "LEPTON_PROJECT_DIR": str(REPO), "PREFECT_WORKER_QUERY_SECONDS": "1"}

    setup = subprocess.run([sys.executable, "deployments/setup.py", "--gpu-slots", "2"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "work pool cpu: created (process)" in setup.stdout and "global concurrency limit gpu: 2 slot(s)" in setup.stdout
    again = subprocess.run([sys.executable, "deployments/setup.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert "work pool gpu: exists, left as it is" in again.stdout  # idempotent
    deploy = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr

    with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
        assert {n: d.work_pool_name for n, d in deployments.items()} == {
            "migrate": "cpu", "validate-nightly": "cpu", "adapt-model": "gpu", "train-planner": "gpu",
            "optimize-serving-weekly": "cpu"}
        weekly = deployments["optimize-serving-weekly"]
        assert [s.schedule.cron for s in weekly.schedules] == ["0 3 * * 1"] and weekly.schedules[0].active
        nightly = deployments["validate-nightly"]
        assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"] and nightly.parameters == {"side": "target"}
        assert deployments["adapt-model"].job_variables["env"]["LEPTON_GPU_LIMIT"] == "gpu"
        assert client.read_global_concurrency_limit_by_name("gpu").limit == 1  # the second setup set the default

        log = open(tmp_path / "worker.log", "w")
        worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "cpu", "--limit", "1"],
                                  cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            checkpoint.write_bytes(b"not a checkpoint")  # the on-prem model is broken: adaptation fails, not before
            run = client.create_flow_run_from_deployment(deployments["migrate"].id, parameters={
                "spec": {"path": str(spec)}, "target": {"prefix": PREFIX}, "planning": {"exact_seconds": 2},
                "adapting": {"max_epochs": 1, "compare_scratch": False}, "integrating": {"golden_per_domain": QUICK_PARITY_IMAGES},
                "optimizing": {"enabled": False}})  # serving optimisation: tests/flows/test_optimize.py

            # the object store goes down mid-run, once the first dataset is in, and is started again
            # ten seconds later (unless a task of the run started it first: lepton starts its
            # embedded store when a task needs it and finds it down, as it would reach a cloud's again)
            store_dir = Path(user_env["LEPTON_HOME"]) / "store"
            wait_for_task(client, run.id, "migrate-", "Completed", 600)
            assert EmbeddedStore(store_dir).down()
            assert client.read_flow_run(run.id).state.type.value == "RUNNING"
            waiting = [r.name for r in task_runs(client, run.id) if r.state and not r.state.is_final()]
            assert any(n.startswith(("migrate-", "validate-target-")) for n in waiting), waiting  # copies, checks need it
            time.sleep(10)
            EmbeddedStore(store_dir).up()

            failed = wait_for(client, run.id, {"FAILED", "CRASHED", "COMPLETED"}, 900)
            assert failed.state.type.value == "FAILED", (tmp_path / "worker.log").read_text()[-3000:]
            first = latest_states(client, run.id)
            assert first["adapt-model"] == ["Failed"]  # bad input: not retried
            always = {"check-spec", "choose-cloud", "reach-object-store"}  # quick, and run on every attempt
            done = {n for n, states in first.items() if states == ["Completed"]} - always
            assert {"migrate-digits-onprem", "migrate-digits-cloud", "migrate-request-log", "validate-source-digits-cloud",
                    "validate-target-digits-cloud", "plan-migration", "publish-data-docs"} <= done
            summary = next(a for a in client.read_artifacts() if a.key == "failure-summary" and a.flow_run_id == run.id)
            assert "`adapt-model-" in summary.data.split("## Failed")[1].split("##")[0] and "press **Retry**" in summary.data

            store = ObjectStore(EmbeddedStore(store_dir).settings())
            before = {o.key: (o.etag, o.last_modified) for o in store.list("lepton-demo", f"{PREFIX}/datasets/")}
            assert len(before) == 3595 + 3  # the data and each dataset's manifest, whole after the outage

            checkpoint.write_bytes(good)  # fixed; on-call presses Retry
            retry = subprocess.run([sys.executable, "-m", "prefect", "flow-run", "retry", str(run.id)], env=env,
                                   capture_output=True, text=True, timeout=120)
            assert retry.returncode == 0, retry.stdout + retry.stderr
            finished = wait_for(client, run.id, {"FAILED", "CRASHED", "COMPLETED"}, 900)
            assert finished.state.type.value == "COMPLETED", (tmp_path / "worker.log").read_text()[-3000:]
        finally:
            stop_group(worker)
            log.close()

        second = latest_states(client, run.id)
        assert {name: second[name] for name in done} == {name: ["Completed", "Cached"] for name in done}  # not run again
        assert second["adapt-model"] == ["Failed", "Completed"] and second["integrate"] == ["Completed"]
        assert second["check-spec"] == ["Completed", "Completed"]  # the cheap, always-run tasks ran again
        assert second["choose-cloud"] == ["Completed", "Completed"]  # the second time from the run's record
        artifacts = [a for a in client.read_artifacts() if a.flow_run_id == run.id]
        gates = [f"validation-{side}-{d}" for side in ("source", "target") for d in ("digits-cloud", "digits-onprem", "request-log")]
        assert sorted(a.key for a in artifacts if a.key) == sorted(["migration-report", "migration-plan", "migration-plans", "drift-digits-cloud",
                                                                    "model-adaptation", "model-metrics", "parity", "failure-summary",
                                                                    "cloud-choice", "cloud-comparison", "cloud-chart", "migration-gantt",
                                                                    "adaptation-curve", *gates])
        tables = {a.key: json.loads(a.data) for a in artifacts if a.type == "table"}
        costs = [row["total_cost"] for row in tables["migration-plans"]]
        assert costs == sorted(costs) and {"lift-shift", "waves", "greedy", "exact"} <= {row["method"] for row in tables["migration-plans"]}
        assert {(r["model"], r["test split"]) for r in tables["model-metrics"]} >= {("adapted", "target"), ("on-prem (unadapted)", "target")}
        progress = [a.description for a in artifacts if a.type == "progress"]
        assert len(progress) == 3 and all(d.startswith("Copying ") for d in progress)  # one per dataset copy, made once

    store = ObjectStore(EmbeddedStore(Path(user_env["LEPTON_HOME"]) / "store").settings())
    after = {o.key: (o.etag, o.last_modified) for o in store.list("lepton-demo", f"{PREFIX}/datasets/")}
    assert after == before  # nothing sent twice
    versions = {o.key.split("/versions/")[1].split("/")[0] for o in store.list("lepton-demo", f"{PREFIX}/registry/") if "/versions/" in o.key}
    assert len(versions) == 2 and sum(v.startswith("onprem-") for v in versions) == 1  # the on-prem model and one candidate
    report = next(Path(user_env["LEPTON_HOME"]).glob("runs/*/report.md"))
    text = report.read_text()
    assert "- status: **ok**" in text and (report.parent / "FAILURE.md").is_file()
    assert "| chosen | compared in this run |" in text  # the retry kept the first attempt's cloud, as it was chosen


@pytest.mark.parametrize("slots", ["0", "x"])
def test_setup_refuses_a_bad_slot_count(slots: str, user_env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "deployments/setup.py", "--gpu-slots", slots], cwd=REPO,
                          env={**user_env, "PREFECT_API_URL": "http://127.0.0.1:9/api"}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(("error: --gpu-slots must be at least 1",
                                                                                   "setup.py: error: argument --gpu-slots"))
