"""Rewards: how a decision's outcome events become its reward, chosen at read time.

The log keeps raw events; a :class:`RewardRule` says which events within which attribution window
count, and :func:`join_rewards` applies it to a chunk of decisions in NumPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from nba.log.records import EVENTS


@dataclass(frozen=True)
class RewardRule:
    """How outcomes become a decision's reward.

    reward = sum of ``value`` over the decision's outcome events that happened within ``window_h``
    hours after ``send_at`` (events listed in ``events``) + ``opt_out_value`` if it opted out within
    the window − the decision's ``cost`` (if ``subtract_cost``); ``default`` (minus the cost) when
    no counted event arrived in the window.
    """

    window_h: float = 72.0
    events: tuple[str, ...] = ("converted",)
    opt_out_value: float = 0.0
    default: float = 0.0
    subtract_cost: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The rule as plain JSON: every field, an unbounded window (``window_h`` infinite) as ``None``."""
        return {
            "window_h": None if math.isinf(self.window_h) else float(self.window_h),
            "events": list(self.events),
            "opt_out_value": float(self.opt_out_value),
            "default": float(self.default),
            "subtract_cost": bool(self.subtract_cost),
        }

    @classmethod
    def from_dict(cls, data: Any, name: str = "reward_rule") -> RewardRule:
        """The rule :meth:`to_dict` wrote (a field left out keeps its default); ValueError naming ``name``
        and the field for anything else."""
        valid = [f.name for f in fields(cls)]
        if not isinstance(data, dict):
            raise ValueError(f"{name}: expected an object of {valid}, got {type(data).__name__}")
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"{name}: unknown fields {unknown}; valid: {valid}")
        kw: dict[str, Any] = {}
        for key in ("window_h", "opt_out_value", "default"):
            if key not in data:
                continue
            v = data[key]
            if key == "window_h" and v is None:
                kw[key] = math.inf
            elif isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(
                    f"{name}.{key}: expected a finite number"
                    f"{' (or null: no end)' if key == 'window_h' else ''}, got {v!r}"
                )
            else:
                kw[key] = float(v)
        if "events" in data:
            events = data["events"]
            if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
                raise ValueError(f"{name}.events: expected a list of event names, got {events!r}")
            kw["events"] = tuple(events)
        if "subtract_cost" in data:
            if not isinstance(data["subtract_cost"], bool):
                raise ValueError(f"{name}.subtract_cost: expected true or false, got {data['subtract_cost']!r}")
            kw["subtract_cost"] = data["subtract_cost"]
        rule = cls(**kw)
        try:
            check_rule(rule)
        except ValueError as e:
            raise ValueError(f"{name}{str(e).removeprefix('rule')}") from None
        return rule


DEFAULT_RULE = RewardRule()


def join_rewards(
    rule: RewardRule,
    send_at: np.ndarray,
    cost: np.ndarray,
    row: np.ndarray,
    event: np.ndarray,
    time: np.ndarray,
    value: np.ndarray,
) -> np.ndarray:
    """(N,) rewards of N decisions from their outcome events (``row`` indexes the decision of each).

    ``sum(value of counted events in [send_at, send_at + window_h])`` or ``rule.default`` when none
    arrived, ``+ rule.opt_out_value`` if an ``opted_out`` arrived in the window, ``- cost`` if
    ``rule.subtract_cost``.
    """
    n = len(send_at)
    start = send_at[row]
    inside = (time >= start) & (time <= start + rule.window_h)
    counted = inside & np.isin(event, rule.events)
    total = np.bincount(row[counted], weights=value[counted], minlength=n)
    hits = np.bincount(row[counted], minlength=n)
    reward = np.where(hits > 0, total, rule.default)
    if rule.opt_out_value:
        opted = np.zeros(n, bool)
        opted[row[inside & (event == "opted_out")]] = True
        reward = reward + np.where(opted, rule.opt_out_value, 0.0)
    if rule.subtract_cost:
        reward = reward - cost
    return reward


def check_rule(rule: RewardRule) -> None:
    """Raise unless ``rule`` is a :class:`RewardRule` with a window of at least 0 hours and known events."""
    if not isinstance(rule, RewardRule):
        raise TypeError(f"rule: expected RewardRule, got {type(rule).__name__}")
    if not (rule.window_h >= 0):
        raise ValueError(f"rule: window_h must be >= 0, got {rule.window_h!r}")
    unknown = [e for e in rule.events if e not in EVENTS]
    if unknown:
        raise ValueError(f"rule: unknown events {unknown}; valid: {list(EVENTS)}")
