"""The PPO migration planner against the yardsticks, on scenarios it never trained on.

1. Train (or go on training) a policy for systems of up to ``--max-workloads`` services on the
   vector simulator (``--train-steps`` simulated hours, ``--envs`` copies; scenario randomisation
   as in ``lepton train-planner``), into ``--out``. Training steps per second are the median of
   the iterations, rollouts and updates (the validation scoring between them not counted; the
   whole call's seconds are printed). The policy judged below is the snapshot training kept
   (``policy.pt``: the one that planned the 16 validation systems best); ``selected_step`` and
   ``validation_saving`` say which and how well.
2. Small held-out scenarios (``--small`` of them, 4-8 workloads): the policy's plan (greedy and
   best of ``--samples`` sampled rollouts, then the one-step lookahead with ``--lookahead`` other
   actions an hour, as ``lepton plan`` plans; 0: none) against the exact planner's proved optimum; the gap is
   (ppo - exact) / exact. Also, on the systems whose optimum was proved, how far it is under the
   best heuristic (1 - exact / best heuristic): the most any planner could save over the
   heuristics on those systems; and how far ``cost_lower_bound`` is under the proved optimum
   (how tight the bound that step 3 quotes is).
3. Large held-out scenarios (``--large`` of them, ``--large-size`` workloads): the policy's plan
   against the cheapest of lift-shift, waves and greedy; the saving is 1 - ppo / best heuristic.
   ``mean_saving_without_lookahead`` is the same of the best sampled rollout alone, and
   ``plan_seconds`` the median seconds of a plan there (sampling and lookahead).
   For scale, ``cost_lower_bound`` (a relaxation no plan that moves every workload goes below)
   says how far under the best heuristic any plan could at most be; with
   ``--large-exact-seconds S`` the exact planner also plans each of them in S seconds, seeded with the best heuristic's plan (at 50 workloads it
   proves nothing: what it found in that time, a third yardstick for the policy).

Held-out scenarios come from seeds 1,000,000,000 + i; training draws its scenarios from the
streams of seeds ``seed`` .. ``seed + envs`` (a different stream, never these), and the validation
systems from 2,000,000,000 + i.

``--hidden`` is the policy's width (``MigrationAgent``'s; default 64, the planner's) and ``--seed``
the training seed; with a folder ``benchmarks/gpu.py``'s ``widths`` part trained, the same
``--hidden``, ``--seed`` and ``--train-steps`` judge that policy without training it further.

Run: .venv/bin/python benchmarks/planner.py [--train-steps 200000] [--max-workloads 64] [--hidden 64] [--seed 1]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from lepton_core.planner.planner import (LOOKAHEAD_ALTERNATIVES, PLAN_SAMPLES, load_policy, planner_config, policy_plan,
                                         train_planner)
from lepton_core.planner.policy import DEFAULT_HIDDEN
from lepton_core.sim.exact import solve
from lepton_core.sim.plan import best_heuristic, cost_lower_bound
from lepton_core.sim.scenario import generate

HELD_OUT = 1_000_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=200_000)
    parser.add_argument("--envs", type=int, default=64)
    parser.add_argument("--max-workloads", type=int, default=64)
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--large", type=int, default=20)
    parser.add_argument("--large-size", type=int, default=50)
    parser.add_argument("--samples", type=int, default=PLAN_SAMPLES, help="sampled rollouts per plan (the planner's default)")
    parser.add_argument("--lookahead", type=int, default=LOOKAHEAD_ALTERNATIVES,
                        help="other actions an hour the one-step lookahead tries (the planner's default; 0: none)")
    parser.add_argument("--exact-seconds", type=float, default=60.0)
    parser.add_argument("--large-exact-seconds", type=float, default=0.0,
                        help="also run the exact planner this long on each large scenario (0: not run)")
    parser.add_argument("--out", default=".lepton/bench-planner")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=DEFAULT_HIDDEN, help="the width of the policy's layers (the planner's default)")
    parser.add_argument("--seed", type=int, default=1, help="the training seed (PPOConfig's seed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    began = time.perf_counter()
    cfg = planner_config(total_timesteps=args.train_steps, num_envs=args.envs, seed=args.seed)
    trained = train_planner(args.out, cfg, max_workloads=args.max_workloads, min_workloads=4, hidden=args.hidden)
    train_seconds = time.perf_counter() - began
    with open(trained.log) as f:
        sps = [float(r["sps"]) for r in csv.DictReader(f)]
    train_sps = statistics.median(sps) if sps else float("nan")
    print(f"trained to {trained.global_step:,} steps in {train_seconds:.0f} s (this call); median {train_sps:,.0f} steps/s; "
          f"last mean episode cost ${trained.final_cost:,.2f}; policy: the snapshot of step {trained.selected_step:,} "
          f"({trained.validation_saving:+.2%} on the validation systems)")
    agent = load_policy(trained.policy)

    gaps, optimum_below, floor_below = [], [], []
    for i in range(args.small):
        s = generate(np.random.default_rng(HELD_OUT + i), 4 + i % 5)
        best = best_heuristic(s)
        exact = solve(s, time_limit_s=args.exact_seconds, hint=best)
        ppo = policy_plan(agent, s, samples=args.samples, lookahead=args.lookahead)
        gaps.append((ppo.outcome.total_cost - exact.plan.outcome.total_cost) / exact.plan.outcome.total_cost)
        if exact.optimal:
            optimum_below.append(1 - exact.plan.outcome.total_cost / best.outcome.total_cost)
            floor_below.append(1 - cost_lower_bound(s) / exact.plan.outcome.total_cost)
        print(f"small {i:2d} ({s.n} workloads): ppo ${ppo.outcome.total_cost:,.2f}, exact ${exact.plan.outcome.total_cost:,.2f}"
              f"{'' if exact.optimal else ' (not proved)'}, gap {gaps[-1]:+.2%}; best heuristic ({best.method}) "
              f"${best.outcome.total_cost:,.2f}, the exact plan {1 - exact.plan.outcome.total_cost / best.outcome.total_cost:.2%} under it")
    savings, sampled_savings, plan_seconds, headroom, exact_savings = [], [], [], [], []
    for i in range(args.large):
        s = generate(np.random.default_rng(HELD_OUT + 10_000 + i), args.large_size)
        best = best_heuristic(s)
        sampled = policy_plan(agent, s, samples=args.samples, lookahead=0)
        t0 = time.perf_counter()
        ppo = policy_plan(agent, s, samples=args.samples, lookahead=args.lookahead)
        plan_seconds.append(time.perf_counter() - t0)
        savings.append(1 - ppo.outcome.total_cost / best.outcome.total_cost)
        sampled_savings.append(1 - sampled.outcome.total_cost / best.outcome.total_cost)
        floor = cost_lower_bound(s)
        headroom.append(1 - floor / best.outcome.total_cost)
        exact_note = ""
        if args.large_exact_seconds > 0:
            found = solve(s, time_limit_s=args.large_exact_seconds, hint=best)
            exact_savings.append(1 - found.plan.outcome.total_cost / best.outcome.total_cost)
            exact_note = f"; exact planner in {args.large_exact_seconds:g} s ${found.plan.outcome.total_cost:,.2f} ({exact_savings[-1]:+.2%})"
        print(f"large {i:2d} ({s.n} workloads): ppo ${ppo.outcome.total_cost:,.2f} in {plan_seconds[-1]:.1f} s "
              f"(sampled rollouts alone ${sampled.outcome.total_cost:,.2f}), best heuristic ({best.method}) "
              f"${best.outcome.total_cost:,.2f}, saving {savings[-1]:+.2%}; no plan below ${floor:,.2f} "
              f"({headroom[-1]:.1%} under the best heuristic){exact_note}")
    out = {"mean_gap_to_optimal": round(statistics.mean(gaps), 4) if gaps else None,
           "small_optimum_below_best_heuristic": round(statistics.mean(optimum_below), 4) if optimum_below else None,
           "small_proved": len(optimum_below),
           "small_lower_bound_below_optimum": round(statistics.mean(floor_below), 4) if floor_below else None,
           "mean_saving_vs_best_heuristic": round(statistics.mean(savings), 4) if savings else None,
           "mean_saving_without_lookahead": round(statistics.mean(sampled_savings), 4) if sampled_savings else None,
           "plan_seconds": round(statistics.median(plan_seconds), 2) if plan_seconds else None, "lookahead": args.lookahead,
           "mean_lower_bound_below_best_heuristic": round(statistics.mean(headroom), 4) if headroom else None,
           "mean_exact_saving_vs_best_heuristic": round(statistics.mean(exact_savings), 4) if exact_savings else None,
           "large_exact_seconds": args.large_exact_seconds or None,
           "train_sps": round(train_sps), "train_steps": trained.global_step, "max_workloads": args.max_workloads,
           "envs": args.envs, "hidden": args.hidden, "seed": args.seed, "final_train_cost": round(trained.final_cost, 2),
           "selected_step": trained.selected_step, "validation_saving": round(trained.validation_saving, 4),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
