"""Training runs as jobs: resumed from their last checkpoint, reused when finished, and runnable as
their own process (the entry point Lightning's DDP re-executes once per GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lepton_core.transfer.fit import RESULT, FitJob, fit, trained_state
from tests.transfer.conftest import CLASSES


def job(images: Path, work: Path, **changes) -> FitJob:
    base = dict(name="test", work_dir=str(work), data_root=str(images), data_name="tiny", classes=CLASSES,
                architecture="mobilenet_v3_small", input_size=32, max_epochs=1, batch_size=8, lr=3e-3, seed=0)
    return FitJob(**{**base, **changes})


def test_a_finished_run_is_reused_and_an_interrupted_one_resumes(tiny_images: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    said: list[str] = []
    first = fit(job(tiny_images, work), said.append)
    assert first.epochs == 1 and not first.resumed and len(first.history) == 1
    row = first.history[0]
    assert said == [f"test: epoch 1 of 1: loss {row['train_loss']:.3f}, validation accuracy {row['val_acc']:.1%} "
                    f"(best {row['val_acc']:.1%}), {row['seconds']:.0f} s"]  # progress, a line an epoch
    last = work / "checkpoints" / "last.ckpt"
    stamp = last.stat().st_mtime_ns
    said.clear()
    again = fit(job(tiny_images, work), said.append)
    assert again == first and last.stat().st_mtime_ns == stamp and said == []  # nothing trained, nothing to report
    # as if the run had been killed before its second epoch ended: a checkpoint, no result
    (work / RESULT).unlink()
    resumed = fit(job(tiny_images, work, max_epochs=2), said.append)
    assert resumed.resumed and resumed.epochs == 2
    assert said[0] == "test: going on from its checkpoint after epoch 1 of 2"
    assert len(said) == 2 and said[1].startswith("test: epoch 2 of 2: loss ")
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.history[0] == first.history[0]  # epoch 1 came from the checkpoint, not trained again
    csv = [(work / "logs" / f"csv-{k}" / "metrics.csv").read_text() for k in (1, 2)]  # each attempt's log kept
    assert "val_acc" in csv[0] and "val_acc" in csv[1] and any((work / "logs" / "tensorboard").iterdir())
    header, *rows = csv[0].splitlines()  # the epoch's metrics reach the loggers as the history has them
    logged = {k: v for row in rows for k, v in zip(header.split(","), row.split(","), strict=True) if v}
    assert {k: round(float(logged[k]), 4) for k in ("train_loss", "train_acc", "val_loss", "val_acc")} == \
        {k: round(first.history[0][k], 4) for k in ("train_loss", "train_acc", "val_loss", "val_acc")}
    assert set(trained_state(resumed)) >= {"classifier.3.weight", "features.0.0.weight"}


@pytest.mark.parametrize("recipe", ["scratch", "adapt"])
def test_a_killed_and_retried_fit_ends_with_the_weights_of_one_never_stopped(recipe: str, tiny_images: Path, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Each epoch is shuffled, augmented and dropped out from the seed and the epoch alone, so a run
    killed after epoch 2 and run again trains epochs 3-4 as the run never stopped did: the same
    weights and history, bit for bit. ``adapt`` is the adaptation's recipe (on-prem weights,
    calibration, pseudo-labels relabelled by the model in training, on-prem images replayed, drawn
    epochs validated each round); ``scratch`` a plain shuffled fit from random weights."""
    import torch

    from lepton_core.transfer import module as transfer_module
    from lepton_core.transfer.backbones import build_model
    from lepton_core.transfer.checkpoint import CheckpointMeta, save_checkpoint
    from tests.transfer.conftest import write_images

    options: dict = dict(max_epochs=4, patience=4)
    if recipe == "adapt":
        torch.manual_seed(3)
        onprem = save_checkpoint(tmp_path / "onprem.pt", build_model("mobilenet_v3_small", 3, 32).state_dict(),
                                 CheckpointMeta("mobilenet_v3_small", CLASSES, 32))
        source = write_images(tmp_path / "source", seed=1)
        options |= dict(init="onprem", init_path=str(onprem), labelled_fraction=0.5, pseudo_label_threshold=0.3,
                        relabel_every=1, replay_root=str(source), replay_fraction=0.5, labelled_share=0.5,
                        val_every_n_steps=2, batch_size=4)
    whole = fit(job(tiny_images, tmp_path / "whole", **options))
    started = transfer_module.TransferModule.on_train_epoch_start

    def killed_at_3(self) -> None:
        if self.current_epoch == 2:
            raise RuntimeError("the worker was killed")
        started(self)

    monkeypatch.setattr(transfer_module.TransferModule, "on_train_epoch_start", killed_at_3)
    with pytest.raises(RuntimeError, match="killed"):
        fit(job(tiny_images, tmp_path / "retried", **options))
    monkeypatch.setattr(transfer_module.TransferModule, "on_train_epoch_start", started)
    retried = fit(job(tiny_images, tmp_path / "retried", **options))
    assert retried.resumed and not whole.resumed
    last = [torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for run in ("whole", "retried")]
    assert last[0].keys() == last[1].keys() and all(torch.equal(last[0][k], last[1][k]) for k in last[0])
    untimed = [[{k: v for k, v in row.items() if k != "seconds"} for row in r.history] for r in (whole, retried)]
    assert untimed[0] == untimed[1] and [row["epoch"] for row in untimed[0] if row["epoch"] == int(row["epoch"])] == [1, 2, 3, 4]
    assert retried.calibration == whole.calibration  # the same pseudo-labels, relabelled after each epoch
    assert os.environ["PL_GLOBAL_SEED"] == "0"  # the run's seed: the epochs' seeds do not leak into DDP's samplers


def test_the_entry_point_runs_a_job_in_its_own_process_and_is_safe_to_run_again(tiny_images: Path, tmp_path: Path) -> None:
    spec = job(tiny_images, tmp_path / "work")
    path = tmp_path / "job.json"
    path.write_text(spec.model_dump_json())
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    for _ in range(2):  # DDP starts the same command once per GPU; a second start must do no harm
        proc = subprocess.run([sys.executable, "-m", "lepton_core.transfer.fit", str(path)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "work" / RESULT).read_text())
    assert record["result"]["epochs"] == 1 and len(record["result"]["history"]) == 1
    assert fit(spec).best_checkpoint == record["result"]["best_checkpoint"]


def test_a_bad_job_file_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "lepton_core.transfer.fit"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "usage: python -m lepton_core.transfer.fit JOB.json" in proc.stderr


@pytest.mark.parametrize("field", ["lr", "labelled_fraction", "seed"])
def test_changed_settings_are_not_taken_for_a_finished_run(tiny_images: Path, tmp_path: Path, field: str) -> None:
    from lepton_core.transfer.fit import finished

    spec = job(tiny_images, tmp_path / "w")
    fit(spec)
    assert finished(spec) is not None
    changed = {"lr": 1e-2, "labelled_fraction": 0.5, "seed": 1}[field]
    assert finished(spec.model_copy(update={field: changed})) is None


@pytest.mark.parametrize("init", ["onprem", "imagenet", "none"])
def test_each_kind_of_initial_weights_is_loaded(init: str, tiny_images: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from lepton_core.transfer.backbones import build_model
    from lepton_core.transfer.checkpoint import CheckpointMeta, save_checkpoint
    from lepton_core.transfer.fit import initial_weights
    from lepton_core.transfer.module import TransferModule
    from tests.transfer.test_model import seed_torch_home

    imagenet = seed_torch_home(tmp_path, monkeypatch, "mobilenet_v3_small")
    torch.manual_seed(3)
    onprem = build_model("mobilenet_v3_small", 3, 32).state_dict()
    path = save_checkpoint(tmp_path / "onprem.pt", onprem, CheckpointMeta("mobilenet_v3_small", CLASSES, 32))
    spec = job(tiny_images, tmp_path / "w", init=init, init_path=str(path) if init == "onprem" else None)
    torch.manual_seed(11)
    module = TransferModule("mobilenet_v3_small", 3, 32)
    untouched = {k: v.clone() for k, v in module.net.state_dict().items()}
    initial_weights(module, spec)
    loaded = module.net.state_dict()
    key = "features.4.block.0.0.weight"
    expected = {"onprem": onprem[key], "imagenet": imagenet[key], "none": untouched[key]}[init]
    assert torch.equal(loaded[key], expected)
    assert torch.equal(loaded["classifier.3.weight"], (onprem if init == "onprem" else untouched)["classifier.3.weight"])


def test_self_training_relabels_after_every_n_epochs_and_the_next_epoch_trains_on_the_new_labels(
        tiny_images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from lepton_core.transfer.backbones import build_model
    from lepton_core.transfer.checkpoint import CheckpointMeta, save_checkpoint
    from lepton_core.transfer.data import ImageDataModule

    torch.manual_seed(3)
    onprem = save_checkpoint(tmp_path / "onprem.pt", build_model("mobilenet_v3_small", 3, 32).state_dict(),
                             CheckpointMeta("mobilenet_v3_small", CLASSES, 32))
    seen: list[dict[str, int]] = []  # the pseudo-labels each epoch's training loader was made with
    made = ImageDataModule.train_dataloader

    def spy(self):
        seen.append(dict(self.pseudo_labels))
        return made(self)

    monkeypatch.setattr(ImageDataModule, "train_dataloader", spy)
    from lepton_core.transfer import module as transfer_module

    given: list[dict[str, int]] = []  # what each labelling pass gave
    labelling = transfer_module.pseudo_labels

    def recorded(*args, **kwargs):
        labels, found = labelling(*args, **kwargs)
        given.append(dict(labels))
        return labels, found

    monkeypatch.setattr(transfer_module, "pseudo_labels", recorded)
    # a threshold every prediction passes (three classes: the top one is at least 1/3 sure), so that
    # every unlabelled image is labelled each time and the labels follow the model
    spec = job(tiny_images, tmp_path / "w", init="onprem", init_path=str(onprem), labelled_fraction=0.5,
               pseudo_label_threshold=0.3, relabel_every=2, max_epochs=5, patience=5)
    result = fit(spec)
    relabels = result.calibration["relabelled"]
    assert [r["after_epoch"] for r in relabels] == [2, 4]  # not after the last epoch
    assert all(r["pseudo_labelled"] == 9 for r in relabels)  # 18 training images, half of them labelled
    assert len(given) == 3 and all(len(labels) == 9 for labels in given)
    assert seen == given  # epochs 1, 3 and 5 made their loaders, each with the labels of the pass before it
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5]
    assert all(a["seconds"] < b["seconds"] for a, b in zip(result.history, result.history[1:]))


def test_a_drawn_epoch_validates_after_every_round_and_resumes_from_the_end_of_an_epoch(tiny_images: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    # 9 labelled images, batches of 4, rounds of one step: 2 steps an epoch, a validation after each
    first = fit(job(tiny_images, work, labelled_fraction=0.5, batch_size=4, labelled_share=0.5, val_every_n_steps=1))
    assert [(r["epoch"], r["step"]) for r in first.history] == [(0.5, 1), (1, 2)]
    assert "train_acc" in first.history[1] and "train_acc" not in first.history[0]
    assert first.best_val_acc == max(r["val_acc"] for r in first.history)
    assert Path(first.best_checkpoint).name == "best.ckpt" and (work / "checkpoints" / "last.ckpt").is_file()
    (work / RESULT).unlink()
    resumed = fit(job(tiny_images, work, labelled_fraction=0.5, batch_size=4, labelled_share=0.5, val_every_n_steps=1,
                      max_epochs=2))
    assert resumed.resumed and [(r["epoch"], r["step"]) for r in resumed.history] == [(0.5, 1), (1, 2), (1.5, 3), (2, 4)]
    assert resumed.history[:2] == first.history
    assert all(a["seconds"] < b["seconds"] for a, b in zip(resumed.history, resumed.history[1:]))


@pytest.mark.parametrize(("flags", "native"), [("fpu avx2 avx512f avx512bw avx512_bf16 avx512_vnni", True),
                                               ("fpu avx512f amx_bf16 amx_tile", True),
                                               ("fpu avx2 avx512f avx512bw avx512vl avx512dq", False)])
def test_bf16_counts_as_native_only_with_the_cpus_bf16_instructions(flags: str, native: bool, tmp_path: Path) -> None:
    from lepton_core.transfer.fit import cpu_native_bf16

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_native_bf16(cpuinfo) is native
    assert cpu_native_bf16(tmp_path / "absent") is False  # no /proc/cpuinfo (macOS, Windows): fp32


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_a_cpu_is_bf16_mixed_only_where_it_is_native_and_the_network_gains(
        native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from lepton_core.transfer import fit as fit_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(fit_module, "cpu_native_bf16", lambda: native)
    for architecture in ("resnet18", "resnet50"):
        assert fit_module.resolve_precision("auto", architecture) == ("bf16-mixed" if native else "32-true")
    for architecture in ("mobilenet_v3_small", "efficientnet_b0"):  # depthwise convolutions: slower in bf16
        assert fit_module.resolve_precision("auto", architecture) == "32-true"
    assert fit_module.resolve_precision("32-true", "resnet18") == "32-true"  # an explicit choice is kept
    assert fit_module.resolve_precision("bf16-mixed", "mobilenet_v3_small") == "bf16-mixed"


def test_auto_precision_on_a_gpu_is_bf16_mixed_where_it_has_bf16_and_the_network_gains(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from lepton_core.transfer import fit as fit_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for bf16, expected in ((True, "bf16-mixed"), (False, "16-mixed")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        assert fit_module.resolve_precision("auto", "resnet50") == expected
        assert fit_module.resolve_precision("auto", "efficientnet_b0") == "32-true"


def test_a_bf16_mixed_fit_on_the_cpu_calibrates_in_bf16_and_keeps_float32_weights(tiny_images: Path, tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from lepton_core.transfer import module as transfer_module
    from lepton_core.transfer.backbones import build_model
    from lepton_core.transfer.checkpoint import CheckpointMeta, save_checkpoint

    torch.manual_seed(3)
    onprem = save_checkpoint(tmp_path / "onprem.pt", build_model("mobilenet_v3_small", 3, 32).state_dict(),
                             CheckpointMeta("mobilenet_v3_small", CLASSES, 32))
    computed: list[torch.dtype] = []  # what the calibration's passes computed in
    recalibrate = transfer_module.recalibrate_batchnorm

    def spy(model, batches, device="cpu"):
        conv = transfer_module.first_conv(model)
        hook = conv.register_forward_hook(lambda _m, _a, out: computed.append(out.dtype))
        try:
            return recalibrate(model, batches, device)
        finally:
            hook.remove()

    monkeypatch.setattr(transfer_module, "recalibrate_batchnorm", spy)
    spec = job(tiny_images, tmp_path / "w", init="onprem", init_path=str(onprem), labelled_fraction=0.5,
               pseudo_label_threshold=0.3, probe=True, precision="bf16-mixed")
    result = fit(spec)
    assert result.precision == "bf16-mixed" and result.device == "cpu"
    assert computed and set(computed) == {torch.bfloat16}
    report = result.calibration
    assert report["pseudo_labelled"] == 9 and report["probe"]["labelled_images"] == 9  # the probe ran (in float32)
    state = trained_state(result)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}  # the checkpoint is float32
