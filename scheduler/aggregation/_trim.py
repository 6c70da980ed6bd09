"""Trimmed mean by partition, not by sorting: only the k smallest and k largest matter.

The trimmed sum needs the *set* of the n - 2k middle values per column, not their order.
Rows are taken in aligned blocks of 8; each block is sorted in registers (19 comparators,
LLVM vectorizes across columns). Ranks k..7-k of a sorted block are middle values of the
whole column for sure (k values below and k above them in the block alone), so they go
straight to the sum. The running k smallest and k largest (two sorted lists in the tile
buffer) merge with the block's k lowest and k highest: min(low[i], block[k-1-i]) keeps
the k smallest of both lists and the k maxima it drops are middle values, summed too
(symmetrically at the top). The kept list is bitonic, so a few comparators re-sort it.
Every value is summed directly in float64, never as total minus extremes, so a 1e30
outlier cannot cancel the rest. At n = 32, k = 3 that is 106 comparators where the
sorting network pruned to ranks 3..28 needs 189.

The steady-state merge is written out for k = 1..4 (register code needs k fixed); the
first block and the n mod 8 leftover rows use loops over buffer rows, which accept any k.

Memory: blocks are read straight from x, and while one block is processed (in chunks of
CHUNK columns) the next block's lines are prefetched. Without that, a core alternates
between waiting for memory and computing (measured: 1.45x slower at n = 32, d = 1e7).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._config import FASTMATH
from ._intrinsics import compare_exchange as _cx
from ._intrinsics import prefetch
from ._select import BLOCK_ROWS, _sort8

# Largest trim the register merge handles: a block of 8 splits into k low and k high.
MAX_TRIM = BLOCK_ROWS // 2

# Tile buffer rows: the 8 values of a block to be summed (row 0 also takes a leftover
# row), then two sets of lists (k low, k high each) that alternate as source and
# destination. Blocks are read straight from x.
SUM_ROWS = 0
LISTS_A = SUM_ROWS + BLOCK_ROWS
LISTS_B = LISTS_A + 2 * MAX_TRIM
BUFFER_ROWS = LISTS_B + 2 * MAX_TRIM

# Columns per task: BUFFER_ROWS rows of them (24 KiB) and a float64 accumulator row.
TRIM_TILE = 256
# Columns per step of a block, after which the matching lines of the next block are
# prefetched (2 cache lines per row; 32 and 64 measured alike, 128 slower).
CHUNK = 32
# float32 values per 64-byte cache line.
LINE = 16


@njit(inline="always")
def _sort3_cap(a0, a1, a2):
    """Sort a ∧-shaped triple (its minimum sits at an end)."""
    a0, a2 = _cx(a0, a2)
    a1, a2 = _cx(a1, a2)
    return a0, a1, a2


@njit(inline="always")
def _sort3_cup(a0, a1, a2):
    """Sort a ∨-shaped triple (its maximum sits at an end)."""
    a0, a2 = _cx(a0, a2)
    a0, a1 = _cx(a0, a1)
    return a0, a1, a2


@njit(inline="always")
def _sort4_bitonic(a0, a1, a2, a3):
    """Sort a bitonic 4-sequence (half-cleaner, then pairs)."""
    a0, a2 = _cx(a0, a2)
    a1, a3 = _cx(a1, a3)
    a0, a1 = _cx(a0, a1)
    a2, a3 = _cx(a2, a3)
    return a0, a1, a2, a3


@njit(inline="always")
def _load8(rows, c):
    """Column c of 8 row slices of x, sorted."""
    x0, x1, x2, x3, x4, x5, x6, x7 = rows
    return _sort8(x0[c], x1[c], x2[c], x3[c], x4[c], x5[c], x6[c], x7[c])


@njit(inline="always")
def _rows8(x, r0, j0, width):
    """Rows r0..r0+7 of x as 1-D slices over columns j0..j0+width-1.

    1-D slices of a C array keep a known unit stride; a 2-D slice (or one passed in
    from the caller) does not, and LLVM then gathers element by element.
    """
    j1 = j0 + width
    return (
        x[r0, j0:j1], x[r0 + 1, j0:j1], x[r0 + 2, j0:j1], x[r0 + 3, j0:j1],
        x[r0 + 4, j0:j1], x[r0 + 5, j0:j1], x[r0 + 6, j0:j1], x[r0 + 7, j0:j1],
    )  # fmt: skip


@njit(inline="always")
def _store8(block, at, c, v0, v1, v2, v3, v4, v5, v6, v7):
    W = TRIM_TILE
    block[at + c], block[at + W + c], block[at + 2 * W + c], block[at + 3 * W + c] = v0, v1, v2, v3
    block[at + 4 * W + c], block[at + 5 * W + c], block[at + 6 * W + c], block[at + 7 * W + c] = v4, v5, v6, v7


@njit(inline="always")
def _merge_lists(rows, block, k, width, src, dst):
    """One block against the lists at rows src.. (k low, then k high); new lists to rows dst..

    The 8 values to be summed go to the SUM_ROWS rows. Inlined with constant src/dst so
    all offsets are constants, and out of place: an in-place ``low = min(low, s)`` becomes
    a masked store (vmaskmovps), microcoded and slow on AMD.
    """
    W = TRIM_TILE
    lo, new_lo = src * W, dst * W
    out = SUM_ROWS * W
    if k == 1:
        hi, new_hi = lo + W, new_lo + W
        for c in range(width):
            s0, s1, s2, s3, s4, s5, s6, s7 = _load8(rows, c)
            block[new_lo + c], p0 = _cx(block[lo + c], s0)
            q0, block[new_hi + c] = _cx(block[hi + c], s7)
            _store8(block, out, c, s1, s2, s3, s4, s5, s6, p0, q0)
    elif k == 2:
        hi, new_hi = lo + 2 * W, new_lo + 2 * W  # literal k: constant offsets
        for c in range(width):
            s0, s1, s2, s3, s4, s5, s6, s7 = _load8(rows, c)
            l0, p0 = _cx(block[lo + c], s1)
            l1, p1 = _cx(block[lo + W + c], s0)
            q0, h0 = _cx(block[hi + c], s7)
            q1, h1 = _cx(block[hi + W + c], s6)
            block[new_lo + c], block[new_lo + W + c] = _cx(l0, l1)
            block[new_hi + c], block[new_hi + W + c] = _cx(h0, h1)
            _store8(block, out, c, s2, s3, s4, s5, p0, p1, q0, q1)
    elif k == 3:
        hi, new_hi = lo + 3 * W, new_lo + 3 * W  # literal k: constant offsets
        for c in range(width):
            s0, s1, s2, s3, s4, s5, s6, s7 = _load8(rows, c)
            l0, p0 = _cx(block[lo + c], s2)
            l1, p1 = _cx(block[lo + W + c], s1)
            l2, p2 = _cx(block[lo + 2 * W + c], s0)
            q0, h0 = _cx(block[hi + c], s7)
            q1, h1 = _cx(block[hi + W + c], s6)
            q2, h2 = _cx(block[hi + 2 * W + c], s5)
            block[new_lo + c], block[new_lo + W + c], block[new_lo + 2 * W + c] = _sort3_cap(l0, l1, l2)
            block[new_hi + c], block[new_hi + W + c], block[new_hi + 2 * W + c] = _sort3_cup(h0, h1, h2)
            _store8(block, out, c, s3, s4, p0, p1, p2, q0, q1, q2)
    else:
        hi, new_hi = lo + 4 * W, new_lo + 4 * W
        for c in range(width):
            s0, s1, s2, s3, s4, s5, s6, s7 = _load8(rows, c)
            l0, p0 = _cx(block[lo + c], s3)
            l1, p1 = _cx(block[lo + W + c], s2)
            l2, p2 = _cx(block[lo + 2 * W + c], s1)
            l3, p3 = _cx(block[lo + 3 * W + c], s0)
            q0, h0 = _cx(block[hi + c], s7)
            q1, h1 = _cx(block[hi + W + c], s6)
            q2, h2 = _cx(block[hi + 2 * W + c], s5)
            q3, h3 = _cx(block[hi + 3 * W + c], s4)
            l0, l1, l2, l3 = _sort4_bitonic(l0, l1, l2, l3)
            h0, h1, h2, h3 = _sort4_bitonic(h0, h1, h2, h3)
            block[new_lo + c], block[new_lo + W + c], block[new_lo + 2 * W + c], block[new_lo + 3 * W + c] = l0, l1, l2, l3
            block[new_hi + c], block[new_hi + W + c], block[new_hi + 2 * W + c], block[new_hi + 3 * W + c] = h0, h1, h2, h3
            _store8(block, out, c, p0, p1, p2, p3, q0, q1, q2, q3)


@njit(inline="always")
def _prefetch_rows(x, row, rows, col, width):
    """Prefetch x[row:row+rows, col:col+width] (the columns clipped to x)."""
    end = min(col + width, x.shape[1])
    for r in range(row, row + rows):
        for c in range(col, end, LINE):
            prefetch(x, r, c)


@njit(fastmath=FASTMATH, cache=True)
def _merge_block(x, r0, j0, flat, k, width, parity, acc, ahead_row, ahead_rows, ahead_col):
    """Fold the block x[r0:r0+8, j0:j0+width] into the lists (at LISTS_A when parity is 0,
    else LISTS_B; the new lists go to the other set) and add what leaves them to ``acc``.

    Chunk by chunk, then the same columns (from ahead_col) of rows ahead_row.. are prefetched.
    """
    for c0 in range(0, width, CHUNK):
        part = min(CHUNK, width - c0)
        # Slices starting at the chunk: with base + c, numba's negative-index wraparound
        # stays in the address arithmetic and stops vectorization (see _select).
        rows = _rows8(x, r0, j0 + c0, part)
        block = flat[c0:]
        if parity == 0:
            _merge_lists(rows, block, k, part, LISTS_A, LISTS_B)
        else:
            _merge_lists(rows, block, k, part, LISTS_B, LISTS_A)
        _prefetch_rows(x, ahead_row, ahead_rows, ahead_col + c0, CHUNK)
    _sum8(flat, width, acc)


@njit(inline="always")
def _sum8(flat, width, acc):
    """acc += the SUM_ROWS rows in float64 (kept apart from the comparators: float64 in
    that loop halves its vector width or stops LLVM from vectorizing it)."""
    W = TRIM_TILE
    rows = flat[SUM_ROWS * W : (SUM_ROWS + BLOCK_ROWS) * W]
    for c in range(width):
        acc[c] += (
            (np.float64(rows[c]) + np.float64(rows[W + c]))
            + (np.float64(rows[2 * W + c]) + np.float64(rows[3 * W + c]))
        ) + (
            (np.float64(rows[4 * W + c]) + np.float64(rows[5 * W + c]))
            + (np.float64(rows[6 * W + c]) + np.float64(rows[7 * W + c]))
        )


@njit(fastmath=FASTMATH, cache=True)
def _sum_rows(flat, first, rows, width, acc):
    """acc += buffer rows first..first+rows-1, in float64."""
    W = TRIM_TILE
    for r in range(first, first + rows):
        row = flat[r * W : r * W + width]
        for c in range(width):
            acc[c] += row[c]


@njit(fastmath=FASTMATH, cache=True)
def _start_lists(x, j0, flat, k, width, acc, ahead_row, ahead_rows, ahead_col):
    """First block: sort it; its k lowest and k highest start the lists (at LISTS_A)."""
    W = TRIM_TILE
    for c0 in range(0, width, CHUNK):
        part = min(CHUNK, width - c0)
        rows = _rows8(x, 0, j0 + c0, part)
        block = flat[c0:]
        for c in range(part):
            s0, s1, s2, s3, s4, s5, s6, s7 = _load8(rows, c)
            _store8(block, SUM_ROWS * W, c, s0, s1, s2, s3, s4, s5, s6, s7)
        _prefetch_rows(x, ahead_row, ahead_rows, ahead_col + c0, CHUNK)
    for i in range(k):
        _copy_row(flat, SUM_ROWS + i, LISTS_A + i, width)
        _copy_row(flat, SUM_ROWS + BLOCK_ROWS - k + i, LISTS_A + k + i, width)
    _sum_rows(flat, SUM_ROWS + k, BLOCK_ROWS - 2 * k, width, acc)


@njit(fastmath=FASTMATH, cache=True)
def _insert_row(flat, k, width, lists, acc):
    """Fold one leftover value per column (buffer row 0) into the lists at rows lists...

    It passes down the high list from the top (each step keeps the larger value); what
    falls out below its bottom passes up the low list from the bottom (each step keeps
    the smaller value), and what falls out above its top is a middle value.
    """
    W = TRIM_TILE
    carry = flat[:width]
    for i in range(k - 1, -1, -1):
        high = flat[(lists + k + i) * W : (lists + k + i) * W + width]
        for c in range(width):
            a = carry[c]
            b = high[c]
            carry[c] = a if a < b else b
            high[c] = b if a < b else a
    for i in range(k):
        low = flat[(lists + i) * W : (lists + i) * W + width]
        for c in range(width):
            a = carry[c]
            b = low[c]
            carry[c] = b if a < b else a
            low[c] = a if a < b else b
    _sum_rows(flat, 0, 1, width, acc)


@njit(inline="always")
def _copy_row(flat, src, dst, width):
    W = TRIM_TILE
    a = flat[src * W : src * W + width]
    b = flat[dst * W : dst * W + width]
    for c in range(width):
        b[c] = a[c]


@njit(fastmath=FASTMATH, cache=True)
def _copy_to_row0(x, r, j0, width, flat):
    """x[r, j0:j0+width] into buffer row 0."""
    src = x[r, j0 : j0 + width]
    dst = flat[:width]
    for c in range(width):
        dst[c] = src[c]


@njit(inline="always")
def _after_block(b, full_blocks, n, j0):
    """(first row, row count, first column) of what the kernel reads after block b."""
    if b + 1 < full_blocks:
        return (b + 1) * BLOCK_ROWS, BLOCK_ROWS, j0
    if n > full_blocks * BLOCK_ROWS:
        return full_blocks * BLOCK_ROWS, n - full_blocks * BLOCK_ROWS, j0
    return 0, BLOCK_ROWS, j0 + TRIM_TILE


def serves(n: int, trim: int) -> bool:
    """True if ``column_trimmed_mean_partition`` handles n rows and this trim."""
    return n >= BLOCK_ROWS and 1 <= trim <= MAX_TRIM


@njit(fastmath={"reassoc"}, cache=True)
def _all_finite(acc, flat, first, rows, width):
    """True if the float64 sums and the dropped values (buffer rows first..) are all finite.

    ``v * 0.0`` is NaN exactly for NaN/Inf v. Only "reassoc" (so the sum vectorizes): the
    nnan/ninf/nsz flags would fold the product to zero.
    """
    W = TRIM_TILE
    check = 0.0
    for c in range(width):
        check += acc[c] * 0.0
    for r in range(first, first + rows):
        row = flat[r * W : r * W + width]
        for c in range(width):
            check += np.float64(row[c]) * 0.0
    return check == 0.0


def column_trimmed_mean_partition(x, trim):
    """(mean of each column without its `trim` smallest and largest values, all input finite).

    Needs ``serves(n, trim)``. The output is allocated by numpy (huge pages, see _basic).
    """
    out = np.empty(x.shape[1], np.float32)
    return out, _trimmed_mean_into(x, trim, out)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _trimmed_mean_into(x, trim, out):
    """Writes the trimmed means into out; returns True if all input was finite.

    Comparators only ever swap values, so every input ends up either in a float64 sum
    (where NaN/Inf propagate) or among the dropped values (checked at the end of the
    tile): non-finite input is detected without a screening pass.
    """
    n, d = x.shape
    W = TRIM_TILE
    kept = n - 2 * trim
    full_blocks = n // BLOCK_ROWS
    ntiles = (d + W - 1) // W
    tile_finite = np.empty(ntiles, np.bool_)
    for t in prange(ntiles):
        flat = np.empty(BUFFER_ROWS * W, np.float32)
        acc = np.zeros(W, np.float64)
        j0 = t * W
        width = min(W, d - j0)
        ahead_row, ahead_rows, ahead_col = _after_block(0, full_blocks, n, j0)
        _start_lists(x, j0, flat, trim, width, acc, ahead_row, ahead_rows, ahead_col)
        parity = 0
        for b in range(1, full_blocks):
            ahead_row, ahead_rows, ahead_col = _after_block(b, full_blocks, n, j0)
            _merge_block(x, b * BLOCK_ROWS, j0, flat, trim, width, parity, acc, ahead_row, ahead_rows, ahead_col)
            parity = 1 - parity
        lists = LISTS_A if parity == 0 else LISTS_B
        for r in range(full_blocks * BLOCK_ROWS, n):
            _copy_to_row0(x, r, j0, width, flat)
            _insert_row(flat, trim, width, lists, acc)
        tile_finite[t] = _all_finite(acc, flat, lists, 2 * trim, width)
        dst = out[j0 : j0 + width]  # sliced: out[j0 + c] would not vectorize (see _merge_block)
        for c in range(width):
            dst[c] = acc[c] / kept
    return tile_finite.all()
