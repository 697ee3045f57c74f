"""The calibration figures: every curve and share the calibration report sets beside its targets.

:mod:`envs.calibration` states the targets and simulates the customers they are checked on; this
module computes what is drawn beside them, from plain arrays (a
:class:`~envs.calibration.JourneyStats`, funnel probabilities, peak hours, delays), so that the same
figures can later be computed from a brand's own decision logs:

* :func:`funnel_rates` — the response funnel per channel (:class:`Funnel`);
* :func:`hour_curves` — hour-of-day engagement per segment and channel;
* :func:`delay_quantiles`, :func:`empirical_cdf` — delivery-to-seen delays;
* :func:`revenue_concentration`, :func:`top_share` — revenue of the most omnichannel customers;
* :func:`revenue_per_buyer_by_channels` — spend by number of channels used;
* :func:`rolling_mean` — daily revenue smoothed.

:func:`start_state_curves` is the one place here that reaches into the simulator: the funnel and the
hour curves of a scenario's customers at their start state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from envs import response
from envs.scenario import Scenario
from envs.simulation import Simulation

FUNNEL_CONTENT = "promo"  # the content whose funnel is shown per channel
TOP_SHARE = 0.07  # "the most omnichannel 7% of customers"
SMS_MINUTES = 3.0  # "90% of SMS are read within 3 minutes"
MAX_CHANNELS_BUCKET = 4  # revenue per buyer by channels used: 0, 1, 2, 3, 4+


@dataclass(frozen=True)
class Funnel:
    """Funnel rates per channel, each (C,): the probability that one contact reaches each stage.

    Averaged over the customers reachable on the channel; ``reach`` is the share of customers who are.
    """

    STAGES: ClassVar[tuple[str, ...]] = ("delivered", "seen", "clicked", "converted")

    channels: tuple[str, ...]
    reach: np.ndarray
    delivered: np.ndarray
    seen: np.ndarray
    clicked: np.ndarray
    converted: np.ndarray

    def stage(self, name: str) -> np.ndarray:
        return getattr(self, name)


def funnel_rates(
    channels: Sequence[str],
    reachable: np.ndarray,
    p_deliver: np.ndarray,
    p_open: np.ndarray,
    p_click: np.ndarray,
    p_convert: np.ndarray,
) -> Funnel:
    """Mean funnel rates per channel from conditional stage probabilities.

    Args:
        channels: the C channel names.
        reachable: (N, C) bool, customer ``n`` can be contacted on channel ``c``.
        p_deliver, p_open, p_click, p_convert: (N, C) probabilities of one contact on channel ``c``:
            delivered, seen given delivered, clicked given seen, converted given clicked.

    Returns:
        The funnel; a channel no one can be reached on has NaN rates.
    """
    reachable = np.asarray(reachable, bool)
    stages = np.cumprod(np.stack([p_deliver, p_open, p_click, p_convert]).astype(np.float64), axis=0)
    count = reachable.sum(axis=0)
    total = np.where(reachable[None], stages, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = total / count
    return Funnel(tuple(channels), reachable.mean(axis=0), *means)


def hour_curves(
    peak_hour: np.ndarray, segment: np.ndarray, kappa: np.ndarray, hour_norm: np.ndarray, n_segments: int
) -> np.ndarray:
    """(S, C, 24) mean hour-of-day multiplier of each segment and channel at local hours 0..23.

    A customer's multiplier on channel ``c`` at local hour ``h`` is
    ``hour_norm[c] * exp(kappa[c] * cos(2 pi (h - peak_hour[n, c]) / 24))``, which averages 1 over
    the day (the response funnel's ``hour_nc(h)``). ``peak_hour`` is (N, C), ``segment`` (N,).
    A segment with no customer gets NaN.
    """
    h = np.arange(24.0)
    kappa = np.asarray(kappa, np.float64)
    out = np.full((n_segments, kappa.size, 24), np.nan)
    for s in range(n_segments):
        p = np.asarray(peak_hour, np.float64)[segment == s]
        if p.shape[0] == 0:
            continue
        mult = np.exp(kappa[None, :, None] * np.cos(response.TWO_PI_24 * (h[None, None, :] - p[:, :, None])))
        out[s] = np.asarray(hour_norm)[:, None] * mult.mean(axis=0)
    return out


def start_state_curves(
    sc: Scenario, *, n: int, seed: int, content: str = FUNNEL_CONTENT
) -> tuple[Funnel, np.ndarray, str]:
    """The funnel and hour curves of ``n`` customers of ``sc`` (seed ``seed``) at their start state.

    The funnel is the exact one of a ``content`` message sent now on each channel, at a random moment
    of the day, with no fatigue yet (:func:`envs.response.contact_terms`); ``content`` falls back to
    the scenario's first content when it has none of that name. Returns ``(funnel, hours, content)``,
    ``hours`` from :func:`hour_curves`.
    """
    sim = Simulation(sc, seed, n, purpose="calibration-funnel", decision_hour=None, penalties=True)
    space, sa = sim.space, sim.arrays
    content = content if content in space.contents else space.contents[0]
    actions = np.array([[space.index(c, content, None) for c in space.channels]])
    t = response.contact_terms(sc, sa, space, sim.traits, sim.moment, actions)
    funnel = funnel_rates(space.channels, sim.moment.reachable, t.p_deliver, t.p_open, t.p_click, t.p_convert)
    hours = hour_curves(sim.traits.peak_hour, sim.traits.segment, sa.hour_kappa, sa.hour_norm, len(sc.segments))
    return funnel, hours, content


def delay_quantiles(sc: Scenario, channel: str, k: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """The scenario's delivery-to-seen delay distribution on ``channel``: ``(minutes, cdf)``.

    Exact quantiles at ``k`` evenly spaced probabilities (the inverse CDF of
    :func:`envs.response.delay_minutes`), so the CDF is drawn without sampling noise.
    """
    p = (np.arange(k) + 0.5) / k
    ch = np.full(k, list(sc.channels).index(channel))
    return np.sort(response.delay_minutes(sc.arrays(), ch, p)), p


def empirical_cdf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted finite values of ``x`` and their empirical CDF."""
    x = np.asarray(x, np.float64)
    x = np.sort(x[np.isfinite(x)])
    return x, np.arange(1, x.size + 1) / max(x.size, 1)


def revenue_concentration(revenue: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lorenz-style curve: cumulative share of revenue of the first customers in ``order``.

    Returns ``(customer_share, revenue_share)``, both of length N + 1, from (0, 0) to (1, 1).
    """
    r = np.asarray(revenue, np.float64)[order]
    cum = np.concatenate([[0.0], np.cumsum(r)])
    x = np.arange(r.size + 1) / max(r.size, 1)
    return x, (cum / cum[-1] if cum[-1] > 0 else np.zeros_like(cum))


def top_share(revenue: np.ndarray, order: np.ndarray, share: float = TOP_SHARE) -> float:
    """Share of revenue of the first ``share`` of customers in ``order`` (NaN without revenue)."""
    revenue = np.asarray(revenue, np.float64)
    top = order[: max(1, int(round(share * len(order))))]
    total = revenue.sum()
    return float(revenue[top].sum() / total) if total > 0 else float("nan")


def revenue_per_buyer_by_channels(
    revenue: np.ndarray, purchases: np.ndarray, channels_used: np.ndarray, max_channels: int = MAX_CHANNELS_BUCKET
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Mean revenue per buyer by channels used (0, 1, ..., ``max_channels``+).

    Returns ``(labels, mean revenue per buyer, number of buyers)``; an empty bucket has NaN revenue.
    """
    buyers = np.asarray(purchases) > 0
    bucket = np.minimum(np.asarray(channels_used), max_channels).astype(np.int64)
    labels = [str(i) for i in range(max_channels)] + [f"{max_channels}+"]
    mean = np.full(max_channels + 1, np.nan)
    count = np.zeros(max_channels + 1, np.int64)
    for i in range(max_channels + 1):
        sel = buyers & (bucket == i)
        count[i] = sel.sum()
        if count[i]:
            mean[i] = np.asarray(revenue, np.float64)[sel].mean()
    return labels, mean, count


def rolling_mean(x: np.ndarray, window: int = 7) -> np.ndarray:
    """Trailing mean over ``window`` values (shorter at the start)."""
    x = np.asarray(x, np.float64)
    cum = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(1, x.size + 1)
    lo = np.maximum(i - window, 0)
    return (cum[i] - cum[lo]) / (i - lo)
