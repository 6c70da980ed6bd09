"""Emulated hardware classes: the pure time model, the reported profile, fleet mixes, and an
emulated worker as the coordinator sees it."""
from __future__ import annotations

import threading
import time

import pytest

from deploy.mix import MixError, parse_mix
from shardgrid.cli import build_parser
from tests.conftest import small_spec
from worker import profiles
from worker.agent import WorkerAgent
from worker.profiles import CATALOG, Pacing, hardware_class

MEASURED = {"cores": 2, "memory_bytes": 1 << 30, "gflops": 40.0, "device_class": "cpu",
            "bandwidth_mbps": 0.0, "profile_name": ""}


def test_catalog_has_the_four_classes_with_sane_figures():
    """laptop-cpu, gpu-mining-rig, edge-box and server exist, with positive figures."""
    assert {"laptop-cpu", "gpu-mining-rig", "edge-box", "server"} <= set(CATALOG)
    for hw in CATALOG.values():
        assert min(hw.gflops, hw.bandwidth_mbps, hw.watts, hw.cores, hw.memory_bytes,
                   hw.mean_session_s, hw.mean_offline_s) > 0
    with pytest.raises(ValueError, match="known: laptop-cpu"):
        hardware_class("quantum-toaster")


def test_compute_delay_orders_classes_by_speed_and_scales_real_time():
    """Slower classes wait longer; the fastest waits not at all; a task takes real_s * slowdown."""
    real_s = 0.01
    by_speed = sorted(CATALOG.values(), key=lambda hw: hw.gflops)
    delays = [profiles.compute_delay(hw, real_s) for hw in by_speed]
    assert delays == sorted(delays, reverse=True) and delays[-1] == 0.0
    laptop = CATALOG["laptop-cpu"]
    expected = real_s * profiles.PEAK_GFLOPS / laptop.gflops
    assert real_s + profiles.compute_delay(laptop, real_s) == pytest.approx(expected)
    assert profiles.compute_delay(laptop, 2 * real_s) == pytest.approx(2 * delays[1])


def test_transfer_delay_is_bytes_over_bandwidth():
    """A 50 Mbit/s link moves 6.25 MB in one second; faster links take proportionally less."""
    laptop, server = CATALOG["laptop-cpu"], CATALOG["server"]
    assert profiles.transfer_delay(laptop, 6_250_000) == pytest.approx(1.0)
    assert profiles.transfer_delay(server, 6_250_000) == pytest.approx(0.05)
    assert profiles.transfer_delay(laptop, 0) == 0.0


def test_real_machine_pacing_adds_nothing():
    """Without --profile the worker runs at its own speed."""
    assert Pacing().after_compute(1.0) == 0.0 and Pacing().transfer(10**9) == 0.0


def test_emulated_profile_reports_the_class_with_observable_speed():
    """Register carries the class's name, device, cores, memory, link, and gflops / slowdown."""
    edge = CATALOG["edge-box"]
    reported = profiles.emulated_profile(edge, MEASURED)
    assert reported["profile_name"] == "edge-box" and reported["device_class"] == "edge"
    assert reported["memory_bytes"] == edge.memory_bytes and reported["cores"] == edge.cores
    assert reported["bandwidth_mbps"] == edge.bandwidth_mbps
    assert reported["gflops"] == pytest.approx(40.0 * edge.gflops / profiles.PEAK_GFLOPS)
    assert set(reported) == set(MEASURED)


def test_session_lengths_are_seeded_exponential():
    """Churn sessions repeat per seed, differ across seeds, and average to the mean."""
    assert profiles.session_length(60.0, 7) == profiles.session_length(60.0, 7)
    draws = [profiles.session_length(60.0, seed) for seed in range(2000)]
    assert len(set(draws)) == len(draws)
    assert sum(draws) / len(draws) == pytest.approx(60.0, rel=0.1)
    with pytest.raises(ValueError):
        profiles.session_length(0.0, 1)


def test_parse_mix_expands_counts_in_order():
    """'laptop-cpu:2,gpu-mining-rig:1,server+sign-flip' gives four workers' extra arguments."""
    assert parse_mix("laptop-cpu:2, gpu-mining-rig:1,server+sign-flip") == [
        ["--profile", "laptop-cpu"], ["--profile", "laptop-cpu"],
        ["--profile", "gpu-mining-rig"], ["--profile", "server", "--behavior", "sign-flip"]]
    assert parse_mix("alie:1") == [["--behavior", "alie"]]


@pytest.mark.parametrize("text, complaint", [
    ("laptop:2", "neither a profile"), ("server:0", "at least 1"), ("server:x", "whole number"),
    ("server+edge-box", "two hardware profiles"), ("nan+alie", "two behaviours"), (" , ", "empty"),
])
def test_parse_mix_names_the_bad_entry(text, complaint):
    """A bad mix is refused with the entry and the problem named."""
    with pytest.raises(MixError, match=complaint):
        parse_mix(text)


def test_worker_cli_offers_profiles_and_behaviors():
    """`shardgrid worker` accepts every catalog profile and behaviour and refuses others."""
    parser = build_parser()
    args = parser.parse_args(["worker", "--profile", "edge-box", "--behavior", "ipm",
                              "--attack-after", "3", "--churn", "--churn-mean-s", "5"])
    assert (args.profile, args.behavior, args.attack_after, args.churn_mean_s) == \
        ("edge-box", "ipm", 3, 5.0)
    defaults = parser.parse_args(["worker"])
    assert defaults.profile is None and defaults.behavior == "honest"
    with pytest.raises(SystemExit):
        parser.parse_args(["worker", "--profile", "mainframe"])


class RecordingPacing(Pacing):
    """The server class's pacing, remembering what the agent asked it."""

    def __init__(self):
        super().__init__(CATALOG["server"])
        self.computes: list[float] = []
        self.transfers: list[int] = []

    def after_compute(self, real_s: float) -> float:
        self.computes.append(real_s)
        return super().after_compute(real_s)

    def transfer(self, nbytes: int) -> float:
        self.transfers.append(nbytes)
        return super().transfer(nbytes)


def test_emulated_worker_is_listed_and_paced(coordinator, client, tmp_path):
    """The coordinator lists the emulated class, and the agent paces every compute and transfer."""
    job = client.submit(small_spec(rounds=2, shards=2, extra="[verification]\nenabled = false\n"))
    pacing = RecordingPacing()
    agent = WorkerAgent(coordinator.address, tmp_path / "w.key",
                        profiles.emulated_profile(CATALOG["server"], MEASURED),
                        max_tasks=2, pacing=pacing)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while client.get(job)["results_accepted"] < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        listed = [w for w in client.workers() if w["worker_id"] == agent.worker_id]
    finally:
        agent.close()
        thread.join(timeout=15)
    assert listed and listed[0]["profile"]["profile_name"] == "server"
    assert listed[0]["profile"]["device_class"] == "server"
    assert listed[0]["profile"]["gflops"] == pytest.approx(40.0 / profiles.slowdown(CATALOG["server"]))
    assert len(pacing.computes) == 2 and all(s > 0 for s in pacing.computes)
    # Both shards of round 0: one download of its parameters (cached for the second shard), then
    # two uploads, all of the model's size.
    assert len(pacing.transfers) == 3 and len(set(pacing.transfers)) == 1
