"""The cloud-migration simulator: gymnasium's checker, determinism, masks, and a cost worked by hand."""

from __future__ import annotations

import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from lepton_core.sim.env import CLOUD, CloudMigrationEnv, water_fill
from lepton_core.sim.scenario import Scenario, from_spec, generate


def hand_scenario() -> Scenario:
    """db <- api <- web (api calls db, web calls api) on two instance types over a steady 450 GB/h link."""
    return Scenario(
        names=("db", "api", "web"),
        cpu=np.array([2.0, 4.0, 1.0]), memory_gb=np.array([8.0, 16.0, 2.0]), gpu=np.zeros(3),
        data_gb=np.array([900.0, 0.0, 450.0]), traffic_rps=np.array([0.0, 1000.0, 2000.0]),
        onprem_cost=np.array([1.0, 2.0, 0.5]),
        depends=np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=bool),
        instance_names=("A", "B"), instance_vcpu=np.array([2.0, 8.0]), instance_memory_gb=np.array([8.0, 32.0]),
        instance_gpu=np.zeros(2), instance_price=np.array([0.10, 0.40]),
        link_gbps=1.0, link_efficiency=1.0, link_price=0.30, bandwidth_factor=np.ones(48),
        horizon=48, pinned=np.full(3, -1),
    )


def test_gymnasium_check_env_passes_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(CloudMigrationEnv(), skip_render_check=True)
        check_env(gym.make("lepton/CloudMigration-v0").unwrapped, skip_render_check=True)


def rollout(env: CloudMigrationEnv, seed: int, policy_seed: int, steps: int = 400) -> list:
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(policy_seed)
    trace = []
    for _ in range(steps):
        valid = np.flatnonzero(info["action_mask"])
        action = int(rng.choice(valid)) if rng.random() < 0.4 else 0
        obs, reward, terminated, truncated, info = env.step(action)
        trace.append((action, reward, obs["workloads"].tobytes(), obs["globals"].tobytes(), terminated, truncated))
        if terminated or truncated:
            break
    return trace


def test_same_seed_same_episode_and_another_seed_another() -> None:
    a, b = CloudMigrationEnv(), CloudMigrationEnv()
    assert rollout(a, 11, 5) == rollout(b, 11, 5)
    assert a.scenario.names == b.scenario.names and (a.scenario.bandwidth_factor == b.scenario.bandwidth_factor).all()
    c = CloudMigrationEnv()
    c.reset(seed=12)
    assert c.scenario.n != a.scenario.n or not np.array_equal(c.scenario.data_gb, a.scenario.data_gb)


def test_masks_only_allow_what_the_rules_allow() -> None:
    env = CloudMigrationEnv(strict=True)
    for seed in range(5):
        _, info = env.reset(seed=seed)
        s = env.scenario
        fits = s.fits()
        rng = np.random.default_rng(seed)
        done = False
        while not done:
            mask = info["action_mask"]
            assert mask[0] == 1
            for action in np.flatnonzero(mask[1:]) + 1:
                i, k = env.decode(action)
                assert i < s.n and env.phase[i] == 0 and fits[i, k]
                assert all(env.phase[j] >= 1 for j in np.flatnonzero(s.depends[i]))
            assert not mask[1 + s.n * env.n_types:].any()  # padding slots
            valid = np.flatnonzero(mask)
            _, _, term, trunc, info = env.step(int(rng.choice(valid)))  # strict: a valid action never raises
            done = term or trunc


def test_an_invalid_action_is_refused_clearly() -> None:
    env = CloudMigrationEnv(hand_scenario())
    env.reset(seed=0)
    _, _, _, _, info = env.step(1 + 1 * 2 + 1)  # api on B before db has started
    assert info["refused"] == "action 4 is not valid at hour 0: workload 'api' depends on db, not started yet"
    assert (env.phase == 0).all() and env.hour == 1
    strict = CloudMigrationEnv(hand_scenario(), strict=True)
    strict.reset(seed=0)
    with pytest.raises(ValueError, match=r"^action 3 is not valid at hour 0: workload 'api' depends on db, not started yet; "
                                         r"A does not fit workload 'api' \(4 vCPU, 16 GB, 0 GPU\)$"):
        strict.step(1 + 1 * 2 + 0)
    strict.step(1)
    with pytest.raises(ValueError, match="workload 'db' has already started"):
        strict.step(2)
    with pytest.raises(ValueError, match="there is no workload 5"):
        strict.step(1 + 5 * 2)


def test_three_workloads_cost_as_computed_by_hand() -> None:
    env = CloudMigrationEnv(hand_scenario(), strict=True)
    env.reset(seed=0)
    plan = [1, 0, 4, 5, 0]  # db on A at hour 0; api on B at 2; web on A at 3; then wait
    hours = []
    for action in plan:
        _, reward, terminated, truncated, info = env.step(action)
        hours.append(info["cost"])
        assert reward == pytest.approx(-sum(info["cost"].values()) / 100)
    # hour 0 and 1: all three on-prem ($3.50) and the link ($0.30) while db's 900 GB cross at 450 GB/h
    assert sum(hours[0].values()) == pytest.approx(3.80) and sum(hours[1].values()) == pytest.approx(3.80)
    # hour 2: db in cutover (on-prem and A), api's empty transfer holds the link
    assert hours[2] == pytest.approx({"onprem": 3.5, "cloud": 0.10, "link": 0.30, "downtime": 0.0, "cross_site": 0.0, "transfer": 0.0,
                                      "cloud_after": 0.0})
    # hour 3: db in the cloud, api cuts over (5 min x 1 krps x $20), and calls db across the link ($2/krps-h)
    assert hours[3] == pytest.approx({"onprem": 2.5, "cloud": 0.50, "link": 0.30, "downtime": 100.0, "cross_site": 2.0, "transfer": 0.0,
                                      "cloud_after": 0.0})
    # hour 4: web cuts over (5 min x 2 krps x $20) and calls api, now in the cloud, across the link;
    # all three are in the cloud after it, and pay A + B + A for the 43 hours left of the 48
    assert hours[4] == pytest.approx({"onprem": 0.5, "cloud": 0.60, "link": 0.0, "downtime": 200.0, "cross_site": 4.0, "transfer": 0.0,
                                      "cloud_after": 43 * 0.60})
    assert terminated and not truncated and (env.phase == CLOUD).all()
    assert info["total_cost"] == pytest.approx(321.90 + 25.80)


def test_transfers_share_the_link_fairly() -> None:
    assert water_fill(np.array([100.0, 500.0, 1000.0]), 900.0) == pytest.approx([100.0, 400.0, 400.0])
    assert water_fill(np.array([50.0, 60.0]), 900.0) == pytest.approx([50.0, 60.0])


def test_the_horizon_truncates() -> None:
    env = CloudMigrationEnv(hand_scenario())
    env.reset(seed=0)
    for hour in range(48):
        _, _, terminated, truncated, _ = env.step(0)
        assert not terminated and truncated == (hour == 47)


def test_scenarios_from_the_demo_spec_and_the_generator(demo_data) -> None:
    from lepton_core.spec import load_spec

    s = from_spec(load_spec(demo_data))
    assert s.n == 12 and s.k == 15 and s.link_gbps == 1.0 and s.depends.sum() > 0
    assert s.fits().any(axis=1).all()  # every demo service fits some instance type
    g = generate(np.random.default_rng(3), 9)
    assert g.n == 9 and not np.triu(g.depends).any()  # dependencies only on earlier workloads: a DAG
    assert (g.onprem_cost > 0).all() and (0.05 <= g.bandwidth_factor).all() and (g.bandwidth_factor <= 1).all()
    env = CloudMigrationEnv(s, max_workloads=16)
    obs, info = env.reset(seed=0)
    assert obs["workload_mask"].sum() == 12 and info["action_mask"].sum() > 1
    with pytest.raises(ValueError, match="the scenario has 12 workloads; this env holds at most 8"):
        CloudMigrationEnv(s, max_workloads=8)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_yardstick_plan_replays_to_its_reported_cost(seed: int) -> None:
    from lepton_core.sim.plan import HEURISTICS, replay, yardstick

    s = generate(np.random.default_rng(seed), 10)
    for method in HEURISTICS:
        plan = yardstick(s, method)
        assert plan.outcome.finish_hour is not None and len(plan.steps) == s.n
        again = replay(s, plan)
        assert again.total_cost == pytest.approx(plan.outcome.total_cost) and again.finish_hour == plan.outcome.finish_hour
        assert sum(again.breakdown.values()) == pytest.approx(again.total_cost)


def test_yardsticks_follow_their_rules() -> None:
    from lepton_core.sim.plan import _levels, yardstick

    s = generate(np.random.default_rng(4), 12)
    fits = s.fits()
    cheapest = {s.names[i]: s.instance_names[int(np.where(fits[i], s.instance_price, np.inf).argmin())] for i in range(s.n)}
    greedy, waves, lift = (yardstick(s, m) for m in ("greedy", "waves", "lift-shift"))
    assert all(st.instance_type == cheapest[st.workload] for st in greedy.steps + waves.steps)  # right-sized
    assert [st.start_hour for st in lift.steps] == list(range(s.n))  # everything, as early as allowed
    level = dict(zip(s.names, _levels(s), strict=True))
    assert [level[st.workload] for st in waves.steps] == sorted(level[st.workload] for st in waves.steps)


def test_replay_refuses_a_plan_it_cannot_follow() -> None:
    from lepton_core.sim.plan import PlanStep, replay

    s = hand_scenario()
    with pytest.raises(ValueError, match="two steps start at hour 0"):
        replay(s, (PlanStep("db", "A", 0), PlanStep("api", "B", 0)))
    with pytest.raises(ValueError, match="unknown workload 'cache'"):
        replay(s, (PlanStep("cache", "A", 0),))
    with pytest.raises(ValueError, match="action 4 is not valid at hour 0: workload 'api' depends on db"):
        replay(s, (PlanStep("api", "B", 0), PlanStep("db", "A", 1)))
    assert replay(s, (PlanStep("db", "A", 0), PlanStep("api", "B", 2), PlanStep("web", "A", 3))).total_cost == pytest.approx(347.70)


def test_cli_plan_prints_the_plan_and_its_cost(demo_data, tmp_path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["plan", str(demo_data), "--method", "waves"])
    assert ok.exit_code == 0, ok.output
    lines = ok.stdout.splitlines()
    assert lines[0] == "plan (waves): 12 workloads" and len(lines) == 2 + 12 + 2
    assert lines[-2].startswith("cost over 336 h: $") and "all in the cloud after" in lines[-2]
    every = runner.invoke(app, ["plan", str(demo_data), "--method", "all", "--time-limit", "2", "--chart", str(tmp_path / "g.png")])
    assert every.exit_code == 0, every.output
    lines = every.stdout.splitlines()
    assert lines[0] == "4 plans for 12 workloads over 336 h:" and [l.split()[0] for l in lines[2:6]] == ["lift-shift", "waves", "greedy", "exact"]
    # in 2 s the exact planner proves nothing on 12 workloads: the lower bound says how far from the optimum
    proved = "vs exact" in lines[1]
    assert proved or re.fullmatch(r"  no plan that moves every workload costs less than \$[\d,]+\.\d\d \(cost_lower_bound\): the cheapest here "
                                  r"is at most \d+\.\d% above the optimum", lines[6])
    assert lines[6 if proved else 7] == "plan (exact): 12 workloads" and lines[-1] == f"chart: {tmp_path / 'g.png'}"
    bad = runner.invoke(app, ["plan", str(demo_data), "--link", "nope"])
    assert bad.exit_code == 2 and bad.stderr == "error: catalogue aws us-east-1: no link 'nope' (known: dx-1gbps, dx-10gbps)\n"


def test_the_vector_twin_equals_scalar_envs_step_by_step() -> None:
    from lepton_core.sim.vector import VectorCloudMigrationEnv

    n = 6
    vec = VectorCloudMigrationEnv(n, max_workloads=8, min_workloads=3, horizon=60)
    scalars = [CloudMigrationEnv(max_workloads=8, min_workloads=3, horizon=60) for _ in range(n)]
    vobs, vinfo = vec.reset(seed=40)
    for j, env in enumerate(scalars):
        obs, info = env.reset(seed=40 + j)
        assert np.array_equal(vobs["workloads"][j], obs["workloads"]) and np.array_equal(vinfo["action_mask"][j], info["action_mask"])
    rng = np.random.default_rng(1)
    episodes = truncations = 0
    for _ in range(300):  # several episodes each: autoresets included; copy 0 only waits (truncated every 60 h)
        actions = np.array([int(rng.choice(np.flatnonzero(m))) if j and rng.random() < 0.35 else 0
                            for j, m in enumerate(vinfo["action_mask"])])
        vobs, vrew, vterm, vtrunc, vinfo = vec.step(actions)
        for j, env in enumerate(scalars):
            obs, rew, term, trunc, info = env.step(int(actions[j]))
            assert (bool(vterm[j]), bool(vtrunc[j])) == (term, trunc)
            assert vrew[j] == pytest.approx(rew, rel=1e-12, abs=1e-12)
            for part, dollars in info["cost"].items():  # each part of the hour's cost, not only their sum
                assert vinfo["cost"][part][j] == pytest.approx(dollars, rel=1e-12, abs=1e-12), part
            if term or trunc:
                episodes += 1
                assert vinfo["_final_obs"][j] and vinfo["final_total_cost"][j] == pytest.approx(info["total_cost"], rel=1e-12)
                assert np.allclose(vinfo["final_obs"]["workloads"][j], obs["workloads"], rtol=1e-6, atol=1e-7)
                assert np.allclose(vinfo["final_obs"]["globals"][j], obs["globals"], rtol=1e-6, atol=1e-6)
                assert np.array_equal(vinfo["final_obs"]["instance_price"][j], obs["instance_price"])
                truncations += trunc
                obs, info = env.reset()  # SAME_STEP: the vector env has already started the next episode
                assert vinfo["hour"][j] == 0
            assert np.allclose(vobs["workloads"][j], obs["workloads"], rtol=1e-6, atol=1e-7)
            assert np.allclose(vobs["globals"][j], obs["globals"], rtol=1e-6, atol=1e-6)
            assert np.array_equal(vobs["instance_price"][j], obs["instance_price"])  # the next episode's prices after a reset
            assert np.array_equal(vinfo["action_mask"][j], info["action_mask"])
    assert episodes >= n and truncations >= 5


def test_the_vector_twin_given_another_s_state_steps_as_that_one_goes_on() -> None:
    """What a training checkpoint keeps of the simulator: a fresh env given the state of one in
    mid-run (episodes under way, the bank of next episodes part used) steps as that one does, through
    episode ends and bank refills; an env of another shape refuses it, naming the array."""
    from lepton_core.sim.vector import VectorCloudMigrationEnv

    def steps(env, obs, info, rng, count):
        seen = []
        for _ in range(count):
            actions = np.array([int(rng.choice(np.flatnonzero(m))) if rng.random() < 0.4 else 0 for m in info["action_mask"]])
            obs, reward, term, trunc, info = env.step(actions)
            seen.append((obs, reward, term, trunc, info["action_mask"].copy(), info["total_cost"]))
        return obs, info, seen

    first = VectorCloudMigrationEnv(5, max_workloads=8, min_workloads=3, horizon=40)
    obs, info = first.reset(seed=7)
    obs, info, _ = steps(first, obs, info, np.random.default_rng(0), 70)  # past the first episodes' ends
    state = first.get_state()
    second = VectorCloudMigrationEnv(5, max_workloads=8, min_workloads=3, horizon=40)
    second.reset(seed=99)  # another run's episodes: all of it is replaced
    obs2, info2 = second.set_state(state)
    assert all(np.array_equal(obs[k], obs2[k]) for k in obs) and np.array_equal(info["action_mask"], info2["action_mask"])
    _, _, went_on = steps(first, obs, info, np.random.default_rng(1), 150)
    _, _, resumed = steps(second, obs2, info2, np.random.default_rng(1), 150)
    assert sum(int(t.sum() + u.sum()) for _, _, t, u, _, _ in went_on) >= 10  # episodes ended, new ones began
    for a, b in zip(went_on, resumed, strict=True):
        assert all(np.array_equal(a[0][k], b[0][k]) for k in a[0])
        assert all(np.array_equal(x, y) for x, y in zip(a[1:], b[1:], strict=True))
    state["hour"][0] = -1  # the state given is a copy: changing it changes neither env
    assert (first.hour >= 0).all() and (second.hour >= 0).all()
    with pytest.raises(ValueError, match=r"simulator state: ep\.wl is float64\[5, 4, 8\]; this env's is float64\[4, 4, 8\]"):
        VectorCloudMigrationEnv(4, max_workloads=8, min_workloads=3, horizon=40).set_state(first.get_state())


def test_the_vector_twin_refuses_invalid_actions_per_env() -> None:
    from lepton_core.sim.vector import PAD, VectorCloudMigrationEnv

    vec = VectorCloudMigrationEnv(3, max_workloads=8, min_workloads=3)
    _, info = vec.reset(seed=0)
    invalid = [int(np.flatnonzero(m == 0)[0]) for m in info["action_mask"]]
    _, _, _, _, out = vec.step(np.array([0, invalid[1], 10**6]))
    assert out["refused"].tolist() == [False, True, True]
    assert (vec.phase[1][vec.valid[1]] == 0).all() and (vec.phase[1][~vec.valid[1]] == PAD).all() and (vec.hour == 1).all()


def test_the_data_moves_in_the_order_the_plan_moves_its_owners(demo_data) -> None:
    from lepton_core.sim.plan import Plan, PlanStep, dataset_order
    from lepton_core.spec import load_spec

    spec = load_spec(demo_data).spec
    owners = {d: [s.name for s in spec.services if d in s.datasets] for d in (d.name for d in spec.datasets)}
    assert all(owners.values())  # every demo dataset has an owner
    # the owners of the last dataset first, then the others: that dataset moves first
    last = spec.datasets[-1].name
    hours = {name: h for h, name in enumerate(owners[last])}
    rest = [s.name for s in spec.services if s.name not in hours]
    steps = [PlanStep(name, "m5.large", h) for name, h in hours.items()]
    steps += [PlanStep(name, "m5.large", len(hours) + i) for i, name in enumerate(rest)]
    order = dataset_order(spec, Plan("test", tuple(steps)))
    assert order[0] == last and sorted(order) == sorted(d.name for d in spec.datasets)


def test_generated_scenarios_are_a_function_of_their_key_alone() -> None:
    from lepton_core.sim.scenario import generate_batch, seed_state, uniforms

    keys = seed_state(np.arange(200))
    u = uniforms(keys, 3, 50)
    assert u.shape == (200, 50) and (0 < u).all() and (u < 1).all() and abs(u.mean() - 0.5) < 0.01
    assert np.array_equal(uniforms(keys, 3, 7), u[:, :7])  # a draw does not depend on how many are drawn
    batch = generate_batch(keys, 4, 12, slots=20, horizon=72)
    assert batch.n.min() == 4 and batch.n.max() == 12 and not batch.depends[:, :, 12:].any()
    assert not np.triu(batch.depends, k=0).any()  # calls only earlier workloads: a DAG
    for r in (0, 57, 199):  # one key alone, padded less, gives the same system
        one = generate_batch(keys[r:r + 1], 4, 12, horizon=72).scenario(0)
        s = batch.scenario(r)
        assert one.n == s.n == batch.n[r]
        for name in ("cpu", "memory_gb", "gpu", "data_gb", "traffic_rps", "onprem_cost", "depends", "instance_price", "bandwidth_factor"):
            assert np.array_equal(getattr(one, name), getattr(s, name)), name
        assert (s.onprem_cost > 0).all() and s.fits().any(axis=1).all() and len(s.bandwidth_factor) == 72
        assert ((0.05 <= s.bandwidth_factor) & (s.bandwidth_factor <= 1)).all()


def test_water_filling_matches_a_sorted_reference() -> None:
    from lepton_core.sim.env import water_fill_rows

    def reference(need: np.ndarray, capacity: float) -> np.ndarray:  # max-min fairness, smallest need first
        out, left, open_ = np.zeros_like(need), capacity, len(need)
        for i in np.argsort(need, kind="stable"):
            out[i] = min(need[i], left / open_)
            left, open_ = left - out[i], open_ - 1
        return out

    assert water_fill(np.array([1.0, 4.6, 4.4]), 10.0) == pytest.approx([1.0, 4.6, 4.4])  # satisfied over three rounds
    rng = np.random.default_rng(0)
    remaining = rng.exponential(100.0, size=(500, 8))
    active = rng.random((500, 8)) < 0.5
    capacity = rng.uniform(10.0, 600.0, size=500)
    moved = water_fill_rows(remaining, active, capacity)
    assert (moved[~active] == 0).all() and (moved <= remaining + 1e-12).all()
    for row in range(500):
        on = active[row]
        if on.any():
            assert moved[row, on] == pytest.approx(reference(remaining[row, on], capacity[row]), rel=1e-12)


def test_the_vector_twin_plays_given_scenarios_like_the_scalar_env() -> None:
    from lepton_core.sim.vector import VectorCloudMigrationEnv

    vec = VectorCloudMigrationEnv(3, max_workloads=8, horizon=48)
    k = vec.n_types  # the hand-worked system on as many types as the bundled catalogue has
    # a 20-hour bandwidth profile that repeats over the 48 hours, so the link's hour-by-hour factor
    # matters; the hand system only waits, so it is truncated at the horizon (hour 48 reads hour 8)
    hand = Scenario(**{**hand_scenario().__dict__, "instance_names": tuple(f"t{i}" for i in range(k)),
                       "instance_vcpu": np.full(k, 8.0), "instance_memory_gb": np.full(k, 32.0),
                       "instance_gpu": np.zeros(k), "instance_price": np.linspace(0.1, 1.6, k),
                       "bandwidth_factor": np.linspace(0.3, 1.0, 20)})
    other = generate(np.random.default_rng(5), 6, horizon=48)
    short = generate(np.random.default_rng(6), 8, horizon=30)  # truncated before the env's horizon
    vobs, vinfo = vec.reset(seed=0, options={"scenarios": [hand, other, short]})
    scalars = [CloudMigrationEnv(s, max_workloads=8) for s in (hand, other, short)]
    firsts = [env.reset(seed=0) for env in scalars]
    assert all(np.array_equal(vinfo["action_mask"][j], info["action_mask"]) for j, (_, info) in enumerate(firsts))
    assert all(np.allclose(vobs["globals"][j], obs["globals"], rtol=1e-6, atol=1e-6) for j, (obs, _) in enumerate(firsts))
    rng = np.random.default_rng(2)
    playing, ended = [True, True, True], 0
    for _ in range(48):
        actions = np.array([int(rng.choice(np.flatnonzero(m))) if j and rng.random() < 0.5 else 0
                            for j, m in enumerate(vinfo["action_mask"])])
        vobs, vrew, vterm, vtrunc, vinfo = vec.step(actions)
        for j, env in enumerate(scalars):
            if not playing[j]:  # the vector twin has gone on to a generated scenario
                continue
            obs, rew, term, trunc, info = env.step(int(actions[j]))
            assert vrew[j] == pytest.approx(rew, rel=1e-12, abs=1e-12) and (bool(vterm[j]), bool(vtrunc[j])) == (term, trunc)
            if term or trunc:
                assert vinfo["final_total_cost"][j] == pytest.approx(info["total_cost"], rel=1e-12)
                assert np.allclose(vinfo["final_obs"]["globals"][j], obs["globals"], rtol=1e-6, atol=1e-6)
                playing[j], ended = False, ended + 1
                continue
            assert np.allclose(vobs["workloads"][j], obs["workloads"], rtol=1e-6, atol=1e-7)
            assert np.allclose(vobs["globals"][j], obs["globals"], rtol=1e-6, atol=1e-6)
            assert np.array_equal(vinfo["action_mask"][j], info["action_mask"])
    assert ended == 3
    with pytest.raises(ValueError, match="scenario for env 0: 3 workloads on 2 types"):
        vec.reset(options={"scenarios": [hand_scenario(), other, short]})


def test_a_copy_of_a_copy_in_mid_episode_goes_on_as_the_original_does() -> None:
    """``copy_episodes``: copies of another env's copies (given and generated scenarios, their
    bandwidth profiles included) and of this env's own, taken mid-episode, step as the originals do
    to their episodes' ends; an env of another shape is refused."""
    import dataclasses

    from lepton_core.sim.vector import VectorCloudMigrationEnv

    rng = np.random.default_rng(3)
    # profiles of their own, so that reading another copy's row of the bandwidth table would show
    given = [dataclasses.replace(generate(np.random.default_rng(s), 7, horizon=48), bandwidth_factor=rng.uniform(0.2, 1.0, 48))
             for s in (11, 12)]
    given_env = VectorCloudMigrationEnv(2, max_workloads=8, min_workloads=3, horizon=48)
    generated_env = VectorCloudMigrationEnv(2, max_workloads=8, min_workloads=3, horizon=48)
    originals = [given_env.reset(options={"scenarios": given}), generated_env.reset(seed=5)]
    pick = lambda m: int(rng.choice(np.flatnonzero(m))) if rng.random() < 0.5 else 0  # noqa: E731
    for _ in range(6):  # a few starts under way in every copy
        for e, env in enumerate((given_env, generated_env)):
            obs, _, term, trunc, info = env.step(np.array([pick(m) for m in originals[e][1]["action_mask"]]))
            originals[e] = (obs, info)
            assert not (term | trunc).any()
    copies = VectorCloudMigrationEnv(4, max_workloads=8, min_workloads=3, horizon=48)
    copies.reset(seed=77)  # other episodes, all replaced
    copies.copy_episodes(np.array([3, 0]), given_env, np.array([0, 1]))
    copies.copy_episodes(np.array([1]), generated_env, np.array([1]))
    cobs, cinfo = copies.copy_episodes(np.array([2]), copies, np.array([0]))  # its own copy too
    follows = {3: (0, 0), 0: (0, 1), 2: (0, 1), 1: (1, 1)}  # copy -> (original env, its copy)
    for c, (e, o) in follows.items():
        obs, info = originals[e]
        assert all(np.array_equal(cobs[k][c], obs[k][o]) for k in obs) and np.array_equal(cinfo["action_mask"][c], info["action_mask"][o])
    ended = {c: False for c in follows}
    for _ in range(60):
        actions = [np.array([pick(m) for m in info["action_mask"]]) for _, info in originals]
        went = [env.step(a) for env, a in zip((given_env, generated_env), actions, strict=True)]
        cobs, crew, cterm, ctrunc, cinfo = copies.step(np.array([actions[e][o] for _, (e, o) in sorted(follows.items())]))
        for c, (e, o) in follows.items():
            obs, rew, term, trunc, info = went[e]
            if not ended[c]:
                # (the same dynamics; sums over other sets of copies may round apart in the last bit)
                assert crew[c] == pytest.approx(rew[o], rel=1e-12, abs=1e-12) and (cterm[c], ctrunc[c]) == (term[o], trunc[o])
                if term[o] or trunc[o]:
                    assert cinfo["final_total_cost"][c] == pytest.approx(info["final_total_cost"][o], rel=1e-12)
                    ended[c] = True
                else:
                    assert all(np.allclose(cobs[k][c], obs[k][o], rtol=1e-6, atol=1e-7) for k in obs)
                    assert np.array_equal(cinfo["action_mask"][c], info["action_mask"][o])
        originals = [(obs, info) for obs, _, _, _, info in went]
    assert all(ended.values())
    with pytest.raises(ValueError, match="copy_episodes: the source holds 8 workloads on .* over 48 h; this env 8 on .* over 60 h"):
        VectorCloudMigrationEnv(2, max_workloads=8, horizon=60).copy_episodes(np.array([0]), given_env, np.array([0]))
