"""Distance-based rules: Krum, Multi-Krum and Bulyan's selection stage.

Pairwise squared distances are summed directly from float64 differences, not through
the Gram shortcut ||x_i||^2 + ||x_j||^2 - 2<x_i, x_j>. The shortcut cancels
catastrophically when rows sit close together far from the origin (float32 Gram
distances were measured 200% off at noise 1e-3); centering on the column mean fixes
that case but not an adversarial one: a single row at 1e30 drags the mean along and
the honest rows' distances vanish below the rounding of 1e60-sized Gram entries
(found by our tests). Direct differences are exact for any input and, with the same
n^2/2 * d multiply-adds, measured faster than numpy's BLAS Gram on the centered rows.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._config import FASTMATH


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def pairwise_sq_distances(x, chunk, tile):
    """(n, n) float64 matrix of ||x_i - x_j||^2, computed directly from differences.

    Parallel over chunks of columns; each chunk owns one partial matrix and the partials
    are summed in chunk order afterwards (deterministic for a given d). Within a chunk,
    tiles of columns are widened to float64 first so the inner loops run over
    contiguous, cache-resident rows. A non-finite row yields non-finite distances.
    """
    n, d = x.shape
    nchunks = (d + chunk - 1) // chunk
    partial = np.zeros((nchunks, n, n), np.float64)
    for ch in prange(nchunks):
        dist = partial[ch]
        buf = np.empty((n, tile), np.float64)
        chunk_end = min(ch * chunk + chunk, d)
        for t0 in range(ch * chunk, chunk_end, tile):
            width = min(tile, chunk_end - t0)
            for i in range(n):
                row = x[i, t0 : t0 + width]
                wide = buf[i]
                for c in range(width):
                    wide[c] = row[c]
            for i in range(n):
                row_i = buf[i]
                for j in range(i):
                    row_j = buf[j]
                    s = 0.0
                    for c in range(width):
                        diff = row_i[c] - row_j[c]
                        s += diff * diff
                    dist[i, j] += s
    total = np.zeros((n, n), np.float64)
    for ch in range(nchunks):
        for i in range(n):
            for j in range(i):
                total[i, j] += partial[ch, i, j]
    for i in range(n):
        for j in range(i):
            total[j, i] = total[i, j]
    return total


def krum_scores(dist: np.ndarray, candidates: np.ndarray, f: int) -> np.ndarray:
    """Krum score of each candidate: the sum of its n' - f - 2 smallest distances to the
    other candidates (n' = len(candidates)), at least one neighbour.

    The floor of one neighbour only matters inside Bulyan's iterated selection, where the
    candidate set shrinks below f + 3.
    """
    sub = dist[np.ix_(candidates, candidates)].copy()
    np.fill_diagonal(sub, np.inf)
    neighbours = max(len(candidates) - f - 2, 1)
    if len(candidates) == 1:
        return np.zeros(1)
    return np.sort(sub, axis=1)[:, :neighbours].sum(axis=1)


def krum_select(dist: np.ndarray, f: int, m: int) -> np.ndarray:
    """Indices of the m rows with the lowest Krum scores (ties to the lower index)."""
    scores = krum_scores(dist, np.arange(dist.shape[0]), f)
    return np.sort(np.argsort(scores, kind="stable")[:m])


def bulyan_select(dist: np.ndarray, f: int, count: int) -> np.ndarray:
    """Bulyan's selection: apply Krum repeatedly, each time removing the winner from the
    candidate set, until `count` rows are chosen. Returns their indices, sorted."""
    remaining = np.arange(dist.shape[0])
    chosen = []
    for _ in range(count):
        winner = int(np.argmin(krum_scores(dist, remaining, f)))
        chosen.append(remaining[winner])
        remaining = np.delete(remaining, winner)
    return np.sort(np.array(chosen, dtype=np.int64))
