"""The gymnasium views: API conformance, determinism, scalar == vector, action validation, episode ends."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.scenario import Scenario

JOURNEY, BANDIT = "nba/Journey-v0", "nba/Bandit-v0"
assert set(envs.ENV_IDS) == {JOURNEY, BANDIT}


def _high_churn() -> Scenario:
    """The default scenario with daily churn high enough that journeys end by churn within a few days."""
    d = Scenario.default().to_dict()
    d["churn"]["daily"] = {"new": 0.08, "active": 0.08, "at_risk": 0.08, "lapsed": 0.08}
    return Scenario.from_dict(d)


def _kwargs(env_id: str) -> dict:
    """Constructor arguments that make every kind of episode end happen within 60 steps."""
    if env_id == JOURNEY:
        # short horizon -> truncations; high churn -> terminations
        return {"scenario": _high_churn(), "horizon_days": 7}
    # the bandit never ends; a high replace rate exercises customer replacement instead
    return {"replace_rate": 0.2}


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_check_env(env_id):
    # check_env warns about anything questionable; turn warnings into failures so none slips by
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make(env_id).unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_step_info_of_identical_steps_is_equivalent(env_id):
    """What check_env checks, made deterministic: no contact is never seen, so the NaN always shows."""
    from gymnasium.utils.env_checker import data_equivalence

    infos = []
    for _ in range(2):
        env = gym.make(env_id).unwrapped
        env.reset(seed=0)
        infos.append(env.step(0)[-1])
    assert data_equivalence(infos[0], infos[1])


def _rollout(env, seed: int, actions: list[int]) -> list[dict]:
    obs, info = env.reset(seed=seed)
    out = [{"obs": obs, "info": info}]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append({"obs": obs, "reward": r, "term": term, "trunc": trunc, "info": info})
        if term or trunc:
            obs, info = env.reset()
            out.append({"obs": obs, "info": info})
    return out


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_same_seed_same_actions_same_rollout(env_id):
    n_actions = gym.make(env_id).unwrapped.space.n_actions
    actions = np.random.default_rng(5).integers(0, n_actions, 40).tolist()
    a = _rollout(gym.make(env_id, **_kwargs(env_id)), 77, actions)
    b = _rollout(gym.make(env_id, **_kwargs(env_id)), 77, actions)
    c = _rollout(gym.make(env_id, **_kwargs(env_id)), 78, actions)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        np.testing.assert_array_equal(x["obs"], y["obs"])
        for k in ("reward", "term", "trunc"):
            assert x.get(k) == y.get(k)
        np.testing.assert_array_equal(x["info"]["action_mask"], y["info"]["action_mask"])
        if env_id == BANDIT:
            np.testing.assert_array_equal(x["info"]["expected_rewards"], y["info"]["expected_rewards"])
            if "reward" in x:
                assert x["info"]["expected_reward"] == y["info"]["expected_reward"]
                np.testing.assert_equal(x["info"]["outcome"], y["info"]["outcome"])  # NaN-aware
    if env_id == JOURNEY:
        assert len(a) > len(actions) + 1  # episodes ended and restarted within the rollout
    # a different seed gives a different customer (so the comparison above could fail)
    assert not np.array_equal(a[0]["obs"], c[0]["obs"])


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_vector_sub_env_equals_scalar_env_seeded_seed_plus_i(env_id):
    n, seed, steps = 6, 1000, 60
    venv = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", **_kwargs(env_id))
    scalars = [gym.make(env_id, **_kwargs(env_id)) for _ in range(n)]
    vobs, _ = venv.reset(seed=seed)
    for i, env in enumerate(scalars):
        obs, _ = env.reset(seed=seed + i)
        np.testing.assert_array_equal(vobs[i], obs)
    rng = np.random.default_rng(0)
    ended = np.zeros(n, bool)
    n_term = n_trunc = n_restart = 0
    for t in range(steps):
        actions = rng.integers(0, venv.single_action_space.n, n)
        if env_id == BANDIT:
            er = venv.unwrapped.expected_rewards()
        vobs, vrew, vterm, vtrunc, vinfo = venv.step(actions)
        for i, env in enumerate(scalars):
            if ended[i]:
                # NEXT_STEP autoreset: this step reset the sub-env, ignored its action, paid 0
                obs, info = env.reset()
                r, term, trunc = 0.0, False, False
                n_restart += 1
            else:
                if env_id == BANDIT:
                    er_i = env.unwrapped.sim.expected_rewards()[0]
                    np.testing.assert_array_equal(er[i], er_i)
                obs, r, term, trunc, info = env.step(int(actions[i]))
            np.testing.assert_array_equal(vobs[i], obs, err_msg=f"obs, step {t}, env {i}")
            assert vrew[i] == r, (t, i)
            assert (bool(vterm[i]), bool(vtrunc[i])) == (term, trunc), (t, i)
            np.testing.assert_array_equal(vinfo["action_mask"][i], info["action_mask"])
            if env_id == JOURNEY:
                assert vinfo["day"][i] == info["day"], (t, i)
            else:
                assert vinfo["new_customer"][i] == info["new_customer"]
            ended[i] = term or trunc
        n_term += int(vterm.sum())
        n_trunc += int(vtrunc.sum())
    if env_id == JOURNEY:
        # the comparison must have gone through both kinds of episode end and their autoresets
        assert n_term > 0 and n_trunc > 0 and n_restart > 0, (n_term, n_trunc, n_restart)


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
@pytest.mark.parametrize("bad", [-1, "n_actions", 1.5, 2.0, np.float64(3.0), True, np.array([1, 2]), None])
def test_scalar_env_rejects_invalid_actions_without_side_effects(env_id, bad):
    env = gym.make(env_id).unwrapped
    ref = gym.make(env_id).unwrapped
    if isinstance(bad, str):
        bad = env.space.n_actions
    env.reset(seed=3)
    ref.reset(seed=3)
    with pytest.raises(ValueError, match="action"):
        env.step(bad)
    # the rejected step consumed no randomness and changed no state: both continue identically
    for a in (5, 0, 17):
        o1, r1, *_ = env.step(a)
        o2, r2, *_ = ref.step(a)
        np.testing.assert_array_equal(o1, o2)
        assert r1 == r2


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
@pytest.mark.parametrize(
    "bad",
    ["n_actions", "negative", "float", "too_long", "too_short", "2d"],
)
def test_vector_env_rejects_invalid_actions_without_side_effects(env_id, bad):
    n = 4
    venv = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point")
    ref = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point")
    n_actions = venv.single_action_space.n
    actions = {
        "n_actions": np.array([0, 1, n_actions, 2]),
        "negative": np.array([0, -1, 3, 2]),
        "float": np.array([0.0, 1.5, 3.0, 2.0]),
        "too_long": np.zeros(n + 1, np.int64),
        "too_short": np.zeros(n - 1, np.int64),
        "2d": np.zeros((n, 2), np.int64),
    }[bad]
    venv.reset(seed=8)
    ref.reset(seed=8)
    with pytest.raises(ValueError):
        venv.step(actions)
    good = np.array([5, 0, 17, 100])
    for _ in range(3):
        o1, r1, *_ = venv.step(good)
        o2, r2, *_ = ref.step(good)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)


@pytest.mark.parametrize(
    ("env_id", "bad"),
    [
        (BANDIT, np.int64(3)),
        (BANDIT, np.array([3])),
        (JOURNEY, np.int64(3)),
        (JOURNEY, np.array([3])),
    ],
    ids=["bandit-scalar", "bandit-shape(1,)", "journey-scalar", "journey-shape(1,)"],
)
def test_vector_env_does_not_broadcast_one_action_to_all(env_id, bad):
    """A single action given to a 4-env vector env is a shape error, not an action for every sub-env."""
    venv = gym.make_vec(env_id, num_envs=4, vectorization_mode="vector_entry_point")
    venv.reset(seed=1)
    with pytest.raises(ValueError, match="shape"):
        venv.step(bad)


def test_journey_truncates_at_horizon_days():
    horizon = 5
    env = gym.make(JOURNEY, horizon_days=horizon)
    obs, info = env.reset(seed=21)
    assert info["day"] == 0
    for day in range(1, horizon + 1):
        obs, r, term, trunc, info = env.step(0)
        assert info["day"] == day
        assert not term, "seed 21 with no contact must not churn in 5 days (pick another seed if this changes)"
        assert trunc == (day == horizon), day
    # the scenario's horizon is the default
    env = gym.make(JOURNEY)
    assert env.unwrapped.horizon_days == Scenario.default().horizon_days == 90
    env.reset(seed=0)
    truncated_at = None
    for day in range(1, 91):
        *_, term, trunc, _ = env.step(0)
        if term:
            break
        if trunc:
            truncated_at = day
            break
    assert term or truncated_at == 90


def test_journey_vector_env_truncates_at_horizon_days_and_restarts():
    horizon, n = 3, 5
    venv = gym.make_vec(JOURNEY, num_envs=n, vectorization_mode="vector_entry_point", horizon_days=horizon)
    _, info = venv.reset(seed=4)
    np.testing.assert_array_equal(info["day"], 0)
    zeros = np.zeros(n, np.int64)
    for day in range(1, horizon + 1):
        _, rew, term, trunc, info = venv.step(zeros)
        assert not term.any()
        np.testing.assert_array_equal(trunc, day == horizon)
        np.testing.assert_array_equal(info["day"], day)
    # the next step restarts every sub-env: reward 0, day 0, whatever the action
    _, rew, term, trunc, info = venv.step(np.full(n, 100))
    np.testing.assert_array_equal(rew, 0.0)
    np.testing.assert_array_equal(info["day"], 0)
    assert not term.any() and not trunc.any()


def test_bandit_info_expected_rewards_and_oracle():
    env = gym.make(BANDIT)
    n_actions = env.unwrapped.space.n_actions
    obs, info = env.reset(seed=2)
    rng = np.random.default_rng(1)
    n_masked = 0
    for _ in range(60):
        er, mask = info["expected_rewards"], info["action_mask"]
        assert er.shape == (n_actions,) and mask.shape == (n_actions,) and mask[0]
        assert np.isfinite(er).all()
        a = int(rng.integers(0, n_actions))
        n_masked += not mask[a]
        obs, r, term, trunc, info = env.step(a)
        assert not term and not trunc
        assert info["expected_reward"] == er[a]
        assert info["oracle_reward"] == er[mask].max()
        assert info["oracle_reward"] >= info["expected_reward"]
        assert info["oracle_reward"] >= er[0]  # no contact is always available
        # an action on an unreachable channel is not sent: it is worth exactly no contact
        if not mask[a]:
            assert info["expected_reward"] == er[0]
            assert not info["outcome"]["sent"]
    assert n_masked > 0  # the branch above ran


def test_bandit_vector_env_expected_rewards_info():
    n = 3
    venv = gym.make_vec(BANDIT, num_envs=n, vectorization_mode="vector_entry_point", info_expected_rewards=True)
    _, info = venv.reset(seed=5)
    n_actions = venv.single_action_space.n
    assert info["expected_rewards"].shape == (n, n_actions)
    np.testing.assert_array_equal(info["expected_rewards"], venv.unwrapped.expected_rewards())
    _, _, _, _, info = venv.step(np.zeros(n, np.int64))
    assert info["expected_rewards"].shape == (n, n_actions)


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_sharded_vector_env_equals_one_thread(env_id):
    """Splitting the rows over threads changes nothing: same observations, rewards and masks."""
    one = gym.make_vec(env_id, num_envs=12, vectorization_mode="vector_entry_point", threads=1)
    three = gym.make_vec(env_id, num_envs=12, vectorization_mode="vector_entry_point", threads=3)
    o1, i1 = one.reset(seed=21)
    o3, i3 = three.reset(seed=21)
    np.testing.assert_array_equal(o1, o3)
    rng = np.random.default_rng(0)
    for _ in range(40):
        a = rng.integers(0, one.single_action_space.n, 12)
        s1, s3 = one.step(a), three.step(a)
        for x, y in zip(s1[:4], s3[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(s1[4]["action_mask"], s3[4]["action_mask"])
    if env_id == "nba/Bandit-v0":
        np.testing.assert_array_equal(one.unwrapped.expected_rewards(), three.unwrapped.expected_rewards())
