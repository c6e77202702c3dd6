"""The adapt-model flow on the demo: fine-tuned on the verified cloud copy, registered with its model
card; bad input fails once, with a clear message, and registers nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flows.adapt import adapt_model_flow
from lepton_core.data.inventory import inventory, sha256_file
from lepton_core.spec import load_spec
from lepton_core.spec.params import AdaptOptions, SpecRef
from lepton_core.state import store_dir
from lepton_core.store import EmbeddedStore, ObjectStore
from lepton_core.transfer.adapt import digest_pairs
from lepton_core.transfer.checkpoint import load_checkpoint

QUICK = AdaptOptions(max_epochs=1, compare_scratch=False, source_replay=False)  # replay: tests/serving/test_parity.py
REGISTRY = "digits-demo/registry/digits-classifier/"


def nothing_registered(home: Path) -> bool:
    """No model version in the registry of the run's store (none at all when it never started)."""
    embedded = EmbeddedStore(store_dir(home))
    if not embedded.status().running:
        return True
    return not list(ObjectStore(embedded.settings()).list("lepton-demo", "digits-demo/registry/"))


def test_adapting_the_demo_registers_a_checkpoint_and_its_model_card(demo_full: Path, flow_home: Path) -> None:
    from lepton_core.data.stage import migrate_dataset

    migrate_dataset(load_spec(demo_full), "digits-cloud", flow_home)
    state = adapt_model_flow(spec=SpecRef(path=str(demo_full)), adapting=QUICK, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    version = result["version"]
    prefix = f"{REGISTRY}versions/{version}/"
    assert result["registry_uri"] == f"s3://lepton-demo/{prefix}"
    store = ObjectStore(EmbeddedStore(store_dir(flow_home)).settings())
    assert {o.key for o in store.list("lepton-demo", prefix)} == {prefix + "model.pt", prefix + "model-card.json"}
    card = json.loads(store.get_bytes("lepton-demo", prefix + "model-card.json"))
    blob = store.get_bytes("lepton-demo", prefix + "model.pt")
    local = Path(result["checkpoint"])
    assert local.read_bytes() == blob and card["checkpoint"]["sha256"] == sha256_file(local)
    state_dict, meta = load_checkpoint(local)
    assert meta.architecture == "resnet18" and meta.classes == tuple(str(c) for c in range(10))
    assert meta.metrics["target_test_accuracy"] == card["metrics"]["adapted"]["accuracy"] == result["accuracy"]["adapted"]
    # lineage: the cloud copy's hashes are the local dataset's, file for file
    source = demo_full.parent / "data" / "digits-cloud"
    assert card["data"]["sha256"] == digest_pairs([(f.rel, sha256_file(f.path)) for f in inventory(source)])
    assert card["data"]["source"] == "s3://lepton-demo/digits-demo/datasets/digits-cloud"
    assert card["spec"]["sha256"] == load_spec(demo_full).sha256 and card["code"]["lepton"] == "0.1.0"
    assert card["training"]["calibration"]["inverted"] is True  # the demo's cloud images are negatives
    # adaptation beat the on-prem model as it is, on the cloud's test images
    assert result["accuracy"]["adapted"] > result["accuracy"]["on-prem (unadapted)"] + 0.3
    # a second run with the same settings reuses the finished training and registers the same version
    again = adapt_model_flow(spec=SpecRef(path=str(demo_full)), adapting=QUICK)
    assert again["version"] == version and again["accuracy"] == result["accuracy"]


def test_without_a_cloud_copy_the_flow_says_what_to_do(demo_full: Path, flow_home: Path) -> None:
    state = adapt_model_flow(spec=SpecRef(path=str(demo_full)), adapting=QUICK, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=r"s3://lepton-demo/digits-demo/datasets/digits-cloud: no complete copy of dataset "
                                        r"'digits-cloud' there; migrate it first"):
        state.result()


def bad_spec(demo_full: Path, name: str, old: str, new: str) -> Path:
    path = demo_full.parent / name  # next to the demo, so that its relative paths still resolve
    text = demo_full.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


def fails_registering_nothing(spec: Path, home: Path, message: str) -> None:
    """The flow fails with ``message``; the adapt task ran once (bad input is never retried) and
    registered nothing."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    state = adapt_model_flow(spec=SpecRef(path=str(spec)), adapting=QUICK.model_copy(update={"data": "location"}),
                             return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=message):
        state.result()
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    adapt = [r for r in runs if r.name.startswith("adapt-model")]
    assert len(adapt) == 1 and adapt[0].run_count == 1
    assert nothing_registered(home)


def test_a_checkpoint_of_another_architecture_fails_once_and_registers_nothing(demo_full: Path, flow_home: Path) -> None:
    spec = bad_spec(demo_full, "spec-resnet50.yaml", "architecture: resnet18", "architecture: resnet50")
    fails_registering_nothing(spec, flow_home, r"onprem-resnet18.pt: a resnet18 checkpoint, but the spec's model is resnet50")


def test_images_of_a_class_the_model_does_not_know_fail_and_register_nothing(demo_full: Path, flow_home: Path,
                                                                             tmp_path: Path) -> None:
    images = tmp_path / "digits-cloud"
    shutil.copytree(demo_full.parent / "data" / "digits-cloud", images)
    shutil.copytree(images / "train" / "7", images / "train" / "seven")
    spec = bad_spec(demo_full, "spec-extra-class.yaml", "location: data/digits-cloud", f"location: {images}")
    fails_registering_nothing(spec, flow_home, r"digits-cloud \(train/\): class folders the model does not know: seven")
