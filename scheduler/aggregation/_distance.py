"""Distance-based rules: Krum, Multi-Krum and Bulyan's selection stage.

Pairwise squared distances come from a Gram matrix of the *centered* rows, accumulated
in float64: ||x_i - x_j||^2 = G_ii + G_jj - 2 G_ij. Without centering, updates that sit
close together far from the origin lose every significant digit of their differences
to cancellation (float32 Gram distances were measured 200% off at noise 1e-3).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._config import FASTMATH


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def centered_gram(x, chunk, tile):
    """Lower triangle of (x - colmean)(x - colmean)^T in float64, as a symmetric (n, n) array.

    Parallel over chunks of columns; each chunk owns one partial Gram matrix and the
    partials are summed in chunk order afterwards (deterministic for a given d).
    Within a chunk, tiles of columns are centered into a float64 buffer first, so the
    dot products run over contiguous, cache-resident rows.
    """
    n, d = x.shape
    nchunks = (d + chunk - 1) // chunk
    partial = np.zeros((nchunks, n, n), np.float64)
    for ch in prange(nchunks):
        gram = partial[ch]
        buf = np.empty((n, tile), np.float64)
        mean = np.empty(tile, np.float64)
        for t0 in range(ch * chunk, min(ch * chunk + chunk, d), tile):
            width = min(tile, d - t0)
            mean[:width] = 0.0
            for i in range(n):
                row = x[i, t0 : t0 + width]
                for c in range(width):
                    mean[c] += row[c]
            for c in range(width):
                mean[c] /= n
            for i in range(n):
                row = x[i, t0 : t0 + width]
                centered = buf[i]
                for c in range(width):
                    centered[c] = np.float64(row[c]) - mean[c]
            for i in range(n):
                row_i = buf[i]
                for j in range(i + 1):
                    row_j = buf[j]
                    s = 0.0
                    for c in range(width):
                        s += row_i[c] * row_j[c]
                    gram[i, j] += s
    total = np.zeros((n, n), np.float64)
    for ch in range(nchunks):
        for i in range(n):
            for j in range(i + 1):
                total[i, j] += partial[ch, i, j]
    for i in range(n):
        for j in range(i):
            total[j, i] = total[i, j]
    return total


def squared_distances(gram: np.ndarray) -> np.ndarray:
    """Pairwise squared distances from a Gram matrix, clamped at 0 against rounding."""
    diag = np.diag(gram)
    return np.maximum(diag[:, None] + diag[None, :] - 2.0 * gram, 0.0)


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
