"""Counter-based random streams keyed by (seed, purpose, row): vectorised, identical at any batch size.

Every simulated customer row owns a 64-bit key and a counter. The ``j``-th 64-bit word of a row is
a pure function of ``(key, counter + j)`` — SplitMix64's output function applied to
``(counter + j) * golden_gamma + key`` — and gives two uniforms, so drawing for 1 row or for 100,000 rows at once gives
bit-identical numbers. That is what lets the scalar and the vectorised environments produce the
same trajectories for the same seed, and lets a Monte Carlo comparison of two policies reuse the
same draws for the same customer (common random numbers), at NumPy speed and 16 bytes a row.

**Keys.** A row's key mixes three things: the integer ``seed``, a ``purpose`` (a name: the
quickstart's ``"train-log"``, a bench's ``"held-out"``, an A/B test's ``"ab"``...) and the row
index. The (seed, purpose) pair is first hashed into a base (BLAKE2b of the purpose, then two
SplitMix64 rounds with the seed), and row ``i``'s key is a SplitMix64 round of ``base + i * gamma``,
so two different (seed, purpose) pairs share no stream (short of a 64-bit collision), and seeds
``s`` and ``s + 1`` of one purpose are as unrelated as two purposes. Independent data is therefore
a different *purpose* (or seed), never ``seed + k`` rows further on.

**Gymnasium's convention** is the one exception, and it has its own purpose, :data:`GYM`: a vector
environment seeded ``s`` must give sub-environment ``i`` the scalar environment seeded ``s + i``. So
under :data:`GYM` row ``i`` of seed ``s`` is row 0 of seed ``s + i`` (keys of consecutive seeds);
only the gymnasium views use it, and no pipeline derives data from it.
"""

from __future__ import annotations

import hashlib

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


GYM = "gym"  # gymnasium's seeding convention: row i of seed s is seed s + i (module docstring)


def purpose_code(purpose: str) -> int:
    """A stable 64-bit code of a purpose name (BLAKE2b, not Python's salted ``hash``)."""
    if not isinstance(purpose, str) or not purpose:
        raise ValueError(f"purpose: must be a non-empty string, got {purpose!r}")
    return int.from_bytes(hashlib.blake2b(purpose.encode(), digest_size=8).digest(), "little")


def _base(seeds: np.ndarray, purpose: str) -> np.ndarray:
    """(n,) uint64 bases of (seed, purpose) pairs."""
    z = seeds * _GAMMA
    z ^= np.uint64(purpose_code(purpose))
    _mix(z)
    z += _GAMMA
    return _mix(z)


def _check_seed(seed) -> int:
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise TypeError(f"seed: must be an integer, got {seed!r}")
    return int(seed) % 2**64


def stream_keys(seed: int, n: int, purpose: str, start: int = 0) -> np.ndarray:
    """(n,) uint64 keys of rows ``start .. start + n - 1`` of ``(seed, purpose)``.

    Under :data:`GYM`, row ``i`` of seed ``s`` is row 0 of seed ``s + i`` (gymnasium's vector
    convention); under any other purpose the rows of one (seed, purpose) pair are a stream family of
    their own.
    """
    seed = _check_seed(seed)
    rows = np.arange(start, start + n, dtype=np.uint64)
    if purpose == GYM:
        return _mix(_base(rows + np.uint64(seed), GYM) + _GAMMA)
    base = _base(np.array([seed], np.uint64), purpose)[0]
    return _mix(rows * _GAMMA + base)


class Streams:
    """Independent uniform streams, one per row, drawn in rows of ``width`` numbers."""

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = np.asarray(keys, np.uint64)
        self.counters = np.zeros(self.keys.shape[0], np.uint64)

    @classmethod
    def of(cls, seed: int, n: int, purpose: str, start: int = 0) -> Streams:
        """Rows ``start .. start + n - 1`` of ``(seed, purpose)`` (:func:`stream_keys`)."""
        return cls(stream_keys(seed, n, purpose, start))

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
