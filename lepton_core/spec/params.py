"""Run parameters: what a person picks in the Prefect UI form or on the command line."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lepton_core.spec.base import StrictModel
from lepton_core.spec.models import BucketName, MigrationSpec, TargetSpec


class SpecRef(StrictModel):
    """Which spec to run."""

    path: str | None = Field(
        default=None, max_length=4096,
        description="Path of the spec YAML on the worker; leave empty for the bundled demo (built on first use).",
    )


class TargetOverrides(StrictModel):
    """Changes to the spec's cloud target for this run only; empty fields keep the spec's value."""

    bucket: BucketName | None = Field(default=None, description="Bucket to migrate into.")
    prefix: str | None = Field(default=None, max_length=512, description="Key prefix under the bucket.")
    endpoint_url: str | None = Field(default=None, max_length=2048, description="'embedded', an S3 endpoint URL.")
    encryption: Literal["none", "AES256", "aws:kms"] | None = Field(default=None, description="Server-side encryption.")

    def apply(self, spec: MigrationSpec) -> MigrationSpec:
        """``spec`` with these overrides, re-validated (a bad override fails like a bad spec)."""
        changes = self.model_dump(exclude_none=True)
        if not changes:
            return spec
        from lepton_core.spec.loader import validate_model

        target = validate_model(TargetSpec, {**spec.target.model_dump(exclude_unset=True), **changes}, {}, "target overrides")
        return spec.model_copy(update={"target": target})


class PlanOptions(StrictModel):
    """How the run plans the order in which services move (the simulator's yardsticks and the exact planner)."""

    exact_seconds: float = Field(
        default=30.0, ge=0, le=3600,
        description="Seconds the exact planner (CP-SAT) may search; it returns its best plan and bound when time runs "
                    "out. 0 plans with the heuristics only.",
    )
    link: str | None = Field(default=None, max_length=128,
                             description="The catalogue's network link to move data over; its first when empty.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the link's simulated hour-by-hour bandwidth.")


class PlannerTraining(StrictModel):
    """How the PPO migration planner trains on the simulator (the UI form of the ``train-planner`` flow)."""

    total_timesteps: int = Field(default=200_000, ge=1_000, le=1_000_000_000,
                                 description="Simulated hours to train for, all simulators together.")
    num_envs: int = Field(default=64, ge=1, le=65_536, description="Simulators stepped together (more on a GPU).")
    num_steps: int = Field(default=128, ge=8, le=4096, description="Hours each simulator runs per rollout.")
    learning_rate: float = Field(default=3e-4, gt=0, le=0.1, description="Adam's learning rate at the start (annealed to 0).")
    max_workloads: int = Field(default=16, ge=2, le=256, description="The largest system the policy will plan (services).")
    min_workloads: int = Field(default=4, ge=1, le=256, description="The smallest system drawn in training.")
    hidden: int = Field(default=64, ge=8, le=1024, description="Width of the policy's layers. A wider policy's own "
                        "rollouts are a little cheaper, but after the lookahead that plans use, 128 and 256 saved no more "
                        "than 64 on 50-service systems (5.1% and 5.2% against 5.2% over the best heuristic, two seeds "
                        "each), and wider plans take longer. Wider trains slower on CPUs (2.2 times at 128, 7.7 at "
                        "256); on a GPU it trains as fast.")
    seed: int = Field(default=1, ge=0, le=2**31 - 1, description="Seed of the training run.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="'auto' trains on a GPU when the worker has one.")
    fresh: bool = Field(default=False, description="Start afresh even when a checkpoint from the same settings exists.")

    @model_validator(mode="after")
    def _sizes(self) -> PlannerTraining:
        if self.min_workloads > self.max_workloads:
            raise ValueError(f"min_workloads ({self.min_workloads}) is larger than max_workloads ({self.max_workloads})")
        return self


class AdaptOptions(StrictModel):
    """How the on-prem model is adapted to the cloud's data (the UI form of the ``adapt-model`` flow)."""

    strategy: Literal["head", "full", "gradual"] = Field(
        default="full", description="head: only the classifier (and batch-norm) learns; full: every weight; "
                                    "gradual: the backbone thaws block by block from the top.")
    init: Literal["onprem", "imagenet", "none"] = Field(
        default="onprem", description="Start from the on-prem checkpoint, from torchvision's ImageNet weights "
                                      "(a local file, never downloaded), or from random weights.")
    pretrained_weights: str | None = Field(
        default=None, max_length=4096,
        description="init 'imagenet': the weights file; empty for torch's cache ($TORCH_HOME/hub/checkpoints).")
    data: Literal["cloud-copy", "location"] = Field(
        default="cloud-copy", description="cloud-copy: the migrated copy on the target, verified against its manifest; "
                                          "location: the dataset where the spec says it is.")
    labelled_fraction: float = Field(default=0.1, gt=0, le=1,
                                     description="Share of the target's training images whose labels are used.")
    max_epochs: int = Field(default=10, ge=1, le=10_000, description="Epochs at most (early stopping may end sooner).")
    patience: int = Field(default=4, ge=1, le=10_000, description="Epochs without a better validation accuracy before stopping.")
    batch_size: int = Field(default=32, ge=1, le=65_536, description="Images per training step.")
    lr: float = Field(default=1e-4, gt=0, le=1, description="AdamW's learning rate for fine-tuning at the start "
                                                         "(cosine-annealed).")
    calibrate: bool = Field(default=True, description="Before fine-tuning: re-estimate batch-norm statistics on the "
                                                      "target's images and check the sensor's polarity.")
    probe: bool = Field(default=False, description="After calibration: refit the classifier on the labelled images' "
                                                   "features, the backbone frozen, before fine-tuning (LP-FT's linear "
                                                   "probe). Off: on the demo it lowered the final accuracy.")
    pseudo_label_threshold: float | None = Field(
        default=0.9, gt=0, le=1, description="The calibrated model labels the training images whose labels are unused "
                                             "where it is this sure; empty: only the labelled images train.")
    relabel_every: int | None = Field(
        default=3, ge=1, le=10_000, description="Self-training: the model being fine-tuned labels the unlabelled "
                                                "images again after every this many epochs (its labels improve as "
                                                "it does); empty: the calibrated model's labels stay.")
    source_replay: bool = Field(default=True, description="The on-prem training images join every epoch, so that the "
                                                          "adapted model keeps the on-prem model's answers on on-prem data.")
    replay_fraction: float = Field(default=0.5, gt=0, le=1,
                                   description="With source_replay: the share of the on-prem training images each epoch "
                                               "replays (stratified; a fresh draw every epoch, so all are replayed "
                                               "over the run).")
    labelled_share: float | None = Field(
        default=0.25, gt=0, lt=1, description="Each epoch is drawn so that the labelled images make up at least this "
                                              "share of it (on the demo the pseudo-labelled and replayed ones outnumber "
                                              "them about twelve to one); empty: every image once an epoch.")
    val_every_n_steps: int | None = Field(
        default=15, ge=1, le=100_000, description="With labelled_share: validate after every this many training steps "
                                                  "(each epoch a whole number of such rounds); empty: once an epoch.")
    scratch_lr: float = Field(default=1e-3, gt=0, le=1, description="AdamW's learning rate for the from-scratch yardstick.")
    compare_scratch: bool = Field(default=True, description="Also train the architecture from scratch on the same "
                                                           "labels and budget, as the yardstick.")
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = Field(
        default="auto", description="auto: bf16-mixed for a ResNet where the GPU or CPU has bf16 (a CPU's AVX512-BF16 "
                                    "or AMX), else 32-bit; mobilenet_v3_small and efficientnet_b0 train faster in 32-bit.")
    num_workers: int = Field(default=0, ge=0, le=64, description="Data-loading processes (0: in the training process).")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the labelled subset, shuffling and weights.")
    register_model: bool = Field(default=True, description="Upload the adapted checkpoint and its model card to the registry.")
    fresh: bool = Field(default=False, description="Discard checkpoints of an earlier run with the same settings.")
    progress_bar: bool = Field(default=False, description="Show Lightning's progress bar (for a terminal).")

    @model_validator(mode="after")
    def _weights_file(self) -> AdaptOptions:
        if self.pretrained_weights and self.init != "imagenet":
            raise ValueError(f"pretrained_weights is the weights file of init 'imagenet'; init is {self.init!r}")
        return self


class IntegrateOptions(StrictModel):
    """How the candidate is checked against the on-prem model before cutover."""

    data: Literal["cloud-copy", "location"] = Field(
        default="cloud-copy", description="Where the golden images come from: the verified cloud copies, or the "
                                          "datasets' locations in the spec.")
    golden_per_domain: int = Field(default=200, ge=10, le=100_000,
                                   description="Test images of each domain (on-prem, cloud) sent to both servers.")
    max_batch_size: int = Field(default=8, ge=1, le=4096, description="Requests the server may batch together.")
    batch_timeout: float = Field(default=0.005, gt=0, le=10, description="Seconds the server waits to fill a batch (LitServe busy-polls its queue at 0).")


class OptimizeOptions(StrictModel):
    """How the serving configuration is tuned: a seeded search, each trial measured against the
    real model server, the objective the cost of a million predictions at the latency SLO."""

    enabled: bool = Field(default=True, description="In the migrate flow: tune serving after integration.")
    trials: int = Field(default=6, ge=1, le=500, description="Configurations measured at most.")
    patience: int = Field(default=3, ge=1, le=500, description="Stop when the best has not improved for this many trials.")
    time_budget_minutes: float = Field(default=0, ge=0, le=10_080, description="Start no trial after this long (0: no limit).")
    step_seconds: float = Field(default=2.0, ge=0.5, le=600, description="Seconds of open-loop load at each request rate.")
    arrivals: Literal["poisson", "constant"] = Field(
        default="poisson", description="How the load's requests are spaced: a Poisson process at each rate (independent "
                                       "users), or a fixed interval.")
    max_steps: int = Field(default=8, ge=2, le=50, description="Load steps per configuration to find its rate at the SLO.")
    eval_images: int = Field(default=200, ge=10, le=100_000, description="Test images of the model's target data each configuration answers.")
    accuracy_tolerance: float = Field(default=0.5, ge=0, le=100, description="Accuracy points a configuration may lose against eager fp32.")
    data: Literal["cloud-copy", "location"] = Field(
        default="cloud-copy", description="Where the evaluation images come from: the verified cloud copy, or the "
                                          "dataset's location in the spec.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Where the server runs (auto: a GPU if there is one).")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the search and of the load's Poisson arrivals.")
    fresh: bool = Field(default=False, description="Start a new study instead of continuing the one for this model and settings.")
