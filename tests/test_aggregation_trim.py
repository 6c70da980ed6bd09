"""The partition trimmed mean (``_trim``) against a sort, and non-finite detection inside the order kernels."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler import aggregation as agg
from scheduler.aggregation import _trim

RTOL, ATOL = 1e-5, 1e-6


def sorted_trimmed_mean(x, k):
    s = np.sort(x.astype(np.float64), axis=0)
    return s[k : x.shape[0] - k].mean(axis=0)


def make(kind, rng, n, d):
    if kind == "ties":
        return rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    x = rng.standard_normal((n, d)).astype(np.float32)
    if kind == "outliers":
        # At most k rows per column are extreme, so the result stays in the honest range;
        # it must come out exact (no total-minus-extremes cancellation).
        x[0] = 1e30
        x[n // 2, ::3] = -1e30
    elif kind == "sorted":
        x = np.sort(x, axis=0)  # blocks arrive in order: the lists churn every time
    elif kind == "reversed":
        x = np.sort(x, axis=0)[::-1].copy()
    return x


CASES = [(n, k) for n in range(_trim.BLOCK_ROWS, 41) for k in range(1, _trim.MAX_TRIM + 1) if 2 * k < n]


@pytest.mark.parametrize("n,k", CASES)
def test_partition_matches_sort(n, k):
    rng = np.random.default_rng(n * 10 + k)
    for kind in ["random", "ties", "outliers", "sorted", "reversed"]:
        # d spans a partial tile, exact tiles and a ragged last tile.
        for d in [1, 7, _trim.TRIM_TILE, 2 * _trim.TRIM_TILE + 37]:
            x = make(kind, rng, n, d)
            got, finite = _trim.column_trimmed_mean_partition(x, k)
            assert finite and got.dtype == np.float32
            np.testing.assert_allclose(got, sorted_trimmed_mean(x, k), rtol=RTOL, atol=ATOL, err_msg=f"{kind} d={d}")


@pytest.mark.parametrize("n,beta", [(8, 0.1), (12, 0.25), (17, 0.2), (32, 0.1), (40, 0.1), (64, 0.1)])
def test_aggregate_uses_a_correct_kernel_for_every_trim(n, beta):
    """Through the API, including trims above MAX_TRIM (which take the sorting network)."""
    rng = np.random.default_rng(n)
    x = make("random", rng, n, 1000)
    k = agg.trim_count(beta, n)
    np.testing.assert_allclose(
        agg.aggregate(x, "trimmed_mean", beta=beta), sorted_trimmed_mean(x, k), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("n,k", [(8, 1), (8, 3), (11, 2), (16, 4), (32, 3), (35, 3)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_any_non_finite_value_is_detected(n, k, bad):
    """Wherever it sits (first block, later blocks, leftover rows) and wherever it would
    land (among the dropped extremes or the summed middle), one bad value is caught."""
    rng = np.random.default_rng(n + k)
    for row in range(n):
        for kind in ["random", "sorted", "reversed"]:
            x = make(kind, rng, n, 300)
            x[row, 123] = bad
            assert not _trim.column_trimmed_mean_partition(x, k)[1], (row, kind)
            with pytest.raises(agg.NonFiniteUpdateError) as caught:
                agg.aggregate(x, "trimmed_mean", beta=k / n)
            assert list(caught.value.rows) == [row]


@pytest.mark.parametrize("n,rule,params", [(8, "median", {}), (13, "median", {}), (32, "median", {}),
                                           (32, "trimmed_mean", {"beta": 0.2})])  # trim 6: sorting network
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_register_blocked_kernels_detect_non_finite_anywhere(n, rule, params, bad):
    """The register-blocked median and trimmed mean check values as they load them."""
    rng = np.random.default_rng(n)
    for row in range(n):
        x = make("random", rng, n, 600)
        x[row, (row * 37) % 600] = bad  # some land in the ragged last tile
        with pytest.raises(agg.NonFiniteUpdateError) as caught:
            agg.aggregate(x, rule, **params)
        assert list(caught.value.rows) == [row]
