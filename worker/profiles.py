"""Emulated hardware classes: one machine plays a laptop, a mining rig, an edge box or a server.

The real measurement stays in worker/profile.py; this module applies an emulation on top of it.

Time model. Each class has a notional *effective* GFLOP/s on shard tasks (small models, small
batches: far below any datasheet peak). The host plays the fastest class in the catalog at its own
real speed, and every other class runs proportionally slower:

    slowdown(class)       = max(1, PEAK_GFLOPS / class.gflops)
    compute_delay(real_s) = real_s * (slowdown - 1)      slept after the real computation,
                                                          so a task takes real_s * slowdown
    transfer_delay(bytes) = 8 * bytes / (bandwidth_mbps * 1e6)   slept per download and upload

So the classes keep their speed ratios on any host, and no class has to be faster than the
machine it runs on. The profile reported at Register carries the class's device class, cores,
memory and bandwidth, and `gflops = measured_gflops / slowdown`: the speed the coordinator will
actually observe, so lease deadlines sized from it hold.

Availability: sessions last Exp(mean_session_s), absences Exp(mean_offline_s). A worker started
with `--churn` leaves after one seeded session; a churn harness restarts it after an absence.
`watts` is the extra draw under load, for the energy line of the benchmark.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

GIB = 1 << 30


@dataclass(frozen=True)
class HardwareClass:
    name: str
    device_class: str       # the HardwareProfile.device_class reported at Register
    description: str
    gflops: float           # notional effective float32 GFLOP/s on shard tasks
    bandwidth_mbps: float   # link speed, both directions
    watts: float            # extra draw under full load over idle
    cores: int
    memory_bytes: int
    mean_session_s: float   # mean time online before leaving
    mean_offline_s: float   # mean time away before coming back


CATALOG: dict[str, HardwareClass] = {c.name: c for c in (
    HardwareClass("laptop-cpu", "cpu", "a volunteer's laptop: 4 cores, home broadband, often closed",
                  gflops=50.0, bandwidth_mbps=50.0, watts=25.0, cores=4, memory_bytes=8 * GIB,
                  mean_session_s=1800.0, mean_offline_s=900.0),
    HardwareClass("gpu-mining-rig", "gpu", "a retired mining rig: consumer GPUs on x1 risers, weak "
                  "CPU, slow uplink, always on", gflops=400.0, bandwidth_mbps=20.0, watts=600.0,
                  cores=2, memory_bytes=8 * GIB, mean_session_s=14400.0, mean_offline_s=300.0),
    HardwareClass("edge-box", "edge", "a single-board computer on a shop shelf or a router",
                  gflops=10.0, bandwidth_mbps=10.0, watts=8.0, cores=4, memory_bytes=2 * GIB,
                  mean_session_s=600.0, mean_offline_s=1200.0),
    HardwareClass("server", "server", "an idle data-centre server lent between batch jobs",
                  gflops=200.0, bandwidth_mbps=1000.0, watts=120.0, cores=32,
                  memory_bytes=128 * GIB, mean_session_s=28800.0, mean_offline_s=60.0),
)}
NAMES = tuple(CATALOG)
PEAK_GFLOPS = max(c.gflops for c in CATALOG.values())


def hardware_class(name: str) -> HardwareClass:
    try:
        return CATALOG[name]
    except KeyError:
        raise ValueError(f"unknown hardware profile {name!r}; known: {', '.join(NAMES)}") from None


def slowdown(hw: HardwareClass) -> float:
    return max(1.0, PEAK_GFLOPS / hw.gflops)


def compute_delay(hw: HardwareClass, real_s: float) -> float:
    """Seconds to sleep after a computation that really took `real_s`."""
    return max(0.0, real_s) * (slowdown(hw) - 1.0)


def transfer_delay(hw: HardwareClass, nbytes: int) -> float:
    """Seconds a transfer of `nbytes` takes on the class's link."""
    return 8.0 * max(0, nbytes) / (hw.bandwidth_mbps * 1e6)


def session_length(mean_s: float, seed: int) -> float:
    """A seeded Exp(mean_s) draw: how long a churning worker stays online before it leaves."""
    if mean_s <= 0:
        raise ValueError("a mean session length must be positive")
    return float(np.random.default_rng([seed, 0x5E55]).exponential(mean_s))


def absence_length(hw: HardwareClass, seed: int) -> float:
    """A seeded Exp(mean_offline_s) draw: how long a churn harness keeps the worker away."""
    return float(np.random.default_rng([seed, 0xAB5E]).exponential(hw.mean_offline_s))


def emulated_profile(hw: HardwareClass, measured: dict) -> dict:
    """The Register profile of `hw` played by a machine that measured `measured`."""
    return {
        "cores": hw.cores,
        "memory_bytes": hw.memory_bytes,
        "gflops": round(float(measured["gflops"]) / slowdown(hw), 3),
        "device_class": hw.device_class,
        "bandwidth_mbps": hw.bandwidth_mbps,
        "profile_name": hw.name,
    }


class Pacing:
    """The delays a worker inserts to play a hardware class; the real machine inserts none."""

    def __init__(self, hw: HardwareClass | None = None):
        self.hw = hw

    def after_compute(self, real_s: float) -> float:
        return compute_delay(self.hw, real_s) if self.hw else 0.0

    def transfer(self, nbytes: int) -> float:
        return transfer_delay(self.hw, nbytes) if self.hw else 0.0


def catalog_table() -> list[dict]:
    """The catalog as plain rows (docs, bench reports), with the derived slowdown."""
    return [{**asdict(c), "slowdown": slowdown(c)} for c in CATALOG.values()]
