"""The MLflow pyfunc flavour of an nba policy, logged as *model from code*.

MLflow copies this file into the logged model and runs it at load time; the policy's state is
never pickled: it lives in the model's ``bundle`` artefact (:func:`nba.serialization.save_bundle`:
JSON, ``.npz`` read with ``allow_pickle=False`` and LightGBM text).

``predict`` takes a batch of requests, one row per customer: the policy's context features (columns
named as :attr:`nba.features.FeatureSpec.names`). The ``consent=<channel>`` features double as the
eligibility mask, so no channel without consent is chosen; quiet hours, caps and budgets need the
customer's contact history and are enforced by the decision service, not here. It returns one row
per request: the action index, channel, content, send hour (local, -1 for "now"), the propensity,
and the policy's name. ``params={"seed": int}`` makes the draws reproducible.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd

from nba.policies import act
from nba.serialization import Bundle, load_bundle


def decide_frame(bundle: Bundle, frame: pd.DataFrame, seed: int | None = None) -> pd.DataFrame:
    """Decisions for the requests in ``frame`` (see the module's docstring)."""
    names = list(bundle.spec.names)
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise ValueError(f"{missing[0]}: missing feature column ({len(missing)} missing in all)")
    X = frame[names].to_numpy(dtype=np.float32)
    policy = bundle.policy
    space = policy.space
    consent = frame[[f"consent={c}" for c in space.channels]].to_numpy() > 0.5
    mask = np.ones((len(frame), space.n_actions), bool)
    mask[:, 1:] = consent[:, space.channel_of[1:]]
    d = act(policy, X, mask, np.random.default_rng(seed))
    a = d.actions
    contact = a > 0
    channel = np.where(contact, np.asarray(space.channels, object)[space.channel_of[a]], "none")
    content = np.where(contact, np.asarray(space.contents, object)[space.content_of[a]], "none")
    hours = np.array([-1 if h is None else h for h in space.send_slots])
    return pd.DataFrame({
        "action": a, "channel": channel, "content": content,
        "send_hour": np.where(contact, hours[space.slot_of[a]], -1),
        "propensity": d.propensities, "policy": policy.name,
    })


class PolicyModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.bundle = load_bundle(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        seed = None if not params or params.get("seed") is None else int(params["seed"])
        return decide_frame(self.bundle, model_input, seed)


mlflow.models.set_model(PolicyModel())
