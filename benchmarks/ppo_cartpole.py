"""lepton's hand-written PPO on CartPole-v1: does it learn as CleanRL's does, and how fast is it
against Stable-Baselines3 with the same settings?

(a) Learning: CleanRL's default hyperparameters (4 envs x 128 steps, 4 minibatches, 4 epochs,
annealed learning rate 2.5e-4, 500k steps), ``--seeds`` seeds; the mean return of each seed's
last 20 episodes, then their mean and spread (CleanRL reports 490 +/- 6).

(b) Speed: the same settings at 64 envs x 128 steps, ``--speed-steps`` steps each, lepton (through
gymnasium's numpy vector env, whose NEXT_STEP autoreset it handles) and SB3's PPO (its DummyVecEnv), in the same
run, one after the other, both on the CPU with ``torch.set_num_threads(--threads)``. Steps per
second over the whole run (rollouts and updates), once torch's one-time imports are done for both,
and both with the allocator setting lepton's training makes (``reuse_freed_memory``: large blocks
reused, not mapped afresh), set before either runs.

Run: .venv/bin/python benchmarks/ppo_cartpole.py [--seeds 3] [--steps 500000] [--speed-steps 200000]
(SB3 comes with the bench extra: pip install -e '.[bench]'.) The last line printed is one JSON object.
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
import torch

from lepton_core.hardware import reuse_freed_memory
from lepton_core.planner.policy import MlpAgent
from lepton_core.planner.ppo import PPOConfig, train


def cartpole(n: int):
    """gymnasium's numpy CartPole vector env (NEXT_STEP autoreset, which lepton's PPO handles)."""
    return gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="vector_entry_point")


def lepton_run(cfg: PPOConfig) -> tuple[float, list[float]]:
    envs = cartpole(cfg.num_envs)
    torch.manual_seed(cfg.seed)  # the initial weights from the seed, as CleanRL's
    agent = MlpAgent(4, 2)
    began = time.perf_counter()
    result = train(envs, agent, cfg)
    return result.global_step / (time.perf_counter() - began), result.episode_returns


def sb3_run(cfg: PPOConfig) -> float:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    envs = make_vec_env("CartPole-v1", n_envs=cfg.num_envs, seed=cfg.seed)
    model = PPO("MlpPolicy", envs, n_steps=cfg.num_steps, batch_size=cfg.minibatch_size, n_epochs=cfg.update_epochs,
                learning_rate=lambda f: f * cfg.learning_rate, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
                clip_range=cfg.clip_coef, ent_coef=cfg.ent_coef, vf_coef=cfg.vf_coef, max_grad_norm=cfg.max_grad_norm,
                policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh},
                seed=cfg.seed, device="cpu", verbose=0)
    began = time.perf_counter()
    model.learn(total_timesteps=cfg.total_timesteps)
    return model.num_timesteps / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--speed-steps", type=int, default=200_000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reuse_freed_memory()  # lepton's train sets it; set here, SB3 runs with it too (one process, one allocator)
    # torch's first optimizer imports torch._dynamo (about 1.5 s here): SB3 makes its optimizer
    # before its clock starts, so make one before lepton's does too and time training alone
    torch.optim.Adam(MlpAgent(4, 2).parameters(), fused=True)

    finals = []
    for seed in range(1, args.seeds + 1):
        sps, returns = lepton_run(PPOConfig(total_timesteps=args.steps, seed=seed, device="cpu"))
        finals.append(float(np.mean(returns[-20:])))
        print(f"learning, seed {seed}: mean return of the last 20 episodes {finals[-1]:.1f} ({len(returns)} episodes, {sps:,.0f} steps/s)")
    speed = PPOConfig(total_timesteps=args.speed_steps, num_envs=64, num_steps=128, seed=1, device="cpu")
    sps, _ = lepton_run(speed)
    sb3 = sb3_run(speed)
    print(f"speed at 64 envs x 128 steps: lepton {sps:,.0f} steps/s, SB3 {sb3:,.0f} steps/s, x{sps / sb3:.2f}")
    out = {"mean_return": round(statistics.mean(finals), 1), "return_std": round(statistics.pstdev(finals), 1),
           "returns": [round(f, 1) for f in finals], "sps": round(sps), "sb3_sps": round(sb3), "speedup_vs_sb3": round(sps / sb3, 2),
           "steps": args.steps, "speed_steps": args.speed_steps, "threads": args.threads,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
