"""Simulator speed: the numpy vector twin against gymnasium's SyncVectorEnv over the scalar env.

Both step copies of generated 16-workload scenarios (``min_workloads = max_workloads = 16``) with a
seeded random policy that starts a valid workload a third of the time and waits otherwise (the
actions are drawn before timing, from the masks, so the policy costs nothing inside the timed
loop; an action that a copy's mask no longer allows is refused by the env as a wait, the same for
both). Both run the same calls, so episodes end and autoreset inside the timed loop alike (a new
scenario is drawn for each). Figures are env-steps per second (copies times calls), the median of
``--repeats`` timed runs after a warm-up run.

Then the exact planner (CP-SAT, 2 workers): its time to prove the optimum on generated scenarios
of 4, 6 and 8 workloads (``--exact-scenarios`` each, seeds 0..), starting from the cheapest
heuristic's plan, with its saving over that plan; medians over the scenarios.

Run: .venv/bin/python benchmarks/simulator.py [--steps 100] [--repeats 3] [--exact-scenarios 3]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import gymnasium as gym
import numpy as np

from lepton_core.sim.env import CloudMigrationEnv
from lepton_core.sim.exact import solve
from lepton_core.sim.plan import best_heuristic
from lepton_core.sim.scenario import generate
from lepton_core.sim.vector import VectorCloudMigrationEnv

WORKLOADS = 16


def actions_for(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A third of the copies start a random valid workload; the others wait."""
    out = np.zeros(len(masks), dtype=np.int64)
    for j, m in enumerate(masks):
        valid = np.flatnonzero(m[1:]) + 1
        if len(valid) and rng.random() < 1 / 3:
            out[j] = rng.choice(valid)
    return out


def rate(env, n: int, steps: int, repeats: int) -> float:
    _, info = env.reset(seed=0)
    rng = np.random.default_rng(0)
    plan = []
    masks = np.asarray(info["action_mask"])
    for _ in range(steps):
        acts = actions_for(masks, rng)
        plan.append(acts)
        _, _, _, _, info = env.step(acts)
        masks = np.asarray(info["action_mask"])
    runs = []
    for _ in range(repeats):
        env.reset(seed=0)
        t = time.perf_counter()
        for acts in plan:
            env.step(acts)
        runs.append(n * steps / (time.perf_counter() - t))
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--exact-scenarios", type=int, default=3)
    args = parser.parse_args()
    out: dict[str, object] = {"workloads": WORKLOADS, "steps": args.steps}
    for n in (1, 64, 1024):
        vec = VectorCloudMigrationEnv(n, max_workloads=WORKLOADS, min_workloads=WORKLOADS)
        sync = gym.vector.SyncVectorEnv([lambda: CloudMigrationEnv(max_workloads=WORKLOADS, min_workloads=WORKLOADS)] * n,
                                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        v = rate(vec, n, args.steps, args.repeats)
        s = rate(sync, n, args.steps, args.repeats)
        print(f"{n:>5} envs: vector twin {v:>12,.0f} steps/s, SyncVectorEnv {s:>10,.0f} steps/s, x{v / s:.1f}")
        out[f"vector_steps_per_s_{n}"] = round(v)
        out[f"sync_steps_per_s_{n}"] = round(s)
        out[f"speedup_vs_sync_{n}"] = round(v / s, 1)
    for n in (4, 6, 8):
        seconds, savings, proved = [], [], 0
        for seed in range(args.exact_scenarios):
            s = generate(np.random.default_rng(seed), n)
            best = best_heuristic(s)
            result = solve(s, time_limit_s=300, hint=best)
            proved += result.optimal
            seconds.append(result.seconds)
            savings.append(1 - result.plan.outcome.total_cost / best.outcome.total_cost)
        print(f"exact planner, {n} workloads: proved {proved}/{len(seconds)}, median {statistics.median(seconds):.1f} s "
              f"(max {max(seconds):.1f} s), median saving over the best heuristic {statistics.median(savings):.2%}")
        out[f"exact_prove_s_{n}"] = round(statistics.median(seconds), 2)
        out[f"exact_proved_{n}"] = f"{proved}/{len(seconds)}"
        out[f"exact_saving_vs_best_heuristic_{n}"] = round(statistics.median(savings), 4)
    out.update(machine=f"{platform.machine()}, {os.cpu_count()} cores", date=time.strftime("%Y-%m-%d"))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
