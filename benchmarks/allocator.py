"""What ``reuse_freed_memory`` (glibc's malloc told to reuse freed blocks of up to 256 MiB instead of
mapping fresh pages for each) does to lepton's CPU work: the same four workloads with it and
without it (``LEPTON_MALLOC_TUNING=0``), each run in a fresh interpreter, the two arms alternated
round by round.

Workloads, all on torch's default thread count:
- ``ppo_cartpole``: lepton's PPO on CartPole-v1 at 64 envs x 128 steps, 12 iterations (98,304
  steps; the speed part of ``ppo_cartpole.py``): steps per second;
- ``planner``: the planner's PPO training on the simulator (64 copies of 4-64 workloads, its
  defaults), 3 iterations: steps per second;
- ``adapt_step``: a resnet18 training step at 32x32, batch 32, channels-last, under bf16 autocast
  where the CPU has bf16 instructions (what the adaptation's fits run): median milliseconds of 30;
- ``serve_batch``: resnet18 inference on 8 images at 224x224, channels-last, fp32 (a model
  server's batch): median milliseconds of 20.

For each, the minor page faults per unit (iteration, step or batch, from ``getrusage``): they
count the fresh pages that the kernel had to map, the cost this setting removes, and unlike the
timings they are not moved by a noisy host; and the process's CPU time per unit (user and system,
all threads), which a host's other tenants move less than the wall clock.

Run: .venv/bin/python benchmarks/allocator.py [--rounds 3]
The last line printed is one JSON object: per workload the two arms' medians and their ratio
(tuned over default: above 1 is faster for rates, below 1 for milliseconds).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

WORKLOADS = ("ppo_cartpole", "planner", "adapt_step", "serve_batch")


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def cpu_seconds() -> float:
    """This process's CPU time, user and system, all threads: what a noisy host's other tenants
    move less than the wall clock."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def trained(envs, agent, cfg) -> dict:
    """lepton's PPO ``train`` on ``envs``, timed: steps per second, and page faults and CPU time per iteration."""
    from lepton_core.planner.ppo import train

    f0, c0, t0 = faults(), cpu_seconds(), time.perf_counter()
    result = train(envs, agent, cfg)
    seconds = time.perf_counter() - t0
    return {"value": result.global_step / seconds, "unit": "steps/s", "faults_per_unit": (faults() - f0) / result.iterations,
            "cpu_ms_per_unit": (cpu_seconds() - c0) * 1000 / result.iterations}


def ppo_cartpole() -> dict:
    import torch
    from ppo_cartpole import cartpole  # (this folder, first on the path of a script run from it)

    from lepton_core.planner.policy import MlpAgent
    from lepton_core.planner.ppo import PPOConfig

    torch.optim.Adam(MlpAgent(4, 2).parameters(), fused=True)  # torch's one-time imports outside the clock
    cfg = PPOConfig(total_timesteps=12 * 64 * 128, num_envs=64, num_steps=128, seed=1, device="cpu")
    envs = cartpole(64)
    torch.manual_seed(1)
    return trained(envs, MlpAgent(4, 2), cfg)


def planner() -> dict:
    import torch

    from lepton_core.planner.planner import planner_config
    from lepton_core.planner.policy import MigrationAgent
    from lepton_core.sim.vector import VectorCloudMigrationEnv

    cfg = planner_config(total_timesteps=3 * 64 * 128, seed=1, device="cpu")
    envs = VectorCloudMigrationEnv(cfg.num_envs, max_workloads=64, min_workloads=4)
    torch.manual_seed(1)
    agent = MigrationAgent(64, envs.n_types)
    torch.optim.Adam(agent.parameters(), fused=True)  # torch's one-time imports outside the clock
    return trained(envs, agent, cfg)


def timed(step, warm: int, count: int) -> dict:
    for _ in range(warm):
        step()
    f0, c0, times = faults(), cpu_seconds(), []
    for _ in range(count):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"value": statistics.median(times) * 1000, "unit": "ms", "faults_per_unit": (faults() - f0) / count,
            "cpu_ms_per_unit": (cpu_seconds() - c0) * 1000 / count}


def adapt_step() -> dict:
    import torch
    import torchvision

    from lepton_core.hardware import cpu_native_bf16

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(32, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (32,))

    def step() -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=cpu_native_bf16()):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return timed(step, 3, 30)


def serve_batch() -> dict:
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval().to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 224, 224).to(memory_format=torch.channels_last)

    def batch() -> None:
        with torch.inference_mode():
            net(x)

    return timed(batch, 3, 20)


def one(workload: str) -> None:
    """In this (fresh) interpreter: the allocator as the environment says, then one workload."""
    from lepton_core.hardware import reuse_freed_memory

    tuned = reuse_freed_memory()
    out = globals()[workload]()
    print(json.dumps({"workload": workload, "tuned": tuned, **out}))


def run(workload: str, tuned: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["LEPTON_MALLOC_TUNING"] = "1" if tuned else "0"
    proc = subprocess.run([sys.executable, __file__, "--one", workload], env=env, capture_output=True, text=True, check=True)
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    if record["tuned"] != tuned:
        raise SystemExit(f"{workload}: the allocator setting was {'not ' if tuned else ''}made where it should{'' if tuned else ' not'} have been")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, of " + ", ".join(WORKLOADS))
    parser.add_argument("--one", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one)
        return
    chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = sorted(set(chosen) - set(WORKLOADS))
    if unknown:
        raise SystemExit(f"--workloads: unknown {', '.join(unknown)} (known: {', '.join(WORKLOADS)})")
    runs: dict[str, dict[bool, list[dict]]] = {w: {False: [], True: []} for w in chosen}
    t0 = time.perf_counter()
    for r in range(args.rounds):
        for w in chosen:
            for tuned in ((False, True) if r % 2 == 0 else (True, False)):
                rec = run(w, tuned)
                runs[w][tuned].append(rec)
                print(f"round {r + 1} {w:<13} {'tuned  ' if tuned else 'default'} {rec['value']:10,.1f} {rec['unit']:<7} "
                      f"{rec['faults_per_unit']:9,.0f} page faults and {rec['cpu_ms_per_unit']:8,.1f} CPU ms "
                      f"per {'iteration' if rec['unit'] == 'steps/s' else 'call'}",
                      flush=True)
    out: dict = {}
    for w in chosen:
        default, tuned = ([x["value"] for x in runs[w][arm]] for arm in (False, True))
        fd, ft = (statistics.median(x["faults_per_unit"] for x in runs[w][arm]) for arm in (False, True))
        cd, ct = (statistics.median(x["cpu_ms_per_unit"] for x in runs[w][arm]) for arm in (False, True))
        out[w] = {"unit": runs[w][False][0]["unit"], "default": round(statistics.median(default), 2),
                  "tuned": round(statistics.median(tuned), 2), "ratio": round(statistics.median(tuned) / statistics.median(default), 3),
                  "faults_default": round(fd), "faults_tuned": round(ft),
                  "cpu_ms_default": round(cd, 1), "cpu_ms_tuned": round(ct, 1), "cpu_ratio": round(ct / cd, 3)}
    import torch

    out.update({"rounds": args.rounds, "torch_threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - t0, 1),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
