"""A catalogue: the features of an action space's actions, built from what its offers declare.

A linear policy on index one-hots (:meth:`nba.actions.ActionSpace.features`) has no weight for an offer
added to the catalogue and cannot move to another catalogue. Given a :class:`Catalogue`, LinUCB and
LinTS (:mod:`nba.policies.linear`) score actions by their **features** instead: an offer they have never
sent is scored, and explored, from what they learnt about offers like it, and a retired one is simply not
in the space any more.

A catalogue's :attr:`~Catalogue.matrix` (one row per action) is, for a structured space (no contact,
channels x offers x send slots)::

    [contact flag, channel one-hot, send-slot one-hot, encoded offer features]

with the no-contact row all zeros; for a plain K-action space (:meth:`Catalogue.plain`), the encoded
features of each action, after a contact flag where action 0 is no contact. Channels and send slots
keep their one-hots: they rarely change, and a catalogue whose channels or send slots differ from the
encoding's is refused (``ValueError`` naming ``channels`` or ``send_slots``).

The :class:`Encoding` turns declared features into numbers: a string feature is a **category**, one-hot
over the values seen when the encoding was made (sorted); a number is divided by a **scale**, the largest
absolute value seen then (1 if that is 0). It is fixed when a catalogue is first built and kept by a policy
trained on it, so that a new catalogue is encoded the same way (:meth:`Catalogue.with_encoding`): the
feature dimension does not change, a category value not seen then encodes as all zeros, a number keeps
the old scale, and a feature the encoding does not know is not read. An offer that lacks a feature other
offers have counts as 0 (number) or no category. Encodings and catalogues save as plain JSON-able data
(:meth:`Encoding.to_dict`, :meth:`Catalogue.to_dict`)::

    from nba.catalogue import Catalogue
    from nba.policies import create

    catalogue = Catalogue.of_deployment(deployment)
    policy = create("linucb", catalogue.space, dim=d, catalogue=catalogue)
    ...  # learn
    policy = policy.with_catalogue(Catalogue.of_deployment(new_deployment))  # keeps what it learnt
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from nba.actions import NO_CONTACT_NAME, ActionSpace

if TYPE_CHECKING:
    from nba.deployment import Deployment

FORMAT = 1  # Encoding.to_dict "format"
LAYOUTS = ("structured", "plain")
KINDS = ("category", "number")

Value = float | str


@dataclass(frozen=True)
class Feature:
    """How one declared feature is encoded: a category's values (one column each), or a number's scale."""

    name: str
    kind: str  # "category" or "number"
    values: tuple[str, ...] = ()  # category: the values seen when the encoding was made, sorted
    scale: float = 1.0  # number: the value is divided by it

    def columns(self) -> list[str]:
        """The names of this feature's columns: ``name=value`` per category value, or ``name``."""
        if self.kind == "category":
            return [f"{self.name}={v}" for v in self.values]
        return [self.name]


@dataclass(frozen=True)
class Encoding:
    """The frozen layout of a catalogue's features (module docstring): what a trained policy keeps.

    ``layout`` is ``"structured"`` (``channels`` and ``send_slots`` one-hot, action 0 no contact) or
    ``"plain"`` (``no_contact``: action 0 is no contact, with a contact flag); ``features`` the offer
    features, in order of name.
    """

    layout: str
    features: tuple[Feature, ...] = ()
    channels: tuple[str, ...] = ()
    send_slots: tuple[int | None, ...] = ()
    no_contact: bool = False

    def names(self) -> list[str]:
        """The names of the matrix's columns (``contact``, ``channel=...``, ``send_slot=...``, features)."""
        out = ["contact"] if self.layout == "structured" or self.no_contact else []
        out += [f"channel={c}" for c in self.channels]
        out += [f"send_slot={'now' if s is None else f'{s:02d}h'}" for s in self.send_slots]
        for f in self.features:
            out += f.columns()
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; :meth:`from_dict` reads it back."""
        out: dict[str, Any] = {"format": FORMAT, "layout": self.layout, "features": []}
        for f in self.features:
            spec: dict[str, Any] = {"name": f.name, "type": f.kind}
            if f.kind == "category":
                spec["values"] = list(f.values)
            else:
                spec["scale"] = f.scale
            out["features"].append(spec)
        if self.layout == "structured":
            out["channels"], out["send_slots"] = list(self.channels), list(self.send_slots)
        else:
            out["no_contact"] = self.no_contact
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Encoding:
        """An encoding from :meth:`to_dict`'s data; ValueError naming the field (``encoding.<field>``)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"encoding: expected a mapping, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise ValueError(f"encoding.format: unsupported format {data.get('format')!r}; expected {FORMAT}")
        layout = data.get("layout")
        if layout not in LAYOUTS:
            raise ValueError(f"encoding.layout: expected one of {LAYOUTS}, got {layout!r}")
        features = []
        for i, spec in enumerate(data.get("features", [])):
            where = f"encoding.features[{i}]"
            if not (isinstance(spec, Mapping) and isinstance(spec.get("name"), str) and spec["name"]):
                raise ValueError(f"{where}: expected a table with a non-empty name, got {spec!r}")
            kind = spec.get("type")
            if kind == "category":
                values = spec.get("values", [])
                if not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
                    raise ValueError(f"{where}.values: expected a list of strings, got {values!r}")
                features.append(Feature(spec["name"], kind, tuple(values)))
            elif kind == "number":
                scale = spec.get("scale")
                if not (_is_number(scale) and scale > 0):
                    raise ValueError(f"{where}.scale: expected a positive number, got {scale!r}")
                features.append(Feature(spec["name"], kind, scale=float(scale)))
            else:
                raise ValueError(f"{where}.type: expected one of {KINDS}, got {kind!r}")
        names = [f.name for f in features]
        if names != sorted(set(names)):
            raise ValueError(f"encoding.features: names must be unique and in order, got {names}")
        if layout == "plain":
            no_contact = data.get("no_contact", False)
            if not isinstance(no_contact, bool):
                raise ValueError(f"encoding.no_contact: expected true or false, got {no_contact!r}")
            return cls(layout, tuple(features), no_contact=no_contact)
        channels, slots = data.get("channels"), data.get("send_slots")
        if not (isinstance(channels, list) and channels and all(isinstance(c, str) for c in channels)):
            raise ValueError(f"encoding.channels: expected a non-empty list of channel names, got {channels!r}")
        if not (
            isinstance(slots, list)
            and slots
            and all(s is None or (isinstance(s, int) and not isinstance(s, bool)) for s in slots)
        ):
            raise ValueError(f"encoding.send_slots: expected a non-empty list of hours or null, got {slots!r}")
        return cls(layout, tuple(features), tuple(channels), tuple(slots), True)


class Catalogue:
    """The action features of ``space``, from each offer's declared ``features``, under an :class:`Encoding`.

    ``features`` maps every offer (a structured space's contents) or action (a plain space's names, no
    contact aside) to its declared features, numbers or strings. Without ``encoding`` (an
    :class:`Encoding` or its :meth:`~Encoding.to_dict` data), one is made from these offers; with it,
    they are encoded its way (module docstring). Raises ValueError naming the field.

    Attributes: ``space``; ``features`` (offer -> its declared features, numbers as float);
    ``encoding``; ``names`` (the matrix's column names); ``matrix`` ((n_actions, len(names)) float64,
    read-only: one row of features per action, the no-contact row all zeros).
    """

    def __init__(
        self,
        space: ActionSpace,
        features: Mapping[str, Mapping[str, Value]],
        encoding: Encoding | Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(space, ActionSpace):
            raise ValueError(f"space: expected an ActionSpace, got {type(space).__name__}")
        self.space = space
        offers = _offers_of(space)
        self.features = _check_features(features, offers)
        if encoding is None:
            encoding = _make_encoding(space, self.features)
        elif not isinstance(encoding, Encoding):
            encoding = Encoding.from_dict(encoding)
        _check_layout(space, encoding)
        self.encoding = encoding
        self.names = encoding.names()
        self.matrix = _matrix(space, encoding, _encode(offers, self.features, encoding))
        self.matrix.setflags(write=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def of_deployment(cls, deployment: Deployment, encoding: Encoding | Mapping[str, Any] | None = None) -> Catalogue:
        """The catalogue of a deployment's action space, from its offers' declared features."""
        return cls(deployment.action_space(), {o.name: o.features for o in deployment.offers}, encoding)

    @classmethod
    def plain(
        cls,
        names: Iterable[str],
        features: Mapping[str, Mapping[str, Value]],
        no_contact: bool = False,
        encoding: Encoding | Mapping[str, Any] | None = None,
    ) -> Catalogue:
        """A plain K-action catalogue: ``ActionSpace.plain(names, no_contact)``, each action described by
        ``features[name]`` (no entry for the no-contact action)."""
        return cls(ActionSpace.plain(list(names), no_contact=no_contact), features, encoding)

    def with_encoding(self, encoding: Encoding | Mapping[str, Any]) -> Catalogue:
        """The same space and offers encoded under ``encoding`` (a trained policy's): same columns, so a
        policy can move to it. ValueError naming ``channels`` or ``send_slots`` if they differ from the
        encoding's."""
        if not isinstance(encoding, Encoding):
            encoding = Encoding.from_dict(encoding)
        if encoding == self.encoding:
            return self
        return Catalogue(self.space, self.features, encoding)

    # ------------------------------------------------------------------ state
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data: the encoding and every offer's declared features (the space is saved
        apart, by :func:`nba.serialization.space_to_dict`)."""
        return {
            "encoding": self.encoding.to_dict(),
            "features": {name: dict(sorted(f.items())) for name, f in self.features.items()},
        }

    @classmethod
    def from_dict(cls, space: ActionSpace, data: Mapping[str, Any], matrix: np.ndarray | None = None) -> Catalogue:
        """The catalogue :meth:`to_dict` saved, on ``space``; with the saved ``matrix``, checked against it
        (ValueError naming ``catalogue`` when they differ)."""
        if not (isinstance(data, Mapping) and "encoding" in data and "features" in data):
            raise ValueError("catalogue: expected a mapping with 'encoding' and 'features'")
        out = cls(space, data["features"], data["encoding"])
        if matrix is not None and not np.array_equal(np.asarray(matrix, np.float64), out.matrix):
            raise ValueError("catalogue: the saved matrix is not what the saved features and encoding give")
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Catalogue):
            return NotImplemented
        return (
            self.space == other.space and self.encoding == other.encoding and np.array_equal(self.matrix, other.matrix)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking arrays: not hashable

    def __repr__(self) -> str:
        return f"Catalogue({self.space.n_actions} actions, {len(self.names)} features: {self.names})"


# ----------------------------------------------------------------------------- helpers
def _is_number(v: Any) -> TypeGuard[float]:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _offers_of(space: ActionSpace) -> tuple[str, ...]:
    """The names a catalogue's features are keyed by: a structured space's contents, a plain one's actions."""
    if not space.is_plain:
        return space.contents
    return tuple(n for n in space.channels if n != NO_CONTACT_NAME)


def _check_features(
    features: Mapping[str, Mapping[str, Value]], offers: tuple[str, ...]
) -> dict[str, dict[str, Value]]:
    """Every offer's features, checked (numbers as float); ValueError naming ``features.<offer>.<feature>``."""
    if not isinstance(features, Mapping):
        raise ValueError(
            f"features: expected a mapping of offer names to their features, got {type(features).__name__}"
        )
    unknown = sorted(set(features) - set(offers))
    if unknown:
        raise ValueError(f"features: {unknown} are not offers of the action space; offers: {list(offers)}")
    out: dict[str, dict[str, Value]] = {}
    kinds: dict[str, tuple[str, str]] = {}  # feature -> (kind, the first offer declaring it)
    for offer in offers:
        if offer not in features:
            raise ValueError(f"features: no entry for offer {offer!r} (an offer without features: give it {{}})")
        declared = features[offer]
        if not isinstance(declared, Mapping):
            raise ValueError(f"features.{offer}: expected a mapping of feature names to values, got {declared!r}")
        row: dict[str, Value] = {}
        for name, v in declared.items():
            where = f"features.{offer}.{name}"
            if not (isinstance(name, str) and name):
                raise ValueError(f"{where}: feature names must be non-empty strings")
            if isinstance(v, str):
                kind = "category"
            elif _is_number(v):
                kind, v = "number", float(v)
            else:
                raise ValueError(f"{where}: must be a finite number or a string, got {v!r}")
            first = kinds.setdefault(name, (kind, offer))
            if first[0] != kind:
                raise ValueError(f"{where}: is a {kind} here but a {first[0]} in features.{first[1]}")
            row[name] = v
        out[offer] = row
    return out


def _make_encoding(space: ActionSpace, features: Mapping[str, Mapping[str, Value]]) -> Encoding:
    """The encoding these offers give: category values seen (sorted), numbers' largest absolute values."""
    seen: dict[str, list[Value]] = {}
    for row in features.values():
        for name, v in row.items():
            seen.setdefault(name, []).append(v)
    out = []
    for name in sorted(seen):
        values = seen[name]
        if isinstance(values[0], str):
            out.append(Feature(name, "category", tuple(sorted({str(v) for v in values}))))
        else:
            top = max(abs(float(v)) for v in values)
            out.append(Feature(name, "number", scale=float(top) if top > 0 else 1.0))
    if space.is_plain:
        return Encoding("plain", tuple(out), no_contact=space.has_no_contact)
    return Encoding("structured", tuple(out), space.channels, space.send_slots, True)


def _difference(field: str, ours: tuple, theirs: tuple) -> str:
    """Why two tuples of channels or send slots differ, for an error message naming ``field``."""
    added, removed = [v for v in ours if v not in theirs], [v for v in theirs if v not in ours]
    if added or removed:
        what = f"added {added}, removed {removed}"
    else:
        what = f"the same in another order: {list(ours)} against {list(theirs)}"
    return (
        f"{field}: this catalogue's {field} differ from those the encoding (the policy) was made with "
        f"({what}); a policy moves only to a catalogue with the same {field}"
    )


def _check_layout(space: ActionSpace, encoding: Encoding) -> None:
    """Refuse an encoding made for another kind of space, other channels or other send slots."""
    layout = "plain" if space.is_plain else "structured"
    if encoding.layout != layout:
        raise ValueError(f"encoding: made for a {encoding.layout} action space, and this one is {layout}")
    if space.is_plain:
        if encoding.no_contact != space.has_no_contact:
            made, has = ("with" if encoding.no_contact else "without"), ("one" if space.has_no_contact else "none")
            raise ValueError(
                f"no_contact: the encoding was made for a space {made} a no-contact action, and this one has {has}"
            )
        return
    if space.channels != encoding.channels:
        raise ValueError(_difference("channels", space.channels, encoding.channels))
    if space.send_slots != encoding.send_slots:
        raise ValueError(_difference("send_slots", space.send_slots, encoding.send_slots))


def _encode(offers: tuple[str, ...], features: Mapping[str, Mapping[str, Value]], encoding: Encoding) -> np.ndarray:
    """(n_offers, p) encoded offer features; ValueError naming ``features.<offer>.<feature>`` for a value of
    another kind than the encoding's."""
    width = sum(len(f.columns()) for f in encoding.features)
    out = np.zeros((len(offers), width))
    col = 0
    for f in encoding.features:
        index = {v: i for i, v in enumerate(f.values)}
        for r, offer in enumerate(offers):
            if f.name not in features[offer]:
                continue  # missing: 0, or no category
            v = features[offer][f.name]
            if isinstance(v, str) != (f.kind == "category"):
                raise ValueError(
                    f"features.{offer}.{f.name}: is a {'category' if isinstance(v, str) else 'number'} "
                    f"here but a {f.kind} in the encoding"
                )
            if not isinstance(v, str):
                out[r, col] = v / f.scale
            elif v in index:  # an unseen value: all zeros
                out[r, col + index[v]] = 1.0
        col += len(f.columns())
    return out


def _matrix(space: ActionSpace, encoding: Encoding, encoded: np.ndarray) -> np.ndarray:
    """(n_actions, p) action features: the module docstring's layout, no contact all zeros."""
    lead = len(encoding.names()) - encoded.shape[1]  # contact flag, channel and slot one-hots
    out = np.zeros((space.n_actions, lead + encoded.shape[1]))
    contact = space.is_contact
    if space.is_plain:
        out[contact, lead:] = encoded
        if space.has_no_contact:
            out[contact, 0] = 1.0
        return out
    rows = np.flatnonzero(contact)
    c = space.n_channels
    out[rows, 0] = 1.0
    out[rows, 1 + space.channel_of[rows]] = 1.0
    out[rows, 1 + c + space.slot_of[rows]] = 1.0
    out[rows, lead:] = encoded[space.content_of[rows]]
    return out
