"""PPO, written by us in CleanRL's reading order and vocabulary (``ppo.py``), but importable.

``train`` collects ``num_steps`` steps from ``num_envs`` copies of a vector env, computes
advantages with GAE, and updates the agent for ``update_epochs`` epochs over ``num_minibatches``
minibatches with the clipped surrogate, an (optionally clipped) value loss and an entropy bonus,
global gradient clipping, a linearly annealed learning rate and an optional target-KL early stop.

Invalid actions: the env's ``info["action_mask"]`` is stored with each step and applied again in
the update, so the new and old policies are compared over the same valid actions.

Autoreset, both of gymnasium's modes, on purpose:

- ``SAME_STEP`` (``VectorCloudMigrationEnv``): a step that ends an episode returns the next
  episode's first observation and the last one in ``info["final_obs"]``; every stored transition
  is real.
- ``NEXT_STEP`` (gymnasium's default, and its numpy ``CartPoleVectorEnv``): a step that ends an
  episode returns the last observation; the copy's next step only resets it (its action is
  ignored). That step is stored with weight 0: it is left out of every loss and statistic, and the
  episode boundary before it stops GAE from reaching across.

A truncated episode's reward is bootstrapped with the value of its last observation, a
terminated one's is not. ``DISABLED`` is refused.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from pydantic import BaseModel, ConfigDict, Field
from torch import nn, optim

from lepton_core.fsutil import atomic_path
from lepton_core.hardware import reuse_freed_memory
from lepton_core.weights import load_weights

log = logging.getLogger(__name__)
LOG_FIELDS = ("iteration", "global_step", "sps", "learning_rate", "value_loss", "policy_loss", "entropy", "old_approx_kl",
              "approx_kl", "clipfrac", "explained_variance", "episodes", "episodic_return", "episodic_cost")


class PPOConfig(BaseModel):
    """Hyperparameters; the defaults are CleanRL's for CartPole-v1."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(1, ge=0, description="Seed of torch, numpy and the envs (and of the initial weights where the planner builds the agent).")
    total_timesteps: int = Field(500_000, ge=1, description="Env steps to train for (all copies together).")
    learning_rate: float = Field(2.5e-4, gt=0, le=1, description="Adam's learning rate at the start.")
    anneal_lr: bool = Field(True, description="Anneal the learning rate linearly to 0 over the run.")
    num_envs: int = Field(4, ge=1, le=65_536, description="Copies of the env stepped together.")
    num_steps: int = Field(128, ge=1, description="Steps per copy in each rollout.")
    gamma: float = Field(0.99, ge=0, le=1, description="Discount factor.")
    reward_scale: float = Field(1.0, gt=0, description="Rewards are multiplied by this before learning (not in the logged "
                                "returns): keeps returns, values and the value loss near 1 when an env's rewards are large, "
                                "so the critic's gradients do not crowd the actor's out of the global gradient clip.")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="Lambda of generalised advantage estimation.")
    num_minibatches: int = Field(4, ge=1, description="Minibatches per epoch.")
    update_epochs: int = Field(4, ge=1, description="Epochs over each rollout.")
    norm_adv: bool = Field(True, description="Normalise advantages within each minibatch.")
    clip_coef: float = Field(0.2, gt=0, description="Surrogate clipping coefficient.")
    clip_vloss: bool = Field(True, description="Clip the value loss as the surrogate is clipped.")
    ent_coef: float = Field(0.01, ge=0, description="Entropy bonus coefficient.")
    vf_coef: float = Field(0.5, ge=0, description="Value loss coefficient.")
    max_grad_norm: float = Field(0.5, gt=0, description="Global gradient norm clip.")
    target_kl: float | None = Field(None, gt=0, description="Stop an update's epochs early once approx_kl exceeds this.")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="'auto' takes CUDA when present.")

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return max(1, self.batch_size // self.num_minibatches)

    @property
    def num_iterations(self) -> int:
        return max(1, self.total_timesteps // self.batch_size)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, next_value: torch.Tensor,
                next_done: torch.Tensor, gamma: float, gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns, shapes (T, N). ``dones[t]`` says the observation at t began a new
    episode (the step before ended one); ``next_done`` the same of the observation after the last."""
    T = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(next_value)
    for t in reversed(range(T)):
        if t == T - 1:
            nextnonterminal, nextvalues = 1.0 - next_done, next_value
        else:
            nextnonterminal, nextvalues = 1.0 - dones[t + 1], values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
    return advantages, advantages + values


# -- observations that are arrays or dicts of arrays ---------------------------------------------
def _map(obs, fn):
    return {k: fn(v) for k, v in obs.items()} if isinstance(obs, dict) else fn(obs)


def _alloc(example, steps: int):
    return _map(example, lambda v: torch.zeros((steps, *v.shape), dtype=v.dtype, device=v.device))


def _put(buffer, t: int, obs) -> None:
    if isinstance(obs, dict):
        for k, v in obs.items():
            buffer[k][t] = v
    else:
        buffer[t] = obs


def _take(buffer, index: torch.Tensor):
    """Rows ``index`` of a tensor or of each tensor of a dict (``index_select``: on the CPU several
    times faster than indexing with a tensor, ``v[index]``)."""
    return _map(buffer, lambda v: v.index_select(0, index))


@dataclass
class Batch:
    """One rollout, flattened over (steps, copies)."""

    obs: Any
    logprobs: torch.Tensor
    actions: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    values: torch.Tensor
    masks: torch.Tensor | None
    weights: torch.Tensor | None = None  # 1 for a real transition, 0 for a NEXT_STEP reset step; None: all real


def _mean(x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    return x.mean() if w is None else (x * w).sum() / w.sum().clamp(min=1.0)


STAT_FIELDS = ("policy_loss", "value_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac", "ratio_dev")


def ppo_update(agent: nn.Module, optimizer: optim.Optimizer, b: Batch, cfg: PPOConfig,
               generator: torch.Generator | None = None) -> list[dict[str, float]]:
    """The update epochs over one batch; per minibatch: the losses, entropy, approx_kl (old and new
    estimators), clipfrac, and the largest |ratio - 1| (0 on the first minibatch: nothing changed yet)."""
    stats = []
    n = b.actions.shape[0]
    for _epoch in range(cfg.update_epochs):
        order = torch.randperm(n, generator=generator).to(b.actions.device)
        for start in range(0, n, cfg.minibatch_size):
            mb = order[start:start + cfg.minibatch_size]
            mask = _take(b.masks, mb) if b.masks is not None else None
            w = _take(b.weights, mb) if b.weights is not None else None
            mb_returns, mb_values = _take(b.returns, mb), _take(b.values, mb)
            _, newlogprob, entropy, newvalue = agent.get_action_and_value(_take(b.obs, mb), _take(b.actions, mb), mask)
            logratio = newlogprob - _take(b.logprobs, mb)
            ratio = logratio.exp()
            with torch.no_grad():
                old_approx_kl = _mean(-logratio, w)
                approx_kl = _mean((ratio - 1) - logratio, w)
                clipfrac = _mean(((ratio - 1.0).abs() > cfg.clip_coef).float(), w)

            mb_adv = _take(b.advantages, mb)
            if cfg.norm_adv and len(mb) > 1:
                mean = _mean(mb_adv, w)
                std = _mean((mb_adv - mean) ** 2, w).sqrt() if w is not None else mb_adv.std()
                mb_adv = (mb_adv - mean) / (std + 1e-8)
            pg_loss = _mean(torch.max(-mb_adv * ratio, -mb_adv * torch.clamp(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef)), w)

            newvalue = newvalue.view(-1)
            if cfg.clip_vloss:
                v_unclipped = (newvalue - mb_returns) ** 2
                v_clipped = mb_values + torch.clamp(newvalue - mb_values, -cfg.clip_coef, cfg.clip_coef)
                v_loss = 0.5 * _mean(torch.max(v_unclipped, (v_clipped - mb_returns) ** 2), w)
            else:
                v_loss = 0.5 * _mean((newvalue - mb_returns) ** 2, w)
            entropy_loss = _mean(entropy, w)
            loss = pg_loss - cfg.ent_coef * entropy_loss + v_loss * cfg.vf_coef

            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
            optimizer.step()
            with torch.no_grad():  # one read-back a minibatch (on a GPU each .item() is a sync)
                figures = torch.stack((pg_loss, v_loss, entropy_loss, old_approx_kl, approx_kl, clipfrac,
                                       ((ratio - 1).abs() * (1 if w is None else w)).max())).tolist()
            stats.append(dict(zip(STAT_FIELDS, figures, strict=True)))
        if cfg.target_kl is not None and stats[-1]["approx_kl"] > cfg.target_kl:
            break
    return stats


@dataclass
class TrainResult:
    global_step: int
    iterations: int
    episode_returns: list[float] = field(default_factory=list)
    episode_costs: list[float] = field(default_factory=list)
    log: list[dict[str, float]] = field(default_factory=list)


def save_checkpoint(path: str | Path, agent: nn.Module, optimizer: optim.Optimizer, global_step: int, iteration: int,
                    cfg: PPOConfig, rollout: dict[str, Any] | None = None) -> Path:
    """Weights, optimiser state, counters and the agent's shape (``agent.spec()`` when it has one),
    and ``rollout``, where the run stands between iterations (see ``train``): tensors, numbers and
    strings only, so it loads with ``weights_only=True``; written atomically."""
    state = {"agent": agent.state_dict(), "optimizer": optimizer.state_dict(), "global_step": int(global_step),
             "iteration": int(iteration), "config": cfg.model_dump_json(),
             "agent_spec": agent.spec() if hasattr(agent, "spec") else {}}
    if rollout is not None:
        state["rollout"] = rollout
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, agent: nn.Module, optimizer: optim.Optimizer | None = None) -> dict[str, Any]:
    """Load weights (and the optimiser state) saved by ``save_checkpoint``; returns the counters.

    Read onto the CPU whatever the agent's device: ``load_state_dict`` copies the weights and the
    optimiser's state to their parameters' device, and the rollout's state (the env's arrays, the
    random generators' states) must stay on the CPU (mapped to CUDA, resuming a run there failed)."""
    state = load_weights(path, "training checkpoint", map_location="cpu")
    agent.load_state_dict(state["agent"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    return {"global_step": state["global_step"], "iteration": state["iteration"], "config": state["config"],
            "agent_spec": state.get("agent_spec", {}), "rollout": state.get("rollout")}


def _rollout_state(envs, generator: torch.Generator, device: torch.device, carry: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """Where a run stands between two iterations, for its checkpoint: the env's state (an env with
    ``get_state``, as ``VectorCloudMigrationEnv``), the random generators' states, and the arrays the
    rollout carries from one iteration to the next. None for an env that cannot give its state."""
    if not hasattr(envs, "get_state"):
        return None
    rng = {"torch": torch.get_rng_state(), "minibatches": generator.get_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return {"env": {k: torch.from_numpy(v) for k, v in envs.get_state().items()}, "rng": rng,
            "carry": {k: torch.from_numpy(np.array(v)) for k, v in carry.items()}}


def train(envs, agent: nn.Module, cfg: PPOConfig, log_dir: str | Path | None = None, checkpoint: str | Path | None = None,
          resume: str | Path | None = None, on_iteration: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Train ``agent`` on the vector env ``envs`` (``cfg.num_envs`` copies, SAME_STEP or NEXT_STEP autoreset).

    Logs each iteration to ``log_dir/progress.csv`` and TensorBoard event files there; saves
    ``checkpoint`` after every iteration; ``resume`` continues from a checkpoint's weights,
    optimiser and step count (the learning rate schedule goes on from there).

    With an env that can give and take its state (``get_state``, ``set_state``), the checkpoint
    also holds where the rollout stands (the episodes under way, the random generators, the
    returns so far): a run resumed from it goes on exactly as the run that saved it would have, to
    the last bit on the same machine and thread count, so a killed and retried training trains the
    same policy as one never stopped. On CUDA a resumed run goes on from the same state, but not
    to the last bit: some of CUDA's kernels add in no fixed order, so two runs of one seed differ
    there too. Other envs are reset afresh on resume (seeded from the iteration), and their
    episodes under way are lost."""
    mode = envs.metadata.get("autoreset_mode")
    if mode not in (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP):
        raise ValueError(f"the vector env's autoreset mode is {mode}; PPO here needs AutoresetMode.SAME_STEP or NEXT_STEP")
    next_step_mode = mode == AutoresetMode.NEXT_STEP
    if envs.num_envs != cfg.num_envs:
        raise ValueError(f"the vector env has {envs.num_envs} copies; the config says num_envs={cfg.num_envs}")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = agent.device
    reuse_freed_memory()  # an update's activations, made and freed each minibatch, without fresh pages each time
    # fused: one kernel for every parameter (on this CPU a step of the planner's agent takes 120 us, against 532)
    optimizer = optim.Adam(agent.parameters(), lr=cfg.learning_rate, eps=1e-5, fused=True)
    global_step, first_iteration, saved = 0, 1, None
    if resume is not None:
        counters = load_checkpoint(resume, agent, optimizer)
        global_step, first_iteration, saved = counters["global_step"], counters["iteration"] + 1, counters["rollout"]
    writer, csv_file, csv_writer = _loggers(log_dir, first_iteration - 1 if resume is not None else None)
    T, N = cfg.num_steps, cfg.num_envs
    next_done = np.zeros(N, dtype=np.float32)
    resetting = np.zeros(N, dtype=bool)  # NEXT_STEP: copies whose next step only resets them
    running_return = np.zeros(N)

    restored = None
    if saved is not None and hasattr(envs, "set_state"):
        try:
            restored = envs.set_state({k: v.numpy() for k, v in saved["env"].items()})
        except ValueError as exc:  # an env of another shape or version: its weights still go on
            log.warning("%s: the episodes under way are not resumed (%s); the envs start afresh", resume, exc)
    if restored is not None:  # exactly where the run that saved it stood
        next_obs_np, info = restored
        next_done, resetting, running_return = (saved["carry"][k].numpy().copy() for k in ("next_done", "resetting", "running_return"))
        generator = torch.Generator()
        generator.set_state(saved["rng"]["minibatches"])
        torch.set_rng_state(saved["rng"]["torch"])
        if device.type == "cuda" and "cuda" in saved["rng"]:
            torch.cuda.set_rng_state(saved["rng"]["cuda"], device)
    else:
        generator = torch.Generator().manual_seed(cfg.seed + first_iteration)
        next_obs_np, info = envs.reset(seed=cfg.seed + first_iteration - 1)
    next_obs = agent.obs_to_tensor(next_obs_np)
    next_mask = _mask(info, device)
    obs = _alloc(next_obs, T)
    masks = torch.zeros((T, *next_mask.shape), dtype=torch.bool, device=device) if next_mask is not None else None
    actions = torch.zeros((T, N), dtype=torch.long, device=device)
    logprobs, values = (torch.zeros((T, N), device=device) for _ in range(2))
    # what the env returns stays in numpy for the rollout and goes to the device once, after it
    rewards, dones = np.zeros((T, N), dtype=np.float32), np.zeros((T, N), dtype=np.float32)
    weights = np.ones((T, N), dtype=np.float32) if next_step_mode else None
    result = TrainResult(global_step=global_step, iterations=0)  # a finished checkpoint resumes to no iterations

    try:
        for iteration in range(first_iteration, cfg.num_iterations + 1):
            began, done_returns, done_costs = time.perf_counter(), [], []
            if cfg.anneal_lr:
                optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / cfg.num_iterations) * cfg.learning_rate

            for step in range(T):
                global_step += N
                _put(obs, step, next_obs)
                dones[step] = next_done
                if masks is not None:
                    masks[step] = next_mask
                if weights is not None:
                    weights[step] = ~resetting
                with torch.no_grad():
                    action, logprob, _, value = agent.get_action_and_value(next_obs, mask=next_mask)
                values[step], actions[step], logprobs[step] = value.flatten(), action, logprob

                next_obs_np, reward, terminations, truncations, info = envs.step(action.cpu().numpy())
                reward = np.asarray(reward, dtype=np.float64)
                if next_step_mode:  # a reset step: no reward, no episode end, nothing learned from it
                    reward = np.where(resetting, 0.0, reward)
                    terminations, truncations = terminations & ~resetting, truncations & ~resetting
                running_return += reward
                reward = reward * cfg.reward_scale
                ended = np.logical_or(terminations, truncations)
                if truncations.any():  # bootstrap a time-limit ending from its final observation's value
                    last = next_obs_np if next_step_mode else info["final_obs"]  # NEXT_STEP returns it as the observation
                    final = agent.obs_to_tensor(_final_rows(last, np.flatnonzero(truncations)))
                    with torch.no_grad():
                        reward[truncations] += cfg.gamma * agent.get_value(final).flatten().cpu().numpy()
                if ended.any():
                    done_returns += running_return[ended].tolist()
                    if "final_total_cost" in info:
                        done_costs += np.asarray(info["final_total_cost"])[ended].tolist()
                    running_return[ended] = 0.0
                rewards[step] = reward
                next_obs, next_mask = agent.obs_to_tensor(next_obs_np), _mask(info, device)
                next_done = ended.astype(np.float32)
                if next_step_mode:
                    resetting = ended

            on_device = lambda a: torch.tensor(a, device=device)  # noqa: E731  (a copy: the numpy buffers are reused)
            with torch.no_grad():
                next_value = agent.get_value(next_obs).reshape(1, -1)[0]
                advantages, returns = compute_gae(on_device(rewards), values, on_device(dones), next_value, on_device(next_done),
                                                  cfg.gamma, cfg.gae_lambda)

            flat = lambda t: t.reshape(-1, *t.shape[2:])  # noqa: E731
            batch = Batch(obs=_map(obs, flat), logprobs=flat(logprobs), actions=flat(actions), advantages=flat(advantages),
                          returns=flat(returns), values=flat(values), masks=flat(masks) if masks is not None else None,
                          weights=flat(on_device(weights)) if weights is not None else None)
            stats = ppo_update(agent, optimizer, batch, cfg, generator)

            real = weights.reshape(-1) > 0 if weights is not None else slice(None)  # (the rollout's numpy weights)
            y_pred, y_true = batch.values.cpu().numpy()[real], batch.returns.cpu().numpy()[real]
            var_y = np.var(y_true)
            last = stats[-1]
            row = {"iteration": iteration, "global_step": global_step, "sps": T * N / (time.perf_counter() - began),
                   "learning_rate": optimizer.param_groups[0]["lr"], **{k: last[k] for k in LOG_FIELDS if k in last},
                   "explained_variance": float("nan") if var_y == 0 else float(1 - np.var(y_true - y_pred) / var_y),
                   "episodes": len(done_returns),
                   "episodic_return": float(np.mean(done_returns)) if done_returns else float("nan"),
                   "episodic_cost": float(np.mean(done_costs)) if done_costs else float("nan")}
            result.episode_returns += done_returns
            result.episode_costs += done_costs
            result.log.append(row)
            result.global_step, result.iterations = global_step, result.iterations + 1
            if csv_writer is not None:
                csv_writer.writerow({k: row.get(k, "") for k in LOG_FIELDS})
                csv_file.flush()
            if writer is not None:
                for k, v in row.items():
                    if k not in ("iteration", "global_step"):
                        writer.add_scalar(f"charts/{k}" if k in ("sps", "learning_rate", "episodic_return", "episodic_cost", "episodes")
                                          else f"losses/{k}", v, global_step)
            if checkpoint is not None:
                carry = {"next_done": next_done, "resetting": resetting, "running_return": running_return}
                save_checkpoint(checkpoint, agent, optimizer, global_step, iteration, cfg,
                                rollout=_rollout_state(envs, generator, device, carry))
            if on_iteration is not None:
                on_iteration(row)
    finally:
        if csv_file is not None:
            csv_file.close()
        if writer is not None:
            writer.close()
    return result


def _mask(info: dict, device: torch.device) -> torch.Tensor | None:
    mask = info.get("action_mask")
    return None if mask is None else torch.as_tensor(np.asarray(mask), dtype=torch.bool, device=device)


def _final_rows(final_obs, rows: np.ndarray):
    """The final observations of ``rows``: the vector twin batches them in one dict; gymnasium's own
    vector envs give an object array of per-copy observations."""
    if isinstance(final_obs, dict):
        return {k: np.asarray(v)[rows] for k, v in final_obs.items()}
    final_obs = np.asarray(final_obs)
    if final_obs.dtype == object:
        return np.stack([final_obs[r] for r in rows])
    return final_obs[rows]


def _loggers(log_dir: str | Path | None, resumed_after: int | None):
    """TensorBoard's writer and progress.csv; a resumed run's CSV keeps the rows up to its checkpoint's
    iteration (``resumed_after``): one stopped between an iteration's row and its checkpoint does that
    iteration again, and logs it once."""
    if log_dir is None:
        return None, None, None
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "progress.csv"
    fresh = resumed_after is None or not path.is_file()
    if not fresh:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if any(int(r["iteration"]) > resumed_after for r in rows):
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
                kept = csv.DictWriter(f, fieldnames=LOG_FIELDS)
                kept.writeheader()
                kept.writerows(r for r in rows if int(r["iteration"]) <= resumed_after)
    csv_file = path.open("w" if fresh else "a", newline="")
    csv_writer = csv.DictWriter(csv_file, fieldnames=LOG_FIELDS)
    if fresh:
        csv_writer.writeheader()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir)), csv_file, csv_writer
