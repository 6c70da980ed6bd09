"""Garbage-collector settings for the long-running processes (coordinator, worker, load generator).

Every RPC allocates messages, futures and coroutines, so collections run all the time, and each
full collection scans the start-up heap (numpy, numba, scikit-learn, grpc): 13% of the
coordinator's event loop at 1,000 workers, and a ~10 ms stall of a worker every few dozen tasks.
"""
from __future__ import annotations

import gc


def settle_garbage_collector() -> None:
    """Freeze what start-up built (never scanned again) and collect young objects less often;
    what a call allocates is freed by reference counting anyway."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
