"""A port of 127.0.0.1 to start a local service on: what the integration tests and ``bench/serve.py`` use
(``from tests.support.ports import free_port``, the repository root on ``sys.path``).

Binding port 0 and closing the socket gives a port that the kernel takes from its *ephemeral* range,
the one every outbound connection and every other port-0 bind draws from too. Between that moment
and the server's own bind, another process (a server started just before, retrying a connection to
an unreachable registry, say) can take it, and the server then fails with "Address already in use".
:func:`free_port` picks below that range instead, among ports that can be bound now, and never hands
out the same port twice in a process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_LOW = 32768  # Linux's default, where the range cannot be read
SPAN = 12_000  # how many ports below the ephemeral range to choose among
_handed_out: set[int] = set()


def ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_LOW


def free_port(host: str = "127.0.0.1", tries: int = 1000) -> int:
    """A port of ``host`` that can be bound now, below the ephemeral range, not handed out before."""
    high = ephemeral_low()
    low = max(1024, high - SPAN)
    rng = random.Random()
    for _ in range(tries):
        port = rng.randrange(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port of {host} in [{low}, {high}) after {tries} tries")
