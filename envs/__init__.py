"""Simulated customers as gymnasium environments: ``nba/Bandit-v0`` and ``nba/Journey-v0``.

Importing :mod:`envs` registers both ids (idempotently)::

    import gymnasium as gym
    import envs  # noqa: F401

    env = gym.make("nba/Bandit-v0")
    venv = gym.make_vec("nba/Journey-v0", num_envs=4096, vectorization_mode="vector_entry_point")
"""

from gymnasium.envs.registration import register, registry

NAMESPACE = "nba"
ENV_IDS = (f"{NAMESPACE}/Bandit-v0", f"{NAMESPACE}/Journey-v0")

for _id, _module, _cls in zip(ENV_IDS, ("bandit", "journey"), ("Bandit", "Journey"), strict=True):
    if _id not in registry:
        register(
            id=_id,
            entry_point=f"envs.{_module}:{_cls}Env",
            vector_entry_point=f"envs.{_module}:{_cls}VectorEnv",
            disable_env_checker=False,
        )
