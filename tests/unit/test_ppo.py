"""The hand-written PPO: GAE, the first minibatch of an update, masking, a fast learning test,
checkpoints and resume, and the autoreset mode it insists on."""

from __future__ import annotations

import csv

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from lepton_core.planner.policy import MaskedCategorical, MigrationAgent, MlpAgent
from lepton_core.planner.ppo import Batch, PPOConfig, compute_gae, load_checkpoint, ppo_update, train


def test_gae_equals_a_brute_force_sum_of_discounted_td_errors() -> None:
    rng = np.random.default_rng(0)
    T, N, gamma, lam = 7, 3, 0.9, 0.8
    rewards, values = rng.normal(size=(T, N)), rng.normal(size=(T, N))
    dones = (rng.random((T, N)) < 0.3).astype(float)  # dones[t]: the observation at t began an episode
    next_value, next_done = rng.normal(size=N), (rng.random(N) < 0.5).astype(float)
    adv, ret = compute_gae(*(torch.tensor(a) for a in (rewards, values, dones, next_value, next_done)), gamma, lam)
    value_at = np.vstack([values, next_value])
    done_at = np.vstack([dones, next_done])
    for n in range(N):
        for t in range(T):
            expected, discount = 0.0, 1.0
            for u in range(t, T):  # sum over the steps until the episode ends
                alive = 1.0 - done_at[u + 1, n]
                delta = rewards[u, n] + gamma * value_at[u + 1, n] * alive - values[u, n]
                expected += discount * delta
                if not alive:
                    break
                discount *= gamma * lam
            assert adv[t, n].item() == pytest.approx(expected, abs=1e-9)
    assert torch.allclose(ret, adv + torch.tensor(values))


def test_the_first_minibatch_of_an_update_has_ratio_1_and_approx_kl_0() -> None:
    torch.manual_seed(0)
    agent = MlpAgent(5, 4)
    obs = torch.randn(64, 5)
    masks = torch.rand(64, 4) < 0.7
    masks[:, 0] = True
    with torch.no_grad():
        actions, logprobs, _, values = agent.get_action_and_value(obs, mask=masks)
    batch = Batch(obs=obs, logprobs=logprobs, actions=actions, advantages=torch.randn(64), returns=torch.randn(64),
                  values=values.flatten(), masks=masks)
    cfg = PPOConfig(num_envs=8, num_steps=8, num_minibatches=4, update_epochs=2)
    stats = ppo_update(agent, torch.optim.Adam(agent.parameters(), lr=1e-2), batch, cfg, torch.Generator().manual_seed(0))
    assert len(stats) == 8
    assert stats[0]["ratio_dev"] < 1e-6 and abs(stats[0]["approx_kl"]) < 1e-9 and stats[0]["clipfrac"] == 0
    assert max(s["ratio_dev"] for s in stats[1:]) > 1e-4  # and then the policy moves


def test_the_mlp_agents_actor_and_critic_share_no_weight_and_a_rollout_step_computes_as_an_update() -> None:
    torch.manual_seed(2)
    agent = MlpAgent(4, 3)
    obs = torch.randn(4096, 4)
    with torch.no_grad():  # a rollout: 64 observations a step
        steps = [agent.get_action_and_value(obs[i:i + 64]) for i in range(0, 4096, 64)]
    actions, logprobs, values = (torch.cat([s[k] for s in steps]) for k in (0, 1, 3))
    for start in range(0, 4096, 2048):  # an update: minibatches of 2,048, with gradients
        rows = slice(start, start + 2048)
        _, again, _, value = agent.get_action_and_value(obs[rows], actions[rows])
        assert torch.equal(again.detach(), logprobs[rows]) and torch.equal(value.detach(), values[rows])
    agent.get_value(obs[:256]).sum().backward()  # the critic's loss moves none of the actor's weights
    for name in ("hidden1_weight", "hidden1_bias", "hidden2_weight", "hidden2_bias"):
        grad = getattr(agent, name).grad
        assert torch.count_nonzero(grad[0]) == 0 and torch.count_nonzero(grad[1]) > 0, name
    assert agent.actor_out.weight.grad is None
    agent.zero_grad()
    agent.actor(obs[:256]).sum().backward()  # nor the actor's any of the critic's
    assert all(torch.count_nonzero(getattr(agent, n).grad[1]) == 0 for n in ("hidden1_weight", "hidden2_weight"))
    assert agent.critic_out.weight.grad is None


def test_masked_actions_are_never_sampled_and_carry_no_entropy() -> None:
    torch.manual_seed(1)
    logits = torch.randn(256, 9) * 3
    mask = torch.rand(256, 9) < 0.4
    mask[:, 4] = True
    dist = MaskedCategorical(logits, mask)
    for _ in range(50):
        assert mask.gather(1, dist.sample()[:, None]).all()
    assert (dist.probs[~mask] == 0).all()
    only = MaskedCategorical(torch.zeros(1, 5), torch.tensor([[False, True, False, True, False]]))
    assert only.entropy().item() == pytest.approx(np.log(2))


def test_the_masked_categorical_samples_its_probabilities_and_agrees_with_torch() -> None:
    """Sampling by the cumulative probabilities draws each action as often as its probability says
    (200,000 draws of one row), and the log-probabilities and entropy are torch's Categorical's."""
    from torch.distributions import Categorical

    logits = torch.tensor([[0.3, -1.0, 2.0, 0.0, -0.5, 1.2]])
    mask = torch.tensor([[True, True, True, False, True, True]])
    dist = MaskedCategorical(logits.expand(200_000, 6), mask.expand(200_000, 6))
    counts = torch.bincount(dist.sample(torch.Generator().manual_seed(3)), minlength=6).double() / 200_000
    expected = torch.softmax(logits.masked_fill(~mask, float("-inf")), -1)[0].double()
    assert counts[3] == 0 and torch.allclose(counts, expected, atol=0.004)  # (about 4 standard errors)
    reference = Categorical(logits=logits.masked_fill(~mask, -1e8))
    actions = torch.tensor([0, 1, 2, 4, 5])
    assert torch.allclose(MaskedCategorical(logits.expand(5, 6), mask.expand(5, 6)).log_prob(actions), reference.log_prob(actions))
    assert MaskedCategorical(logits, mask).entropy().item() == pytest.approx(reference.entropy().item(), rel=1e-5)


@pytest.mark.parametrize("via_sigmoid", [True, False], ids=["sigmoid-form", "torch-tanh"])
def test_the_agents_tanh_is_torch_s_to_float_precision_and_the_same_with_or_without_gradients(monkeypatch, via_sigmoid) -> None:
    from lepton_core.planner import policy
    from lepton_core.planner.policy import Tanh

    monkeypatch.setattr(policy, "cpu_tanh_via_sigmoid", lambda: via_sigmoid)  # each CPU's form, whichever this one takes
    x = torch.linspace(-12, 12, 20_001, requires_grad=True)
    y = Tanh()(x)
    assert (y - torch.tanh(x)).abs().max().item() < 3e-7
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(grad, 1 - torch.tanh(x.detach()) ** 2, atol=1e-6)
    with torch.no_grad():  # a rollout's forward: bit for bit the update's (PPO's first ratio is exactly 1)
        assert torch.equal(Tanh()(x), y.detach())


def test_choosing_the_cpu_s_tanh_leaves_a_seeded_run_s_random_numbers_alone() -> None:
    from lepton_core.planner.policy import cpu_tanh_via_sigmoid

    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    measured = cpu_tanh_via_sigmoid.__wrapped__()  # a fresh measurement, the process's cached choice left as it is
    assert torch.equal(torch.rand(4), expected)
    assert isinstance(measured, bool)
    assert cpu_tanh_via_sigmoid() is cpu_tanh_via_sigmoid()  # measured once a process


class ContextBandit(gym.Env):
    """One step an episode: the observation names the right arm (0 or 1, reward 1); arm 2 pays 0.5;
    arm 3 would pay 10 but is masked out."""

    observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)
    action_space = spaces.Discrete(4)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.context = int(self.np_random.integers(2))
        return np.eye(2, dtype=np.float32)[self.context], {"action_mask": np.array([1, 1, 1, 0], np.int8)}

    def step(self, action):
        reward = {self.context: 1.0, 2: 0.5, 3: 10.0}.get(int(action), 0.0)
        obs, info = self.reset()
        return obs, reward, True, False, info


def bandits(n: int):
    return gym.vector.SyncVectorEnv([ContextBandit] * n, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def test_a_small_env_with_a_known_best_action_is_learned_in_a_few_thousand_steps() -> None:
    cfg = PPOConfig(total_timesteps=4096, num_envs=8, num_steps=32, learning_rate=3e-3, seed=3)
    agent = MlpAgent(2, 4)
    result = train(bandits(8), agent, cfg)
    assert result.global_step == 4096 and result.iterations == 16
    with torch.no_grad():
        logits = agent.actor(torch.eye(2))
    mask = torch.tensor([[True, True, True, False]] * 2)
    greedy = torch.where(mask, logits, torch.full_like(logits, -1e8)).argmax(1)
    assert greedy.tolist() == [0, 1]
    assert np.mean(result.episode_returns[-200:]) > 0.9  # and the masked arm (10) was never taken
    assert max(result.episode_returns) <= 1.0


def test_a_checkpoint_round_trips_and_training_resumes_where_it_stopped(tmp_path) -> None:
    cfg = PPOConfig(total_timesteps=8 * 16 * 4, num_envs=8, num_steps=16, seed=5)
    short = cfg.model_copy(update={"total_timesteps": 8 * 16 * 2})
    agent = MlpAgent(2, 4)
    first = train(bandits(8), agent, short, log_dir=tmp_path / "log", checkpoint=tmp_path / "ppo.pt")
    assert first.global_step == 256 and first.iterations == 2
    again = MlpAgent(2, 4)
    counters = load_checkpoint(tmp_path / "ppo.pt", again)  # weights_only=True inside
    assert counters["global_step"] == 256 and counters["iteration"] == 2
    assert all(torch.equal(a, b) for a, b in zip(agent.state_dict().values(), again.state_dict().values(), strict=True))
    resumed = train(bandits(8), again, cfg, log_dir=tmp_path / "log", checkpoint=tmp_path / "ppo.pt", resume=tmp_path / "ppo.pt")
    assert resumed.iterations == 2 and resumed.global_step == 512
    with open(tmp_path / "log" / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4] and rows[-1]["global_step"] == "512"
    assert float(rows[2]["learning_rate"]) == pytest.approx(cfg.learning_rate * (1 - 2 / 4))  # the schedule goes on


def test_a_checkpoint_keeps_where_the_rollout_stands_and_one_whose_envs_do_not_fit_resumes_afresh(tmp_path, caplog) -> None:
    """With the simulator (an env that gives its state) the checkpoint holds the episodes under way
    and the generators; an env that does not take that state (another version or shape) logs why
    and starts its episodes afresh, and the weights go on. Envs without a state save none."""
    from lepton_core.sim.vector import VectorCloudMigrationEnv

    cfg = PPOConfig(total_timesteps=4 * 16 * 2, num_envs=4, num_steps=16, seed=2)
    sim = lambda: VectorCloudMigrationEnv(4, max_workloads=5, min_workloads=3, horizon=30)  # noqa: E731
    agent = MigrationAgent(5, sim().n_types, hidden=16)
    train(sim(), agent, cfg.model_copy(update={"total_timesteps": 4 * 16}), checkpoint=tmp_path / "ppo.pt")
    saved = torch.load(tmp_path / "ppo.pt", weights_only=True)
    assert saved["rollout"]["env"]["hour"].shape == (4,) and set(saved["rollout"]["rng"]) == {"torch", "minibatches"}
    assert saved["rollout"]["carry"]["running_return"].dtype == torch.float64
    del saved["rollout"]["env"]["phase"]  # as a simulator of another version would have left it
    torch.save(saved, tmp_path / "ppo.pt")
    with caplog.at_level("WARNING", logger="lepton_core.planner.ppo"):
        resumed = train(sim(), agent, cfg, checkpoint=tmp_path / "ppo.pt", resume=tmp_path / "ppo.pt")
    assert resumed.iterations == 1 and resumed.global_step == 128
    assert "the episodes under way are not resumed (simulator state: missing phase)" in caplog.text
    train(bandits(8), MlpAgent(2, 4), PPOConfig(total_timesteps=8 * 16, num_envs=8, num_steps=16), checkpoint=tmp_path / "b.pt")
    assert "rollout" not in torch.load(tmp_path / "b.pt", weights_only=True)


def test_next_step_autoreset_is_handled_and_a_disabled_one_refused() -> None:
    """With NEXT_STEP, every other step of the one-step bandit only resets a copy: those steps must
    carry no weight, or the ignored actions would be credited with the reward."""
    envs = gym.vector.SyncVectorEnv([ContextBandit] * 8, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    agent = MlpAgent(2, 4)
    result = train(envs, agent, PPOConfig(total_timesteps=8192, num_envs=8, num_steps=32, learning_rate=3e-3, seed=3))
    assert len(result.episode_returns) == pytest.approx(8192 / 2, abs=8)  # half the steps end an episode
    with torch.no_grad():
        logits = agent.actor(torch.eye(2))
    assert torch.where(torch.tensor([True, True, True, False]), logits, torch.tensor(-1e8)).argmax(1).tolist() == [0, 1]
    assert np.mean(result.episode_returns[-200:]) > 0.9
    disabled = gym.vector.SyncVectorEnv([ContextBandit] * 2, autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    with pytest.raises(ValueError, match="autoreset mode is AutoresetMode.DISABLED; PPO here needs AutoresetMode.SAME_STEP or NEXT_STEP"):
        train(disabled, MlpAgent(2, 4), PPOConfig(num_envs=2, num_steps=4, total_timesteps=8))


def test_the_migration_policy_is_size_independent_and_trains_on_the_vector_twin() -> None:
    from lepton_core.sim.env import CloudMigrationEnv
    from lepton_core.sim.vector import VectorCloudMigrationEnv

    envs = VectorCloudMigrationEnv(16, max_workloads=8, min_workloads=3, horizon=96)
    agent = MigrationAgent(8, envs.n_types)
    result = train(envs, agent, PPOConfig(total_timesteps=16 * 32 * 2, num_envs=16, num_steps=32, seed=2))
    assert result.iterations == 2 and result.episode_costs and all(c > 0 for c in result.episode_costs)
    # the same weights score a 3-workload and an 8-workload scenario; only valid actions get probability
    for n in (3, 8):
        env = CloudMigrationEnv(max_workloads=8, min_workloads=n, horizon=96)
        obs, info = env.reset(seed=n)
        batch = agent.obs_to_tensor({k: v[None] for k, v in obs.items()})
        mask = torch.as_tensor(info["action_mask"][None], dtype=torch.bool)
        probs = MaskedCategorical(agent.logits(batch), mask).probs[0]
        assert probs.sum().item() == pytest.approx(1.0) and (probs[~mask[0]] == 0).all() and (probs[mask[0]] > 0).all()


def test_the_migration_policy_reads_valid_rows_only_and_prices_from_the_observation() -> None:
    """The agent packs the valid workload rows: the same weights give the same scores to a scenario
    padded to 8 or to 16 slots, and what is written into padded rows changes nothing. The start
    scores move with the observed prices: a type made dearer loses probability."""
    from lepton_core.sim.env import CloudMigrationEnv
    from lepton_core.sim.scenario import generate

    s = generate(np.random.default_rng(3), 5, horizon=96)
    torch.manual_seed(0)
    small, large = MigrationAgent(8, s.k), MigrationAgent(16, s.k)
    large.load_state_dict(small.state_dict())
    scores = []
    for agent in (small, large):
        env = CloudMigrationEnv(s, max_workloads=agent.max_workloads)
        obs, info = env.reset(seed=0)
        obs["workloads"][s.n:] = 7.0  # garbage in the padded rows: masked out, never read
        with torch.no_grad():
            logits = agent.logits(agent.obs_to_tensor({k: v[None] for k, v in obs.items()}))[0]
        scores.append(logits[: 1 + s.n * s.k])
    assert torch.allclose(scores[0], scores[1], atol=1e-6)

    with torch.no_grad():
        small.start_out.bias[-2:] = torch.tensor([-5.0, -5.0])  # a policy that minds how much dearer a type is
    env = CloudMigrationEnv(s, max_workloads=8)
    obs, info = env.reset(seed=0)
    i = int(np.flatnonzero(info["action_mask"][1:].reshape(8, s.k).any(axis=1))[0])
    fits = np.flatnonzero(info["action_mask"][1:].reshape(8, s.k)[i])

    def scores(prices: np.ndarray) -> torch.Tensor:
        x = small.obs_to_tensor({**{k: v[None] for k, v in obs.items()}, "instance_price": prices[None]})
        with torch.no_grad():
            return small.logits(x)[0, 1 + i * s.k: 1 + (i + 1) * s.k]

    before = scores(obs["instance_price"])
    k = int(fits[np.argmin(obs["instance_price"][fits])])
    assert int(before[fits].argmax()) == int(np.flatnonzero(fits == k)[0])  # the cheapest type that fits scores highest
    dearer = obs["instance_price"].copy()
    dearer[k] *= 1.5  # half as dear again: its score falls by at least 5 x log(1.5), the others' do not move
    after = scores(dearer)
    others = torch.arange(s.k) != k
    assert after[k] < before[k] - 5 * np.log(1.5) and torch.allclose(after[others], before[others])


def test_training_logs_every_figure_to_csv_and_tensorboard(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(bandits(4), MlpAgent(2, 4), PPOConfig(total_timesteps=4 * 16 * 2, num_envs=4, num_steps=16, seed=1), log_dir=tmp_path)
    with open(tmp_path / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(rows[0][k] != "" for k in ("approx_kl", "clipfrac", "explained_variance", "entropy",
                                                             "value_loss", "policy_loss", "sps", "episodic_return"))
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"losses/approx_kl", "losses/clipfrac", "losses/explained_variance", "losses/entropy", "losses/value_loss",
            "losses/policy_loss", "charts/sps", "charts/episodic_return", "charts/learning_rate"} <= tags
    assert [e.step for e in events.Scalars("losses/approx_kl")] == [64, 128]
