"""One fine-tuning (or from-scratch) run, as a job that can be resumed and re-executed.

A ``FitJob`` holds everything a run depends on; its work folder holds Lightning's checkpoints
(``checkpoints/last.ckpt`` after every epoch, ``best.ckpt`` by validation accuracy), CSV logs (one
folder per attempt) and TensorBoard logs, and ``result.json``, written last. Running a job again returns its result at
once when it finished, and goes on from ``last.ckpt`` when it did not.

On a machine with several GPUs the job runs in its own process, ``python -m lepton_core.transfer.fit
JOB.json``, because Lightning's DDP starts one copy of that command per GPU: the entry point only
reads the job and trains, so re-executing it is safe (rank 0 alone writes the result).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lepton_core.errors import LeptonError
from lepton_core.fsutil import atomic_write_text
from lepton_core.hardware import cpu_native_bf16, reuse_freed_memory

Init = Literal["onprem", "imagenet", "none"]
Precision = Literal["auto", "32-true", "bf16-mixed", "16-mixed"]
RESULT = "result.json"
# Lightning's advice that does not apply: loading in the training process is a choice (images are
# small; workers cost more than they save on two cores), few batches per epoch is the point of
# using a tenth of the labels, a resumed run's checkpoint folder is not empty by design, and a
# deprecation inside Lightning itself.
NOISE = (".*does not have many workers.*", ".*smaller than the logging interval.*", ".*Checkpoint directory .* exists and is not empty.*",
         ".*LeafSpec.*")
JOB = "job.json"


class FitJob(BaseModel):
    """One training run: data, network, initial weights, schedule, hardware."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="What this run is (adapted, scratch): shown in logs.")
    work_dir: str = Field(description="Checkpoints, logs and the result go here.")
    data_root: str = Field(description="Local ImageFolder tree of the target's images.")
    data_name: str = Field(description="The dataset's name, for messages.")
    classes: tuple[str, ...]
    architecture: str
    input_size: int = Field(ge=8, le=4096)
    mode: str = Field(default="L", description="PIL colour mode before the three-channel copy.")
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    init: Init = "none"
    init_path: str | None = Field(default=None, description="Initial weights file (on-prem checkpoint or ImageNet weights).")
    strategy: Literal["head", "full", "gradual"] = "full"
    labelled_fraction: float = Field(default=1.0, gt=0, le=1)
    max_epochs: int = Field(default=15, ge=1, le=10_000)
    patience: int = Field(default=5, ge=1, le=10_000)
    batch_size: int = Field(default=32, ge=1, le=65_536)
    lr: float = Field(default=1e-3, gt=0, le=1)
    weight_decay: float = Field(default=1e-4, ge=0, le=1)
    unfreeze_every: int = Field(default=2, ge=1, le=1000)
    backbone_lr_factor: float = Field(default=0.1, gt=0, le=10)
    augment: bool = True
    calibrate: bool = Field(default=True, description="Before fine-tuning pretrained weights: re-estimate batch-norm "
                            "statistics on the target's images (AdaBN) and check the sensor's polarity.")
    probe: bool = Field(default=False, description="With calibration: refit the head on the labelled images' features "
                                                   "before fine-tuning (the linear probe of LP-FT).")
    pseudo_label_threshold: float | None = Field(
        default=0.9, gt=0, le=1, description="With calibration: the calibrated network labels the training images whose "
                                             "labels are unused, where it is this sure; None: labelled images only.")
    relabel_every: int | None = Field(
        default=None, ge=1, le=10_000, description="With pseudo-labels: the model being trained labels the unlabelled "
                                                   "images again after every this many epochs; None: the calibrated "
                                                   "model's labels stay.")
    replay_root: str | None = Field(default=None, description="The on-prem images (ImageFolder) whose training split "
                                                              "joins every epoch, so that the model keeps its answers there.")
    replay_name: str = "source"
    labelled_share: float | None = Field(
        default=None, gt=0, lt=1, description="Draw each training epoch (with replacement) so that the labelled images "
                                              "make up at least this share of it; None: every image once, shuffled.")
    val_every_n_steps: int | None = Field(
        default=None, ge=1, le=100_000, description="With labelled_share: the drawn epoch is a whole number of rounds of "
                                                    "this many steps, validated after each round; None: once an epoch.")
    replay_fraction: float = Field(default=1.0, gt=0, le=1, description="Share of the on-prem training images each "
                                                                        "epoch replays (a fresh draw every epoch).")
    seed: int = Field(default=0, ge=0)
    precision: Precision = "auto"
    num_workers: int = Field(default=0, ge=0, le=64)
    progress_bar: bool = False

    def settings(self) -> dict:
        """What the result depends on (not where it is kept, nor how it is shown)."""
        return self.model_dump(exclude={"work_dir", "progress_bar", "data_root", "init_path", "replay_root"})


class FitResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    best_checkpoint: str
    best_val_acc: float
    epochs: int
    seconds: float
    history: list[dict]
    resumed: bool = Field(description="True when this run went on from an earlier run's checkpoint.")
    precision: str
    device: str
    calibration: dict | None = Field(default=None, description="What the input calibration measured and chose.")


def resolve_precision(precision: Precision, architecture: str | None = None) -> str:
    """``auto``: 32-true for an architecture that trains no faster in mixed precision
    (``backbones.BF16_TRAINS_FASTER``); otherwise bf16-mixed on a GPU that has bf16, 16-mixed on
    another GPU, and on a CPU bf16-mixed where it computes bf16 natively (``cpu_native_bf16``),
    else 32-true."""
    import torch

    from lepton_core.transfer.backbones import BF16_TRAINS_FASTER

    if precision != "auto":
        return precision
    if architecture is not None and architecture not in BF16_TRAINS_FASTER:
        return "32-true"
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_native_bf16() else "32-true"


def fit(job: FitJob, say: Callable[[str], None] | None = None) -> FitResult:
    """Run ``job`` (or return its finished result); in a process of its own when several GPUs would
    make Lightning choose DDP. ``say`` gets a line for each finished epoch (in this process only)."""
    import torch

    work = Path(job.work_dir)
    done = finished(job)
    if done is not None:
        return done
    if torch.cuda.device_count() > 1:
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_text(work / JOB, job.model_dump_json(indent=2))
        proc = subprocess.run([sys.executable, "-m", "lepton_core.transfer.fit", str(work / JOB)], check=False)
        done = finished(job)
        if proc.returncode != 0 or done is None:
            raise LeptonError(f"training {job.name} failed in its DDP process (exit {proc.returncode}); logs in {work}")
        return done
    return run_fit(job, say)


def finished(job: FitJob) -> FitResult | None:
    """The job's result when a run of the same settings finished in its work folder."""
    path = Path(job.work_dir) / RESULT
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("settings") != json.loads(json.dumps(job.settings())):
        return None
    return FitResult.model_validate(record["result"])


def run_fit(job: FitJob, say: Callable[[str], None] | None = None) -> FitResult:
    """Train in this process (every DDP rank runs this); rank 0 writes ``result.json``."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from lepton_core.transfer.checkpoint import Preprocess
    from lepton_core.transfer.data import ImageDataModule
    from lepton_core.transfer.module import CalibrateInput, EpochHistory, EpochProgress, EpochSeed, Finetuning, TransferModule

    work = Path(job.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    reuse_freed_memory()  # each step's activations reuse the last step's memory instead of fresh pages
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)  # tips and banners
    L.seed_everything(job.seed, workers=True, verbose=False)
    # validation after every round of a drawn epoch (whose last round ends the epoch), else once an epoch
    rounds = job.val_every_n_steps if job.labelled_share is not None else None
    data = ImageDataModule(job.data_root, job.classes, job.input_size, Preprocess(job.mode, job.mean, job.std),
                           labelled_fraction=job.labelled_fraction, batch_size=job.batch_size, num_workers=job.num_workers,
                           seed=job.seed, augment=job.augment, name=job.data_name, replay=job.replay_root,
                           replay_name=job.replay_name, replay_fraction=job.replay_fraction,
                           labelled_share=job.labelled_share, round_steps=rounds or 1)
    module = TransferModule(job.architecture, len(job.classes), job.input_size, lr=job.lr, weight_decay=job.weight_decay,
                            max_epochs=job.max_epochs)
    last = work / "checkpoints" / "last.ckpt"
    resumed = last.is_file()
    attempt = 1 + sum(1 for _ in (work / "logs").glob("csv-*"))
    if not resumed:
        initial_weights(module, job)
    history = EpochHistory()
    # best.ckpt as each validation finds it (several an epoch with rounds; weights only, since
    # nothing resumes from it); last.ckpt at each epoch's end, the only point a run resumes from
    best = ModelCheckpoint(dirpath=work / "checkpoints", filename="best", monitor="val_acc", mode="max",
                           save_weights_only=True, enable_version_counter=False, save_on_train_epoch_end=False)
    latest = ModelCheckpoint(dirpath=work / "checkpoints", filename="last", monitor=None, save_top_k=1,
                             enable_version_counter=False, save_on_train_epoch_end=True)
    precision = resolve_precision(job.precision, job.architecture)
    calibration = (CalibrateInput(job.pseudo_label_threshold, job.relabel_every, probe=job.probe)
                   if job.calibrate and job.init != "none" else None)
    relabel = job.relabel_every if calibration and job.pseudo_label_threshold is not None else None
    # the training loader is made again when its images change: new pseudo-labels, the next draw
    # of the replayed on-prem images, or the next epoch's draw
    reload = 1 if (job.replay_root and job.replay_fraction < 1) or job.labelled_share is not None else (relabel or 0)
    trainer = L.Trainer(
        max_epochs=job.max_epochs, accelerator="auto", devices="auto", precision=precision,
        callbacks=[Finetuning(job.strategy, unfreeze_every=job.unfreeze_every, backbone_lr_factor=job.backbone_lr_factor),
                   history, *([EpochProgress(say, job.name, history)] if say else []), EpochSeed(job.seed), best, latest,
                   # patience in epochs, however often they validate
                   EarlyStopping(monitor="val_acc", mode="max", patience=job.patience, check_on_train_epoch_end=True),
                   LearningRateMonitor(logging_interval="epoch"),
                   *([calibration] if calibration else [])],
        # CSVLogger deletes the metrics file of a version it opens again: each attempt gets its own.
        logger=[CSVLogger(work, name="logs", version=f"csv-{attempt}"), TensorBoardLogger(work, name="logs", version="tensorboard")],
        reload_dataloaders_every_n_epochs=reload, val_check_interval=rounds or 1.0,
        num_sanity_val_steps=0, log_every_n_steps=1, enable_progress_bar=job.progress_bar, enable_model_summary=False,
        default_root_dir=work,
    )
    with warnings.catch_warnings():
        for noise in NOISE:
            warnings.filterwarnings("ignore", message=noise)
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if resumed else None)
    result = FitResult(name=job.name, best_checkpoint=best.best_model_path, best_val_acc=float(best.best_model_score or 0.0),
                       epochs=trainer.current_epoch, seconds=history.rows[-1]["seconds"] if history.rows else 0.0,
                       history=history.rows, resumed=resumed, precision=precision, device=str(module.device.type),
                       calibration=calibration.report if calibration else None)
    if trainer.global_rank == 0:
        atomic_write_text(work / RESULT, json.dumps({"settings": job.settings(), "result": result.model_dump()}, indent=2))
    return result


def initial_weights(module, job: FitJob) -> None:
    """Load the job's initial weights into ``module.net`` (nothing to load for ``none``)."""
    from lepton_core.transfer.backbones import load_pretrained
    from lepton_core.transfer.checkpoint import onprem_weights

    if job.init == "onprem":
        state, _ = onprem_weights(job.init_path, job.architecture, job.classes, job.input_size)
        module.net.load_state_dict(state)
    elif job.init == "imagenet":
        load_pretrained(module.net, job.architecture, job.init_path)


def trained_state(result: FitResult) -> dict:
    """The network's weights (torchvision names) from the result's best checkpoint."""
    import torch

    state = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m lepton_core.transfer.fit JOB.json", file=sys.stderr)
        return 2
    run_fit(FitJob.model_validate_json(Path(argv[0]).read_text()))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main(sys.argv[1:]))
