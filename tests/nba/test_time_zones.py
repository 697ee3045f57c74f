"""Time zones over time: a zone's UTC offset at many times at once (nba.eligibility.utc_offsets) is the
offset at each time, across the switches to and from summer time; the history rebuilt from the log
(nba.decide.history_from_log) gives each past contact and engagement its local hour at its own time, so a
contact sent at 10:00 in Paris in winter keeps hour 10 once summer time has begun; fixed offsets keep the
one offset."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from nba.actions import ActionSpace
from nba.decide import history_from_log
from nba.eligibility import RecentContacts, fixed_offset, utc_offset, utc_offsets
from nba.log.records import ContactHistory


def _h(*args: int) -> float:
    """Hours since the epoch of a UTC date-time."""
    return datetime(*args, tzinfo=UTC).timestamp() / 3600.0


ZONES = (
    "Europe/Paris",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Tokyo",
    "America/Sao_Paulo",
    "Africa/Casablanca",
    "Pacific/Chatham",
    "Asia/Kolkata",
)


@pytest.mark.parametrize("zone", ZONES)
def test_offsets_at_many_times_are_the_offset_at_each(zone):
    rng = np.random.default_rng(abs(hash(zone)) % 2**32)
    start = _h(2017, 1, 1)
    hours = np.concatenate(
        [
            rng.uniform(start, start + 24 * 365 * 10, 3000),  # ten years, every switch in them
            rng.uniform(start + 24 * 80, start + 24 * 100, 500),
        ]
    )  # around one spring
    got = utc_offsets(zone, hours)
    want = np.array([utc_offset(zone, h) for h in hours.tolist()])
    np.testing.assert_array_equal(got, want)
    assert utc_offsets(zone, np.empty(0)).shape == (0,)


def test_offsets_change_at_the_second_of_the_switch():
    switch = _h(2026, 3, 29, 1)  # 02:00 CET becomes 03:00 CEST
    hours = switch + np.array([-1.0, -1 / 3600, 0.0, 1 / 3600, 1.0])
    assert utc_offsets("Europe/Paris", hours).tolist() == [1.0, 1.0, 2.0, 2.0, 2.0]
    back = _h(2026, 10, 25, 1)  # 03:00 CEST becomes 02:00 CET
    assert utc_offsets("Europe/Paris", back + np.array([-1 / 3600, 0.0])).tolist() == [2.0, 1.0]


def test_fixed_offsets_are_the_same_at_all_times():
    hours = np.array([_h(2026, 1, 1), _h(2026, 7, 1)])
    assert utc_offsets("+02:00", hours).tolist() == [2.0, 2.0] and utc_offsets("UTC-5", hours).tolist() == [-5.0] * 2
    assert fixed_offset("+05:30") == 5.5 and fixed_offset("UTC") == 0.0 and fixed_offset("Europe/Paris") is None
    with pytest.raises(ValueError, match="Mars/Olympus"):
        utc_offsets("Mars/Olympus", hours)
    with pytest.raises(ValueError, match="^hours: must be finite"):
        utc_offsets("Europe/Paris", np.array([np.nan]))


SPACE = ActionSpace(("email", "sms"), ("promo",), (None,))


def _log(contacts: list[tuple[int, float]], opened: list[int]) -> ContactHistory:
    """A log's history of one customer per entry of ``contacts`` ((customer, send time) of a sms/promo/now
    contact); the contacts at positions ``opened`` were opened a minute after their send time."""
    action = SPACE.index("sms", "promo", None)
    rows = [(t, t, action) for _, t in contacts]
    events = [("opened", contacts[k][1] + 1 / 60, 0.0, action, contacts[k][1], f"d{k}") for k in opened]
    return ContactHistory.from_rows(
        np.array([f"c{i}" for i in range(3)], dtype=object),
        [c for c, _ in contacts],
        rows,
        [contacts[k][0] for k in opened],
        events,
        since=0.0,
    )


def _hour(cos: float, sin: float) -> float:
    return float(np.round(np.degrees(np.arctan2(sin, cos)) / 15.0) % 24)


def test_a_winter_contact_keeps_its_local_hour_after_the_switch_to_summer_time():
    winter = _h(2026, 3, 20, 9)  # 10:00 in Paris (CET, +01:00), before the last Sunday of March
    summer = _h(2026, 6, 2, 8)  # 10:00 in Paris (CEST, +02:00)
    now = _h(2026, 6, 3, 12)
    h = _log([(0, winter), (1, winter), (2, summer)], opened=[0, 1])
    zones = ["Europe/Paris", "+02:00", "Europe/Paris"]
    tz = np.array([utc_offset(z, now) for z in zones])  # +2 for all three, now
    rows = np.arange(3)
    sms = SPACE.channels.index("sms")

    def rebuilt(zones):
        recent = RecentContacts.empty(3, SPACE.n_channels)
        return history_from_log(h, rows, SPACE, recent, now=np.full(3, now), tz_offset=tz, zones=zones)

    with_zones, without = rebuilt(zones), rebuilt(None)
    sent = [_hour(float(with_zones.sent_cos[r, sms]), float(with_zones.sent_sin[r, sms])) for r in rows]
    seen = [_hour(float(with_zones.seen_cos[r, sms]), float(with_zones.seen_sin[r, sms])) for r in rows[:2]]
    assert sent == [10, 11, 10]  # Paris in winter: 10 at its own time; "+02:00" stays +2 at all times
    assert seen == [10, 11]  # an engagement has its contact's send hour
    assert _hour(float(without.sent_cos[0, sms]), float(without.sent_sin[0, sms])) == 11  # today's offset: off by one
    for name in ("n_contacts", "last_contact", "load", "n_engaged", "last_engaged"):  # only the hours differ
        np.testing.assert_array_equal(getattr(with_zones, name), getattr(without, name))
    np.testing.assert_array_equal(with_zones.sent_cos[1:], without.sent_cos[1:])  # fixed offsets as before


def test_zones_must_name_one_zone_per_customer():
    h = _log([(0, _h(2026, 3, 20, 9))], opened=[])
    recent = RecentContacts.empty(3, SPACE.n_channels)
    with pytest.raises(ValueError, match=r"^zones: expected one time zone per customer \(3\), got 1"):
        history_from_log(
            h,
            np.arange(3),
            SPACE,
            recent,
            now=np.full(3, _h(2026, 6, 3)),
            tz_offset=np.full(3, 2.0),
            zones=["Europe/Paris"],
        )
