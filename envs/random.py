"""Counter-based random streams: one per customer row, vectorised, identical at any batch size.

Every simulated customer row owns a 64-bit key and a counter. The ``j``-th 64-bit word of a row is
a pure function of ``(key, counter + j)`` — SplitMix64's output function applied to
``(counter + j) * golden_gamma + key`` — and gives two uniforms, so drawing for 1 row or for 100,000 rows at once gives
bit-identical numbers. That is what lets the scalar and the vectorised environments produce the
same trajectories for the same seed, and lets a Monte Carlo comparison of two policies reuse the
same draws for the same customer (common random numbers), at NumPy speed and 16 bytes a row.

Keys come from the integer seed: sub-environment ``i`` of a vector environment seeded ``s`` gets the
key of seed ``s + i``, exactly as a scalar environment seeded ``s + i`` does (gymnasium's
convention for seeding vector environments).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = (np.uint64(k) for k in (30, 27, 31))
_TO_UNIT = 2.0**-32


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 output function, in place on a uint64 array."""
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def stream_keys(seed: int, n: int, salt: int = 0) -> np.ndarray:
    """(n,) uint64 keys for the seeds ``seed, seed + 1, ..., seed + n - 1``."""
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise TypeError(f"seed: must be an integer, got {seed!r}")
    s = (np.arange(n, dtype=np.uint64) + np.uint64(int(seed) % 2**64)) * _GAMMA
    s += np.uint64((int(salt) * int(_M1)) % 2**64)
    return _mix(_mix(s) + _GAMMA)


class Streams:
    """Independent uniform streams, one per row, drawn in rows of ``width`` numbers."""

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = np.asarray(keys, np.uint64)
        self.counters = np.zeros(self.keys.shape[0], np.uint64)

    @classmethod
    def from_seed(cls, seed: int, n: int, salt: int = 0) -> Streams:
        return cls(stream_keys(seed, n, salt))

    def uniform(self, width: int, rows: np.ndarray | None = None) -> np.ndarray:
        """(n_rows, width) uniforms in (0, 1); advances the counters of ``rows`` (all by default).

        Each 64-bit output gives two uniforms of 32-bit resolution (its high and low halves):
        ample for simulation probabilities, and half the hashing.
        """
        keys = self.keys if rows is None else self.keys[rows]
        ctr = self.counters if rows is None else self.counters[rows]
        half = (width + 1) // 2
        z = (ctr[:, None] + np.arange(half, dtype=np.uint64)) * _GAMMA
        z += keys[:, None]
        _mix(z)
        if rows is None:
            self.counters += np.uint64(half)
        else:
            self.counters[rows] += np.uint64(half)
        words = z.view(np.uint32).reshape(z.shape[0], 2 * half)[:, :width]
        out = words.astype(np.float64)
        out += 0.5
        out *= _TO_UNIT
        return out


def normal(u: np.ndarray) -> np.ndarray:
    """Standard normal quantile of uniforms in (0, 1)."""
    return ndtri(u)


def categorical(u: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """Index ``i`` with ``cdf[i-1] <= u < cdf[i]`` (cdf ends at 1)."""
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)
