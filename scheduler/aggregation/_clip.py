"""Centered clipping (Karimireddy, He & Jaggi, ICML 2021).

One iteration, from the current center v::

    v <- v + (1/n) * sum_i (x_i - v) * min(1, tau / ||x_i - v||)

Each iteration is two passes over the updates: the row norms of x_i - v (a chunked
float64 reduction, ``row_sq_norms``) and the clipped update of v (parallel over column
blocks). v is kept in float64 across iterations.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._config import FASTMATH


def clipped_step(x, center, factors, block):
    """v + (1/n) sum_i factors[i] * (x_i - v), column block by column block, in float64."""
    out = np.empty(x.shape[1], np.float64)  # by numpy: huge pages, see _basic
    _clipped_step_into(x, center, factors, block, out)
    return out


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _clipped_step_into(x, center, factors, block, out):
    n, d = x.shape
    nblocks = (d + block - 1) // block
    for b in prange(nblocks):
        j0 = b * block
        width = min(block, d - j0)
        acc = np.zeros(width, np.float64)
        # center sliced like the rows: center[j0 + c] keeps numba's negative-index
        # wraparound in the loop, which stops LLVM from vectorizing it.
        middle = center[j0 : j0 + width]
        for i in range(n):
            weight = factors[i]
            row = x[i, j0 : j0 + width]
            for c in range(width):
                acc[c] += weight * (np.float64(row[c]) - middle[c])
        dst = out[j0 : j0 + width]
        for c in range(width):
            dst[c] = middle[c] + acc[c] / n


def clip_factors(sq_norms: np.ndarray, tau: float) -> np.ndarray:
    """min(1, tau / ||.||) per row; a zero-length difference keeps factor 1."""
    norms = np.sqrt(sq_norms)
    factors = np.ones_like(norms)
    over = norms > tau
    factors[over] = tau / norms[over]
    return factors
