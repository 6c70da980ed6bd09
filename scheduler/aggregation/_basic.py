"""Streaming kernels: column mean, weighted mean, row norms, row scaling, finiteness.

All are memory-bound single passes over the (n, d) float32 array. Parallel loops run
over disjoint column blocks or reduction chunks and write only their own slice.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._config import FASTMATH


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def column_weighted_mean(x, weights, block):
    """sum_i weights[i] * x[i, :] in float64 per column, stored as float32.

    For the plain mean pass weights = 1/n. Non-finite inputs propagate to the output
    (no fast-math nnan/ninf), which the caller uses to detect them without a second pass.
    """
    n, d = x.shape
    out = np.empty(d, np.float32)
    nblocks = (d + block - 1) // block
    for b in prange(nblocks):
        j0 = b * block
        width = min(block, d - j0)
        acc = np.zeros(width, np.float64)
        for i in range(n):
            w = weights[i]
            row = x[i, j0 : j0 + width]
            for c in range(width):
                acc[c] += w * row[c]
        for c in range(width):
            out[j0 + c] = acc[c]
    return out


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def row_sq_norms(x, center, use_center, chunk):
    """Squared L2 norm of every row of x (or of x - center when use_center), in float64.

    One partial per chunk of columns, summed in chunk order, so the result depends on
    d and chunk only. A non-finite row yields a non-finite norm. ``center`` may be
    empty when ``use_center`` is False.
    """
    n, d = x.shape
    nchunks = (d + chunk - 1) // chunk
    partial = np.zeros((nchunks, n), np.float64)
    for ch in prange(nchunks):
        j0 = ch * chunk
        j1 = min(j0 + chunk, d)
        for i in range(n):
            s = 0.0
            if use_center:
                for j in range(j0, j1):
                    diff = np.float64(x[i, j]) - center[j]
                    s += diff * diff
            else:
                for j in range(j0, j1):
                    value = np.float64(x[i, j])
                    s += value * value
            partial[ch, i] = s
    out = np.zeros(n, np.float64)
    for ch in range(nchunks):
        for i in range(n):
            out[i] += partial[ch, i]
    return out


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def scale_rows(x, factors, block):
    """Copy of x with row i multiplied by factors[i] (float32 arithmetic)."""
    n, d = x.shape
    out = np.empty_like(x)
    nblocks = (d + block - 1) // block
    for b in prange(nblocks):
        j0 = b * block
        j1 = min(j0 + block, d)
        for i in range(n):
            f = np.float32(factors[i])
            for j in range(j0, j1):
                out[i, j] = x[i, j] * f
    return out


@njit(parallel=True, fastmath={"reassoc"}, cache=True)
def finite_rows(x, chunk):
    """Boolean mask of rows whose every entry is finite.

    ``v * 0.0`` is NaN exactly for NaN/Inf v: a branch-free test. Only "reassoc" is
    enabled (so the sum vectorizes); the nnan/ninf/nsz flags would fold it to zero.
    """
    n, d = x.shape
    nchunks = (d + chunk - 1) // chunk
    partial = np.zeros((nchunks, n), np.float32)
    for ch in prange(nchunks):
        j0 = ch * chunk
        j1 = min(j0 + chunk, d)
        for i in range(n):
            s = np.float32(0.0)
            for j in range(j0, j1):
                s += x[i, j] * np.float32(0.0)
            partial[ch, i] = s
    ok = np.ones(n, np.bool_)
    for ch in range(nchunks):
        for i in range(n):
            if partial[ch, i] != 0.0:  # NaN compares unequal to everything
                ok[i] = False
    return ok
