"""Numeric settings and the threading-layer choice for every aggregation kernel.

This module must be imported before any parallel kernel compiles: numba reads
``config.THREADING_LAYER`` once, when it launches its thread pool.

Why TBB: the coordinator calls ``aggregate`` from several gRPC handler threads and
forks worker processes in tests and local deployments. numba's ``workqueue`` layer
aborts the process when two threads enter a parallel region at once, and the
``omp`` layer (GNU OpenMP) leaves forked children unable to run parallel code.
TBB is both thread-safe and fork-safe. When the TBB library cannot be loaded we
fall back to ``workqueue`` and serialize every kernel call through one lock, which
is correct but lets only one aggregation run at a time.
"""

from __future__ import annotations

import contextlib
import os
import threading

import numba
from numba.np.ufunc import parallel as _numba_parallel

# LLVM fast-math flags without "nnan"/"ninf": kernels must never assume finite inputs,
# because non-finite detection relies on NaN/Inf propagating through the arithmetic.
# "reassoc" lets reductions vectorize; "contract" allows fused multiply-add.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Columns processed together by the streaming kernels (norms, clipping); a float64
# accumulator of this width (16 KiB) stays in L1.
STREAM_BLOCK = 2048
# Columns per task of the (weighted) mean; its float64 accumulator (64 KiB) sits in L2.
# Longer runs per row read faster than STREAM_BLOCK (measured 53 vs 56 ms at n = 32,
# d = 1e7, rows added 4 at a time).
MEAN_BLOCK = 8192
# Columns per tile for the order-statistic kernels; an (n + 2, TILE) float32 buffer is
# 34 KiB at n = 32 (L1-sized); wider tiles amortize the per-comparator overhead (measured).
ORDER_TILE = 256
# Columns per tile for the pairwise-distance kernel (float64 tile of (n, DISTANCE_TILE)).
DISTANCE_TILE = 64
# Columns per reduction chunk. Reductions over d (norms, Gram matrices) sum one partial
# per chunk in chunk order, so results depend on d only, never on the thread count.
REDUCE_CHUNK = 1 << 16
# Elements per int8 quantization block (one float32 scale each).
QUANT_BLOCK = 256


def _tbb_loadable() -> bool:
    """True if numba can load its TBB pool (the same checks numba runs at launch)."""
    try:
        _numba_parallel._check_tbb_version_compatible()
        from numba.np.ufunc import tbbpool  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def _choose_threading_layer() -> str:
    if _numba_parallel._is_initialized:
        # Someone already ran a parallel kernel: the layer is fixed for this process.
        return numba.threading_layer()
    layer = "tbb" if _tbb_loadable() else "workqueue"
    numba.config.THREADING_LAYER = layer
    return layer


THREADING_LAYER: str = os.environ.get("SHARDGRID_FORCE_THREADING_LAYER") or _choose_threading_layer()
if os.environ.get("SHARDGRID_FORCE_THREADING_LAYER"):
    # Test hook: exercise the serialized fallback even where TBB is present.
    numba.config.THREADING_LAYER = THREADING_LAYER

# TBB tolerates concurrent callers; every other layer gets one process-wide lock.
SERIALIZE_KERNELS: bool = THREADING_LAYER != "tbb"
_kernel_lock = threading.RLock()


def kernel_guard() -> contextlib.AbstractContextManager:
    """Context manager to hold around kernel calls; a no-op under TBB."""
    return _kernel_lock if SERIALIZE_KERNELS else contextlib.nullcontext()
