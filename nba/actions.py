"""The action space: no contact, or (channel, content, send slot); or plain, K named actions.

**Structured** (``ActionSpace(channels, contents, send_slots)``, what the simulator, the service and
deployments use): action index 0 is always *no contact*, the control against which uplift is
measured. Every other index ``a`` decodes as ``a - 1 = (channel * n_contents + content) * n_slots + slot``.
A send slot is either ``None`` ("now": the moment of the decision) or a local hour of the day; a slot
hour means the next time that hour comes round in the customer's own time zone (within 24 h).

**Plain** (:meth:`ActionSpace.plain`): a K-armed contextual bandit's actions, indexed ``0 .. K-1`` and
named ``"0" .. "K-1"`` or by the caller, with no no-contact action unless asked for
(``no_contact=True`` makes action 0 no contact, as in the structured space)::

    from nba.actions import ActionSpace
    from nba.policies import act, create

    policy = create("linucb", 10, dim=20)  # or create("linucb", ActionSpace.plain(10), dim=20)
    d = act(policy, X, mask, rng)  # X (N, 20) contexts, mask (N, 10) bool, rng a numpy Generator
    policy.update(X, d.actions, rewards, d.propensities)

A plain space is stored in the same three fields, so it saves and loads through the same dictionary
as a structured one (:func:`nba.serialization.space_to_dict`): ``channels`` holds the action names,
``contents`` and ``send_slots`` are empty, and the reserved name ``"no_contact"``, allowed first only,
marks action 0 as no contact. For a plain space:

* :meth:`~ActionSpace.names` is the names, :meth:`~ActionSpace.index` takes a name, and
  :meth:`~ActionSpace.decode` gives ``Action(name)`` (the name in ``channel``; ``Action(None)`` for
  no contact);
* :meth:`~ActionSpace.features` is a one-hot of each action (after a contact flag, where there is
  no contact; its row is all zeros);
* ``n_channels``, ``n_contents`` and ``n_slots`` are 0, and ``channel_of``, ``content_of`` and
  ``slot_of`` raise ``ValueError`` naming ``space``: there are no channels, contents or send slots,
  so contact rules (:mod:`nba.eligibility`) and rule-based policies do not apply; the caller's
  mask is the whole eligibility.

:attr:`~ActionSpace.has_no_contact` and :attr:`~ActionSpace.is_contact` say, for either kind, where
no contact is.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
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
NO_CONTACT_NAME = "no_contact"  # names()[0] where action 0 is no contact; reserved in plain spaces


@dataclass(frozen=True)
class Action:
    """One decoded action. ``channel is None`` means no contact; in a plain space ``channel`` is the
    action's name and ``content`` and ``send_hour`` are None."""

    channel: str | None
    content: str | None = None
    send_hour: int | None = None  # local hour, None = now

    @property
    def is_contact(self) -> bool:
        """Whether the action contacts the customer (any action but no contact)."""
        return self.channel is not None


@dataclass(frozen=True)
class ActionSpace:
    """Channels x contents x send slots, plus no contact at index 0; or plain (:meth:`plain`)."""

    channels: tuple[str, ...] = CHANNELS
    contents: tuple[str, ...] = CONTENTS
    send_slots: tuple[int | None, ...] = (None, 9, 13, 19)
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def plain(cls, k_or_names: int | Iterable[str], no_contact: bool = False) -> ActionSpace:
        """A plain space: ``k`` actions named ``"0" .. "k-1"``, or one action per name given.

        ``no_contact=True``: action 0 is no contact (named ``"no_contact"``) and must be eligible in
        every decision, as in the structured space; with ``k``, the other ``k - 1`` actions are named
        ``"1" .. "k-1"`` (every action keeps its index as its name), with names, they follow it
        (``len(names) + 1`` actions).
        """
        if isinstance(k_or_names, numbers.Integral) and not isinstance(k_or_names, bool):
            k = int(k_or_names)
            if k < 1:
                raise ValueError(f"ActionSpace.plain: needs at least 1 action, got {k}")
            names = tuple(str(a) for a in range(1 if no_contact else 0, k))
        elif isinstance(k_or_names, str | bytes) or not isinstance(k_or_names, Iterable):
            raise ValueError(
                f"ActionSpace.plain: expected a number of actions or a sequence of action names, got {k_or_names!r}"
            )
        else:
            names = tuple(k_or_names)
            if not names:
                raise ValueError("ActionSpace.plain: needs at least 1 action name")
            if NO_CONTACT_NAME in names:
                raise ValueError(
                    f"ActionSpace.plain: {NO_CONTACT_NAME!r} is reserved for the no-contact action; "
                    "ask for it with no_contact=True"
                )
        return cls((NO_CONTACT_NAME, *names) if no_contact else names, (), ())

    def __post_init__(self) -> None:
        if self.is_plain:
            self._check_plain()
            return
        for name, values in (("channels", self.channels), ("contents", self.contents)):
            if len(values) == 0:
                hint = " (a plain space of named actions: ActionSpace.plain)" if name == "contents" else ""
                raise ValueError(f"ActionSpace.{name}: must not be empty{hint}")
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
        contact = np.ones(self.n_actions, bool)
        contact[NO_CONTACT] = False
        arrays["contact"] = contact
        for v in arrays.values():
            v.setflags(write=False)
        object.__setattr__(self, "_arrays", arrays)

    def _check_plain(self) -> None:
        names = self.channels
        if len(names) == 0:
            raise ValueError("ActionSpace.channels: a plain action space needs at least 1 action name")
        for n in names:
            if not (isinstance(n, str) and n):
                raise ValueError(f"ActionSpace.channels: action names must be non-empty strings, got {n!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"ActionSpace.channels: duplicate action names in {names!r}")
        if NO_CONTACT_NAME in names[1:]:
            raise ValueError(f"ActionSpace.channels: {NO_CONTACT_NAME!r} (the no-contact action) may only be action 0")
        contact = np.ones(len(names), bool)
        contact[NO_CONTACT] = names[0] != NO_CONTACT_NAME
        contact.setflags(write=False)
        object.__setattr__(self, "_arrays", {"contact": contact})

    # ------------------------------------------------------------------ kind
    @property
    def is_plain(self) -> bool:
        """A plain space of named actions (:meth:`plain`): no channels, contents or send slots."""
        return len(self.contents) == 0 and len(self.send_slots) == 0

    @property
    def has_no_contact(self) -> bool:
        """Action 0 is no contact (always in a structured space; in a plain one, if asked for)."""
        return not self._arrays["contact"][NO_CONTACT]

    @property
    def is_contact(self) -> np.ndarray:
        """(n_actions,) bool, read-only: False on the no-contact action, True on every other."""
        return self._arrays["contact"]

    # ------------------------------------------------------------------ layout
    @property
    def n_channels(self) -> int:
        """The number of channels (0 in a plain space)."""
        return 0 if self.is_plain else len(self.channels)

    @property
    def n_contents(self) -> int:
        """The number of contents (0 in a plain space)."""
        return len(self.contents)

    @property
    def n_slots(self) -> int:
        """The number of send slots (0 in a plain space)."""
        return len(self.send_slots)

    @property
    def n_actions(self) -> int:
        """The number of actions: the named ones in a plain space, else 1 + channels x contents x slots."""
        if self.is_plain:
            return len(self.channels)
        return 1 + self.n_channels * self.n_contents * self.n_slots

    def _structured(self, key: str, what: str) -> np.ndarray:
        if self.is_plain:
            raise ValueError(
                f"space: a plain action space has no channels, contents or send slots ({what}); "
                "its actions are only named"
            )
        return self._arrays[key]

    @property
    def channel_of(self) -> np.ndarray:
        """(n_actions,) channel index of each action, -1 for no contact (structured spaces only)."""
        return self._structured("channel", "channel_of")

    @property
    def content_of(self) -> np.ndarray:
        """(n_actions,) content index of each action, -1 for no contact (structured spaces only)."""
        return self._structured("content", "content_of")

    @property
    def slot_of(self) -> np.ndarray:
        """(n_actions,) send-slot index of each action, -1 for no contact (structured spaces only)."""
        return self._structured("slot", "slot_of")

    def index(self, channel: str, content: str | None = None, send_hour: int | None = None) -> int:
        """Index of (channel, content, send_hour), or of a plain space's action by its name alone;
        raises ValueError naming the bad field."""
        if self.is_plain:
            if content is not None or send_hour is not None:
                raise ValueError(
                    "content: a plain action space has no contents or send slots; give the action's name alone"
                )
            try:
                return self.channels.index(channel)
            except ValueError:
                raise ValueError(f"action: unknown action {channel!r}; valid: {list(self.channels)}") from None
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
            raise ValueError(f"send_hour: {send_hour!r} is not a send slot; valid: {list(self.send_slots)}") from None
        return 1 + (c * self.n_contents + k) * self.n_slots + s

    def decode(self, action: int) -> Action:
        """The :class:`Action` at index ``action`` (the inverse of :meth:`index`); raises when out of range."""
        self.check(np.asarray([action]))
        if not self.is_contact[action]:
            return Action(None)
        if self.is_plain:
            return Action(self.channels[action])
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
        """Every action's name: ``"no_contact"`` and ``"channel/content/slot"``, or a plain space's names."""
        if self.is_plain:
            return list(self.channels)
        out = [NO_CONTACT_NAME]
        for a in range(1, self.n_actions):
            act = self.decode(a)
            slot = "now" if act.send_hour is None else f"{act.send_hour:02d}h"
            out.append(f"{act.channel}/{act.content}/{slot}")
        return out

    def features(self) -> np.ndarray:
        """(n_actions, d) action features: one-hot channel, content and slot, plus a contact flag.

        Row 0 (no contact) is all zeros, so a linear model's score for it is its intercept alone.
        A plain space: a one-hot of each action, ``(K, K)``; with no contact, a contact flag and a
        one-hot of the ``K - 1`` other actions, row 0 all zeros.
        """
        if self.is_plain:
            k = self.n_actions
            if not self.has_no_contact:
                return np.eye(k, dtype=np.float32)
            out = np.zeros((k, k), dtype=np.float32)
            out[1:, 0] = 1.0
            out[np.arange(1, k), np.arange(1, k)] = 1.0
            return out
        c, k, s = self.n_channels, self.n_contents, self.n_slots
        out = np.zeros((self.n_actions, 1 + c + k + s), dtype=np.float32)
        rows = np.arange(1, self.n_actions)
        out[rows, 0] = 1.0
        out[rows, 1 + self.channel_of[1:]] = 1.0
        out[rows, 1 + c + self.content_of[1:]] = 1.0
        out[rows, 1 + c + k + self.slot_of[1:]] = 1.0
        return out
