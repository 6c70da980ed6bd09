"""Symmetric int8 block quantization for update transport.

Each block of ``block`` consecutive values shares one float32 scale
``s = max|x| / 127``; values are stored as ``q = round(x / s)`` in [-127, 127].
Rounding to nearest bounds the error by ``|x - q * s| <= s / 2`` (plus one float32
rounding when the product q * s is formed). An all-zero block gets scale 0.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._config import FASTMATH


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def quantize_blocks(x, block):
    """(q, scales) for a 1-D float32 array; the last block may be short."""
    d = x.shape[0]
    nblocks = (d + block - 1) // block
    q = np.empty(d, np.int8)
    scales = np.empty(nblocks, np.float32)
    for b in prange(nblocks):
        j0 = b * block
        j1 = min(j0 + block, d)
        peak = np.float32(0.0)
        for j in range(j0, j1):
            peak = max(peak, abs(x[j]))
        scale = np.float32(peak / np.float32(127.0))
        scales[b] = scale
        if scale == 0.0:
            q[j0:j1] = 0
            continue
        # Divide in float64 by the stored float32 scale so the s/2 bound holds exactly.
        inverse = 1.0 / np.float64(scale)
        for j in range(j0, j1):
            level = np.rint(np.float64(x[j]) * inverse)
            q[j] = np.int8(min(max(level, -127.0), 127.0))
    return q, scales


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def dequantize_blocks(q, scales, block):
    """float32 values q * scale of their block."""
    d = q.shape[0]
    out = np.empty(d, np.float32)
    nblocks = scales.shape[0]
    for b in prange(nblocks):
        j0 = b * block
        j1 = min(j0 + block, d)
        scale = scales[b]
        for j in range(j0, j1):
            out[j] = np.float32(q[j]) * scale
    return out
