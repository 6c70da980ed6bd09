"""Aggregation kernels against their naive numpy references, properties and typed errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from naive_aggregation import (
    NAIVE,
    naive_clip_rows,
    naive_krum_scores,
    naive_median,
    naive_sq_distances,
    naive_trim_count,
)
from scheduler import aggregation as agg
from scheduler.aggregation import _distance, _order

RTOL, ATOL = 1e-5, 1e-6
SETTINGS = settings(max_examples=50, deadline=None)

# Parameters per rule that every n used below (n >= 7 unless stated) tolerates.
PARAMS = {
    "mean": {},
    "weighted_mean": {"weights": None},  # filled per n
    "median": {},
    "trimmed_mean": {"beta": 0.2},
    "krum": {"f": 2},
    "multi_krum": {"f": 2, "m": 3},
    "bulyan": {"f": 1},
    "centered_clip": {"tau": 0.5, "iterations": 3},
}


def params_for(rule, n, rng):
    params = dict(PARAMS[rule])
    if rule == "weighted_mean":
        params["weights"] = rng.integers(1, 100, size=n).astype(np.float64)
    return params


def check_against_naive(x, rule, params):
    """aggregate(x) equals the reference; for Krum also accept an exactly tied row."""
    got = agg.aggregate(x, rule, **params)
    assert got.dtype == np.float32 and got.shape == (x.shape[1],)
    if rule == "krum":
        scores = naive_krum_scores(naive_sq_distances(x), list(range(len(x))), params["f"])
        best = np.flatnonzero(scores <= scores.min() * (1 + 1e-9) + 1e-12)
        assert any(np.array_equal(got, x[i]) for i in best)
    else:
        want = NAIVE[rule](x, **params)
        scale = np.abs(x).max() if x.size else 1.0
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * max(scale, 1.0))


def random_updates(rng, n, d):
    return rng.standard_normal((n, d)).astype(np.float32)


def tied_updates(rng, n, d):
    return rng.integers(-2, 3, size=(n, d)).astype(np.float32)


def huge_updates(rng, n, d):
    x = random_updates(rng, n, d)
    x[0] = 1e30
    x[1, ::3] = -1e30
    return x


def far_row_updates(rng, n, d):
    x = random_updates(rng, n, d)
    x[n // 2] += 1e6
    return x


def close_updates(rng, n, d):
    """Rows almost equal far from the origin: the case an uncentered Gram gets wrong."""
    return (100.0 + 1e-3 * rng.standard_normal((n, d))).astype(np.float32)


@pytest.mark.parametrize("rule", agg.RULES)
@pytest.mark.parametrize("make", [random_updates, tied_updates, huge_updates, far_row_updates, close_updates])
@pytest.mark.parametrize("n,d", [(7, 300), (9, 1037), (16, 257)])
def test_rule_matches_naive(rule, make, n, d):
    """Every rule equals its reference on ordinary, tied, huge, outlier and clustered data."""
    rng = np.random.default_rng(n * d)
    x = make(rng, n, d)
    if rule == "bulyan" and make is tied_updates:
        pytest.skip("Krum ties make Bulyan's selected set implementation-defined")
    if rule == "multi_krum" and make is tied_updates:
        pytest.skip("Krum ties make Multi-Krum's selected set implementation-defined")
    check_against_naive(x, rule, params_for(rule, n, rng))


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize(
    "rule,params",
    [
        ("mean", {}),
        ("weighted_mean", {"weights": [3.0, 1.0, 2.0]}),
        ("median", {}),
        ("trimmed_mean", {"beta": 0.0}),
        ("trimmed_mean", {"beta": 0.1}),
        ("krum", {"f": 0}),
        ("multi_krum", {"f": 0, "m": 2}),
        ("bulyan", {"f": 0}),
        ("centered_clip", {"tau": 0.3, "iterations": 2}),
    ],
)
def test_small_n(rule, params, n):
    """Rules work on 1..3 rows where their tolerance condition allows, and refuse otherwise."""
    rng = np.random.default_rng(n)
    x = random_updates(rng, n, 45)
    params = dict(params)
    if "weights" in params:
        params["weights"] = params["weights"][:n]
    needs = {"trimmed_mean": 3 if params.get("beta") else 1, "krum": 3, "multi_krum": 3, "bulyan": 3}
    if n < needs.get(rule, 1) or (rule == "multi_krum" and params["m"] > n):
        with pytest.raises(agg.AggregationError):
            agg.aggregate(x, rule, **params)
    else:
        check_against_naive(x, rule, params)


@pytest.mark.parametrize("make", [close_updates, huge_updates])
def test_distances_exact_for_close_rows_and_huge_outliers(make):
    """Kernel distances match direct float64 ones for rows at noise 1e-3 and next to a 1e30 row."""
    rng = np.random.default_rng(5)
    x = make(rng, 12, 5000)
    got = _distance.pairwise_sq_distances(x, 1000, 64)
    want = naive_sq_distances(x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("chunk,tile", [(7, 3), (64, 64), (1000, 5)])
def test_distance_chunking_does_not_change_distances(chunk, tile):
    """The chunked, tiled distance kernel agrees with the reference for odd chunk/tile sizes."""
    x = random_updates(np.random.default_rng(chunk), 6, 1001)
    got = _distance.pairwise_sq_distances(x, chunk, tile)
    np.testing.assert_allclose(got, naive_sq_distances(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n", range(1, 20))
def test_selection_program_sorts_every_rank(n):
    """The pruned network for ranks 0..n-1 is a full sort (0-1 principle plus random data)."""
    program, rank_row = _order.selection_program(n, 0, n - 1)
    rng = np.random.default_rng(n)
    for trial in range(50):
        original = list(rng.integers(0, 2 if trial % 2 else 1000, size=n))
        values = original + [None, None]  # the two spare rows
        for a, b, low, high in program:
            values[low], values[high] = min(values[a], values[b]), max(values[a], values[b])
        assert [values[r] for r in rank_row] == sorted(original)


@pytest.mark.parametrize("tile", [1, 5, 256])
@pytest.mark.parametrize("n", [7, 11])  # 7: the network kernels, which take the tile; 11: register-blocked
def test_order_kernels_with_odd_tiles(tile, n):
    """Median and trimmed mean are exact for any tile width, including d not a multiple."""
    x = random_updates(np.random.default_rng(tile), n, 517)
    program, rank_row = _order.selection_program(n, (n - 1) // 2, n // 2)
    median, finite = _order.column_median(x, program, rank_row, tile)
    assert finite
    np.testing.assert_array_equal(median, naive_median(x).astype(np.float32))
    program, rank_row = _order.selection_program(n, 1, n - 2)
    trimmed, finite = _order.column_trimmed_mean(x, program, rank_row, 1, tile)
    assert finite
    np.testing.assert_allclose(trimmed, NAIVE["trimmed_mean"](x, beta=1 / n), rtol=RTOL)


def test_clip_norm_applies_before_the_rule():
    """clip_norm scales long rows to the bound, leaves short ones and the input untouched."""
    rng = np.random.default_rng(3)
    x = random_updates(rng, 8, 200)
    x[2] *= 100
    before = x.copy()
    clipped = naive_clip_rows(x, 20.0)
    for rule in ("mean", "median", "krum"):
        params = params_for(rule, 8, rng) if rule != "krum" else {"f": 1}
        got = agg.aggregate(x, rule, clip_norm=20.0, **params)
        if rule == "krum":
            assert any(np.allclose(got, row, rtol=1e-6) for row in clipped)
        else:
            np.testing.assert_allclose(got, NAIVE[rule](clipped, **params), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(x, before)
    assert np.linalg.norm(clipped[2]) == pytest.approx(20.0, rel=1e-5)


def test_non_contiguous_input_is_accepted():
    """A Fortran-ordered or strided view gives the same result as its contiguous copy."""
    x = random_updates(np.random.default_rng(4), 9, 100)
    np.testing.assert_array_equal(agg.aggregate(np.asfortranarray(x), "median"), agg.aggregate(x, "median"))
    np.testing.assert_array_equal(agg.aggregate(x[:, ::2], "mean"), agg.aggregate(x[:, ::2].copy(), "mean"))


def test_weighted_mean_caps_a_dominant_worker():
    """A worker claiming 10^9 samples weighs at most cap_factor times the median worker."""
    x = np.zeros((5, 4), np.float32)
    x[4] = 1.0
    weights = [10.0, 10.0, 10.0, 10.0, 1e9]
    got = agg.aggregate(x, "weighted_mean", weights=weights, cap_factor=2.0)
    np.testing.assert_allclose(got, 20.0 / 60.0, rtol=1e-6)


# Properties ------------------------------------------------------------------------

finite_floats = st.floats(-1e6, 1e6, width=32, allow_nan=False)


def update_arrays(min_n=7, max_n=12):
    return st.tuples(st.integers(min_n, max_n), st.integers(1, 40)).flatmap(
        lambda shape: hnp.arrays(np.float32, shape, elements=finite_floats)
    )


def krum_selection_has_ties(x, f, rounds):
    """True if any step of (iterated) Krum selection sees two equal scores."""
    dist = naive_sq_distances(x)
    remaining = list(range(len(x)))
    for _ in range(rounds):
        scores = naive_krum_scores(dist, remaining, f)
        if len(np.unique(scores)) < len(scores):
            return True
        remaining.pop(int(np.argmin(scores)))
    return False


PERMUTATION_RULES = ["mean", "median", "trimmed_mean", "bulyan", "centered_clip", "krum", "multi_krum"]


@SETTINGS
@given(x=update_arrays(), seed=st.integers(0, 2**32 - 1), rule=st.sampled_from(PERMUTATION_RULES))
def test_permutation_invariance(x, seed, rule):
    """Reordering the workers does not change the aggregate (up to float rounding)."""
    params = params_for(rule, len(x), np.random.default_rng(seed))
    perm = np.random.default_rng(seed).permutation(len(x))
    if rule in ("krum", "multi_krum", "bulyan") and krum_selection_has_ties(x, params["f"], len(x) - 2 * params["f"]):
        return  # tied scores: the selected set is implementation-defined
    a = agg.aggregate(x, rule, **params)
    b = agg.aggregate(x[perm], rule, **params)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-3)


@SETTINGS
@given(row=hnp.arrays(np.float32, st.integers(1, 50), elements=finite_floats), n=st.integers(7, 12), rule=st.sampled_from(agg.RULES))
def test_identical_rows_return_that_row(row, n, rule):
    """n copies of one update aggregate to that update under every rule."""
    x = np.tile(row, (n, 1))
    params = params_for(rule, n, np.random.default_rng(n))
    np.testing.assert_allclose(agg.aggregate(x, rule, **params), row, rtol=1e-6, atol=1e-6)


@SETTINGS
@given(
    honest=update_arrays(min_n=5, max_n=15),
    junk=st.floats(-1e38, 1e38, allow_nan=False),
    seed=st.integers(0, 2**32 - 1),
    rule=st.sampled_from(["median", "trimmed_mean"]),
)
def test_order_rules_stay_within_honest_range(honest, junk, seed, rule):
    """Replacing up to the tolerated rows by arbitrary values keeps each coordinate in the honest range."""
    rng = np.random.default_rng(seed)
    n = len(honest)
    beta = 0.3
    tolerated = naive_trim_count(beta, n) if rule == "trimmed_mean" else (n - 1) // 2
    bad = rng.choice(n, size=tolerated, replace=False)
    x = honest.copy()
    x[bad] = junk * rng.uniform(-1, 1, size=(tolerated, x.shape[1])).astype(np.float32)
    good = np.delete(honest, bad, axis=0)
    params = {"beta": beta} if rule == "trimmed_mean" else {}
    got = agg.aggregate(x, rule, **params)
    assert (got >= good.min(axis=0)).all() and (got <= good.max(axis=0)).all()


# Errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule,params,n",
    [("krum", {"f": 2}, 6), ("multi_krum", {"f": 1}, 4), ("bulyan", {"f": 1}, 6), ("trimmed_mean", {"beta": 0.3}, 2)],
)
def test_too_few_updates_raise_tolerance_error(rule, params, n):
    """n below the rule's tolerance condition raises ToleranceError, also from validate_params."""
    x = random_updates(np.random.default_rng(0), n, 10)
    with pytest.raises(agg.ToleranceError):
        agg.aggregate(x, rule, **params)
    with pytest.raises(agg.ToleranceError):
        agg.validate_params(rule, n, **params)


@pytest.mark.parametrize("rule", agg.RULES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("clip", [None, 5.0])
def test_non_finite_rows_raise(rule, bad, clip):
    """Any NaN/Inf row makes aggregate raise NonFiniteUpdateError naming that row."""
    rng = np.random.default_rng(1)
    x = random_updates(rng, 9, 70)
    x[4, 33] = bad
    with pytest.raises(agg.NonFiniteUpdateError) as err:
        agg.aggregate(x, rule, clip_norm=clip, **params_for(rule, 9, rng))
    assert err.value.rows == (4,)


def test_screen_finite_marks_bad_rows():
    """screen_finite is False exactly for rows holding NaN or Inf."""
    x = random_updates(np.random.default_rng(2), 6, 100)
    x[1, 99], x[3, 0], x[5, 50] = np.nan, np.inf, 3e38
    assert agg.screen_finite(x).tolist() == [True, False, True, False, True, True]


@pytest.mark.parametrize(
    "updates",
    [np.zeros((4, 5)), np.zeros(5, np.float32), np.zeros((0, 5), np.float32), np.zeros((4, 0), np.float32), [[1.0]]],
)
def test_bad_update_arrays_raise(updates):
    """Wrong dtype, rank, emptiness or type raise InvalidUpdatesError (a ValueError)."""
    with pytest.raises(agg.InvalidUpdatesError):
        agg.aggregate(updates, "mean")
    assert issubclass(agg.InvalidUpdatesError, ValueError)


@pytest.mark.parametrize(
    "rule,params,bad",
    [
        ("averaging", {}, "rule"),
        ("mean", {"beta": 0.1}, "beta"),
        ("trimmed_mean", {}, "beta"),
        ("trimmed_mean", {"beta": 0.5}, "beta"),
        ("krum", {"f": -1}, "f"),
        ("krum", {"f": 1.5}, "f"),
        ("multi_krum", {"f": 1, "m": 0}, "m"),
        ("centered_clip", {"tau": 0.0}, "tau"),
        ("centered_clip", {"tau": 1.0, "iterations": 0}, "iterations"),
        ("median", {"clip_norm": -1.0}, "clip_norm"),
        ("weighted_mean", {"cap_factor": 0.5}, "cap_factor"),
    ],
)
def test_validate_params_names_the_bad_parameter(rule, params, bad):
    """validate_params raises InvalidParameterError whose .param names the culprit."""
    with pytest.raises(agg.InvalidParameterError) as err:
        agg.validate_params(rule, 10, **params)
    assert err.value.param == bad and bad in str(err.value)


def test_validate_params_fills_defaults_and_allows_missing_round_params():
    """Job specs may omit weights/center; defaults are returned filled in."""
    assert agg.validate_params("weighted_mean", 8) == {"weights": None, "cap_factor": 2.0, "clip_norm": None}
    assert agg.validate_params("centered_clip", None, tau=2)["iterations"] == 1
    with pytest.raises(agg.InvalidParameterError, match="weights"):
        agg.aggregate(np.ones((3, 2), np.float32), "weighted_mean")


def test_bad_round_params_raise():
    """Mis-shaped weights or center raise InvalidParameterError naming them."""
    x = np.ones((4, 3), np.float32)
    for rule, params, name in [
        ("weighted_mean", {"weights": [1.0, 2.0]}, "weights"),
        ("weighted_mean", {"weights": [0.0] * 4}, "weights"),
        ("weighted_mean", {"weights": [1.0, -1.0, 1.0, 1.0]}, "weights"),
        ("centered_clip", {"tau": 1.0, "center": np.zeros(2)}, "center"),
        ("centered_clip", {"tau": 1.0, "center": np.full(3, np.nan)}, "center"),
    ]:
        with pytest.raises(agg.InvalidParameterError) as err:
            agg.aggregate(x, rule, **params)
        assert err.value.param == name


# Quantization ----------------------------------------------------------------------


@pytest.mark.parametrize("d,block", [(1, 1), (1000, 256), (1037, 64), (4096, 4096), (513, 1000)])
def test_quantization_error_is_at_most_half_a_step(d, block):
    """|x - dequantize(quantize(x))| <= scale/2 per block; zero blocks round-trip exactly."""
    rng = np.random.default_rng(d)
    x = (rng.standard_normal(d) * rng.choice([1e-20, 1.0, 1e30], size=d)).astype(np.float32)
    x[: min(block, d) // 2] = 0.0
    q, scales = agg.quantize_int8(x, block=block)
    assert q.dtype == np.int8 and scales.dtype == np.float32 and scales.shape == (-(-d // block),)
    back = agg.dequantize_int8(q, scales, block=block)
    step = np.repeat(scales.astype(np.float64), block)[:d]
    exact_error = np.abs(x.astype(np.float64) - q.astype(np.float64) * step)
    assert (exact_error <= step / 2 * (1 + 1e-6)).all()
    float32_error = np.abs(x.astype(np.float64) - back.astype(np.float64))
    assert (float32_error <= step / 2 * (1 + 1e-6) + np.abs(x) * 2**-23).all()


def test_quantization_rejects_bad_input():
    """Non-finite values, wrong dtypes and mismatched scales raise typed errors."""
    with pytest.raises(agg.NonFiniteUpdateError):
        agg.quantize_int8(np.array([1.0, np.inf], np.float32))
    with pytest.raises(agg.InvalidParameterError):
        agg.quantize_int8(np.ones(4))
    with pytest.raises(agg.InvalidParameterError):
        agg.quantize_int8(np.ones(4, np.float32), block=0)
    with pytest.raises(agg.InvalidParameterError):
        agg.dequantize_int8(np.zeros(10, np.int8), np.ones(1, np.float32), block=4)
