"""What only a GPU shows, in one run on a lent GPU machine (the GPU work pool's kind of machine).

Parts (``--parts``; run in the order given; each prints one JSON line when it ends):

1. ``images``: training images per second of the transfer model (``TransferModule``: the
   torchvision backbone and the head, channels-last) at 224x224, batch ``--batch``, on random
   images held on the device: a plain PyTorch loop in fp32 (cuDNN's default TF32 convolutions),
   the same loop under bf16 autocast, and Lightning's ``bf16-mixed`` Trainer on the same batches,
   model and optimiser (AdamW). Each figure is the median over ``--rounds`` rounds of
   ``--steps`` timed steps after warm-up steps, the device synchronised at both ends; the three
   kinds alternate within a round. ``lightning_overhead_fraction`` is Lightning's bf16 step time
   over the plain bf16 loop's, minus one. Also resnet18 at the demo's 32x32.
2. ``adapt``: ``benchmarks/transfer.py``'s adaptation on the demo's domain shift (10% of the
   target's labels) for ``--adapt-seeds`` seeds, precision and device chosen as ``lepton run``
   chooses them (``auto``: bf16-mixed on this GPU): the accuracies, the time fraction, seconds.
3. ``planner``: the PPO planner's training steps per second on the simulator with the policy on
   the GPU and on the CPU (all its cores; ``--planner-devices`` says which), at 64 and 256
   simulators, ``--planner-iterations`` iterations each; median of the per-iteration rates after
   the first.
4. ``widths``: is the planner limited by its policy's size? One policy per width in ``--widths``
   (``MigrationAgent``'s ``hidden``), each trained ``--width-steps`` simulated hours with the
   planner's defaults (64 simulators, the benchmark's 4-64 workloads) once for each of
   ``--width-seeds``, all side by side on the GPU, one process each. Each lands in
   ``--widths-dir``/``h<width>`` (seed 1, the default) or ``h<width>-s<seed>`` (``policy.pt``,
   ``progress.csv``, ``training.json``), which ``benchmarks/planner.py --hidden <width> --seed <seed>
   --train-steps <steps> --out <that folder>`` judges on the held-out systems without training further.

Run: python3 benchmarks/gpu.py [--parts images,adapt,planner,widths] [--quick]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

import torch  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images(architectures: list[str], size: int, batch: int, steps: int, rounds: int, warm: int = 5) -> dict:
    """Plain fp32, plain bf16-autocast and Lightning bf16-mixed training steps, alternated."""
    import lightning as L
    import torch.nn.functional as F
    from benchmarks.transfer import step_clock
    from lepton_core.transfer.module import TransferModule

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator(device="cpu").manual_seed(0)
    batches = [(torch.randn(batch, 3, size, size, generator=gen).to(device),
                torch.randint(0, 10, (batch,), generator=gen).to(device)) for _ in range(4)]
    n = warm + steps
    stream = [batches[i % len(batches)] for i in range(n)]

    class Batches:  # one loader of the prepared batches (Lightning reads a bare list as several loaders)
        def __iter__(self):
            return iter(stream)

        def __len__(self) -> int:
            return n

    def module(arch: str) -> TransferModule:
        torch.manual_seed(0)
        m = TransferModule(arch, 10, size, lr=1e-3, max_epochs=1)
        m.setup("fit")
        return m

    def plain(arch: str, bf16: bool) -> float:
        m = module(arch).to(device).train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-4)
        for i, (xb, yb) in enumerate(stream):
            if i == warm:
                _sync(device)
                t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(m(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        return (time.perf_counter() - t0) / steps

    def lightning(arch: str) -> float:
        clock = step_clock(warm, sync=lambda: _sync(device))
        precision = "bf16-mixed" if device.type == "cuda" else "32-true"
        trainer = L.Trainer(max_epochs=1, accelerator=device.type, devices=1, precision=precision, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, callbacks=[clock])
        trainer.fit(module(arch), train_dataloaders=Batches())
        return clock.seconds_per_step()

    out = {}
    for arch in architectures:
        times: dict[str, list[float]] = {"fp32": [], "bf16": [], "lightning_bf16": []}
        for _ in range(rounds):
            times["fp32"].append(plain(arch, bf16=False))
            times["bf16"].append(plain(arch, bf16=True))
            times["lightning_bf16"].append(lightning(arch))
        med = {k: statistics.median(v) for k, v in times.items()}
        out[f"{arch}_{size}"] = {
            "batch": batch, **{f"{k}_images_per_s": round(batch / v, 1) for k, v in med.items()},
            "bf16_speedup_vs_fp32": round(med["fp32"] / med["bf16"], 3),
            "lightning_overhead_fraction": round(med["lightning_bf16"] / med["bf16"] - 1, 4),
            "step_ms": {k: [round(1000 * t, 2) for t in v] for k, v in times.items()},
        }
        print(json.dumps({arch: out[f"{arch}_{size}"]}), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def adapt(seeds: int, epochs: int) -> dict:
    from benchmarks.transfer import adaptation, demo

    spec = demo(ROOT / ".data" / "transfer-demo")
    t0 = time.perf_counter()
    result = adaptation(spec, seeds, epochs, source_replay=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def planner(iterations: int, envs_list: list[int], devices: list[str]) -> dict:
    from lepton_core.planner.planner import planner_config, train_planner

    out = {}
    for device in devices:
        for envs in envs_list:
            with tempfile.TemporaryDirectory(prefix="lepton-gpu-planner-") as tmp:
                cfg = planner_config(total_timesteps=envs * 128 * iterations, num_envs=envs, device=device)
                t0 = time.perf_counter()
                trained = train_planner(tmp, cfg, max_workloads=64, min_workloads=4)
                seconds = time.perf_counter() - t0
                with open(Path(tmp) / "progress.csv") as f:
                    rates = [float(r["sps"]) for r in csv.DictReader(f)]
            key = f"{device}_{envs}envs"
            out[key] = {"train_sps": round(statistics.median(rates[1:] or rates)), "first_iteration_sps": round(rates[0]),
                        "steps": trained.global_step, "seconds": round(seconds, 1)}
            print(json.dumps({key: out[key]}), flush=True)
    return out


def _train_width(hidden: int, steps: int, folder: str, seed: int) -> dict:
    """One process of the ``widths`` part (spawned: a CUDA context does not survive a fork)."""
    from lepton_core.planner.planner import planner_config, train_planner

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    trained = train_planner(folder, planner_config(total_timesteps=steps, num_envs=64, seed=seed), max_workloads=64,
                            min_workloads=4, hidden=hidden)
    with open(Path(folder) / "progress.csv") as f:
        rates = [float(r["sps"]) for r in csv.DictReader(f)]
    return {"hidden": hidden, "seed": seed, "steps": trained.global_step, "seconds": round(time.perf_counter() - t0, 1),
            "train_sps": round(statistics.median(rates[1:] or rates)), "final_train_cost": round(trained.final_cost, 2)}


def widths(hiddens: list[int], seeds: list[int], steps: int, root: str) -> dict:
    import multiprocessing as mp

    runs = [(h, steps, str(Path(root) / _width_folder(h, seed)), seed) for seed in seeds for h in hiddens]
    with mp.get_context("spawn").Pool(len(runs)) as pool:
        done = pool.starmap(_train_width, runs)
    for r in done:
        print(json.dumps({"width": r}), flush=True)
    return {_width_folder(r["hidden"], r["seed"]): r for r in done}


def _width_folder(hidden: int, seed: int) -> str:
    return f"h{hidden}" if seed == 1 else f"h{hidden}-s{seed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="images,adapt,planner")
    parser.add_argument("--architectures", default="resnet18,resnet50,efficientnet_b0,mobilenet_v3_small")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--adapt-seeds", type=int, default=1)
    parser.add_argument("--adapt-epochs", type=int, default=15)
    parser.add_argument("--planner-iterations", type=int, default=4)
    parser.add_argument("--planner-devices", default="cuda,cpu",
                        help="planner part: where the policy trains, in turn (cuda only where there is one)")
    parser.add_argument("--widths", default="64,128,256", help="widths part: the policy widths to train")
    parser.add_argument("--width-steps", type=int, default=1_000_000, help="widths part: simulated hours each")
    parser.add_argument("--width-seeds", default="1", help="widths part: training seeds (each width trains once a seed)")
    parser.add_argument("--widths-dir", default=".lepton/planner-widths", help="widths part: where the policies go")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a check that every part runs (CPU)")
    parser.add_argument("--json-out", default=None, help="also write the final JSON object here")
    args = parser.parse_args()
    parts = args.parts.split(",")
    unknown = [p for p in parts if p not in ("images", "adapt", "planner", "widths")]
    if unknown:
        parser.error(f"--parts: unknown part {unknown[0]!r} (known: images, adapt, planner, widths)")
    archs = args.architectures.split(",")
    if args.quick:
        archs, args.batch, args.steps, args.rounds, args.adapt_epochs, args.planner_iterations, args.width_steps = (
            ["resnet18"], 4, 2, 1, 1, 2, 2 * 64 * 128)

    cuda = torch.cuda.is_available()
    result: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
                    "cpu_cores": os.cpu_count(), "machine": platform.platform(), "date": time.strftime("%Y-%m-%d")}
    t0 = time.perf_counter()

    def keep() -> None:  # what is measured so far survives a run cut short
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(result) + "\n")

    for part in parts:
        if part == "images":
            result["images_224"] = images(archs, 224 if not args.quick else 64, args.batch, args.steps, args.rounds)
            result["images_32"] = images(["resnet18"], 32, args.batch * (4 if not args.quick else 1), args.steps, args.rounds)
        elif part == "adapt":
            result["adapt"] = adapt(args.adapt_seeds, args.adapt_epochs)
            print(json.dumps({"adapt": {k: v for k, v in result["adapt"].items() if k != "runs"}}), flush=True)
        elif part == "widths":
            try:
                hiddens, seeds = ([int(x) for x in arg.split(",")] for arg in (args.widths, args.width_seeds))
            except ValueError:
                parser.error(f"--widths {args.widths!r} and --width-seeds {args.width_seeds!r}: comma-separated integers")
            result["widths"] = widths(hiddens, seeds, args.width_steps, args.widths_dir)
        else:
            devices = [d for d in args.planner_devices.split(",") if d != "cuda" or cuda]
            if not devices or any(d not in ("cuda", "cpu") for d in devices):
                parser.error(f"--planner-devices {args.planner_devices!r}: cuda and/or cpu, comma-separated")
            result["planner"] = planner(args.planner_iterations, [64, 256] if not args.quick else [8], devices)
        keep()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    keep()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
