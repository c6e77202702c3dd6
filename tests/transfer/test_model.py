"""The network: backbones and heads, initial weights of each kind, refused checkpoints, strategies."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from lepton_core.errors import UsageError
from lepton_core.transfer.backbones import ARCHITECTURES, build_model, load_pretrained, pretrained_file
from lepton_core.transfer.checkpoint import CheckpointMeta, Preprocess, onprem_weights, save_checkpoint
from lepton_core.transfer.data import ImageDataModule
from lepton_core.transfer.module import (Finetuning, TransferModule, calibrate_input, labelled_accuracy, recalibrate_batchnorm,
                                         unfreeze_groups)
from tests.transfer.conftest import CLASSES


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_backbone_has_a_backbone_and_a_head_that_cover_its_weights(architecture: str) -> None:
    module = TransferModule(architecture, 3, 32)
    params = {id(p) for p in module.parameters()}
    backbone = {id(p) for p in module.backbone.parameters()}
    head = {id(p) for p in module.head.parameters()}
    assert backbone | head == params and not backbone & head
    assert module(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_fast_dev_run_on_a_tiny_backbone(tiny_images: Path) -> None:
    module = TransferModule("mobilenet_v3_small", 3, 32)
    data = ImageDataModule(tiny_images, CLASSES, 32, Preprocess(), batch_size=4)
    trainer = L.Trainer(fast_dev_run=True, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=data)
    assert trainer.state.finished and trainer.global_step == 1


def test_an_epochs_loss_and_accuracy_are_means_over_its_images_not_its_batches() -> None:
    torch.manual_seed(0)
    module = TransferModule("resnet18", 3, 32).eval()  # running statistics: each image scored alone
    x, y = torch.randn(7, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    module.on_validation_epoch_start()
    for lo, hi in ((0, 5), (5, 7)):  # batches of 5 and 2
        module.validation_step((x[lo:hi], y[lo:hi]), 0)
    with torch.no_grad():
        logits = module(x)
    got = module.epoch_metrics("val")
    assert got["val_loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert got["val_acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    module.on_validation_epoch_start()  # the next validation starts from nothing
    assert module.epoch_metrics("val") == {} and module.epoch_metrics("train") == {}


def seed_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, architecture: str = "resnet18") -> dict:
    """ImageNet-shaped weights in a temporary TORCH_HOME, where torchvision's file would be."""
    import torchvision.models as tvm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    torch.manual_seed(7)
    state = getattr(tvm, architecture)(weights=None).state_dict()
    path = pretrained_file(architecture)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def test_imagenet_weights_load_from_torch_home_except_the_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = seed_torch_home(tmp_path, monkeypatch)
    model = build_model("resnet18", 3, 224)
    skipped = load_pretrained(model, "resnet18")
    assert skipped == ["fc.bias", "fc.weight"]
    assert torch.equal(model.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])
    small = build_model("resnet18", 3, 32)  # the 3x3 first convolution does not fit ImageNet's 7x7
    assert load_pretrained(small, "resnet18") == ["conv1.weight", "fc.bias", "fc.weight"]


def test_missing_imagenet_weights_are_never_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(UsageError, match=r"resnet18-f37072fd\.pth: no pretrained resnet18 weights there \(lepton never downloads"):
        load_pretrained(build_model("resnet18", 3, 224), "resnet18")
    assert not (tmp_path / "empty").exists()


def test_weights_of_another_architecture_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_torch_home(tmp_path, monkeypatch, "mobilenet_v3_small")
    with pytest.raises(UsageError, match="not resnet18 weights"):
        load_pretrained(build_model("resnet18", 3, 224), "resnet18", pretrained_file("mobilenet_v3_small"))


def test_lepton_adapt_refuses_bad_imagenet_weights_before_prefect_starts(demo_full: Path, demo_data: Path, tmp_path: Path) -> None:
    from pydantic import ValidationError
    from typer.testing import CliRunner

    from flows.cli import app
    from lepton_core.spec.params import AdaptOptions

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not weights")
    onprem = demo_full.parent / "models" / "onprem-resnet18.pt"
    runner = CliRunner()
    for args, message in [
        (["--init", "imagenet", "--weights", str(junk)], f"{junk}: not a readable weights file: not a file torch.save wrote, or one cut short"),
        (["--init", "imagenet", "--weights", str(onprem)], f"{onprem}: a lepton model checkpoint, not ImageNet weights"),
        (["--weights", str(junk)], "--weights is the weights file of --init imagenet, not of --init onprem"),
    ]:
        out = runner.invoke(app, ["adapt", str(demo_full), "--data", "location", *args])
        assert out.exit_code == 2 and out.stdout == "" and out.stderr.startswith(f"error: {message}"), out.output
        assert out.stderr.count("\n") == 1  # one line: no Prefect log, no traceback
    out = runner.invoke(app, ["adapt", str(demo_data)])  # the demo written without its model
    assert out.exit_code == 2 and out.stderr == f"error: {demo_data}: the spec has no model to adapt\n"
    with pytest.raises(ValidationError, match="pretrained_weights is the weights file of init 'imagenet'; init is 'none'"):
        AdaptOptions(init="none", pretrained_weights=str(junk))  # the UI form's check


def test_lepton_adapt_and_run_refuse_a_bad_onprem_checkpoint_before_prefect_starts(demo_full: Path, tmp_path: Path) -> None:
    import re

    import yaml
    from typer.testing import CliRunner

    from flows.cli import app

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    torch.manual_seed(0)  # a lepton checkpoint of the spec's architecture over other classes
    other = save_checkpoint(tmp_path / "other.pt", build_model("resnet18", 3, 32).state_dict(),
                            CheckpointMeta("resnet18", CLASSES, 32, Preprocess(mode="L")))
    spec = demo_full.parent / "bad-onprem.yaml"  # beside the demo's, so that its relative paths resolve
    data = yaml.safe_load(demo_full.read_text())
    runner = CliRunner()
    for checkpoint, pattern in [
        (tmp_path / "gone.pt", re.escape(f"{spec}:") + r"\d+: model\.checkpoint: path does not exist: " + re.escape(str(tmp_path / "gone.pt"))),
        (junk, re.escape(f"{junk}: not a readable checkpoint: not a file torch.save wrote, or one cut short")),
        (other, re.escape(f"{other}: trained for 3 classes (a, b, c), but the spec's model has 10 (") + ".*"),
    ]:
        spec.write_text(yaml.safe_dump({**data, "model": {**data["model"], "checkpoint": str(checkpoint)}}, sort_keys=False))
        for command in (["adapt", str(spec), "--data", "location"], ["run", str(spec)]):
            out = runner.invoke(app, command)  # one line, exit 2: no Prefect log, no traceback
            assert out.exit_code == 2 and out.stdout == "" and re.fullmatch(f"error: {pattern}\n", out.stderr), (command, out.output)


@pytest.fixture
def onprem(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 32)
    return save_checkpoint(tmp_path / "onprem.pt", model.state_dict(), CheckpointMeta("resnet18", CLASSES, 32, Preprocess(mode="L")))


def test_the_onprem_checkpoint_loads_with_its_preprocessing(onprem: Path) -> None:
    state, pre = onprem_weights(onprem, "resnet18", CLASSES, 32)
    build_model("resnet18", 3, 32).load_state_dict(state)
    assert pre.mode == "L"


@pytest.mark.parametrize(("architecture", "classes", "message"), [
    ("resnet50", CLASSES, "a resnet18 checkpoint, but the spec's model is resnet50"),
    ("resnet18", ("a", "b"), r"trained for 3 classes \(a, b, c\), but the spec's model has 2 \(a, b\)"),
])
def test_a_mismatched_lepton_checkpoint_is_refused(onprem: Path, architecture: str, classes: tuple, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        onprem_weights(onprem, architecture, classes, 32)


def test_a_plain_state_dict_must_fit_tensor_by_tensor(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save(build_model("resnet18", 5, 32).state_dict(), path)
    state, _ = onprem_weights(path, "resnet18", tuple("abcde"), 32)
    assert state["fc.weight"].shape == (5, 512)
    with pytest.raises(UsageError, match=r"tensor 'fc.weight' is \(5, 512\), resnet18 over 3 classes at 32 px needs \(3, 512\)"):
        onprem_weights(path, "resnet18", CLASSES, 32)
    with pytest.raises(UsageError, match=r"does not fit mobilenet_v3_small \(\d+ tensors missing"):
        onprem_weights(path, "mobilenet_v3_small", tuple("abcde"), 32)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UsageError, match="junk.pt: not a readable checkpoint: not a file torch.save wrote, or one cut short"):
        onprem_weights(tmp_path / "junk.pt", "resnet18", CLASSES, 32)


def test_head_strategy_freezes_the_backbone_but_its_batchnorm() -> None:
    module = TransferModule("resnet18", 3, 32)
    Finetuning("head").freeze_before_training(module)
    assert all(p.requires_grad for p in module.head.parameters())
    assert not module.net.layer2[0].conv1.weight.requires_grad
    assert module.net.layer2[0].bn1.weight.requires_grad


def test_gradual_unfreezing_thaws_from_the_top_and_survives_a_restart(tiny_images: Path) -> None:
    module = TransferModule("resnet18", 3, 32, max_epochs=3)
    data = ImageDataModule(tiny_images, CLASSES, 32, Preprocess(), batch_size=8)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[Finetuning("gradual", unfreeze_every=1)])
    trainer.fit(module, datamodule=data)
    groups = unfreeze_groups(list(module.backbone))
    assert [len(g) for g in groups] == [2, 2, 1] and groups[0][0] is module.net.layer4 and groups[0][1] is module.net.layer3
    thawed = [all(p.requires_grad for m in g for p in m.parameters()) for g in groups]
    assert thawed == [True, True, False]  # epochs 1 and 2 thawed the top two groups; the third is due at epoch 3
    assert len(trainer.optimizers[0].param_groups) == 3
    # a restarted run: requires_grad is lost, the optimiser's groups are restored; the callback re-thaws
    fresh = TransferModule("resnet18", 3, 32)
    callback = Finetuning("gradual", unfreeze_every=1)
    callback.freeze_before_training(fresh)
    opt = torch.optim.AdamW(p for p in fresh.parameters())  # as restored: every group already there
    callback.finetune_function(fresh, 2, opt)
    assert [all(p.requires_grad for m in g for p in m.parameters()) for g in unfreeze_groups(list(fresh.backbone))] == thawed


def test_batchnorm_recalibration_takes_the_new_domains_statistics() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 32).eval()
    shifted = [(torch.randn(16, 3, 32, 32) * 3 + 5, torch.zeros(16)) for _ in range(4)]
    assert recalibrate_batchnorm(model, shifted) == 64
    x = torch.cat([b[0] for b in shifted])
    channel_mean = torch.nn.functional.conv2d(x, model.conv1.weight, padding=1).mean(dim=(0, 2, 3))
    assert torch.allclose(model.bn1.running_mean, channel_mean, rtol=1e-3, atol=1e-3)
    assert not model.training and model.bn1.momentum == 0.1


@pytest.mark.parametrize(("dataset", "inverted", "autocast"),
                         [("digits-cloud", True, False), ("digits-onprem", False, False), ("digits-cloud", True, True)])
def test_calibration_finds_the_cloud_sensors_negatives_and_leaves_the_onprem_images_alone(
        demo_full: Path, dataset: str, inverted: bool, autocast: bool) -> None:
    classes = tuple(str(c) for c in range(10))
    state, pre = onprem_weights(demo_full.parent / "models" / "onprem-resnet18.pt", "resnet18", classes, 32)
    model = build_model("resnet18", 10, 32)
    model.load_state_dict(state)
    data = ImageDataModule(demo_full.parent / "data" / dataset, classes, 32, pre, labelled_fraction=0.1, batch_size=128)
    labelled = torch.utils.data.DataLoader(data.dataset("train"), batch_size=256)
    # autocast: a bf16 autocast that caches its casts of the weights (torch's default; Lightning turns the
    # cache off), whose copy of the first convolution must not outlive the weight's negation
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        report = calibrate_input(model, data.unlabelled_dataloader(limit=256), labelled)
    assert report["inverted"] is inverted and report["unlabelled_images"] == 256
    better, worse = sorted((report["accuracy_as_is"], report["accuracy_inverted"]), reverse=True)
    assert better > worse + 0.3
    flipped = not torch.equal(model.conv1.weight, state["conv1.weight"])
    assert flipped is inverted and (not inverted or torch.equal(model.conv1.weight, -state["conv1.weight"]))


def test_the_head_inputs_are_what_the_last_linear_layer_classifies() -> None:
    from lepton_core.transfer.module import head_inputs, last_linear

    torch.manual_seed(0)
    model = build_model("mobilenet_v3_small", 3, 32)
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    features, labels = head_inputs(model, [(x[:4], y[:4]), (x[4:], y[4:])])
    assert last_linear(model) is model.classifier[3] and features.shape == (6, 1024) and torch.equal(labels, y)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), last_linear(model)(features), atol=1e-5)


def test_the_linear_probe_fits_the_head_to_the_calibrated_features_and_leaves_the_backbone_alone(demo_full: Path) -> None:
    from lepton_core.transfer.module import head_inputs, last_linear, probe_head

    classes = tuple(str(c) for c in range(10))
    state, pre = onprem_weights(demo_full.parent / "models" / "onprem-resnet18.pt", "resnet18", classes, 32)
    model = build_model("resnet18", 10, 32)
    model.load_state_dict(state)
    data = ImageDataModule(demo_full.parent / "data" / "digits-cloud", classes, 32, pre, labelled_fraction=0.1, batch_size=128)
    labelled = torch.utils.data.DataLoader(data.dataset("train"), batch_size=256)
    calibrate_input(model, data.unlabelled_dataloader(limit=256), labelled)
    val = torch.utils.data.DataLoader(data.dataset("val"), batch_size=256)
    before = labelled_accuracy(model, val)
    backbone = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    report = probe_head(model, *head_inputs(model, labelled))["probe"]
    after = labelled_accuracy(model, val)
    assert report["labelled_images"] == len(data.splits["train"]) and report["fit_after"] > report["fit_before"]
    assert after >= before + 0.03  # held-out images: the head fits the calibrated features better (0.80 -> 0.87 here)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in backbone.items())
    assert not torch.equal(last_linear(model).weight, state["fc.weight"])
