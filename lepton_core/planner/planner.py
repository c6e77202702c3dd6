"""The migration planner: train the PPO policy on the vector simulator with scenario
randomisation, load it back, and plan a scenario with it (greedy and best-of-N sampled rollouts),
in the plan type every method shares."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lepton_core.errors import UsageError
from lepton_core.fsutil import atomic_path, atomic_write_text, write_figure_png
from lepton_core.planner.policy import DEFAULT_HIDDEN, MaskedCategorical, MigrationAgent
from lepton_core.planner.ppo import PPOConfig, load_checkpoint, pick_device, train
from lepton_core.sim.plan import Plan, PlanStep, best_heuristic, plan_rank, replay
from lepton_core.sim.scenario import DAY, Scenario, generate
from lepton_core.weights import load_weights

POLICY_FILE = "policy.pt"  # the policy plans use: the snapshot that planned the validation systems best
LAST_FILE = "last.pt"  # the training checkpoint (weights, optimiser, counters) a resumed run goes on from
SELECTION_FILE = "selection.json"
# Model selection. A policy's plans do not keep getting cheaper as training goes on: on the
# benchmark's 50-workload systems a 1M-step run's snapshots every 10 iterations saved 1.4-2.4% over
# the best heuristic, and the last one was not the best (benchmarks/RESULTS.md, 2026-12-02). So
# the policy is scored every SELECT_EVERY iterations, and at the end, on VALIDATION_SYSTEMS fixed
# systems (sizes spread over the training range; seeds of their own, apart from the training draws
# and the benchmark's held-out seeds), planned as a plan is (greedy and VALIDATION_SAMPLES
# samples), by the mean saving over the best heuristic; the best snapshot is policy.pt.
SELECT_EVERY = 10
VALIDATION_SYSTEMS = 16
VALIDATION_SAMPLES = 8
VALIDATION_SEED = 2_000_000_000
# sampled rollouts a plan is the best of (with the greedy one): stepped side by side, 64 take 0.5 s
# for a 50-service system on one core, and save 0.2 points more than 16 (benchmarks/RESULTS.md)
PLAN_SAMPLES = 64
# Then a one-step lookahead (the rollout algorithm of approximate dynamic programming, the greedy
# policy its base): the LOOKAHEAD_STARTS best distinct rollouts are walked hour by hour, in step; at
# each hour the policy's LOOKAHEAD_ALTERNATIVES likeliest other actions are tried, each followed by
# the greedy policy to the end, and the cheapest ending, when cheaper, becomes the rest of that plan;
# up to LOOKAHEAD_PASSES walks, while one still finds something, and LOOKAHEAD_BUDGET simulated hours
# in all (a budget of work, not of time, so a plan does not depend on the machine's speed). The plan
# is never dearer than the best rollout. On the benchmark's 50-workload systems (about 50-70 hours
# an episode, two walks) it took the saving over the best heuristic from 2.5% to 5.3%, in a median
# 9 s a plan on 2 cores (4.5 s with the endings branched from copies of the state and each played
# once); other starts gain more than more alternatives (8 from 1 start: 4.6% in 5 s;
# 8 from 8: 5.4%; since each ending is played once, 8 from 8 takes a sixth more time than 8 from 4
# for 0.06 points more; benchmarks/RESULTS.md, 2026-12-03).
LOOKAHEAD_ALTERNATIVES = 8
LOOKAHEAD_STARTS = 4
LOOKAHEAD_PASSES = 3
LOOKAHEAD_BUDGET = 50_000
# what the planner trains with unless told otherwise: 64 simulators x 128 hours per rollout
# Rewards are minus hundreds of dollars: an episode's return is -10 to -150; scaled by 0.05 the
# critic's targets are near 1, and the value loss is not clipped (CleanRL's clip of 0.2 assumes
# returns of that order: at -100 it would hold the critic back for hundreds of updates).
# An entropy bonus of 0.003, not CleanRL's 0.01: at 0.01 the validation score fell after iteration 20
# (seed 1 to a quarter of its best by the end); at 0.003 it held, and the kept policies saved
# 0.07-0.13 points more on the benchmark's held-out systems (benchmarks/RESULTS.md, 2026-12-02).
PLANNER_DEFAULTS = dict(total_timesteps=200_000, num_envs=64, num_steps=128, learning_rate=3e-4, ent_coef=0.003,
                        num_minibatches=8, update_epochs=4, gamma=0.999, gae_lambda=0.95, reward_scale=0.05,
                        clip_vloss=False)


@dataclass(frozen=True)
class TrainedPlanner:
    policy: Path
    log: Path
    curve: Path
    global_step: int
    final_cost: float  # mean episode cost in the last iteration that finished episodes
    selected_step: int  # the training step of the snapshot kept as the policy
    validation_saving: float  # its mean saving over the best heuristic on the validation systems
    resumed_from: int = 0  # the step an earlier run's checkpoint had reached when this one went on from it; 0 afresh


def planner_config(**overrides) -> PPOConfig:
    return PPOConfig(**{**PLANNER_DEFAULTS, **overrides})


def train_planner(out_dir: str | Path, cfg: PPOConfig | None = None, max_workloads: int = 16, min_workloads: int = 4,
                  horizon: int = 14 * DAY, resume: bool = True, hidden: int = DEFAULT_HIDDEN,
                  select_every: int = SELECT_EVERY, validation_systems: int = VALIDATION_SYSTEMS) -> TrainedPlanner:
    """Train the policy on ``cfg.num_envs`` simulators of random scenarios (between ``min_workloads``
    and ``max_workloads`` workloads; demands, data, prices and bandwidth drawn per episode), writing
    into ``out_dir``: ``last.pt`` (the training checkpoint, after every iteration), ``policy.pt`` (the
    snapshot that planned ``validation_systems`` fixed systems best, scored every ``select_every``
    iterations and at the end; ``selection.json`` has every score), ``progress.csv`` and
    ``learning_curve.png``.

    With ``resume``, a checkpoint in ``out_dir`` from the same settings (all but
    ``total_timesteps``) is continued: a run killed half-way, or retried, goes on from its last
    iteration (with the best score so far; one stopped between an iteration's checkpoint and its
    score scores it first) exactly as it would have gone on (the checkpoint keeps the simulators'
    episodes and the generators), and one already done returns at once. Other settings start afresh."""
    from lepton_core.sim.vector import VectorCloudMigrationEnv

    cfg = cfg or planner_config()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint, policy, selection_path = out / LAST_FILE, out / POLICY_FILE, out / SELECTION_FILE
    settings = {"config": cfg.model_dump(exclude={"total_timesteps"}), "max_workloads": max_workloads,
                "min_workloads": min_workloads, "horizon": horizon, "hidden": hidden,
                "selection": {"every": select_every, "systems": validation_systems, "samples": VALIDATION_SAMPLES,
                              "seed": VALIDATION_SEED}}
    # a run stopped before its first score has a checkpoint and no selection yet; one whose selection
    # names a kept policy needs that policy to go on
    resume = (resume and checkpoint.is_file() and _same_settings(out / "training.json", settings)
              and (not selection_path.is_file() or policy.is_file()))
    if not resume:
        for stale in (checkpoint, policy, selection_path, out / "progress.csv"):
            stale.unlink(missing_ok=True)
    atomic_write_text(out / "training.json", json.dumps(settings, indent=2))
    envs = VectorCloudMigrationEnv(cfg.num_envs, max_workloads=max_workloads, min_workloads=min_workloads, horizon=horizon)
    # the initial weights come from the seed too (CleanRL seeds before building its agent): torch's
    # own seed differs from process to process, so without this one seed trained different policies
    torch.manual_seed(cfg.seed)
    agent = MigrationAgent(max_workloads, envs.n_types, hidden=hidden).to(pick_device(cfg.device))
    systems = validation_scenarios(validation_systems, min_workloads, max_workloads, horizon)
    yardsticks = [best_heuristic(s).outcome.total_cost for s in systems]
    selection = json.loads(selection_path.read_text()) if resume and selection_path.is_file() else {"best": None, "scores": []}

    def select(row: dict) -> None:
        if row["iteration"] % select_every and row["iteration"] != cfg.num_iterations:
            return
        if any(e["iteration"] == row["iteration"] for e in selection["scores"]):
            return
        score = validation_saving(agent, systems, yardsticks)
        entry = {"iteration": int(row["iteration"]), "global_step": int(row["global_step"]), "validation_saving": score}
        selection["scores"].append(entry)
        if selection["best"] is None or score > selection["best"]["validation_saving"]:
            selection["best"] = entry
            save_policy(policy, agent, entry)
        atomic_write_text(selection_path, json.dumps(selection, indent=2))

    resumed_from = 0
    if resume:  # the checkpoint is saved before its iteration is scored: a run stopped in between scores it now
        counters = load_checkpoint(checkpoint, agent)
        resumed_from = counters["global_step"]
        select(counters)
    result = train(envs, agent, cfg, log_dir=out, checkpoint=checkpoint, resume=checkpoint if resume else None,
                   on_iteration=select)
    curve = learning_curve_png(out / "progress.csv", out / "learning_curve.png")
    costs = [float(r["episodic_cost"]) for r in _log_rows(out / "progress.csv") if r["episodic_cost"] not in ("", "nan")]
    best = selection["best"]
    return TrainedPlanner(policy=policy, log=out / "progress.csv", curve=curve, global_step=result.global_step,
                          final_cost=costs[-1] if costs else float("nan"), selected_step=best["global_step"],
                          validation_saving=best["validation_saving"], resumed_from=resumed_from)


def validation_scenarios(count: int, min_workloads: int, max_workloads: int, horizon: int) -> list[Scenario]:
    """The fixed systems a training run scores its policy on: sizes spread evenly from
    ``min_workloads`` to ``max_workloads``, each drawn from a seed of its own (``VALIDATION_SEED`` + i)."""
    sizes = np.linspace(min_workloads, max_workloads, count).round().astype(int) if count > 1 else [max_workloads]
    return [generate(np.random.default_rng(VALIDATION_SEED + i), int(n), horizon=horizon) for i, n in enumerate(sizes)]


def validation_saving(agent: MigrationAgent, systems: list[Scenario], yardsticks: list[float],
                      samples: int = VALIDATION_SAMPLES) -> float:
    """The mean, over ``systems``, of 1 - (the policy's plan's cost / the best heuristic's cost)."""
    savings = [1 - policy_plan(agent, s, samples=samples, lookahead=0).outcome.total_cost / cost
               for s, cost in zip(systems, yardsticks, strict=True)]
    return float(np.mean(savings))


def save_policy(path: Path, agent: MigrationAgent, selected: dict) -> Path:
    """The policy's weights and shape (what ``load_policy`` reads) and where it was selected;
    tensors, numbers and strings only (``weights_only=True``), written atomically."""
    state = {"agent": {k: v.detach().cpu().clone() for k, v in agent.state_dict().items()}, "agent_spec": agent.spec(),
             "global_step": selected["global_step"], "iteration": selected["iteration"],
             "validation_saving": selected["validation_saving"]}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def _same_settings(path: Path, settings: dict) -> bool:
    try:
        saved = json.loads(path.read_text())
        saved.setdefault("hidden", DEFAULT_HIDDEN)  # (written before the width was a setting: the default's)
        return saved == json.loads(json.dumps(settings))
    except (OSError, ValueError, AttributeError):
        return False


def _log_rows(path: Path) -> list[dict[str, str]]:
    import csv

    if not path.is_file():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def load_policy(path: str | Path, device: str = "cpu") -> MigrationAgent:
    """A trained policy from its checkpoint (``weights_only=True``); UsageError when there is none."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no trained planner policy (train one with `lepton train-planner`)")
    state = load_weights(path, "planner policy")
    if not isinstance(state, dict) or not state.get("agent_spec"):
        raise UsageError(f"{path}: not a migration planner checkpoint (no agent shape in it)")
    try:
        agent = MigrationAgent(**state["agent_spec"])
        agent.load_state_dict(state["agent"])
    except (TypeError, RuntimeError):  # another shape of agent: its layers are not this version's
        raise UsageError(f"{path}: a policy of an older planner version (its layers are not this planner's); "
                         "train it again with `lepton train-planner`") from None
    agent.eval()
    return agent.to(pick_device(device))


def find_policy(path: str | Path | None = None, required: bool = False) -> MigrationAgent | None:
    """The trained policy at ``path``, or the one the train-planner flow left in the state folder;
    None when there is none, or only one an older planner version trained, and it is not
    ``required`` (UsageError when it is): a run plans with the other methods and says why."""
    from lepton_core.state import planner_dir

    path = Path(path) if path else planner_dir() / POLICY_FILE
    if not path.is_file() and not required:
        return None
    try:
        return load_policy(path)
    except UsageError as e:
        if required:
            raise
        logging.getLogger(__name__).warning("planning without the PPO policy: %s", e)
        return None


def policy_applies(agent: MigrationAgent, scenario: Scenario) -> bool:
    """Whether the trained policy can plan ``scenario``: no more workloads than it was built for,
    on the instance types it trained with (the bundled catalogue's, in its order: the policy's
    instance head has one output per type). Another cloud's catalogue is planned without it."""
    from lepton_core.sim.scenario import bundled_catalogue

    return scenario.n <= agent.max_workloads and scenario.instance_names == bundled_catalogue().instance_names


def policy_plan(agent: MigrationAgent, scenario: Scenario, samples: int = PLAN_SAMPLES, seed: int = 0,
                lookahead: int = LOOKAHEAD_ALTERNATIVES, starts: int = LOOKAHEAD_STARTS) -> Plan:
    """The policy's plan: its greedy rollout and ``samples`` sampled ones (all side by side in the
    vector simulator, ``policy_rollouts``), ranked by ``plan_rank`` (one that moves everything
    before one that does not, then the cheapest; the earlier rollout on a tie). With ``lookahead``
    > 0, the ``starts`` best distinct ones are each improved by ``improve_by_lookahead`` (that many
    other actions tried at each hour), and the best result wins (the better-ranked start's on a
    tie); with 0, the best rollout. The outcome is replayed in the scalar simulator. UsageError
    when the scenario is larger than the policy was built for."""
    rollouts = policy_rollouts(agent, scenario, samples, seed)
    order = sorted(range(len(rollouts)), key=lambda i: plan_rank(rollouts[i]))  # (stable: the earlier of equals first)
    best = order[0]
    steps, notes = rollouts[best].steps, [f"best of the greedy rollout and {samples} samples: {_rollout_name(best)}"]
    if lookahead > 0:
        firsts: list[int] = []  # the best-ranked rollout of each distinct plan, best first
        for i in order:
            if len(firsts) < starts and all(rollouts[i].steps != rollouts[j].steps for j in firsts):
                firsts.append(i)
        walks = improve_by_lookahead(agent, scenario, [_actions(scenario, rollouts[i].steps, rollouts[i].hours(scenario))
                                                       for i in firsts], lookahead)
        won = min(range(len(walks)), key=lambda w: walks[w].rank)
        walk = walks[won]
        saved = rollouts[best].total_cost - walk.total_cost
        if walk.rank < plan_rank(rollouts[best]):
            steps = _steps(scenario, walk.actions)
            found = (f"the one from {_rollout_name(firsts[won])} (start {won + 1}), {walk.changes} change"
                     f"{'s' if walk.changes != 1 else ''}, ${saved:,.2f} ({saved / rollouts[best].total_cost:.2%}) cheaper")
        else:
            found = "no cheaper plan"
        spent = (f"; stopped in pass {walk.passes}: its budget of {LOOKAHEAD_BUDGET:,} simulated hours was spent"
                 if walk.out_of_budget else "")
        notes.append(f"then a one-step lookahead from the {len(firsts)} best distinct rollout{'s' if len(firsts) != 1 else ''} "
                     f"({lookahead} other actions an hour, {max(w.passes for w in walks)} passes at most): {found}{spent}")
    return Plan("ppo", steps, replay(scenario, steps), notes=tuple(notes))


def _rollout_name(i: int) -> str:
    return "greedy" if i == 0 else f"sample {i}"


@dataclass
class Walk:
    """One episode of a scenario in the vector simulator: the action of every hour from hour 0,
    what it cost, and at each hour the policy's likeliest valid actions (its first choice first)."""

    actions: list[int]
    total_cost: float
    finish_hour: int | None  # None: the horizon ran out first
    choices: list[list[int]]
    changes: int = 0  # lookahead: how many times a cheaper ending replaced the rest
    passes: int = 0  # lookahead: walks over the plan
    out_of_budget: bool = False  # lookahead: it stopped because its budget was spent

    @property
    def rank(self) -> tuple[bool, float]:
        return plan_rank(self)


def improve_by_lookahead(agent: MigrationAgent, scenario: Scenario, starts: list[list[int]],
                         alternatives: int = LOOKAHEAD_ALTERNATIVES, passes: int = LOOKAHEAD_PASSES,
                         budget: int = LOOKAHEAD_BUDGET) -> list[Walk]:
    """The episodes that ``starts`` play (each a list of actions, one an hour from hour 0), each
    improved by one-step lookahead: at each hour, each of the policy's ``alternatives`` likeliest
    other valid actions is followed by the greedy policy to the episode's end; the best of those
    endings replaces the rest of the episode when it ranks before it (``plan_rank``: finished
    first, then cheaper by more than a cent's ten-thousandth). The episodes are walked in step and
    every ending of an hour, of every episode, runs side by side in one vector simulator, each
    from a copy of its episode's state at that hour (one simulator copy per episode walks them);
    an ending is played once, however often it is asked for (episodes with the same first hours,
    a later walk over hours an earlier one did not change). Up to ``passes`` walks over each
    episode, stopping after one that changed nothing, or where the hours simulated (an hour of the
    side-by-side runs counts one) would pass ``budget``.
    Deterministic: the same plans for the same policy, scenario and starts."""
    keep = alternatives + 1
    envs: dict[int, object] = {}
    walks = _play(agent, envs, scenario, starts, keep=keep)
    spent = max(len(w.actions) for w in walks)
    active = list(range(len(walks)))
    walker = _env(agent, scenario, len(walks))  # copy i: episode i at the hour being walked
    # every ending played, by its actions to the alternative it tried: an ending is a function of
    # them alone (the simulator and the greedy policy are deterministic), so it is played once. A
    # later walk asks again for most of them: the hours before the first change of a walk's
    # last pass, and every hour it did not change, branch from the same states as then.
    endings: dict[tuple[int, ...], Walk] = {}
    for _ in range(passes):
        for i in active:
            walks[i].passes += 1
        changed, hour = set(), 0
        walker.reset(options={"scenarios": [scenario] * len(walks)})
        while hour < max(len(walks[i].actions) for i in active):
            asks = [(i, a) for i in active if hour < len(walks[i].actions)
                    for a in [a for a in walks[i].choices[hour] if a != walks[i].actions[hour]][:alternatives]]
            prefixes = [(*walks[i].actions[:hour], a) for i, a in asks]
            branch = {}  # each prefix not played yet, once (starts share their first hours), and a walk it branches from
            for (i, _), prefix in zip(asks, prefixes, strict=True):
                if prefix not in endings:
                    branch.setdefault(prefix, i)
            if branch and spent + max(len(walks[i].actions) - hour for i in branch.values()) > budget:  # (an ending runs about as long)
                for i in active:
                    walks[i].out_of_budget = True
                return walks
            if branch:
                tried = _play(agent, envs, scenario, [list(p) for p in branch], keep=keep, branch=(walker, list(branch.values())))
                spent += max(len(w.actions) for w in tried) - hour
                endings.update(zip(branch, tried))
            for i in dict.fromkeys(i for i, _ in asks):
                walk = walks[i]
                best = min((endings[p] for (j, _), p in zip(asks, prefixes, strict=True) if j == i), key=lambda w: w.rank)  # (the likeliest of equals)
                if best.rank[0] < walk.rank[0] or best.rank[0] == walk.rank[0] and best.total_cost < walk.total_cost - 1e-4:
                    # (a copy: the ending stays as it was played, for a later pass that asks for it again)
                    best = Walk(list(best.actions), best.total_cost, best.finish_hour,
                                walk.choices[:hour + 1] + best.choices[hour + 1:],  # the same states up to this hour
                                changes=walk.changes + 1, passes=walk.passes)
                    walks[i] = best
                    changed.add(i)
            # every walker copy takes its episode's action of this hour (a wait once its episode has ended)
            walker.step(np.array([w.actions[hour] if hour < len(w.actions) else 0 for w in walks], np.int64))
            hour += 1
        active = [i for i in active if i in changed]
        if not active:
            break
    return walks


def _env(agent: MigrationAgent, scenario: Scenario, copies: int):
    """A vector simulator of ``copies`` copies for the policy's plans of ``scenario``."""
    from lepton_core.sim.vector import VectorCloudMigrationEnv

    return VectorCloudMigrationEnv(copies, max_workloads=agent.max_workloads, min_workloads=1, horizon=max(scenario.horizon, 1))


def _play(agent: MigrationAgent, envs: dict[int, object], scenario: Scenario, prefixes: list[list[int]], keep: int,
          branch: tuple[object, list[int]] | None = None) -> list[Walk]:
    """Each prefix (actions an hour from hour 0) played in a copy of ``scenario`` of its own, then
    the greedy policy to the episode's end; from the prefix's last hour on, the policy looks at
    every hour and its ``keep`` likeliest valid actions are kept. Without ``branch``, every copy
    plays from hour 0 (and the policy looks from hour 0). With ``branch`` (an env and one of its
    copies for each prefix), every prefix is one action longer than the hours that copy has
    played, whose state it starts from (``copy_episodes``): those hours are not played again.
    ``envs`` keeps a simulator for each number of copies."""
    copies = len(prefixes)
    if copies not in envs:
        envs[copies] = _env(agent, scenario, copies)
    env = envs[copies]
    if branch is None:
        hour = watch_from = 0
        obs, info = env.reset(options={"scenarios": [scenario] * copies})
    else:
        source, rows = branch
        hour = int(source.hour[rows[0]])
        if (source.hour[rows] != hour).any() or any(len(p) != hour + 1 for p in prefixes):
            raise ValueError(f"branching at hour {hour}: the copies branched from, or the prefixes, are at other hours")
        watch_from = hour + 1
        obs, info = env.copy_episodes(np.arange(copies), source, np.asarray(rows))
    running = np.ones(copies, bool)
    played: list[list[int]] = [list(p[:hour]) for p in prefixes]
    choices: list[list[list[int]]] = [[[] for _ in range(hour)] for _ in range(copies)]
    ends: list[tuple[float, int | None] | None] = [None] * copies
    while running.any():
        rows = np.flatnonzero(running)
        actions = np.zeros(copies, np.int64)  # copies that finished wait (their next episode is not looked at)
        if hour >= watch_from:
            x = agent.obs_to_tensor({k: v[rows] for k, v in obs.items()})
            with torch.no_grad():  # (the likeliest valid actions are those of the largest logits: no softmax needed)
                logits = agent.logits(x).cpu().masked_fill(~torch.as_tensor(info["action_mask"][rows], dtype=torch.bool), -math.inf)
                top_logit, top = logits.topk(min(keep, logits.shape[1]), dim=1)
            top, valid = top.tolist(), (top_logit > -math.inf).tolist()  # (lists: a tensor's elements one by one cost microseconds each)
            for r, j in enumerate(rows):
                choices[j].append([a for a, ok in zip(top[r], valid[r], strict=True) if ok])
                actions[j] = prefixes[j][hour] if hour < len(prefixes[j]) else choices[j][-1][0]
        else:
            for j in rows:
                choices[j].append([])
                actions[j] = prefixes[j][hour]
        for j in rows:
            played[j].append(int(actions[j]))
        obs, _, terminated, truncated, info = env.step(actions)
        hour += 1
        for j in rows[(terminated | truncated)[rows]]:
            ends[j] = (float(info["final_total_cost"][j]), hour if terminated[j] else None)
            running[j] = False
    return [Walk(a, cost, finish, c) for a, c, (cost, finish) in zip(played, choices, ends, strict=True)]


def _actions(scenario: Scenario, steps: tuple[PlanStep, ...], hours: int = 0) -> list[int]:
    """Plan steps as the env's actions, one an hour from hour 0 (0: wait; 1 + i * K + k: start
    workload i on instance type k), for ``hours`` hours or to the last start if that is later."""
    actions = [0] * max(hours, max((st.start_hour for st in steps), default=-1) + 1)
    for st in steps:
        actions[st.start_hour] = 1 + scenario.names.index(st.workload) * scenario.k + scenario.instance_names.index(st.instance_type)
    return actions


def _steps(scenario: Scenario, actions: list[int]) -> tuple[PlanStep, ...]:
    """The plan steps of the env's actions (see ``_actions``)."""
    return tuple(PlanStep(scenario.names[(a - 1) // scenario.k], scenario.instance_names[(a - 1) % scenario.k], hour)
                 for hour, a in enumerate(actions) if a > 0)


@dataclass(frozen=True)
class Rollout:
    steps: tuple[PlanStep, ...]
    total_cost: float
    finish_hour: int | None  # None: the horizon ran out first

    def hours(self, scenario: Scenario) -> int:
        """The hours it played: to its finish, or the whole horizon."""
        return self.finish_hour if self.finish_hour is not None else scenario.horizon


def policy_rollouts(agent: MigrationAgent, scenario: Scenario, samples: int, seed: int = 0) -> list[Rollout]:
    """The greedy rollout (first) and ``samples`` sampled ones of ``scenario``, stepped together:
    one copy each in a ``VectorCloudMigrationEnv``, one forward pass of the policy an hour for the
    copies still running (copies follow the scalar simulator's dynamics, which the tests check),
    sampled from one generator seeded ``seed``."""
    if scenario.n > agent.max_workloads or scenario.k != agent.n_types:
        raise UsageError(f"the trained planner takes up to {agent.max_workloads} workloads on {agent.n_types} instance types; "
                         f"this system has {scenario.n} on {scenario.k}")
    copies = samples + 1
    env = _env(agent, scenario, copies)
    obs, info = env.reset(options={"scenarios": [scenario] * copies})
    generator = torch.Generator().manual_seed(seed)
    running = np.ones(copies, bool)
    played: list[list[int]] = [[] for _ in range(copies)]
    ends: list[tuple[float, int | None] | None] = [None] * copies
    hour = 0
    while running.any():
        rows = np.flatnonzero(running)
        x = agent.obs_to_tensor({k: v[rows] for k, v in obs.items()})
        with torch.no_grad():  # (sampled on the CPU, by the CPU generator, whatever the policy's device)
            dist = MaskedCategorical(agent.logits(x).cpu(), torch.as_tensor(info["action_mask"][rows], dtype=torch.bool))
        chosen = dist.sample(generator)
        if rows[0] == 0:  # the greedy copy
            chosen[0] = dist.probs[0].argmax()
        actions = np.zeros(copies, np.int64)  # copies that finished wait (their next episode is not looked at)
        actions[rows] = chosen.numpy()
        for j in rows:
            played[j].append(int(actions[j]))
        obs, _, terminated, truncated, info = env.step(actions)
        hour += 1
        for j in rows[(terminated | truncated)[rows]]:
            ends[j] = (float(info["final_total_cost"][j]), hour if terminated[j] else None)
            running[j] = False
    return [Rollout(_steps(scenario, a), cost, finish) for a, (cost, finish) in zip(played, ends, strict=True)]


def learning_curve_png(csv_path: str | Path, path: str | Path) -> Path:
    """Mean episode cost (and return) per iteration against env steps, from the training log."""

    from matplotlib.figure import Figure

    rows = [r for r in _log_rows(Path(csv_path)) if r["episodic_cost"] not in ("", "nan")]
    steps = [int(r["global_step"]) for r in rows]
    fig = Figure(figsize=(7, 3.6), dpi=110)
    ax = fig.add_subplot()
    ax.plot(steps, [float(r["episodic_cost"]) for r in rows], color="#4c72b0")
    ax.set_xlabel("env steps")
    ax.set_ylabel("mean episode cost ($)")
    ax.set_title("PPO migration planner: learning curve", fontsize=10)
    ax.grid(alpha=0.3)
    return write_figure_png(fig, path)
