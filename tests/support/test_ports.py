"""tests.support.ports.free_port: bindable ports below the kernel's ephemeral range, never the same twice."""

from __future__ import annotations

import socket

import pytest

from tests.support import ports


def test_ports_are_bindable_distinct_and_below_the_ephemeral_range():
    low = ports.ephemeral_low()
    got = [ports.free_port() for _ in range(200)]
    assert len(set(got)) == len(got)
    assert all(max(1024, low - ports.SPAN) <= p < low for p in got)
    assert all(_bindable(p) for p in got[:20])


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _held_with_free_neighbour() -> socket.socket:
    """A listening socket on a port ``p`` of 127.0.0.1 such that ``p + 1`` can be bound now."""
    for _ in range(20):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        if _bindable(s.getsockname()[1] + 1):
            s.listen()
            return s
        s.close()
    pytest.fail("no port with a free neighbour in 20 tries")


def test_a_port_in_use_is_not_handed_out(monkeypatch):
    with _held_with_free_neighbour() as held:
        taken = held.getsockname()[1]
        # only the held port and the one next to it to choose from: the held one must be skipped
        monkeypatch.setattr(ports, "ephemeral_low", lambda: taken + 2)
        monkeypatch.setattr(ports, "SPAN", 2)
        monkeypatch.setattr(ports, "_handed_out", set())
        assert ports.free_port() == taken + 1
        with pytest.raises(RuntimeError, match=r"no free port of 127\.0\.0\.1"):
            ports.free_port(tries=50)  # the other one is handed out already


def test_ephemeral_low_reads_the_kernel_range_or_falls_back(monkeypatch, tmp_path):
    f = tmp_path / "range"
    f.write_text("40000\t60999\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE", f)
    assert ports.ephemeral_low() == 40000
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE", tmp_path / "missing")
    assert ports.ephemeral_low() == ports.DEFAULT_EPHEMERAL_LOW
