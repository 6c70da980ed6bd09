"""Coordinate-wise order statistics: median and trimmed mean via sorting networks.

Each parallel task copies an (n, tile) block of columns into a private buffer and runs
a comparator network over whole rows of that buffer: every comparator is a
branch-free min/max over ``tile`` contiguous columns, which LLVM turns into packed
SIMD min/max. The network is Batcher's odd-even merge sort for the next power of two
(comparators that touch padding rows are dropped, as if the padding held +inf),
then pruned backwards to the comparators that can influence the output rows we read.
``column_median`` and ``column_trimmed_mean`` hand n >= 8 to ``_select``, which runs
the first stages of the same network in registers.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit, prange

from . import _select
from ._config import FASTMATH


def _batcher_comparators(n: int) -> list[tuple[int, int]]:
    """Comparators (low, high) of Batcher's odd-even merge sort restricted to n wires."""
    return [(low, high) for low, high, _ in _select.batcher_staged(n)]


@lru_cache(maxsize=256)
def selection_program(n: int, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
    """Compile a network that leaves sorted ranks first..last (inclusive) correct.

    Returns ``(program, rank_row)``: program is an (m, 4) int64 array of steps
    ``(src_a, src_b, dst_low, dst_high)`` over the n + 2 physical rows of a tile buffer,
    and ``rank_row[r]`` is the physical row holding rank r at the end (valid for the
    requested ranks only).

    Pruning: walking the network backwards, a comparator is kept only if one of its
    wires still feeds a wanted output; the others cannot change those outputs.

    Out of place on purpose: an in-place ``row[c] = min(row[c], other[c])`` is compiled
    by LLVM into a masked store (vmaskmovps), which is microcoded and ~4x slower on the
    AMD cores we measured. Each step therefore writes its outputs into the two rows
    freed by the previous step, so no row is read and written by the same step.
    """
    return _select.compile_program(_batcher_comparators(n), n, first, last)


@njit(fastmath=FASTMATH, cache=True)
def _load_and_sort(x, rows, j0, width, program, buf):
    """Copy x[rows, j0:j0+width] into buf, then run the network program column-wise."""
    for r in range(rows.shape[0]):
        src = x[rows[r], j0 : j0 + width]
        dst = buf[r]
        for c in range(width):
            dst[c] = src[c]
    _select.run_program(buf, program, width)


def checks_finite(n: int) -> bool:
    """True if ``column_median``/``column_trimmed_mean`` detect NaN/Inf input at n rows."""
    return n >= _select.BLOCK_ROWS


def column_median(x, program, rank_row, tile):
    """(coordinate-wise median, all input finite); ``program``/``rank_row`` from
    ``selection_program(n, (n-1)//2, n//2)``.

    From 8 rows on, the register-blocked kernel of ``_select`` (its own network, fixed
    tile) is ~1.2-1.3x faster and checks finiteness while loading; the given network and
    tile serve the smaller n and do not check (the flag is then True: screen first, see
    ``checks_finite``).
    """
    n = x.shape[0]
    if n >= _select.BLOCK_ROWS:
        merge, merge_rank_row = _select.merge_program(n, (n - 1) // 2, n // 2)
        return _select.column_median_blocked(x, merge, merge_rank_row)
    out = np.empty(x.shape[1], np.float32)  # by numpy: huge pages, see _basic
    _network_median(x, program, rank_row, tile, out)
    return out, True


def column_trimmed_mean(x, program, rank_row, trim, tile):
    """(mean of each column without its ``trim`` smallest and largest values, all input
    finite), as ``column_median``. Callers prefer ``_trim`` where it serves."""
    n = x.shape[0]
    if n >= _select.BLOCK_ROWS:
        merge, merge_rank_row = _select.merge_program(n, trim, n - 1 - trim)
        return _select.column_trimmed_mean_blocked(x, merge, merge_rank_row, trim)
    out = np.empty(x.shape[1], np.float32)
    _network_trimmed_mean(x, program, rank_row, trim, tile, out)
    return out, True


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _network_median(x, program, rank_row, tile, out):
    """Coordinate-wise median; for even n the mean of the two middle values (in float64)."""
    n, d = x.shape
    rows = np.arange(n)
    lo_row = rank_row[(n - 1) // 2]
    hi_row = rank_row[n // 2]
    ntiles = (d + tile - 1) // tile
    for t in prange(ntiles):
        buf = np.empty((n + 2, tile), np.float32)
        j0 = t * tile
        width = min(tile, d - j0)
        _load_and_sort(x, rows, j0, width, program, buf)
        for c in range(width):
            out[j0 + c] = (np.float64(buf[lo_row, c]) + np.float64(buf[hi_row, c])) * 0.5


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _network_trimmed_mean(x, program, rank_row, trim, tile, out):
    """Per column, drop the `trim` smallest and `trim` largest values and average the rest."""
    n, d = x.shape
    rows = np.arange(n)
    kept = n - 2 * trim
    ntiles = (d + tile - 1) // tile
    for t in prange(ntiles):
        buf = np.empty((n + 2, tile), np.float32)
        acc = np.empty(tile, np.float64)
        j0 = t * tile
        width = min(tile, d - j0)
        _load_and_sort(x, rows, j0, width, program, buf)
        acc[:width] = 0.0
        for r in range(trim, n - trim):
            row = buf[rank_row[r]]
            for c in range(width):
                acc[c] += row[c]
        for c in range(width):
            out[j0 + c] = acc[c] / kept


def column_mean_near_median(x, rows, keep, program, rank_row, tile):
    """Bulyan's coordinate stage (see ``_mean_near_median_into``)."""
    out = np.empty(x.shape[1], np.float32)
    _mean_near_median_into(x, rows, keep, program, rank_row, tile, out)
    return out


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _mean_near_median_into(x, rows, keep, program, rank_row, tile, out):
    """Bulyan's coordinate stage over x[rows]: average the `keep` values nearest the median.

    From the sorted column, a window grows outwards from the middle rank(s), each step
    taking whichever neighbour is closer to the median (the lower one on a tie), so the
    choice depends only on the values, never on row order.
    """
    m = rows.shape[0]
    d = x.shape[1]
    lo_rank = (m - 1) // 2
    hi_rank = m // 2
    ntiles = (d + tile - 1) // tile
    for t in prange(ntiles):
        buf = np.empty((m + 2, tile), np.float32)
        column = np.empty(m, np.float64)
        j0 = t * tile
        width = min(tile, d - j0)
        _load_and_sort(x, rows, j0, width, program, buf)
        for c in range(width):
            for r in range(m):
                column[r] = buf[rank_row[r], c]
            median = (np.float64(column[lo_rank]) + np.float64(column[hi_rank])) * 0.5
            lo = lo_rank
            hi = hi_rank
            total = np.float64(column[lo])
            if hi != lo:
                total += column[hi]
            for _ in range(keep - (hi - lo + 1)):
                take_low = hi == m - 1 or (
                    lo > 0 and median - column[lo - 1] <= column[hi + 1] - median
                )
                if take_low:
                    lo -= 1
                    total += column[lo]
                else:
                    hi += 1
                    total += column[hi]
            out[j0 + c] = total / keep
