"""The action space: no contact, or (channel, content, send slot).

Action index 0 is always *no contact*, the control against which uplift is measured. Every other
index ``a`` decodes as ``a - 1 = (channel * n_contents + content) * n_slots + slot``.

A send slot is either ``None`` ("now": the moment of the decision) or a local hour of the day; a slot
hour means the next time that hour comes round in the customer's own time zone (within 24 h).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CHANNELS: tuple[str, ...] = ("email", "sms", "push", "in_app", "web_push", "direct_mail", "social_ad")
CONTENTS: tuple[str, ...] = (
    "welcome",
    "promo",
    "product_reco",
    "cart_reminder",
    "educational",
    "loyalty",
    "winback",
    "cross_sell",
)
NO_CONTACT = 0


@dataclass(frozen=True)
class Action:
    """One decoded action. ``channel is None`` means no contact."""

    channel: str | None
    content: str | None = None
    send_hour: int | None = None  # local hour, None = now

    @property
    def is_contact(self) -> bool:
        return self.channel is not None


@dataclass(frozen=True)
class ActionSpace:
    """Channels x contents x send slots, plus no contact at index 0."""

    channels: tuple[str, ...] = CHANNELS
    contents: tuple[str, ...] = CONTENTS
    send_slots: tuple[int | None, ...] = (None, 9, 13, 19)
    _arrays: dict = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, values in (("channels", self.channels), ("contents", self.contents)):
            if len(values) == 0:
                raise ValueError(f"ActionSpace.{name}: must not be empty")
            if len(set(values)) != len(values):
                raise ValueError(f"ActionSpace.{name}: duplicate entries in {values!r}")
        if len(self.send_slots) == 0:
            raise ValueError("ActionSpace.send_slots: must not be empty")
        for h in self.send_slots:
            if h is not None and not (isinstance(h, int) and 0 <= h < 24):
                raise ValueError(f"ActionSpace.send_slots: {h!r} is not None or an hour in 0..23")
        if len(set(self.send_slots)) != len(self.send_slots):
            raise ValueError(f"ActionSpace.send_slots: duplicate entries in {self.send_slots!r}")
        a = np.arange(self.n_actions - 1)
        slot = a % self.n_slots
        content = (a // self.n_slots) % self.n_contents
        channel = a // (self.n_slots * self.n_contents)
        pad = np.array([-1])
        arrays = {
            "channel": np.concatenate([pad, channel]).astype(np.int16),
            "content": np.concatenate([pad, content]).astype(np.int16),
            "slot": np.concatenate([pad, slot]).astype(np.int16),
        }
        for v in arrays.values():
            v.setflags(write=False)
        object.__setattr__(self, "_arrays", arrays)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def n_contents(self) -> int:
        return len(self.contents)

    @property
    def n_slots(self) -> int:
        return len(self.send_slots)

    @property
    def n_actions(self) -> int:
        return 1 + self.n_channels * self.n_contents * self.n_slots

    @property
    def channel_of(self) -> np.ndarray:
        """(n_actions,) channel index of each action, -1 for no contact."""
        return self._arrays["channel"]

    @property
    def content_of(self) -> np.ndarray:
        """(n_actions,) content index of each action, -1 for no contact."""
        return self._arrays["content"]

    @property
    def slot_of(self) -> np.ndarray:
        """(n_actions,) send-slot index of each action, -1 for no contact."""
        return self._arrays["slot"]

    def index(self, channel: str, content: str, send_hour: int | None = None) -> int:
        """Index of (channel, content, send_hour); raises ValueError naming the bad field."""
        try:
            c = self.channels.index(channel)
        except ValueError:
            raise ValueError(f"channel: unknown channel {channel!r}; valid: {list(self.channels)}") from None
        try:
            k = self.contents.index(content)
        except ValueError:
            raise ValueError(f"content: unknown content {content!r}; valid: {list(self.contents)}") from None
        try:
            s = self.send_slots.index(send_hour)
        except ValueError:
            raise ValueError(
                f"send_hour: {send_hour!r} is not a send slot; valid: {list(self.send_slots)}"
            ) from None
        return 1 + (c * self.n_contents + k) * self.n_slots + s

    def decode(self, action: int) -> Action:
        self.check(np.asarray([action]))
        if action == NO_CONTACT:
            return Action(None)
        return Action(
            self.channels[self.channel_of[action]],
            self.contents[self.content_of[action]],
            self.send_slots[self.slot_of[action]],
        )

    def check(self, actions: np.ndarray, name: str = "action") -> np.ndarray:
        """Validate an array of action indices; raise (never clip) when one is out of range."""
        actions = np.asarray(actions)
        if actions.dtype.kind not in "iu":
            raise ValueError(f"{name}: action indices must be integers, got dtype {actions.dtype}")
        if actions.size and (actions.min() < 0 or actions.max() >= self.n_actions):
            bad = actions[(actions < 0) | (actions >= self.n_actions)].ravel()[0]
            raise ValueError(f"{name}: index {int(bad)} is outside the action space [0, {self.n_actions})")
        return actions.astype(np.int64, copy=False)

    def names(self) -> list[str]:
        out = ["no_contact"]
        for a in range(1, self.n_actions):
            act = self.decode(a)
            slot = "now" if act.send_hour is None else f"{act.send_hour:02d}h"
            out.append(f"{act.channel}/{act.content}/{slot}")
        return out

    def features(self) -> np.ndarray:
        """(n_actions, d) action features: one-hot channel, content and slot, plus a contact flag.

        Row 0 (no contact) is all zeros, so a linear model's score for it is its intercept alone.
        """
        c, k, s = self.n_channels, self.n_contents, self.n_slots
        out = np.zeros((self.n_actions, 1 + c + k + s), dtype=np.float32)
        rows = np.arange(1, self.n_actions)
        out[rows, 0] = 1.0
        out[rows, 1 + self.channel_of[1:]] = 1.0
        out[rows, 1 + c + self.content_of[1:]] = 1.0
        out[rows, 1 + c + k + self.slot_of[1:]] = 1.0
        return out
