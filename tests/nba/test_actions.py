"""ActionSpace: index layout, decoding, validation (raise, never clip) and action features."""

from __future__ import annotations

import numpy as np
import pytest

from nba.actions import CHANNELS, CONTENTS, NO_CONTACT, Action, ActionSpace

SPACES = [
    ActionSpace(),  # the full default: 7 channels x 8 contents x 4 slots
    ActionSpace(("sms", "email"), ("promo",), (None,)),  # one content, one slot
    ActionSpace(("push",), ("welcome", "winback", "loyalty"), (21, None, 3)),  # slot order is the caller's
]


@pytest.mark.parametrize("space", SPACES, ids=lambda s: f"{s.n_channels}x{s.n_contents}x{s.n_slots}")
def test_n_actions_and_decode_round_trip_for_every_index(space):
    assert space.n_actions == 1 + space.n_channels * space.n_contents * space.n_slots
    assert space.decode(NO_CONTACT) == Action(None)
    assert not space.decode(NO_CONTACT).is_contact
    seen = set()
    for a in range(1, space.n_actions):
        act = space.decode(a)
        assert act.is_contact
        assert act.channel in space.channels and act.content in space.contents and act.send_hour in space.send_slots
        assert space.index(act.channel, act.content, act.send_hour) == a
        seen.add((act.channel, act.content, act.send_hour))
    # every (channel, content, slot) combination appears exactly once
    assert len(seen) == space.n_actions - 1


def test_index_layout_matches_documented_formula():
    space = ActionSpace()
    for c, ch in enumerate(space.channels):
        for k, ct in enumerate(space.contents):
            for s, h in enumerate(space.send_slots):
                assert space.index(ch, ct, h) == 1 + (c * space.n_contents + k) * space.n_slots + s
    assert space.channel_of[0] == space.content_of[0] == space.slot_of[0] == -1
    # the lookup arrays are read-only: nobody can corrupt the shared layout
    with pytest.raises(ValueError):
        space.channel_of[1] = 3


def test_default_space_uses_the_full_catalogue():
    space = ActionSpace()
    assert space.channels == CHANNELS and space.contents == CONTENTS
    assert space.n_actions == 1 + 7 * 8 * 4
    names = space.names()
    assert len(names) == space.n_actions == len(set(names))
    assert names[0] == "no_contact"
    assert names[space.index("sms", "promo", 19)] == "sms/promo/19h"
    assert names[space.index("email", "welcome", None)] == "email/welcome/now"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"channel": "fax", "content": "promo", "send_hour": None}, "channel"),
        ({"channel": "email", "content": "spam", "send_hour": None}, "content"),
        ({"channel": "email", "content": "promo", "send_hour": 4}, "send_hour"),
        ({"channel": "email", "content": "promo", "send_hour": "9"}, "send_hour"),
    ],
)
def test_index_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError) as e:
        ActionSpace().index(**kwargs)
    assert str(e.value).startswith(f"{field}:")


@pytest.mark.parametrize(
    "bad",
    [
        np.array([0, 1, 225]),  # n_actions of the default space is 225: one past the end
        np.array([-1, 0]),
        np.array([10**9]),
        np.array([1.5]),
        np.array([0.0, 2.5]),
        np.array([np.nan]),
        np.array([np.inf]),
        np.array([True, False]),
        np.array(["1"]),
    ],
    ids=repr,
)
def test_check_raises_on_invalid_actions(bad):
    space = ActionSpace()
    with pytest.raises(ValueError, match="my_actions"):
        space.check(bad, name="my_actions")


def test_check_never_clips_valid_actions():
    space = ActionSpace()
    a = np.array([0, 1, space.n_actions - 1, 17], dtype=np.int32)
    out = space.check(a)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, a)
    np.testing.assert_array_equal(space.check(np.array([], dtype=np.int64)), [])
    # an out-of-range entry anywhere in a batch is an error, not a clip to n_actions - 1
    with pytest.raises(ValueError, match="225"):
        space.check(np.array([[0, 1], [2, 225]]))


@pytest.mark.parametrize("bad", [-1, 225, 1000])
def test_decode_raises_out_of_range(bad):
    with pytest.raises(ValueError):
        ActionSpace().decode(bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channels": ()},
        {"contents": ()},
        {"send_slots": ()},
        {"channels": ("email", "email")},
        {"send_slots": (9, 9)},
        {"send_slots": (24,)},
        {"send_slots": (-1,)},
        {"send_slots": (9.5,)},
    ],
)
def test_constructor_rejects_bad_layouts(kwargs):
    with pytest.raises(ValueError, match="ActionSpace"):
        ActionSpace(**kwargs)


@pytest.mark.parametrize("space", SPACES, ids=lambda s: f"{s.n_channels}x{s.n_contents}x{s.n_slots}")
def test_features_shape_and_one_hots(space):
    f = space.features()
    c, k, s = space.n_channels, space.n_contents, space.n_slots
    assert f.shape == (space.n_actions, 1 + c + k + s)
    assert f.dtype == np.float32
    assert not f[0].any(), "row 0 (no contact) must be all zeros"
    contact = f[1:]
    np.testing.assert_array_equal(contact[:, 0], 1.0)
    # exactly one channel, one content, one slot per contact action, at the decoded positions
    for block in (slice(1, 1 + c), slice(1 + c, 1 + c + k), slice(1 + c + k, 1 + c + k + s)):
        np.testing.assert_array_equal(contact[:, block].sum(axis=1), 1.0)
    for a in range(1, space.n_actions):
        act = space.decode(a)
        assert f[a, 1 + space.channels.index(act.channel)] == 1
        assert f[a, 1 + c + space.contents.index(act.content)] == 1
        assert f[a, 1 + c + k + space.send_slots.index(act.send_hour)] == 1
    # distinct actions have distinct feature rows
    assert len({row.tobytes() for row in f}) == space.n_actions


# ----------------------------------------------------------------------------- plain spaces
def test_plain_k_has_k_named_actions_and_no_no_contact():
    space = ActionSpace.plain(10)
    assert space.is_plain and not space.has_no_contact
    assert space.n_actions == 10
    assert space.names() == [str(a) for a in range(10)]
    assert space.n_channels == space.n_contents == space.n_slots == 0
    np.testing.assert_array_equal(space.is_contact, np.ones(10, bool))
    for a in range(10):
        assert space.decode(a) == Action(str(a)) and space.decode(a).is_contact
        assert space.index(str(a)) == a
    np.testing.assert_array_equal(space.features(), np.eye(10, dtype=np.float32))
    assert space.features().dtype == np.float32
    assert space == ActionSpace.plain([str(a) for a in range(10)])


def test_plain_with_no_contact_puts_it_at_index_0():
    space = ActionSpace.plain(4, no_contact=True)
    assert space.n_actions == 4 and space.has_no_contact
    assert space.names() == ["no_contact", "1", "2", "3"]  # every action keeps its index as its name
    assert space.decode(NO_CONTACT) == Action(None) and not space.decode(0).is_contact
    assert space.index("no_contact") == 0 and space.index("2") == 2
    np.testing.assert_array_equal(space.is_contact, [False, True, True, True])
    f = space.features()
    assert not f[0].any(), "row 0 (no contact) must be all zeros, as in the structured space"
    np.testing.assert_array_equal(f[1:, 0], 1.0)  # the contact flag
    np.testing.assert_array_equal(f[1:, 1:], np.eye(3))

    named = ActionSpace.plain(("gold", "silver"), no_contact=True)
    assert named.names() == ["no_contact", "gold", "silver"] and named.n_actions == 3
    assert named.decode(1) == Action("gold")


def test_structured_space_keeps_its_no_contact():
    space = ActionSpace()
    assert not space.is_plain and space.has_no_contact
    np.testing.assert_array_equal(space.is_contact, np.arange(space.n_actions) > 0)
    with pytest.raises(ValueError):
        space.is_contact[0] = True  # read-only


@pytest.mark.parametrize("attr", ["channel_of", "content_of", "slot_of"])
def test_plain_space_has_no_channels_contents_or_slots(attr):
    with pytest.raises(ValueError, match=f"^space: .*{attr}"):
        getattr(ActionSpace.plain(5), attr)


def test_plain_index_and_decode_errors_name_the_field():
    space = ActionSpace.plain(("a", "b"))
    with pytest.raises(ValueError, match="^action: unknown action 'c'"):
        space.index("c")
    with pytest.raises(ValueError, match="^content: "):
        space.index("a", "promo")
    with pytest.raises(ValueError, match="^content: "):
        space.index("a", send_hour=9)
    with pytest.raises(ValueError, match="^action: index 2 is outside"):
        space.decode(2)
    with pytest.raises(ValueError, match="my_actions"):
        space.check(np.array([0, -1]), name="my_actions")


@pytest.mark.parametrize(
    "bad",
    [0, -3, True, "abc", [], ["a", "a"], ["no_contact", "a"], [1, 2], [""], None, 2.5],
    ids=repr,
)
def test_plain_rejects_bad_arguments(bad):
    with pytest.raises(ValueError, match="^ActionSpace"):
        ActionSpace.plain(bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channels": (), "contents": (), "send_slots": ()},
        {"channels": ("a", "no_contact"), "contents": (), "send_slots": ()},  # no contact only at index 0
        {"channels": ("a", "a"), "contents": (), "send_slots": ()},
        {"channels": ("a",), "contents": (), "send_slots": (None,)},  # half plain: a structured space without contents
        {"channels": ("a",), "contents": ("x",), "send_slots": ()},
    ],
)
def test_constructor_rejects_bad_plain_layouts(kwargs):
    with pytest.raises(ValueError, match="ActionSpace"):
        ActionSpace(**kwargs)


@pytest.mark.parametrize(
    "space",
    [ActionSpace.plain(10), ActionSpace.plain(3, no_contact=True), ActionSpace.plain(("x", "y")), *SPACES],
    ids=lambda s: repr(s.names()[:3]),
)
def test_every_space_round_trips_through_the_saved_dictionary(space):
    import json

    from nba.serialization import space_from_dict, space_to_dict

    d = json.loads(json.dumps(space_to_dict(space)))
    again = space_from_dict(d)
    assert again == space and again.is_plain == space.is_plain and again.has_no_contact == space.has_no_contact
    assert again.names() == space.names()
    np.testing.assert_array_equal(again.features(), space.features())


def test_a_saved_structured_space_still_loads_as_structured():
    from nba.serialization import space_from_dict

    old = {"channels": ["sms", "email"], "contents": ["promo"], "send_slots": [None, 9]}  # a bundle's dict
    space = space_from_dict(old)
    assert not space.is_plain and space.n_actions == 1 + 2 * 1 * 2 and space.has_no_contact
    assert space.names()[1] == "sms/promo/now"
