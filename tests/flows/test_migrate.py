"""The migrate flow against a real Prefect API and a real embedded S3 server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, TaskRunFilter, TaskRunFilterFlowRunId

from flows.migrate import migrate
from lepton_core.errors import is_transient
from lepton_core.spec import SpecError, TargetSpec
from lepton_core.spec.params import AdaptOptions, IntegrateOptions, OptimizeOptions, PlanOptions, SpecRef, TargetOverrides

QUICK_ADAPT = AdaptOptions(max_epochs=1, compare_scratch=False)  # adaptation itself is tested in tests/flows/test_adapt.py
# the baseline alone, briefly: the search is tested in tests/unit/test_optimize.py and tests/flows/test_optimize.py
QUICK_OPTIMIZE = OptimizeOptions(trials=1, step_seconds=1.0, max_steps=3, eval_images=20)
from lepton_core.state import store_dir
from lepton_core.store import EmbeddedStore, ObjectStore, StoreAuthError, StoreError
from lepton_core.store.target import PROBE_KEY, TargetInfo
from tests.conftest import QUICK_PARITY_IMAGES, quick_cloud_choice

QUICK_INTEGRATE = IntegrateOptions(golden_per_domain=QUICK_PARITY_IMAGES)  # parity itself: tests/serving/test_parity.py


def task_runs(flow_run_id) -> dict[str, object]:
    """Task runs by name, without the numeric suffix Prefect adds to default names."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id])))
    return {r.name if r.name.startswith(("migrate-", "validate-", "drift-")) else r.name.rsplit("-", 1)[0]: r for r in runs}


def test_migrate_on_the_demo_writes_report_and_artifact(demo_relaxed: Path, flow_home: Path) -> None:
    state = migrate(spec=SpecRef(path=str(demo_relaxed)), target=TargetOverrides(prefix="flow-test"),
                    planning=PlanOptions(exact_seconds=5), adapting=QUICK_ADAPT, integrating=QUICK_INTEGRATE,
                    optimizing=QUICK_OPTIMIZE, return_state=True)
    assert state.is_completed(), state.message
    report = Path(state.result())
    assert report.parent.parent == flow_home / "runs"
    text = report.read_text()
    assert "# Lepton migration report: digits-demo" in text
    assert "| spec | ok | digits-demo: 3 datasets, 12 services |" in text
    assert "| object store | ok | s3://lepton-demo/flow-test reachable and writable |" in text
    assert "| data migration | ok | 3 datasets, 3595 objects verified (3595 sent this run) |" in text
    assert json.loads((report.parent / "report.json").read_text())["spec_sha256"]
    # the probe object is really in the embedded server, under the overridden prefix, encrypted
    store = ObjectStore(EmbeddedStore(store_dir(flow_home)).settings())
    probe = store.client.head_object(Bucket="lepton-demo", Key=f"flow-test/{PROBE_KEY}")
    assert probe["ServerSideEncryption"] == "AES256"
    with get_client(sync_client=True) as client:
        flow_run_id = state.state_details.flow_run_id
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    reports = [a for a in artifacts if a.key == "migration-report"]
    assert len(reports) == 1 and reports[0].data == text
    progress = [a for a in artifacts if a.type == "progress"]
    assert len(progress) == 3 and all(a.data == 100.0 for a in progress)
    assert "| source validation | ok | 3 datasets passed" in text
    assert "| target validation | ok | 3 datasets passed (19 expectations) |" in text
    gates = sorted(a.key for a in artifacts if a.key and a.key.startswith("validation-"))
    assert gates == [f"validation-{side}-{d}" for side in ("source", "target") for d in ("digits-cloud", "digits-onprem", "request-log")]
    assert set(task_runs(flow_run_id)) == {"check-spec", "choose-cloud", "reach-object-store", "write-run-report", "migrate-digits-onprem",
                                           "migrate-digits-cloud", "migrate-request-log", "validate-source-digits-onprem",
                                           "validate-source-digits-cloud", "validate-source-request-log",
                                           "validate-target-digits-onprem", "validate-target-digits-cloud", "validate-target-request-log",
                                           "drift-digits-cloud-vs-digits-onprem", "publish-data-docs", "plan-migration",
                                           "adapt-model", "integrate", "prepare-optimization", "measure-eager-fp32",
                                           "finish-optimization"}
    # the cloud: the demo leaves the provider open; every bundled cloud planned and priced, the
    # recommended one taken (the embedded store stands in for any cloud's), its table and chart
    run = report.parent
    choice = json.loads((run / "cloud" / "comparison.json").read_text())
    chosen = choice["chosen"]
    assert chosen == choice["recommended"] and len(choice["options"]) == 6
    assert re.search(rf"\| cloud choice \| ok \| {chosen} of 6 candidates: \$[\d,]+ over 12 months \|", text)
    assert f"| moved to | {chosen}: prices as of " in text and "less than the runner-up" in text
    assert "| chosen | compared in this run |" in text
    assert "![Candidate clouds: cost over the horizon and one-off cost](cloud/clouds.png)" in text
    assert {"cloud-choice", "cloud-comparison", "cloud-chart"} <= {a.key for a in artifacts}
    # profiles and Data Docs are in the run's folder; the Data Docs also next to the data; drift is reported
    assert sorted(p.name for p in (run / "profiles").iterdir()) == ["digits-cloud.json", "digits-onprem.json", "request-log.json"]
    assert json.loads((run / "profiles/digits-onprem.json").read_text())["classes"]["3"]["images"] == 183
    docs = sorted(p.name for p in (run / "data-docs").iterdir())
    assert docs == [f"{side}-{d}" for side in ("source", "target") for d in ("digits-cloud", "digits-onprem", "request-log")]
    assert all((run / "data-docs" / d / "index.html").is_file() for d in docs)
    uploaded = {o.key for o in store.list("lepton-demo", f"flow-test/data-docs/{run.name}/")}
    assert {f"flow-test/data-docs/{run.name}/{d}/index.html" for d in docs} <= uploaded
    assert f"uploaded to s3://lepton-demo/flow-test/data-docs/{run.name}/" in text
    assert "| drift | ok | 1 comparison; largest distance 0." in text
    # the plan: every method side by side, the cheapest (the exact planner's, never worse) step by step, its chart
    assert re.search(r"\| plan \| ok \| exact: \$[\d,.]+ for 12 services, \$[\d,.]+ less than (lift-shift|waves|greedy) \|", text)
    assert all(f"| {m} | $" in text for m in ("lift-shift", "waves", "greedy", "exact"))
    assert "![exact plan](plan/gantt.png)" in text and (run / "plan/gantt.png").stat().st_size > 10_000
    plans = json.loads((run / "plan/plans.json").read_text())
    assert [p["method"] for p in plans] == ["lift-shift", "waves", "greedy", "exact"]
    assert plans[-1]["total_cost"] <= min(p["total_cost"] for p in plans[:-1])
    assert len(plans[-1]["schedule"]) == 12 and any(a.key == "migration-plan" for a in artifacts)
    # the charts are image artifacts too, inlined so the UI shows them without reaching the worker
    images = {a.key: a.data for a in artifacts if a.type == "image"}
    assert {"migration-gantt", "adaptation-curve", "cloud-chart", "serving-pareto"} <= set(images)
    assert all(data.startswith("data:image/png;base64,iVBORw0KGgo") for data in images.values())
    table = json.loads(next(a.data for a in artifacts if a.key == "migration-plans"))
    assert [row["total_cost"] for row in table] == sorted(row["total_cost"] for row in table) and len(table) == len(plans)
    order = re.search(r"\| data moved in \| the plan's order: ([\w, -]+) \|", text).group(1).split(", ")
    assert sorted(order) == ["digits-cloud", "digits-onprem", "request-log"]
    drift = next(a for a in artifacts if a.key == "drift-digits-cloud")
    assert drift.data.startswith("# Drift of `digits-cloud` from `digits-onprem`: reported (no limit set)")
    source_gate = next(a for a in artifacts if a.key == "validation-source-digits-onprem")
    assert f"Data Docs: [{run / 'data-docs/source-digits-onprem/index.html'}]" in source_gate.data
    # the copies are complete: each dataset has its manifest, and a second run sends nothing
    from lepton_core.data.engine import read_manifest

    assert len(read_manifest(store, "lepton-demo", "flow-test/datasets/digits-cloud").objects) == 1797
    again = migrate(spec=SpecRef(path=str(demo_relaxed)), target=TargetOverrides(prefix="flow-test"),
                    planning=PlanOptions(exact_seconds=0), adapting=QUICK_ADAPT, integrating=QUICK_INTEGRATE,
                    optimizing=QUICK_OPTIMIZE, return_state=True)
    again_text = Path(again.result()).read_text()
    assert "(0 sent this run)" in again_text
    # the second run of the same migration keeps the cloud the first one chose, without comparing again
    assert f"| moved to | {chosen}: " in again_text and f"| chosen | kept from run {run.name} (" in again_text
    # the model: adapted on the cloud copy, registered; the second run reused the finished training
    version = re.search(r"\| registry \| s3://lepton-demo/flow-test/registry/digits-classifier/versions/(\w+)/ \(version \1\) \|", text).group(1)
    assert f"(version {version})" in again_text
    keys = {o.key for o in store.list("lepton-demo", f"flow-test/registry/digits-classifier/versions/{version}/")}
    assert {k.rsplit("/", 1)[1] for k in keys} == {"model.pt", "model-card.json"}
    assert re.search(r"\| model adaptation \| ok \| digits-classifier: target test accuracy [\d.]+% adapted vs", text)
    assert "![validation accuracy while training](adapt/learning_curve.png)" in text
    assert any(a.key == "model-adaptation" for a in artifacts)
    # integration: the candidate passed parity, holds `candidate`; the on-prem model holds `production`
    assert re.search(rf"\| integration \| ok \| digits-classifier {version} passed parity", text)
    stages = {s: json.loads(store.get_bytes("lepton-demo", f"flow-test/registry/digits-classifier/stages/{s}.json"))["version"]
              for s in ("candidate", "production")}
    assert stages["candidate"] == version and stages["production"].startswith("onprem-")
    assert (run / "integrate" / "cutover" / "cutover.json").is_file() and any(a.key == "parity" for a in artifacts)
    # serving: the baseline measured under load, priced on the catalogue, written into the cutover bundle
    assert re.search(rf"\| serving \| ok \| digits-classifier {version}: eager, fp32, batch 1, .* req/s at p95 [\d.]+ ms", text)
    assert "![Serving configurations: cost against p95 latency](optimize/pareto.png)" in text
    bundle = f"flow-test/cutover/digits-classifier/{version}"
    cutover = json.loads(store.get_bytes("lepton-demo", f"{bundle}/cutover.json"))
    serving = json.loads(store.get_bytes("lepton-demo", f"{bundle}/serving.json"))
    assert cutover["endpoint"]["serving"] == serving["serving"] and serving["serving"]["runtime"] == "eager"
    # priced on the chosen cloud's catalogue, on a CPU instance (the test machine has no GPU)
    from lepton_core.spec.catalogue import Catalogue, catalogue_path

    catalogue = Catalogue.model_validate(yaml.safe_load(catalogue_path(chosen, run).read_text()))
    placed = catalogue.instance(cutover["optimisation"]["placement"]["instance"])
    assert placed.gpu == 0
    assert "--runtime eager" in cutover["steps"][0] and f"/versions/{version}/" in cutover["steps"][0]
    assert {"serving-trials", "serving-pareto", "serving-choice"} <= {a.key for a in artifacts}


def test_bad_spec_fails_the_run_without_retrying(demo_data: Path, flow_home: Path) -> None:
    bad = demo_data.parent / "bad-flow.yaml"
    bad.write_text(demo_data.read_text().replace("cpu: 4\n", "cpu: -4\n", 1))
    state = migrate(spec=SpecRef(path=str(bad)), return_state=True)
    assert state.is_failed()
    with pytest.raises(SpecError, match=r"services\[0\]\.cpu: input should be greater than 0"):
        state.result()
    runs = task_runs(state.state_details.flow_run_id)
    assert runs["check-spec"].run_count == 1
    assert "reach-object-store" not in runs  # nothing after the failed check ran


def test_bad_source_data_fails_the_run_at_the_gate(demo_data: Path, tmp_path: Path, flow_home: Path) -> None:
    import shutil

    root = tmp_path / "demo"
    shutil.copytree(demo_data.parent / "data", root / "data")
    (root / "spec.yaml").write_text(yaml.safe_dump(quick_cloud_choice(yaml.safe_load(demo_data.read_text())), sort_keys=False))
    shutil.rmtree(root / "data/digits-cloud/test/9")
    state = migrate(spec=SpecRef(path=str(root / "spec.yaml")), return_state=True)
    assert state.is_failed()
    from lepton_core.validation.gate import ValidationFailed

    with pytest.raises(ValidationFailed, match=r"^source validation of dataset 'digits-cloud' failed: "
                                               r"expect_column_values_to_be_in_set\(column=folder_exists\) on classes: 1 unexpected; e.g. test/9 "
                                               r"\(and 1 more failed expectation\)$"):
        state.result()
    runs = task_runs(state.state_details.flow_run_id)
    assert runs["validate-source-digits-cloud"].run_count == 1  # bad data is not retried
    assert not any(name.startswith("migrate-") for name in runs)  # nothing moved
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    gate = next(a for a in artifacts if a.key == "validation-source-digits-cloud")
    assert "FAILED (2 of 11 expectations)" in gate.data and "| classes | `expect_column_values_to_be_in_set(column=folder_exists)` | **failed** | 1 | test/9 |" in gate.data


def test_bad_override_fails_like_a_bad_spec(demo_data: Path, flow_home: Path) -> None:
    state = migrate(spec=SpecRef(path=str(demo_data)), target=TargetOverrides(endpoint_url="ftp://nowhere"), return_state=True)
    assert state.is_failed()
    with pytest.raises(SpecError, match="target overrides: endpoint_url"):
        state.result()


@pytest.mark.parametrize(("error", "attempts"), [
    (StoreError("cannot reach the object store", transient=True), 2),
    (StoreAuthError("rejected the credentials"), 1),
])
def test_store_task_retries_only_transient_errors(monkeypatch: pytest.MonkeyPatch, flow_home: Path, error, attempts) -> None:
    import tasks.store

    calls = []

    def flaky(target, state_root, *, spec_name):
        calls.append(1)
        if len(calls) == 1:
            raise error
        return TargetInfo(endpoint="http://127.0.0.1:1", embedded=True, bucket="lepton-demo", prefix="p",
                          encryption="AES256", bucket_created=False)

    monkeypatch.setattr(tasks.store, "reach_target", flaky)
    fast = tasks.store.reach_object_store.with_options(retry_delay_seconds=0, retry_jitter_factor=None)

    @flow
    def probe() -> TargetInfo:
        return fast(TargetSpec(bucket="lepton-demo", endpoint_url="embedded"), str(flow_home), "x")

    state = probe(return_state=True)
    assert len(calls) == attempts
    assert state.is_completed() == is_transient(error)


def test_validate_flow_checks_every_copy_and_fails_on_a_bad_one(demo_data: Path, flow_home: Path) -> None:
    from flows.validate import validate

    # the demo without a model: the data is what the validate flow checks
    assert migrate(spec=SpecRef(path=str(demo_data)), planning=PlanOptions(exact_seconds=0), return_state=True).is_completed()
    lines = validate(spec=SpecRef(path=str(demo_data)), side="target")
    assert lines[:3] == ["digits-onprem: 6 target expectations passed", "digits-cloud: 6 target expectations passed",
                         "request-log: 7 target expectations passed"]
    assert lines[3].startswith("Data Docs: s3://lepton-demo/digits-demo/data-docs/") and len(lines) == 4
    source = validate(spec=SpecRef(path=str(demo_data)), side="source")
    assert source[3].startswith("digits-cloud vs digits-onprem: mean distance 0.") and source[4].startswith("Data Docs: /")
    store = ObjectStore(EmbeddedStore(store_dir(flow_home)).settings())
    store.delete("lepton-demo", next(o.key for o in store.list("lepton-demo", "digits-demo/datasets/digits-cloud/train/")))
    state = validate(spec=SpecRef(path=str(demo_data)), side="target", return_state=True)
    assert state.is_failed()
    from lepton_core.validation.gate import ValidationFailed

    with pytest.raises(ValidationFailed, match=r"^target validation of dataset 'digits-cloud' failed: .*\(column=on_target\)"):
        state.result()
    runs = task_runs(state.state_details.flow_run_id)
    assert {n for n in runs if n.startswith("validate-target-")} == {
        "validate-target-digits-onprem", "validate-target-digits-cloud", "validate-target-request-log"}
