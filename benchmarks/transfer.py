"""Transfer learning on the demo's domain shift: the on-prem model adapted to the cloud's images
with a tenth of their labels, against the on-prem model as it is and the same architecture trained
from scratch on the same labels and number of epochs; three seeds, in one run.

Measured:
- ``acc_adapted``, ``acc_unadapted``, ``acc_scratch``: target test accuracy, mean over the seeds
  (each seed draws its own labelled tenth and its own training randomness);
- ``time_to_scratch_acc_fraction``: seconds of fitting the adapted model needed (calibration
  included) until its validation accuracy first reached the scratch model's best, over the scratch
  model's total seconds of fitting; median over the seeds (1.0 or more: it never got there sooner);
- ``lightning_overhead_fraction``: Lightning's time per training step over a plain PyTorch loop's,
  minus one, on the same resnet18, the same batches (in memory) and the same optimiser, rounds
  alternated, median of the rounds;
- ``images_per_s``: training images per second of that plain loop (forward, backward, step);
  ``images_per_s_bf16`` the same loop under bf16 autocast, on a CPU with bf16 instructions (where
  ``precision: auto``, which every fit here uses, trains resnet18 in bf16-mixed; each run's
  ``precision`` says which it got).

Both loops run with the allocator setting every fit makes (``reuse_freed_memory``).

The demo is written once into benchmarks/.data/transfer-demo (seed 0, as `lepton sample` writes
it). No early stopping: every run gets the whole budget, so times compare. With
``--source-replay`` (the default, as in `lepton run`) the on-prem training images join every
epoch of the adapted model (the parity check needs its on-prem answers kept); the scratch model
trains on the target's labels only either way.

``--strategy``, ``--replay-fraction``, ``--relabel-every`` and ``--precision`` set the adaptation
options of those names (defaults: ``AdaptOptions``'s); the scratch model trains every weight whatever
the strategy.

Run: .venv/bin/python benchmarks/transfer.py [--seeds 3] [--epochs 15] [--no-source-replay]
     [--strategy head|full|gradual] [--replay-fraction F] [--relabel-every N] [--precision auto|32-true|bf16-mixed]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))


def demo(dest: Path) -> Path:
    from lepton_core.demo.sample import build_sample

    spec = dest / "spec.yaml"
    if not spec.is_file():
        build_sample(dest, seed=0, force=True)
    return spec


def adaptation(spec: Path, seeds: int, epochs: int, source_replay: bool, **adapt: object) -> dict:
    from lepton_core.spec import load_spec
    from lepton_core.spec.params import AdaptOptions
    from lepton_core.transfer.adapt import ADAPTED, SCRATCH, UNADAPTED, adapt_model
    from lepton_core.transfer.evaluate import time_to_reach

    loaded = load_spec(spec)
    runs = []
    with tempfile.TemporaryDirectory(prefix="lepton-transfer-bench-") as tmp:
        for seed in range(seeds):
            options = AdaptOptions(data="location", labelled_fraction=0.1, max_epochs=epochs, patience=epochs,
                                   seed=seed, register_model=False, source_replay=source_replay, **adapt)
            r = adapt_model(loaded, options, Path(tmp) / "state", Path(tmp) / f"run-{seed}", say=print)
            reached = time_to_reach(r.adapted.history, r.scratch.best_val_acc)
            runs.append({
                "seed": seed, **{f"acc_{k}": r.metrics[n].accuracy for k, n in
                                 (("adapted", ADAPTED), ("unadapted", UNADAPTED), ("scratch", SCRATCH))},
                "f1_adapted": r.metrics[ADAPTED].macro_f1, "f1_scratch": r.metrics[SCRATCH].macro_f1,
                "ece_adapted": r.metrics[ADAPTED].calibration_error, "ece_scratch": r.metrics[SCRATCH].calibration_error,
                "acc_adapted_source": r.on_source[ADAPTED].accuracy if r.on_source else None,
                "acc_unadapted_source": r.on_source[UNADAPTED].accuracy if r.on_source else None,
                "scratch_best_val": r.scratch.best_val_acc, "adapted_best_val": r.adapted.best_val_acc,
                "adapted_seconds_to_scratch_best": reached, "scratch_seconds": r.scratch.seconds,
                "adapted_seconds": r.adapted.seconds, "precision": r.adapted.precision, "labelled": r.counts["train"],
                "pseudo_labelled": (r.adapted.calibration or {}).get("pseudo_labelled"),
                "pseudo_label_agreement": (r.adapted.calibration or {}).get("agreement_with_folders"),
            })
            print(json.dumps(runs[-1]), flush=True)
    fractions = [(x["adapted_seconds_to_scratch_best"] or float("inf")) / x["scratch_seconds"] for x in runs]
    mean = {k: statistics.mean(x[k] for x in runs) for k in ("acc_adapted", "acc_unadapted", "acc_scratch")}
    spread = {f"{k}_std": statistics.stdev(x[k] for x in runs) if len(runs) > 1 else 0.0
              for k in ("acc_adapted", "acc_scratch")}
    return {**mean, **spread, "time_to_scratch_acc_fraction": statistics.median(fractions), "runs": runs}


def step_clock(warm: int, sync=None):
    """A Lightning callback timing one epoch's steps after the first ``warm``: ``seconds_per_step()``
    once the epoch has ended. ``sync`` (a GPU's synchronise) runs before each reading."""
    from lightning.pytorch.callbacks import Callback

    class Clock(Callback):
        def __init__(self) -> None:
            self.marks: list[float] = []
            self.steps = 0

        def _mark(self) -> None:
            if sync is not None:
                sync()
            self.marks.append(time.perf_counter())

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == warm:
                self._mark()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self._mark()
            self.steps = trainer.global_step

        def seconds_per_step(self) -> float:
            return (self.marks[1] - self.marks[0]) / (self.steps - warm)

    return Clock()


def overhead(rounds: int = 5, steps: int = 40, batch: int = 32) -> dict:
    """Plain loop against Lightning, same model, batches and optimiser; rounds alternated."""
    import lightning as L
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from lepton_core.transfer.fit import cpu_native_bf16
    from lepton_core.transfer.module import TransferModule

    torch.manual_seed(0)
    x, y = torch.randn(batch * steps, 3, 32, 32), torch.randint(0, 10, (batch * steps,))
    loader = DataLoader(TensorDataset(x, y), batch_size=batch)
    warm = 5

    def lightning_step() -> float:
        module = TransferModule("resnet18", 10, 32, lr=1e-3, max_epochs=1)
        clock = step_clock(warm)
        trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[clock])
        trainer.fit(module, train_dataloaders=loader)
        return clock.seconds_per_step()

    def plain_step(bf16: bool = False) -> float:
        module = TransferModule("resnet18", 10, 32, lr=1e-3, max_epochs=1)
        module.setup("fit")  # the same memory layout as under Lightning
        module.train()
        opt = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=1e-4)
        for i, (xb, yb) in enumerate(loader):
            if i == warm:
                t0 = time.perf_counter()
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(module(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - t0) / (steps - warm)

    bf16 = cpu_native_bf16()  # where `precision: auto` trains resnet18 in bf16-mixed: that loop's speed too
    plain, light, plain_bf16 = [], [], []
    for _ in range(rounds):
        plain.append(plain_step())
        light.append(lightning_step())
        if bf16:
            plain_bf16.append(plain_step(bf16=True))
    ratios = [lt / p - 1 for lt, p in zip(light, plain, strict=True)]
    return {"lightning_overhead_fraction": statistics.median(ratios), "plain_step_ms": 1000 * statistics.median(plain),
            "lightning_step_ms": 1000 * statistics.median(light), "images_per_s": batch / statistics.median(plain),
            "images_per_s_bf16": batch / statistics.median(plain_bf16) if plain_bf16 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--source-replay", action=argparse.BooleanOptionalAction, default=True,
                        help="replay the on-prem training images while adapting (the default of `lepton run`)")
    parser.add_argument("--strategy", choices=("head", "full", "gradual"), default=None,
                        help="which of the adapted model's weights learn (default: AdaptOptions's, full)")
    parser.add_argument("--replay-fraction", type=float, default=None, help="share of the on-prem images each epoch replays")
    parser.add_argument("--relabel-every", type=int, default=None, help="self-training: relabel after every N epochs")
    parser.add_argument("--precision", choices=("auto", "32-true", "bf16-mixed"), default=None,
                        help="every fit's precision (default: AdaptOptions's, auto)")
    args = parser.parse_args()
    import torch

    from lepton_core.hardware import reuse_freed_memory

    reuse_freed_memory()  # as every fit sets it, before the plain loop too: the two loops compare on one allocator
    spec = demo(ROOT / ".data" / "transfer-demo")
    t0 = time.perf_counter()
    over = overhead()
    print(json.dumps(over), flush=True)
    adapt = {k: v for k, v in (("strategy", args.strategy), ("replay_fraction", args.replay_fraction),
                               ("relabel_every", args.relabel_every), ("precision", args.precision)) if v is not None}
    result = adaptation(spec, args.seeds, args.epochs, args.source_replay, **adapt)
    result.update(over)
    result.update({"seeds": args.seeds, "epochs": args.epochs, "labelled_fraction": 0.1, "source_replay": args.source_replay,
                   **adapt, "seconds": time.perf_counter() - t0,
                   "torch_threads": torch.get_num_threads(), "machine": platform.platform(),
                   "device": "cuda" if torch.cuda.is_available() else "cpu"})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
