"""Public entry points: input checks, rule dispatch and non-finite detection.

Non-finite policy: ``aggregate`` never returns NaN/Inf produced by a bad row. Rules whose
arithmetic provably propagates NaN/Inf (the float64 means, the Gram matrix, the clipping
norms) detect it from their own result and only then locate the bad rows. Rules built on
comparisons could silently drop a NaN: the partition trimmed mean checks every value it
sums or drops, the register-blocked median and trimmed mean (n >= 8) check every value
as they load it, and only the small-n networks (n < 8) screen first.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import _basic, _clip, _distance, _order, _trim
from ._config import DISTANCE_TILE, MEAN_BLOCK, ORDER_TILE, QUANT_BLOCK, REDUCE_CHUNK, STREAM_BLOCK, kernel_guard
from ._errors import InvalidParameterError, InvalidUpdatesError, NonFiniteUpdateError
from ._params import trim_count, validate_params
from ._quant import dequantize_blocks, quantize_blocks

_EMPTY_CENTER = np.zeros(0, np.float64)


def _as_updates(updates: Any) -> np.ndarray:
    """The (n, d) float32 C-contiguous array, or a clear error."""
    if not isinstance(updates, np.ndarray):
        raise InvalidUpdatesError(f"updates must be a numpy array, got {type(updates).__name__}")
    if updates.dtype != np.float32:
        raise InvalidUpdatesError(f"updates must be float32, got {updates.dtype} (convert explicitly)")
    if updates.ndim != 2:
        raise InvalidUpdatesError(f"updates must be 2-D (n workers, d parameters), got shape {updates.shape}")
    if updates.shape[0] == 0 or updates.shape[1] == 0:
        raise InvalidUpdatesError(f"updates must hold at least one row and one column, got shape {updates.shape}")
    # A strided view would silently slow every kernel down; one copy is cheaper.
    return np.ascontiguousarray(updates)


def _raise_non_finite(x: np.ndarray) -> None:
    rows = np.flatnonzero(~_basic.finite_rows(x, REDUCE_CHUNK))
    raise NonFiniteUpdateError(rows)


def _require_finite_rows(x: np.ndarray) -> None:
    if not _basic.finite_rows(x, REDUCE_CHUNK).all():
        _raise_non_finite(x)


def _checked_mean(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    out, finite = _basic.column_weighted_mean(x, weights, MEAN_BLOCK)
    if not finite:
        _raise_non_finite(x)
    return out


def capped_weights(weights: Any, n: int, cap_factor: float) -> np.ndarray:
    """Normalized weights after capping each at cap_factor * median of the positive weights.

    The cap keeps one worker (or a few) that report a huge sample count from owning the
    round: no weight may exceed cap_factor times the typical (median) one.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise InvalidParameterError("weights", f"must have shape ({n},), got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise InvalidParameterError("weights", "must be finite and >= 0")
    positive = w[w > 0]
    if positive.size == 0:
        raise InvalidParameterError("weights", "all weights are zero")
    capped = np.minimum(w, cap_factor * np.median(positive))
    return capped / capped.sum()


def _mean(x, p, screened):
    return _checked_mean(x, np.full(x.shape[0], 1.0 / x.shape[0]))


def _weighted_mean(x, p, screened):
    if p["weights"] is None:
        raise InvalidParameterError("weights", "required by rule 'weighted_mean'")
    return _checked_mean(x, capped_weights(p["weights"], x.shape[0], p["cap_factor"]))


def _column_median(x):
    """(median, all input finite); the flag is only meaningful when _order.checks_finite(n)."""
    n = x.shape[0]
    program, rank_row = _order.selection_program(n, (n - 1) // 2, n // 2)
    return _order.column_median(x, program, rank_row, ORDER_TILE)


def _median(x, p, screened):
    if not screened and not _order.checks_finite(x.shape[0]):
        _require_finite_rows(x)
    out, finite = _column_median(x)
    if not finite:
        _raise_non_finite(x)
    return out


def _trimmed_mean(x, p, screened):
    n = x.shape[0]
    k = trim_count(p["beta"], n)
    if _trim.serves(n, k):
        out, finite = _trim.column_trimmed_mean_partition(x, k)
    else:
        if not screened and not _order.checks_finite(n):
            _require_finite_rows(x)
        program, rank_row = _order.selection_program(n, k, n - 1 - k)
        out, finite = _order.column_trimmed_mean(x, program, rank_row, k, ORDER_TILE)
    if not finite:
        _raise_non_finite(x)
    return out


def pairwise_sq_distances(x: np.ndarray) -> np.ndarray:
    """(n, n) float64 squared distances between rows; raises on NaN/Inf rows."""
    dist = _distance.pairwise_sq_distances(x, REDUCE_CHUNK, DISTANCE_TILE)
    if not np.isfinite(dist).all():
        _raise_non_finite(x)
    return dist


def _krum(x, p, screened):
    chosen = _distance.krum_select(pairwise_sq_distances(x), p["f"], 1)
    return x[chosen[0]].copy()


def _multi_krum(x, p, screened):
    n = x.shape[0]
    m = p["m"] if p["m"] is not None else n - p["f"]
    chosen = _distance.krum_select(pairwise_sq_distances(x), p["f"], m)
    # Zero weight on the others averages the chosen rows without copying them out.
    weights = np.zeros(n)
    weights[chosen] = 1.0 / m
    return _basic.column_weighted_mean(x, weights, MEAN_BLOCK)[0]


def _bulyan(x, p, screened):
    n, f = x.shape[0], p["f"]
    selected = n - 2 * f
    chosen = _distance.bulyan_select(pairwise_sq_distances(x), f, selected)
    program, rank_row = _order.selection_program(selected, 0, selected - 1)
    return _order.column_mean_near_median(x, chosen, selected - 2 * f, program, rank_row, ORDER_TILE)


def _centered_clip(x, p, screened):
    d = x.shape[1]
    if p["center"] is None:
        # A non-finite row is caught by the row norms below (the median's flag may be unset).
        center = _column_median(x)[0].astype(np.float64)
    else:
        center = np.ascontiguousarray(p["center"], dtype=np.float64)
        if center.shape != (d,) or not np.isfinite(center).all():
            raise InvalidParameterError("center", f"must be a finite array of shape ({d},)")
    for _ in range(p["iterations"]):
        sq_norms = _basic.row_sq_norms(x, center, True, REDUCE_CHUNK)
        if not np.isfinite(sq_norms).all():
            _raise_non_finite(x)
        factors = _clip.clip_factors(sq_norms, p["tau"])
        center = _clip.clipped_step(x, center, factors, STREAM_BLOCK)
    return center.astype(np.float32)


_RULE_IMPL: dict[str, Callable[[np.ndarray, dict, bool], np.ndarray]] = {
    "mean": _mean,
    "weighted_mean": _weighted_mean,
    "median": _median,
    "trimmed_mean": _trimmed_mean,
    "krum": _krum,
    "multi_krum": _multi_krum,
    "bulyan": _bulyan,
    "centered_clip": _centered_clip,
}


def clip_rows(x: np.ndarray, clip_norm: float) -> np.ndarray:
    """x with every row of L2 norm above clip_norm scaled down to clip_norm (copy only if needed)."""
    sq_norms = _basic.row_sq_norms(x, _EMPTY_CENTER, False, REDUCE_CHUNK)
    if not np.isfinite(sq_norms).all():
        _raise_non_finite(x)
    factors = _clip.clip_factors(sq_norms, clip_norm)
    if (factors < 1.0).any():
        return _basic.scale_rows(x, factors, STREAM_BLOCK)
    return x


def aggregate(updates: np.ndarray, rule: str, **params: Any) -> np.ndarray:
    """Aggregate an (n, d) float32 array of worker updates into one (d,) float32 update.

    ``rule`` is one of ``RULES``; ``params`` are the rule's parameters (see
    ``validate_params``) plus the optional ``clip_norm`` applied to every row first.
    Raises ``InvalidUpdatesError``, ``InvalidParameterError``, ``ToleranceError`` or
    ``NonFiniteUpdateError`` (all ``AggregationError``, all ``ValueError``).
    """
    x = _as_updates(updates)
    resolved = validate_params(rule, x.shape[0], **params)
    with kernel_guard():
        screened = False
        if resolved["clip_norm"] is not None:
            x = clip_rows(x, resolved["clip_norm"])
            screened = True  # the norms were finite, so every row is
        return _RULE_IMPL[rule](x, resolved, screened)


def screen_finite(updates: np.ndarray) -> np.ndarray:
    """Boolean mask (n,): True where the row holds only finite values."""
    x = _as_updates(updates)
    with kernel_guard():
        return _basic.finite_rows(x, REDUCE_CHUNK)


def _as_vector(name: str, value: Any, dtype: type) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype != dtype or value.ndim != 1:
        raise InvalidParameterError(name, f"must be a 1-D {np.dtype(dtype).name} numpy array")
    return np.ascontiguousarray(value)


def _check_block(block: Any) -> int:
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise InvalidParameterError("block", f"must be a positive integer, got {block!r}")
    return int(block)


def quantize_int8(x: np.ndarray, block: int = QUANT_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Quantize a 1-D float32 vector to (int8 values, one float32 scale per block)."""
    x = _as_vector("x", x, np.float32)
    block = _check_block(block)
    with kernel_guard():
        if not _basic.finite_rows(x.reshape(1, -1), REDUCE_CHUNK)[0]:
            raise NonFiniteUpdateError([0])
        return quantize_blocks(x, block)


def dequantize_int8(q: np.ndarray, scales: np.ndarray, block: int = QUANT_BLOCK) -> np.ndarray:
    """Inverse of ``quantize_int8``: float32 vector q * scale of its block."""
    q = _as_vector("q", q, np.int8)
    scales = _as_vector("scales", scales, np.float32)
    block = _check_block(block)
    if scales.shape[0] != -(-q.shape[0] // block):
        raise InvalidParameterError("scales", f"need {-(-q.shape[0] // block)} scales for {q.shape[0]} values")
    with kernel_guard():
        return dequantize_blocks(q, scales, block)


def warmup() -> None:
    """Compile (first run) or load from cache (later runs) every kernel on tiny inputs."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 37)).astype(np.float32)
    screen_finite(x)
    aggregate(x, "mean", clip_norm=1.0)
    aggregate(x, "weighted_mean", weights=np.arange(1.0, 8.0))
    aggregate(x, "median")
    aggregate(x, "trimmed_mean", beta=0.2)
    # From 8 rows on, median and trimmed mean run other kernels (9: one leftover row too).
    y = rng.standard_normal((9, 37)).astype(np.float32)
    aggregate(y, "median")
    aggregate(y, "trimmed_mean", beta=0.2)
    aggregate(x, "krum", f=1)
    aggregate(x, "multi_krum", f=1, m=3)
    aggregate(x, "bulyan", f=1)
    aggregate(x, "centered_clip", tau=1.0)
    aggregate(x, "centered_clip", tau=1.0, center=np.zeros(37, np.float32))
    q, scales = quantize_int8(x[0], block=16)
    dequantize_int8(q, scales, block=16)
