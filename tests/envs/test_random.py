"""Counter-based random streams: batch-size invariance, per-row counters, and the uniforms' law."""

from __future__ import annotations

import numpy as np
import pytest

from envs.random import GYM, Streams, _mix, categorical, stream_keys


def test_row_i_of_a_batch_equals_the_same_row_drawn_alone():
    seed, n = 12345, 50
    batch = Streams.of(seed, n, "train")
    draws = [batch.uniform(w) for w in (1, 7, 3, 16)]  # several successive draws of various widths
    for i in range(n):
        single = Streams.of(seed, 1, "train", start=i)
        for d in draws:
            got = single.uniform(d.shape[1])
            # bit-identical, not merely close
            assert got.tobytes() == d[i : i + 1].tobytes(), (i, d.shape)


def test_gym_purpose_follows_gymnasiums_vector_convention():
    # under GYM, row i of seed s is row 0 of seed s + i: sub-env i of a vector env is the scalar env seeded s + i
    keys = stream_keys(7, 5, GYM)
    for i in range(5):
        assert stream_keys(7 + i, 1, GYM)[0] == keys[i]
    np.testing.assert_array_equal(stream_keys(7, 3, GYM, start=2), keys[2:])


def test_no_two_seed_purpose_pairs_share_a_stream():
    # the overlap this design removes: row i of seed s was row i - 1 of seed s + 1
    a, b = Streams.of(0, 1000, "train").uniform(8), Streams.of(1, 1000, "train").uniform(8)
    assert not np.isin(a, b).any()
    pairs = [(s, p) for s in range(4) for p in ("train", "eval", "held-out", "validation")]
    keys = np.concatenate([stream_keys(s, 2000, p) for s, p in pairs] + [stream_keys(0, 2000, GYM)])
    assert np.unique(keys).size == keys.size
    with pytest.raises(ValueError, match="purpose"):
        stream_keys(0, 3, "")


def test_drawing_a_subset_of_rows_advances_only_those_counters():
    s = Streams.of(3, 5, "t")
    s.uniform(2)
    before = s.counters.copy()
    assert (before > 0).all()
    sub = s.uniform(4, rows=np.array([1, 3]))
    assert sub.shape == (2, 4)
    moved = s.counters != before
    np.testing.assert_array_equal(moved, [False, True, False, True, False])
    assert (s.counters[[1, 3]] > before[[1, 3]]).all()
    # the subset draw is what those rows would have drawn anyway
    ref = Streams.of(3, 5, "t")
    ref.uniform(2)
    full = ref.uniform(4)
    np.testing.assert_array_equal(sub, full[[1, 3]])
    np.testing.assert_array_equal(s.counters[[1, 3]], ref.counters[[1, 3]])
    # the untouched rows continue where they were: their next draw equals the reference's
    nxt = s.uniform(3, rows=np.array([0, 2, 4]))
    np.testing.assert_array_equal(nxt, full[[0, 2, 4], :3])
    np.testing.assert_array_equal(s.counters[[1, 3]], ref.counters[[1, 3]])  # still unmoved


def test_boolean_row_mask_draws_only_those_rows():
    s = Streams.of(9, 4, "t")
    mask = np.array([True, False, False, True])
    u = s.uniform(2, rows=np.flatnonzero(mask))
    np.testing.assert_array_equal(s.counters == 0, ~mask)
    np.testing.assert_array_equal(u, Streams.of(9, 4, "t").uniform(2)[mask])


def test_uniform_law_on_a_million_draws():
    u = Streams.of(2024, 1000, "t").uniform(1000)  # 10**6 draws: 1000 rows x 1000 counters
    n = u.size
    assert u.dtype == np.float64
    assert (u > 0).all() and (u < 1).all()
    # mean of U(0,1) is 1/2 with variance 1/12: the standard error of the mean of n draws is
    # sqrt(1/(12 n)) = 2.9e-4; allow 5 standard errors (a false alarm has probability < 1e-6).
    se_mean = np.sqrt(1 / 12 / n)
    assert abs(u.mean() - 0.5) < 5 * se_mean
    # the sample variance has standard error sqrt((mu4 - sigma^4) / n) with mu4 = 1/80 and
    # sigma^4 = 1/144 for U(0,1): sqrt(1/180 / n) = 7.5e-5; allow 5 of them.
    se_var = np.sqrt((1 / 80 - 1 / 144) / n)
    assert abs(u.var() - 1 / 12) < 5 * se_var
    # and no lumps: each of 100 equal bins holds 1% of the draws; a bin count is binomial with
    # sd sqrt(n p (1 - p)) = 99.5, so 6 sd (597 draws) is a safe bound for the worst of 100 bins.
    counts = np.bincount((u * 100).astype(int).ravel(), minlength=100)
    assert np.abs(counts - n / 100).max() < 6 * np.sqrt(n * 0.01 * 0.99)
    # rows and columns are not correlated with each other: lag-1 correlation along a row and
    # across rows, each over ~10**6 pairs, has sd ~ 1e-3; allow 5e-3.
    assert abs(np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1]) < 5e-3
    assert abs(np.corrcoef(u[:-1].ravel(), u[1:].ravel())[0, 1]) < 5e-3


def test_different_seeds_differ():
    a = Streams.of(1, 3, "t").uniform(8)
    b = Streams.of(1000, 3, "t").uniform(8)
    assert not np.isin(a, b).any()
    c = Streams.of(2, 3, "t").uniform(8)
    assert not np.isin(a, c).any()
    # successive draws of one stream differ too
    s = Streams.of(1, 1, "t")
    assert not np.array_equal(s.uniform(8), s.uniform(8))


def test_large_and_negative_seeds():
    # seeds are taken modulo 2**64: -1 and 2**64 - 1 are the same stream; huge ones work
    np.testing.assert_array_equal(Streams.of(-1, 2, "t").uniform(3), Streams.of(2**64 - 1, 2, "t").uniform(3))
    assert Streams.of(2**62, 2, "t").uniform(3).shape == (2, 3)
    with pytest.raises(TypeError, match="seed"):
        Streams.of(1.5, 2, "t")


def test_categorical_maps_uniforms_through_the_cdf():
    cdf = np.array([0.2, 0.5, 1.0])
    np.testing.assert_array_equal(
        categorical(np.array([0.0, 0.19, 0.2, 0.49, 0.5, 0.99, 1.0]), cdf), [0, 0, 1, 1, 2, 2, 2]
    )


def _unmix(z: int) -> int:
    """Inverse of SplitMix64's output function (xor-shifts and odd multiplications are bijections)."""
    m = 2**64

    def unxorshift(y: int, s: int) -> int:
        x = y
        for _ in range(64 // s + 1):
            x = y ^ (x >> s)
        return x

    z = unxorshift(z, 31)
    z = z * pow(0x94D049BB133111EB, -1, m) % m
    z = unxorshift(z, 27)
    z = z * pow(0xBF58476D1CE4E5B9, -1, m) % m
    return unxorshift(z, 30)


def test_uniform_extremes_stay_inside_the_open_interval():
    """The documented range is (0, 1): check the two extreme raw outputs of the generator.

    They come with probability ~2**-32 or less per draw, so a statistical test never sees them;
    instead invert the mixer to find keys whose first 64-bit word is all ones (largest) or all
    zeros (smallest). (Regression: the 53-bit version mapped all ones to exactly 1.0, because
    (2**53 - 1) + 0.5 rounds to 2**53 in float64.)
    """
    top = _unmix(2**64 - 1)
    bottom = _unmix(0)
    assert int(_mix(np.array([top], np.uint64))[0]) == 2**64 - 1  # the inversion is right
    u = Streams(np.array([top, bottom], np.uint64)).uniform(2)
    assert (u[1] > 0.0).all(), u[1]
    assert (u[0] < 1.0).all(), u[0]
