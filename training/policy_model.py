"""The MLflow pyfunc flavour of an nba policy, logged as *model from code*.

MLflow copies this file into the logged model and runs it at load time; the policy's state is
never pickled: it lives in the model's ``bundle`` artefact (:func:`nba.serialization.save_bundle`:
JSON, ``.npz`` read with ``allow_pickle=False`` and LightGBM text).

``predict`` decides through :mod:`nba.decide`, the one decide path of the simulator and the decision
service: the features, the eligibility mask (consent, quiet hours, caps, minimum gap, and a deployment's
offer rules), the send times, and the choice with its exact propensity. It takes a batch of requests,
one row per customer, with the columns of the service's requests:

* ``customer_id`` (optional, not read), ``timezone`` (an IANA name such as ``Europe/Paris``, a UTC
  offset such as ``+02:00``, or hours east of UTC; default UTC) and ``now`` (an ISO 8601 date-time,
  UTC unless it says otherwise, a datetime, or hours since the epoch; default the clock);
* a **deployment** bundle (:func:`nba.decide.decide`): one column per declared attribute, checked by
  :meth:`nba.deployment.Deployment.check_attributes` (an empty cell is not sent: the attribute's
  default, else unknown); consent comes from the channels' consent attributes;
* a **scenario** bundle (:func:`nba.decide.decide_profiles`): the profile fields, ``segment`` (its
  name) and ``tenure_days`` required; ``stage`` (a lifecycle stage's name; empty: derived),
  ``cart_active``, ``consent=<channel>`` (default: reachable), ``n_purchases``, ``last_purchase``
  and ``last_visit`` (times as ``now``) optional.

**No contact history.** A pyfunc has no decision log, so every customer is decided as one never
contacted: the caps and the minimum gap see only the contacts the frame gives, which is none, and the
history features are those of a customer without contacts (a scenario frame's purchases and visits
excepted); a deployment's offer budgets and channel capacities, counted across customers from the log,
are not checked either. Where these must hold across decisions, decide through the decision service
(``serving/``), which reads the customers' history from the log.

It returns one row per request: the action index, channel, content, send hour (local, -1 for "now"),
the propensity, and the policy's name. ``params={"seed": int}`` makes the draws reproducible. A bad
cell raises ValueError naming it (``rows[3].plan_type: ...``, ``segment: missing column``).
"""

from __future__ import annotations

import time
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from nba.decide import Decided, decide, decide_profiles
from nba.eligibility import MAX_TZ_H, ZONE_HINT, RecentContacts, utc_offset
from nba.features import LIFECYCLE_STAGES, NEVER, History, Profile
from nba.serialization import Bundle, load_bundle


def decide_frame(bundle: Bundle, frame: pd.DataFrame, seed: int | None = None) -> pd.DataFrame:
    """Decisions for the requests in ``frame`` (see the module's docstring)."""
    policy, rng = bundle.policy, np.random.default_rng(seed)
    now = _hours(frame, "now", time.time() / 3600.0)
    tz = _zones(frame, now)
    d = bundle.deployment
    if d is not None:
        attributes = [d.check_attributes(row, f"rows[{i}]") for i, row in enumerate(_cells(frame, d.attributes))]
        out = decide(d, policy, attributes, now=now, tz_offset=tz, rng=rng)
    else:
        profile, history = _profile(bundle, frame, now, tz)
        recent = RecentContacts.for_rules(len(frame), policy.space.n_channels, bundle.rules)
        out = decide_profiles(
            policy, bundle.spec, bundle.rules, bundle.lifecycle, profile, history, recent, now=now, rng=rng
        )
    return _result(bundle, out)


def _result(bundle: Bundle, out: Decided) -> pd.DataFrame:
    space, a = bundle.policy.space, out.action
    contact = a > 0
    hours = np.array([-1 if h is None else h for h in space.send_slots])
    return pd.DataFrame(
        {
            "action": a,
            "channel": np.where(contact, np.asarray(space.channels, object)[space.channel_of[a]], "none"),
            "content": np.where(contact, np.asarray(space.contents, object)[space.content_of[a]], "none"),
            "send_hour": np.where(contact, hours[space.slot_of[a]], -1),
            "propensity": out.propensity,
            "policy": bundle.policy.name,
        }
    )


def _missing(v: Any) -> bool:
    return v is None or (not isinstance(v, str) and bool(pd.isna(v)))


def _hours(frame: pd.DataFrame, name: str, default: float) -> np.ndarray:
    """(N,) hours since the epoch of the times in column ``name``; ``default`` where it is empty or absent."""
    if name not in frame.columns:
        return np.full(len(frame), default)
    col = frame[name]
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        h = col.to_numpy(np.float64, na_value=np.nan)
    else:
        try:
            t = pd.to_datetime(col, utc=True, format="ISO8601")
        except (ValueError, TypeError, OverflowError):
            bad = next(i for i, v in enumerate(col.tolist()) if not _missing(v) and not _is_time(v))
            raise ValueError(
                f"rows[{bad}].{name}: expected an ISO 8601 date-time, a datetime or hours since the "
                f"epoch, got {col.iloc[bad]!r}"
            ) from None
        h = ((t - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(hours=1)).to_numpy(np.float64, na_value=np.nan)
    return np.where(np.isnan(h), default, h)


def _is_time(v: Any) -> bool:
    try:
        pd.to_datetime(pd.Series([v]), utc=True, format="ISO8601")
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _zones(frame: pd.DataFrame, now: np.ndarray) -> np.ndarray:
    """(N,) hours east of UTC of each row's ``timezone`` at its ``now`` (the decision service's time zones)."""
    if "timezone" not in frame.columns:
        return np.zeros(len(frame))
    out = np.zeros(len(frame))
    for i, v in enumerate(frame["timezone"].tolist()):
        if _missing(v):
            continue
        if isinstance(v, str):
            try:
                out[i] = utc_offset(v, float(now[i]))
            except ValueError:
                raise ValueError(f"rows[{i}].timezone: unknown time zone {v[:60]!r}; {ZONE_HINT}") from None
        elif isinstance(v, int | float) and not isinstance(v, bool) and abs(v) <= MAX_TZ_H:
            out[i] = float(v)
        else:
            raise ValueError(
                f"rows[{i}].timezone: expected a time zone name, a UTC offset or hours east of UTC "
                f"within {MAX_TZ_H:g}, got {v!r}"
            )
    return out


def _cells(frame: pd.DataFrame, attributes: tuple) -> list[dict[str, Any]]:
    """Each row's attributes as a request sends them: the non-empty cells of the declared attributes' columns."""
    names = [a.name for a in attributes if a.name in frame.columns]
    columns = {n: frame[n].tolist() for n in names}
    return [{n: columns[n][i] for n in names if not _missing(columns[n][i])} for i in range(len(frame))]


def _column(frame: pd.DataFrame, name: str, default: Any = None) -> list[Any]:
    """Column ``name`` as Python values, empty cells as ``default``; ValueError naming it when absent and
    required (``default`` None)."""
    if name not in frame.columns:
        if default is None:
            raise ValueError(f"{name}: missing column (the policy decides on the simulator's profile fields)")
        return [default] * len(frame)
    return [default if _missing(v) else v for v in frame[name].tolist()]


def _profile(bundle: Bundle, frame: pd.DataFrame, now: np.ndarray, tz: np.ndarray) -> tuple[Profile, History]:
    """A scenario bundle's profile of each row, and a history holding only the purchases and visits given."""
    spec, n = bundle.spec, len(frame)
    segments, stages = {s: j for j, s in enumerate(spec.segments)}, {s: j for j, s in enumerate(LIFECYCLE_STAGES)}
    segment = np.zeros(n, np.int64)
    for i, s in enumerate(_column(frame, "segment")):
        if s not in segments:
            raise ValueError(f"rows[{i}].segment: unknown segment {s!r}; valid: {list(spec.segments)}")
        segment[i] = segments[s]
    tenure = np.asarray(_column(frame, "tenure_days"), np.float64)  # a missing cell: NaN
    if np.isnan(tenure).any():
        raise ValueError(f"rows[{int(np.flatnonzero(np.isnan(tenure))[0])}].tenure_days: missing")
    stage = np.full(n, -1, np.int8)
    for i, s in enumerate(_column(frame, "stage", "")):
        if s != "":
            if s not in stages:
                raise ValueError(f"rows[{i}].stage: unknown stage {s!r}; valid: {list(LIFECYCLE_STAGES)} or empty")
            stage[i] = stages[s]
    consent = np.array([_column(frame, f"consent={c}", True) for c in spec.channels], np.float64).T > 0.5
    profile = Profile(
        segment, tz, consent, stage, np.asarray(_column(frame, "cart_active", False), np.float64) > 0.5, tenure
    )
    history = History.empty(n, len(spec.channels))
    history.n_purchases[:] = np.asarray(_column(frame, "n_purchases", 0.0), np.float32)
    history.last_purchase[:] = _hours(frame, "last_purchase", NEVER)
    history.last_visit[:] = _hours(frame, "last_visit", NEVER)
    return profile, history


class PolicyModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.bundle = load_bundle(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        seed = None if not params or params.get("seed") is None else int(params["seed"])
        return decide_frame(self.bundle, model_input, seed)


mlflow.models.set_model(PolicyModel())
