"""Median and trimmed mean with the first stages of the sorting network in registers.

The buffer networks of ``_order`` round-trip every comparator through an L1 buffer
(two loads and two stores per comparator and vector of 8 columns); the stores bound
them. Here each aligned block of 8 rows of a tile is sorted with a fixed 19-comparator
network on 8 scalars, and each aligned pair of sorted blocks is merged with a fixed
25-comparator network on 16 scalars; LLVM vectorizes both across columns, so the values
stay in registers. These are exactly Batcher's stages of span 1-4 and 8, so only the
remaining comparators (pruned to the ranks we read) run in the buffer: 31 of 157 for
the median of 32, 63 of 189 for the trimmed mean of 32 with trim 3.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit, prange

from ._config import FASTMATH
from ._intrinsics import compare_exchange as _cx

# Rows sorted together in registers: 8 values x 8 float32 columns fill 8 of the 16
# AVX2 registers, leaving room for the comparator temporaries.
BLOCK_ROWS = 8

# Columns per task of the median: (n + 2) rows of them stay in L1/L2 (34 KiB at n = 32).
MEDIAN_TILE = 256


def batcher_staged(n: int) -> list[tuple[int, int, int]]:
    """Comparators (low, high, span) of Batcher's odd-even merge sort on n wires.

    ``span`` is the size of the sorted runs being merged (1, 2, 4, ...); comparators of
    span < BLOCK_ROWS stay inside one aligned block of BLOCK_ROWS wires.
    """
    size = 1
    while size < n:
        size *= 2
    comparators = []
    span = 1
    while span < size:
        k = span
        while k >= 1:
            for j in range(k % span, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    low, high = i + j, i + j + k
                    if low // (2 * span) == high // (2 * span) and high < n:
                        comparators.append((low, high, span))
            k //= 2
        span *= 2
    return comparators


def compile_program(network: list[tuple[int, int]], n: int, first: int,
                    last: int) -> tuple[np.ndarray, np.ndarray]:
    """Prune `network` to the comparators that feed ranks first..last and rename rows so each
    step writes out of place (see ``_order.selection_program`` for why)."""
    needed = set(range(first, last + 1))
    kept = []
    for low, high in reversed(network):
        if low in needed or high in needed:
            kept.append((low, high))
            needed.update((low, high))
    kept.reverse()
    physical = list(range(n))
    spare = [n, n + 1]
    steps = []
    for low, high in kept:
        dst_low, dst_high = spare
        steps.append((physical[low], physical[high], dst_low, dst_high))
        spare = [physical[low], physical[high]]
        physical[low], physical[high] = dst_low, dst_high
    program = np.array(steps, dtype=np.int64).reshape(-1, 4)
    rank_row = np.array(physical, dtype=np.int64)
    program.setflags(write=False)
    rank_row.setflags(write=False)
    return program, rank_row


@lru_cache(maxsize=256)
def merge_program(n: int, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
    """The buffer network that follows the in-register block sort, for ranks first..last.

    Same step format and out-of-place row renaming as ``_order.selection_program``;
    the comparators that sort full 8-row blocks and merge full 16-row blocks are left
    out because ``_load_blocks_and_merge`` applies them in registers first.
    """
    sorted_8 = BLOCK_ROWS * (n // BLOCK_ROWS)
    sorted_16 = 2 * BLOCK_ROWS * (n // (2 * BLOCK_ROWS))
    network = [
        (low, high)
        for low, high, span in batcher_staged(n)
        if not ((span < BLOCK_ROWS and high < sorted_8) or (span == BLOCK_ROWS and high < sorted_16))
    ]
    return compile_program(network, n, first, last)


@njit(inline="always")
def run_program(buf, program, width):
    """Apply the out-of-place comparator steps of a compiled program to the tile in `buf`."""
    for t in range(program.shape[0]):
        a_row = buf[program[t, 0]]
        b_row = buf[program[t, 1]]
        low_row = buf[program[t, 2]]
        high_row = buf[program[t, 3]]
        for c in range(width):
            a = a_row[c]
            b = b_row[c]
            low_row[c] = a if a < b else b
            high_row[c] = b if a < b else a


@njit(inline="always")
def _sort8(a0, a1, a2, a3, a4, a5, a6, a7):
    """Batcher's 19-comparator sorting network on 8 values (its spans 1, 2 and 4)."""
    a0, a1 = _cx(a0, a1)
    a2, a3 = _cx(a2, a3)
    a4, a5 = _cx(a4, a5)
    a6, a7 = _cx(a6, a7)
    a0, a2 = _cx(a0, a2)
    a1, a3 = _cx(a1, a3)
    a4, a6 = _cx(a4, a6)
    a5, a7 = _cx(a5, a7)
    a1, a2 = _cx(a1, a2)
    a5, a6 = _cx(a5, a6)
    a0, a4 = _cx(a0, a4)
    a1, a5 = _cx(a1, a5)
    a2, a6 = _cx(a2, a6)
    a3, a7 = _cx(a3, a7)
    a2, a4 = _cx(a2, a4)
    a3, a5 = _cx(a3, a5)
    a1, a2 = _cx(a1, a2)
    a3, a4 = _cx(a3, a4)
    a5, a6 = _cx(a5, a6)
    return a0, a1, a2, a3, a4, a5, a6, a7


@njit(fastmath=FASTMATH, cache=True)
def _sort_block(flat, r0, width):
    """Sort rows r0..r0+7 of the tile column-wise, in place (row r at flat[r*W:], W = MEDIAN_TILE).

    Reading and writing one array at constant row offsets leaves LLVM no runtime alias
    checks to make; reading the 8 rows straight from x needed more checks than LLVM
    allows, and it left the loop scalar. In place is safe here (no masked stores):
    every stored value comes out of a comparator, never straight from its own load.
    """
    W = MEDIAN_TILE
    # Index a slice from 0: with base + c, numba's negative-index wraparound stays in the
    # address arithmetic (LLVM cannot prove base >= 0) and blocks vectorization.
    block = flat[r0 * W : (r0 + BLOCK_ROWS) * W]
    for c in range(width):
        s0, s1, s2, s3, s4, s5, s6, s7 = _sort8(
            block[c], block[W + c], block[2 * W + c], block[3 * W + c],
            block[4 * W + c], block[5 * W + c], block[6 * W + c], block[7 * W + c],
        )  # fmt: skip
        block[c], block[W + c], block[2 * W + c], block[3 * W + c] = s0, s1, s2, s3
        block[4 * W + c], block[5 * W + c], block[6 * W + c], block[7 * W + c] = s4, s5, s6, s7


@njit(fastmath=FASTMATH, cache=True)
def _merge_blocks(flat, r0, width):
    """Merge the sorted row blocks r0..r0+7 and r0+8..r0+15 (Batcher's span-8 stage, 25 comparators).

    16 values per column exceed the 16 AVX2 registers a little; LLVM's few spills still
    cost far less than the buffer network's two loads and two stores per comparator.
    """
    W = MEDIAN_TILE
    block = flat[r0 * W : (r0 + 2 * BLOCK_ROWS) * W]
    for c in range(width):
        b0, b1, b2, b3, b4, b5, b6, b7 = (
            block[c], block[W + c], block[2 * W + c], block[3 * W + c],
            block[4 * W + c], block[5 * W + c], block[6 * W + c], block[7 * W + c],
        )  # fmt: skip
        b8, b9, b10, b11, b12, b13, b14, b15 = (
            block[8 * W + c], block[9 * W + c], block[10 * W + c], block[11 * W + c],
            block[12 * W + c], block[13 * W + c], block[14 * W + c], block[15 * W + c],
        )  # fmt: skip
        b0, b8 = _cx(b0, b8)
        b1, b9 = _cx(b1, b9)
        b2, b10 = _cx(b2, b10)
        b3, b11 = _cx(b3, b11)
        b4, b12 = _cx(b4, b12)
        b5, b13 = _cx(b5, b13)
        b6, b14 = _cx(b6, b14)
        b7, b15 = _cx(b7, b15)
        b4, b8 = _cx(b4, b8)
        b5, b9 = _cx(b5, b9)
        b6, b10 = _cx(b6, b10)
        b7, b11 = _cx(b7, b11)
        b2, b4 = _cx(b2, b4)
        b3, b5 = _cx(b3, b5)
        b6, b8 = _cx(b6, b8)
        b7, b9 = _cx(b7, b9)
        b10, b12 = _cx(b10, b12)
        b11, b13 = _cx(b11, b13)
        b1, b2 = _cx(b1, b2)
        b3, b4 = _cx(b3, b4)
        b5, b6 = _cx(b5, b6)
        b7, b8 = _cx(b7, b8)
        b9, b10 = _cx(b9, b10)
        b11, b12 = _cx(b11, b12)
        b13, b14 = _cx(b13, b14)
        block[c], block[W + c], block[2 * W + c], block[3 * W + c] = b0, b1, b2, b3
        block[4 * W + c], block[5 * W + c], block[6 * W + c], block[7 * W + c] = b4, b5, b6, b7
        block[8 * W + c], block[9 * W + c], block[10 * W + c], block[11 * W + c] = b8, b9, b10, b11
        block[12 * W + c], block[13 * W + c], block[14 * W + c], block[15 * W + c] = b12, b13, b14, b15


@njit(fastmath=FASTMATH, cache=True)
def _load_blocks_and_merge(x, j0, width, program, flat):
    """Tile rows = x[:, j0:j0+width] with each full 8-row block sorted, then the program.

    Returns True if every value copied in was finite: ``v * 0.0`` is NaN exactly for
    NaN/Inf v (FASTMATH has no nnan, so it is not folded), summed while copying, which
    costs far less than a separate screening pass over x.
    """
    n = x.shape[0]
    buf = flat.reshape((n + 2, MEDIAN_TILE))
    check = np.float32(0.0)
    for r in range(n):
        src = x[r, j0 : j0 + width]
        dst = buf[r]
        for c in range(width):
            dst[c] = src[c]
            check += src[c] * np.float32(0.0)
    for r0 in range(0, n - BLOCK_ROWS + 1, BLOCK_ROWS):
        _sort_block(flat, r0, width)
    for r0 in range(0, n - 2 * BLOCK_ROWS + 1, 2 * BLOCK_ROWS):
        _merge_blocks(flat, r0, width)
    run_program(buf, program, width)
    return check == 0.0


def column_median_blocked(x, program, rank_row):
    """(coordinate-wise median, all input finite) with ``merge_program(n, (n-1)//2, n//2)``;
    float64 middle mean."""
    out = np.empty(x.shape[1], np.float32)  # by numpy: huge pages, see _basic
    return out, _median_into(x, program, rank_row, out)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _median_into(x, program, rank_row, out):
    n, d = x.shape
    tile = MEDIAN_TILE
    lo_row = rank_row[(n - 1) // 2]
    hi_row = rank_row[n // 2]
    ntiles = (d + tile - 1) // tile
    tile_finite = np.empty(ntiles, np.bool_)
    for t in prange(ntiles):
        flat = np.empty((n + 2) * tile, np.float32)
        j0 = t * tile
        width = min(tile, d - j0)
        tile_finite[t] = _load_blocks_and_merge(x, j0, width, program, flat)
        lo = lo_row * tile
        hi = hi_row * tile
        dst = out[j0 : j0 + width]
        for c in range(width):
            dst[c] = (np.float64(flat[lo + c]) + np.float64(flat[hi + c])) * 0.5
    return tile_finite.all()


def column_trimmed_mean_blocked(x, program, rank_row, trim):
    """(trimmed mean, all input finite) with ``merge_program(n, trim, n-1-trim)``: float64
    sum of the kept ranks."""
    out = np.empty(x.shape[1], np.float32)
    return out, _trimmed_mean_into(x, program, rank_row, trim, out)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _trimmed_mean_into(x, program, rank_row, trim, out):
    n, d = x.shape
    tile = MEDIAN_TILE
    kept = n - 2 * trim
    ntiles = (d + tile - 1) // tile
    tile_finite = np.empty(ntiles, np.bool_)
    for t in prange(ntiles):
        flat = np.empty((n + 2) * tile, np.float32)
        acc = np.zeros(tile, np.float64)
        j0 = t * tile
        width = min(tile, d - j0)
        tile_finite[t] = _load_blocks_and_merge(x, j0, width, program, flat)
        for r in range(trim, n - trim):
            row = flat[rank_row[r] * tile : rank_row[r] * tile + width]
            for c in range(width):
                acc[c] += row[c]
        dst = out[j0 : j0 + width]
        for c in range(width):
            dst[c] = acc[c] / kept
    return tile_finite.all()
