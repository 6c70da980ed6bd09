"""What a worker reports about its hardware at Register: counted, and measured where it matters."""
from __future__ import annotations

import os
import time

import numpy as np


def measure_gflops(size: int = 192, seconds: float = 0.15) -> float:
    """float32 matmul throughput over a short window: enough to rank machines, cheap at start."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # first call pays for thread start-up
    reps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        a @ b
        reps += 1
    return 2.0 * size ** 3 * reps / elapsed / 1e9


def memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def measure_profile(profile_name: str = "") -> dict:
    return {
        "cores": os.cpu_count() or 1,
        "memory_bytes": memory_bytes(),
        "gflops": round(measure_gflops(), 3),
        "device_class": "cpu",
        "bandwidth_mbps": 0.0,
        "profile_name": profile_name,
    }
