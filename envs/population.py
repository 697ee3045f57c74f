"""Population sampling: latent traits and the starting state of customers, from uniforms.

Pure functions of ``(scenario arrays, uniforms)``; the caller owns the random streams. The latent
traits are the simulator's ground truth and are never shown to a policy (observations come from
:func:`nba.features.build_features`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from envs.random import categorical, normal
from envs.scenario import PopulationSpec, Scenario, ScenarioArrays
from nba.features import NEVER, History

START_H = 493_536.0  # 2026-04-21 00:00 UTC (a Tuesday) in hours since the Unix epoch


def _row_fields(obj) -> list[str]:
    return [f.name for f in fields(obj) if isinstance(getattr(obj, f.name), np.ndarray)]


def take_rows(obj, rows: np.ndarray):
    """A copy of a dataclass of per-customer arrays restricted to ``rows``."""
    kw = {f.name: getattr(obj, f.name) for f in fields(obj)}
    kw.update({name: kw[name][rows] for name in _row_fields(obj)})
    return type(obj)(**kw)


def assign_rows(dst, rows: np.ndarray, src) -> None:
    """Overwrite ``rows`` of ``dst`` with the rows of ``src`` (same dataclass)."""
    for name in _row_fields(dst):
        getattr(dst, name)[rows] = getattr(src, name)


def empty_like_rows(obj, n: int):
    """An uninitialised copy of a dataclass of per-customer arrays with ``n`` rows."""
    kw = {f.name: getattr(obj, f.name) for f in fields(obj)}
    kw.update({name: np.empty((n, *kw[name].shape[1:]), kw[name].dtype) for name in _row_fields(obj)})
    return type(obj)(**kw)


def nbytes(obj) -> int:
    return sum(getattr(obj, name).nbytes for name in _row_fields(obj))


@dataclass
class Traits:
    """Latent traits, one row per customer."""

    segment: np.ndarray  # (N,) int16
    tz_offset: np.ndarray  # (N,) float32 hours
    omni: np.ndarray  # (N,) float32, standard normal omnichannel propensity
    channel_affinity: np.ndarray  # (N, C) float32
    content_affinity: np.ndarray  # (N, K) float32
    peak_hour: np.ndarray  # (N, C) float32 local hour of peak engagement
    consent: np.ndarray  # (N, C) bool
    basket: np.ndarray  # (N,) float32 mean revenue of a purchase
    organic_rate: np.ndarray  # (N,) float32 purchases a day without contact (hazard)
    visit_rate: np.ndarray  # (N,) float32 visits a day (hazard)
    sensitivity: np.ndarray  # (N,) float32 fatigue sensitivity


def trait_width(sc: Scenario) -> int:
    """Uniforms a customer's traits consume."""
    return 5 + 3 * len(sc.channels) + len(sc.contents)


def sample_traits(sc: Scenario, sa: ScenarioArrays, u: np.ndarray) -> Traits:
    """Traits for ``len(u)`` customers from uniforms ``u`` of shape (N, trait_width(sc))."""
    pop: PopulationSpec = sc.population
    c, k = len(sc.channels), len(sc.contents)
    seg = categorical(u[:, 0], sa.segment_cdf)
    tz = sa.tz_offset[categorical(u[:, 1], sa.tz_cdf)]
    omni = normal(u[:, 2])
    basket_z = normal(u[:, 3])
    sens_z = normal(u[:, 4])
    j = 5
    ch_z = normal(u[:, j : j + c])
    peak_z = normal(u[:, j + c : j + 2 * c])
    consent_u = u[:, j + 2 * c : j + 3 * c]
    ct_z = normal(u[:, j + 3 * c : j + 3 * c + k])
    s2 = pop.affinity_sigma**2 / 2
    channel_aff = sa.seg_channel_affinity[seg] * np.exp(pop.affinity_sigma * ch_z - s2)
    content_aff = sa.seg_content_affinity[seg] * np.exp(pop.affinity_sigma * ct_z - s2)
    peak = np.mod(sa.peak_hour[None, :] + sa.peak_shift_h[seg, None] + pop.peak_sigma_h * peak_z, 24.0)
    consent_p = 1.0 / (1.0 + np.exp(-(sa.consent_logit[None, :] + pop.omni_consent * omni[:, None])))
    b2 = pop.basket_sigma**2 / 2
    basket = sa.basket[seg] * np.exp(pop.basket_sigma * basket_z - b2 + pop.omni_basket * omni - pop.omni_basket**2 / 2)
    organic = -np.log1p(-sa.organic_per_day[seg]) * np.exp(pop.omni_organic * omni - pop.omni_organic**2 / 2)
    visits = sa.visits_per_day[seg] * np.exp(pop.omni_visits * omni - pop.omni_visits**2 / 2)
    f2 = sc.fatigue.sensitivity_sigma**2 / 2
    sens = np.exp(sc.fatigue.sensitivity_sigma * sens_z - f2)
    f32 = np.float32
    return Traits(
        segment=seg.astype(np.int16),
        tz_offset=tz.astype(f32),
        omni=omni.astype(f32),
        channel_affinity=channel_aff.astype(f32),
        content_affinity=content_aff.astype(f32),
        peak_hour=peak.astype(f32),
        consent=consent_u < consent_p,
        basket=basket.astype(f32),
        organic_rate=organic.astype(f32),
        visit_rate=visits.astype(f32),
        sensitivity=sens.astype(f32),
    )


@dataclass
class State:
    """Dynamic state the simulator tracks beside the observable :class:`nba.features.History`."""

    now: np.ndarray  # (N,) float64 hours since epoch: the current decision moment
    signup: np.ndarray  # (N,) float64
    cart_until: np.ndarray  # (N,) float64: an abandoned cart is open until then
    opted_out: np.ndarray  # (N, C) bool
    churned: np.ndarray  # (N,) bool
    fatigue: np.ndarray  # (N, C) float32 channel fatigue at history.last_contact
    fatigue_total: np.ndarray  # (N,) float32 overall fatigue at last_any_contact
    last_any_contact: np.ndarray  # (N,) float64
    engagement: np.ndarray  # (N, C) float32 engagement stock at history.last_engaged


STATE_WIDTH = 4  # uniforms the starting state consumes


def initial_state(sc: Scenario, traits: Traits, u: np.ndarray, now: np.ndarray) -> tuple[State, History]:
    """Starting state at ``now`` (N,) from uniforms ``u`` (N, STATE_WIDTH)."""
    pop, lc = sc.population, sc.lifecycle
    n, c = u.shape[0], len(sc.channels)
    is_new = u[:, 0] < pop.new_share
    tenure_d = np.where(is_new, u[:, 1] * lc.welcome_days, lc.new_days - pop.tenure_mean_d * np.log(u[:, 1]))
    gap_d = -pop.purchase_gap_mean_d * np.log(u[:, 2])
    bought = ~is_new & (gap_d < tenure_d)
    cart_open = u[:, 3] < 0.05
    history = History.empty(n, c)
    history.last_purchase[bought] = now[bought] - 24.0 * gap_d[bought]
    history.n_purchases[bought] = 1.0
    state = State(
        now=now.astype(np.float64),
        signup=now - 24.0 * tenure_d,
        cart_until=np.where(cart_open, now + 24.0 * lc.cart_days * u[:, 3] / 0.05, NEVER),
        opted_out=np.zeros((n, c), bool),
        churned=np.zeros(n, bool),
        fatigue=np.zeros((n, c), np.float32),
        fatigue_total=np.zeros(n, np.float32),
        last_any_contact=np.full(n, NEVER),
        engagement=np.zeros((n, c), np.float32),
    )
    return state, history


def population_width(sc: Scenario) -> int:
    return trait_width(sc) + STATE_WIDTH


def sample_population(sc: Scenario, sa: ScenarioArrays, u: np.ndarray, now: np.ndarray):
    """Traits and starting state from uniforms (N, population_width(sc))."""
    tw = trait_width(sc)
    traits = sample_traits(sc, sa, u[:, :tw])
    state, history = initial_state(sc, traits, u[:, tw:], now)
    return traits, state, history
