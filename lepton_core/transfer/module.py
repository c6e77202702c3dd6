"""The network being adapted (a LightningModule with a ``backbone`` and a ``head``), the freeze and
unfreeze schedule of each strategy (a Lightning finetuning callback), and a per-epoch history.

Strategies:
- ``head``: the backbone stays frozen except its batch-norm layers, which re-fit their statistics and
  scale to the new domain; only those and the head learn.
- ``full``: every weight learns from the first step.
- ``gradual``: starts as ``head``; every ``unfreeze_every`` epochs the next group of backbone blocks,
  from the top down, joins the optimiser at ``backbone_lr_factor`` times the head's current rate.
"""

from __future__ import annotations

import random
import time
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BaseFinetuning, Callback
from torch import nn

from lepton_core.transfer.backbones import backbone_blocks, build_model, head_of

Strategy = Literal["head", "full", "gradual"]
STRATEGIES: tuple[str, ...] = ("head", "full", "gradual")
MAX_GROUPS = 4
STATISTICS_IMAGES = 512  # enough for stable batch-norm statistics; more only costs time
INFERENCE_BATCH = 256  # images per forward pass where no gradient is taken (fewer, larger passes)
PROBE_STEPS = 300  # full-batch steps of the linear probe: about 0.2 s for 110 images of 512 features


class TransferModule(L.LightningModule):
    """A torchvision classifier with the optimiser and metrics of fine-tuning.

    Args:
        architecture: torchvision architecture (see ``backbones.ARCHITECTURES``).
        num_classes: outputs of the head.
        input_size: side of the square input.
        lr: AdamW's rate for the head (and for the backbone under ``full``), cosine-annealed per epoch.
        weight_decay: AdamW's decoupled weight decay.
        max_epochs: length of the cosine schedule.
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(self, architecture: str, num_classes: int, input_size: int, *, lr: float = 1e-3,
                 weight_decay: float = 1e-4, max_epochs: int = 20, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_model(architecture, num_classes, input_size)
        self._sums: dict[str, torch.Tensor | None] = {}  # per stage: the epoch's summed loss and right answers
        self._counts: dict[str, int] = {}  # per stage: the epoch's images

    @property
    def backbone(self) -> nn.ModuleList:
        """The blocks below the head, input first (a view: the same modules as ``net``'s)."""
        return nn.ModuleList(backbone_blocks(self.net, self.hparams.architecture))

    @property
    def head(self) -> nn.Module:
        return head_of(self.net, self.hparams.architecture)

    def setup(self, stage: str) -> None:
        # channels-last convolutions: about 10% faster training steps and 20% faster inference
        # passes than NCHW on this project's CPUs (oneDNN), and the layout GPUs' tensor cores want.
        # The weights keep their names and shapes; a checkpoint loads into an NCHW network as it is.
        self.net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) -> (N, classes)
        return self.net(x.contiguous(memory_format=torch.channels_last))

    # An epoch's loss and accuracy are summed on the device, step by step, and logged once at the
    # epoch's end (one read-back). Logging them every step cost 0.73 ms of CPU a step (of Lightning's
    # 1.07 ms), and on a GPU the step waits on that CPU (benchmarks/RESULTS.md, the H200 entry).
    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing if stage == "train" else 0.0)
        with torch.no_grad():
            step = torch.stack((loss.detach().float() * len(y), (logits.argmax(1) == y).sum().float()))
            sums = self._sums.get(stage)
            self._sums[stage] = step if sums is None else sums.add_(step)
            self._counts[stage] = self._counts.get(stage, 0) + len(y)
        return loss

    def epoch_metrics(self, stage: str) -> dict[str, float]:
        """``{stage}_loss`` and ``{stage}_acc`` (means over the images) of the epoch so far, or of
        the last validation; empty before any step."""
        sums, n = self._sums.get(stage), self._counts.get(stage, 0)
        if sums is None or not n:
            return {}
        loss, correct = (sums / n).tolist()
        return {f"{stage}_loss": loss, f"{stage}_acc": correct}

    def _restart(self, stage: str) -> None:
        self._sums[stage], self._counts[stage] = None, 0

    def on_train_epoch_start(self) -> None:
        self._restart("train")

    def on_validation_epoch_start(self) -> None:
        self._restart("val")

    def on_train_epoch_end(self) -> None:
        for name, value in self.epoch_metrics("train").items():
            self.log(name, value, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # Lightning's trial batches: nothing to report
            self._restart("val")
            return
        for name, value in self.epoch_metrics("val").items():
            self.log(name, value, on_epoch=True, prog_bar=True)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> dict[str, Any]:
        # Only what may learn now: the finetuning callback adds the rest as it thaws.
        opt = torch.optim.AdamW((p for p in self.parameters() if p.requires_grad), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)
        # The cosine's recursive form scales every group alike, including groups added later.
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.hparams.max_epochs),
                                                           eta_min=self.hparams.lr * 0.01)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def unfreeze_groups(blocks: list[nn.Module], most: int = MAX_GROUPS) -> list[list[nn.Module]]:
    """The backbone's blocks in at most ``most`` groups, top (next to the head) first."""
    top_down = list(reversed(blocks))
    size = -(-len(top_down) // most)
    return [top_down[i:i + size] for i in range(0, len(top_down), size)]


class Finetuning(BaseFinetuning):
    """The strategy's schedule. Restart-safe: on a resumed run every group due by the current epoch
    is trainable again (Lightning restores the optimiser's groups, not ``requires_grad``)."""

    def __init__(self, strategy: Strategy, *, unfreeze_every: int = 2, backbone_lr_factor: float = 0.1) -> None:
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
        self.strategy, self.unfreeze_every, self.backbone_lr_factor = strategy, unfreeze_every, backbone_lr_factor

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        if self.strategy != "full":
            self.freeze(pl_module.backbone, train_bn=True)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        if self.strategy != "gradual":
            return
        in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
        for k, group in enumerate(unfreeze_groups(list(pl_module.backbone))):
            if epoch < (k + 1) * self.unfreeze_every:
                break
            params = [p for m in group for p in m.parameters()]
            if all(id(p) in in_optimizer for p in params):
                self.make_trainable(group)  # restored with the optimiser's state on resume
            else:
                self.unfreeze_and_add_param_group(group, optimizer, lr=optimizer.param_groups[0]["lr"] * self.backbone_lr_factor,
                                                  train_bn=False)


def recalibrate_batchnorm(model: nn.Module, batches, device: torch.device | str = "cpu") -> int:
    """Re-estimate every batch-norm layer's running mean and variance on ``batches`` (AdaBN): a model
    moved to a new domain keeps its weights but normalises with the new domain's statistics. The
    labels are not used. Returns the number of images seen."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    was_training = model.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch, not an exponential one
    model.train()
    seen = 0
    with torch.no_grad():
        for x, _ in batches:
            model(x.to(device))
            seen += len(x)
    for m, momentum in zip(layers, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return seen


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The convolution that sees the pixels."""
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def labelled_accuracy(model: nn.Module, batches, device: torch.device | str = "cpu") -> float:
    model.eval()
    right = seen = 0
    with torch.no_grad():
        for x, y in batches:
            right += int((model(x.to(device)).argmax(1).cpu() == y).sum())
            seen += len(y)
    return right / max(seen, 1)


def calibrate_input(model: nn.Module, unlabelled, labelled, device: torch.device | str = "cpu") -> dict:
    """Fit the pretrained network to the new domain before any gradient step, and check the sensor's
    polarity: with batch-norm statistics re-estimated on the target's images (AdaBN), score the
    network on the labelled training images as it is and with its first convolution negated (the
    network then sees each image's negative, exactly when the normalisation is centred at 0.5;
    otherwise up to a constant the re-estimated statistics absorb). A negative sensor (white-hot
    against black-hot cameras, negative film and X-ray scans, inverted documents) ruins a model
    that no amount of batch-norm re-fitting helps; fine-tuning rarely undoes it, since every weight
    of the first layer would have to change sign. The better of the two is kept (as it is on a tie),
    so the checkpoint stays a plain torchvision network. Returns what was measured."""
    conv = first_conv(model)
    images = recalibrate_batchnorm(model, unlabelled, device)
    as_is = labelled_accuracy(model, labelled, device)
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        conv.weight.neg_()
    torch.clear_autocast_cache()  # under a caching autocast, the next passes would see the old weight's copy
    recalibrate_batchnorm(model, unlabelled, device)
    inverted = labelled_accuracy(model, labelled, device)
    if inverted <= as_is:
        model.load_state_dict(kept)
        torch.clear_autocast_cache()
    model.train()
    return {"inverted": inverted > as_is, "accuracy_as_is": as_is, "accuracy_inverted": inverted, "unlabelled_images": images}


def last_linear(model: nn.Module) -> nn.Linear:
    """The layer that gives the classes' logits (a ResNet's ``fc``, the last of a ``classifier``)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def head_inputs(model: nn.Module, batches, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """What the last linear layer sees for each image of ``batches`` (the features it classifies, in
    eval mode, float32 on the CPU), and the batches' labels."""
    modes = [(m, m.training) for m in model.modules()]  # (restored as they were: frozen layers may be in eval mode)
    grabbed, labels = [], []
    hook = last_linear(model).register_forward_pre_hook(lambda _m, args: grabbed.append(args[0].detach().float().cpu()))
    model.eval()
    try:
        with torch.no_grad():
            for x, y in batches:
                model(x.to(device))
                labels.append(torch.as_tensor(y))
    finally:
        hook.remove()
        for m, training in modes:
            m.train(training)
    return torch.cat(grabbed), torch.cat(labels)


def probe_head(model: nn.Module, features: torch.Tensor, labels: torch.Tensor, *, steps: int = PROBE_STEPS,
               lr: float = 1e-2, anchor: float = 1e-3) -> dict:
    """Refit the last linear layer on the labelled images' features, the backbone untouched (the
    linear probe of LP-FT, Kumar et al. 2022): a head fitted to the calibrated features first, so
    that fine-tuning does not start by pulling the features towards a head that no longer fits
    them. Full-batch Adam on cross-entropy, with an L2 pull (``anchor``) towards the head as it
    was, since a hundred labels are few for a few hundred weights a class. Returns the labelled
    images' accuracy before and after (the training fit, not a validation figure)."""
    layer = last_linear(model)
    w0, b0 = layer.weight.detach().float().cpu(), layer.bias.detach().float().cpu()
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = torch.optim.Adam([w, b], lr=lr)
    with torch.enable_grad(), torch.autocast("cpu", enabled=False):  # float32 on the CPU, as the features are
        for _ in range(steps):
            loss = F.cross_entropy(F.linear(features, w, b), labels) + anchor * ((w - w0) ** 2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        before = float((F.linear(features, w0, b0).argmax(1) == labels).float().mean())
        after = float((F.linear(features, w, b).argmax(1) == labels).float().mean())
        layer.weight.copy_(w.to(layer.weight))
        layer.bias.copy_(b.to(layer.bias))
    torch.clear_autocast_cache()  # (as in calibrate_input: weights changed in place)
    return {"probe": {"labelled_images": int(labels.numel()), "fit_before": before, "fit_after": after, "steps": steps}}


def pseudo_labels(model: nn.Module, data, threshold: float, device: torch.device | str = "cpu") -> tuple[dict[str, int], dict]:
    """The calibrated network as a teacher: its class for each training image whose label is unused,
    where it is at least ``threshold`` sure. Also how many it labelled and how often those agree with
    the folder names (a diagnostic only: those labels never reach training)."""
    items = data.unlabelled_items(only_unused=True)
    if not items:  # every training image's label is used
        return {}, {"pseudo_labelled": 0, "threshold": threshold, "agreement_with_folders": None}
    features, _ = head_inputs(model, data.unlabelled_dataloader(batch_size=INFERENCE_BATCH, only_unused=True), device)
    layer = last_linear(model)
    with torch.no_grad(), torch.autocast("cpu", enabled=False):  # the confidence in float32, whatever the passes ran in
        probs = torch.softmax(F.linear(features, layer.weight.float().cpu(), layer.bias.float().cpu()), dim=1)
    confidence, predicted = probs.max(dim=1)
    chosen = {i.rel: int(p) for i, c, p in zip(items, confidence, predicted, strict=True) if float(c) >= threshold}
    truth = {i.rel: i.label for i in items}
    agree = sum(1 for rel, label in chosen.items() if truth[rel] == label)
    return chosen, {"pseudo_labelled": len(chosen), "threshold": threshold,
                    "agreement_with_folders": agree / len(chosen) if chosen else None}


class CalibrateInput(Callback):
    """Before the first epoch of a fresh run from pretrained weights: ``calibrate_input``; with
    ``probe``, ``probe_head`` on the labelled images; then (with a ``threshold``) ``pseudo_labels``
    join the training split. With ``relabel_every``, the model being
    trained becomes the teacher after every that many epochs (self-training: its labels get better
    as it does); the trainer must reload its training loader as often. A resumed run keeps the
    weights and statistics its checkpoint holds and the same pseudo-labels, kept in the callback's
    state."""

    def __init__(self, threshold: float | None = None, relabel_every: int | None = None, probe: bool = False) -> None:
        self.threshold = threshold
        self.relabel_every = relabel_every
        self.probe = probe
        self.report: dict | None = None
        self.labels: dict[str, int] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        data = trainer.datamodule
        if trainer.ckpt_path is None:
            labelled = torch.utils.data.DataLoader(data.dataset("train"), batch_size=256)
            sample = data.unlabelled_dataloader(limit=STATISTICS_IMAGES, batch_size=INFERENCE_BATCH)
            # these passes compute as the fit's own steps do (under bf16-mixed, in bf16)
            with trainer.precision_plugin.forward_context():
                self.report = calibrate_input(pl_module, sample, labelled, pl_module.device)
                if self.probe:
                    self.report |= probe_head(pl_module, *head_inputs(pl_module, labelled, pl_module.device))
                if self.threshold is not None:
                    self.labels, found = pseudo_labels(pl_module, data, self.threshold, pl_module.device)
                    self.report |= found
        data.pseudo_labels = dict(self.labels)  # read when the training loader is made, after this hook

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = trainer.current_epoch + 1
        if (self.threshold is None or not self.relabel_every or done % self.relabel_every
                or done >= trainer.max_epochs or trainer.should_stop):
            return
        with trainer.precision_plugin.forward_context():
            self.labels, found = pseudo_labels(pl_module, trainer.datamodule, self.threshold, pl_module.device)
        trainer.datamodule.pseudo_labels = dict(self.labels)  # the next epoch's training loader is made anew
        if self.report is not None:
            self.report.setdefault("relabelled", []).append({"after_epoch": done, **found})

    def state_dict(self) -> dict[str, Any]:
        return {"report": self.report, "labels": self.labels}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.report, self.labels = state_dict["report"], dict(state_dict["labels"])


class EpochSeed(Callback):
    """At the start of each training epoch, seed torch, numpy and Python's generators from the run's
    seed and the epoch (augmentation and dropout draw from them), so an epoch trains the same
    whether the run went through the epochs before it or resumed from a checkpoint after them:
    a retried fit ends with the weights of one never stopped (with data-loading processes
    kept between epochs, their augmentation draws go on from where each process is)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # not Lightning's seed_everything: it also sets PL_GLOBAL_SEED, the seed of the
        # DistributedSampler that Lightning makes when it (re)builds a loader on several GPUs
        from lepton_core.transfer.data import epoch_seed

        seed = epoch_seed(self.seed, trainer.current_epoch) % 2**32
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)


class EpochHistory(Callback):
    """One row per finished epoch, and one per validation within an epoch (when the trainer
    validates more often): epochs done (a fraction within one), training steps, seconds of fitting
    so far (wall time from the start of the fit, across resumes: calibration, validation,
    pseudo-labelling and checkpoints included), losses and accuracies (an epoch's row has its
    training metrics too). Kept in Lightning checkpoints, so a resumed run's history is whole."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._elapsed = 0.0  # seconds of earlier attempts (restored from a checkpoint)
        self._start: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Listed before the calibration callback: its work counts in the first epoch's time.
        self._start = time.perf_counter()

    def seconds(self) -> float:
        return self._elapsed + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def _add(self, trainer: L.Trainer, epoch: float, metrics: tuple[str, ...], extra: dict[str, float] | None = None) -> None:
        m = {**trainer.callback_metrics, **(extra or {})}
        self.rows.append({"epoch": epoch, "step": trainer.global_step, "seconds": round(self.seconds(), 4),
                          **{k: float(m[k]) for k in metrics if k in m}})

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loop = trainer.fit_loop.epoch_loop
        if trainer.sanity_checking or loop.batch_progress.is_last_batch:
            return  # the epoch's own row follows
        done = (loop.batch_idx + 1) / max(1, trainer.num_training_batches)
        # (the training metrics in callback_metrics are the last epoch's: not this row's)
        self._add(trainer, round(trainer.current_epoch + done, 4), ("val_loss", "val_acc"))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the epoch's validation; before the checkpoint of this epoch is written (Lightning
        # runs checkpoint callbacks last). A TransferModule logs its epoch's training metrics after
        # this hook, so they are read from it.
        train = pl_module.epoch_metrics("train") if hasattr(pl_module, "epoch_metrics") else {}
        self._add(trainer, trainer.current_epoch + 1, ("train_loss", "train_acc", "val_loss", "val_acc"), train)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "elapsed": self.seconds()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows, self._elapsed = list(state_dict["rows"]), float(state_dict["elapsed"])
        self._start = time.perf_counter()


class EpochProgress(Callback):
    """A line for each finished epoch, through ``say`` (the Prefect task's logger): which run, the
    epoch of how many, the training loss, the validation accuracy and the best so far, and the
    seconds of fitting; and, when a run goes on from a checkpoint, the epoch it goes on after.
    Reads the rows of ``history`` (listed before this callback, so its row for the epoch is there)."""

    def __init__(self, say, name: str, history: EpochHistory) -> None:
        self.say, self.name, self.history = say, name, history

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self.say(f"{self.name}: going on from its checkpoint after epoch {trainer.current_epoch} of {trainer.max_epochs}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0 or not self.history.rows:
            return
        row = self.history.rows[-1]
        accuracies = [r["val_acc"] for r in self.history.rows if "val_acc" in r]
        parts = [f"loss {row['train_loss']:.3f}"] if "train_loss" in row else []
        if "val_acc" in row:
            parts.append(f"validation accuracy {row['val_acc']:.1%} (best {max(accuracies):.1%})")
        parts.append(f"{row['seconds']:.0f} s")
        self.say(f"{self.name}: epoch {trainer.current_epoch + 1} of {trainer.max_epochs}: " + ", ".join(parts))
