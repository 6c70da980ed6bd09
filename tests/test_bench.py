"""The Ray baseline, the benchmark command and its pieces."""
from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
from ray_support import ray_session  # noqa: F401  (session fixture)

from bench import harness
from bench.baseline import aggregate_mean, assign_shards, run_baseline, run_serial
from bench.cost import CostAssumptions, baseline_cost, volunteer_cost
from scheduler.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent
DEMO_JOB = (ROOT / "deploy" / "jobs" / "digits-mlp.toml").read_text()


def spec_text(rounds: int = 6, shards: int = 5, target: float = 0.0, optimizer: str = "adam") -> str:
    return f"""
[job]
name = "bench-test"
rounds = {rounds}
shards_per_round = {shards}
target_accuracy = {target}
[model]
workload = "mlp"
hidden = [16]
[data]
dataset = "digits"
batch_size = 32
[optimizer]
name = "{optimizer}"
lr = 0.01
"""


def test_ray_runs_on_loopback_only(ray_session):
    """The private Ray session's node address is 127.0.0.1."""
    import ray

    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}


def test_baseline_reproduces_serial_loop_and_stops_at_target(ray_session):
    """Over 3 actors (uneven placement of 5 shards) every round equals the plain serial loop, and
    like the coordinator the run stops at the first round at or above the target."""
    spec = parse_spec(spec_text(rounds=40, shards=5, target=0.8))
    expected = run_serial(spec)
    result = run_baseline(spec, workers=3)
    assert [(r.loss, r.accuracy) for r in result.rounds] == expected
    accuracies = [r.accuracy for r in result.rounds]
    assert accuracies[-1] >= 0.8 and all(a < 0.8 for a in accuracies[:-1]) and len(accuracies) < 40
    assert result.time_to_target_s == result.rounds[-1].wall_s
    assert all(r.samples == 5 * 32 for r in result.rounds)
    assert all(r.wall_s > 0 and r.critical_compute_s <= r.gather_s for r in result.rounds)


def test_assign_shards_partitions_every_shard_once():
    """Static placement covers each shard exactly once, even with more workers than shards."""
    for shards, workers in ((8, 4), (5, 3), (2, 4)):
        placed = sorted(s for part in assign_shards(shards, workers) for s in part)
        assert placed == list(range(shards))


def test_aggregate_mean_ignores_arrival_order():
    import numpy as np

    updates = {2: np.float32([3, 0]), 0: np.float32([1, 2]), 1: np.float32([2, 4])}
    assert aggregate_mean(updates).tolist() == [2.0, 2.0]


def test_scenario_needing_a_missing_worker_flag_is_skipped_with_a_reason():
    """No --profile/--behavior offered: a reason string; offered: per-worker flags."""
    heterogeneous, byzantine = harness.SCENARIOS["heterogeneous"], harness.SCENARIOS["byzantine"]
    assert isinstance(harness.worker_flags(heterogeneous, {"profile": []}), str)
    assert isinstance(harness.worker_flags(byzantine, {"behavior": ["honest", "lazy"]}), str)
    flags = harness.worker_flags(heterogeneous, {"profile": ["server", "edge-box"]})
    assert flags == [["--profile", "server"], ["--profile", "edge-box"]] * 2
    flags = harness.worker_flags(byzantine, {"behavior": ["honest", "nan", "sign-flip"]})
    assert flags == [[], [], [], [], ["--behavior", "sign-flip"]]
    assert harness.worker_flags(harness.SCENARIOS["clean"], {}) == [[]] * 4


def test_scenario_spec_applies_overrides_and_stays_valid():
    text = harness.scenario_spec(DEMO_JOB, harness.SCENARIOS["byzantine"], rounds=7)
    spec = parse_spec(text)
    assert spec.verification.enabled and spec.rounds == 7
    assert tomllib.loads(text)["model"]["hidden"] == [64]
    assert parse_spec(harness.scenario_spec(DEMO_JOB, harness.SCENARIOS["clean"])) == parse_spec(DEMO_JOB)


def test_costs_scale_with_time_and_price():
    costs = CostAssumptions(cloud_usd_per_hour=3.6, energy_usd_per_kwh=0.2)
    assert baseline_cost(1000.0, costs)["usd"] == pytest.approx(1.0)
    one = volunteer_cost(3600.0, ["laptop-cpu", "server"], 0.0, costs)
    assert one["watts"] == 25 + 120 + costs.coordinator_watts
    assert one["usd"] == pytest.approx(one["watts"] / 1000 * 0.2)
    assert volunteer_cost(3600.0, ["laptop-cpu"], 0.5, costs)["verification_share_usd"] == pytest.approx(
        25 / 1000 * 0.2 * 0.5)


@pytest.mark.slow
def test_bench_quick_end_to_end(ray_session, tmp_path, capsys):
    """`shardgrid bench --quick` writes sane results, a report and a plot; --json prints them."""
    from bench.run import main

    out = tmp_path / "bench"
    assert main(["--quick", "--out", str(out), "--json"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == results
    assert (out / "report.md").read_text().count("| ray-baseline |") == 1
    assert (out / "bench-clean.png").stat().st_size > 10_000
    clean = results["scenarios"]["clean"]
    assert clean["status"] == "ok"
    for summary in (clean["baseline"], clean["shardgrid"]):
        assert 0.0 <= summary["final_accuracy"] <= 1.0
        assert summary["wall_s"] > 0 and summary["samples_per_s"] > 0
        assert summary["rounds_run"] == len(summary["per_round"]) > 0
        assert all(0.0 <= r["accuracy"] <= 1.0 and r["wall_s"] > 0 for r in summary["per_round"])
        assert summary["cost"]["usd"] > 0 and summary["bytes_per_sample"] > 0
    # The same deterministic job on the same maths: both must land on the target.
    target = clean["baseline"]["target_accuracy"]
    assert clean["baseline"]["final_accuracy"] >= target
    assert clean["shardgrid"]["final_accuracy"] >= target
    assert "time_to_target_ratio" in results and results["time_to_target_ratio"] > 0
    assert math.isclose(results["time_to_target_ratio"], clean["time_to_target_ratio"])
    assert sum(w["shards_accepted"] for w in clean["shardgrid"]["worker_stats"]) >= \
        clean["shardgrid"]["rounds_run"] * 4
    # Fresh workers are checked (by the coordinator, for this cheap job) until trusted: that
    # extra compute shows as verification overhead, the baseline has none.
    assert clean["shardgrid"]["verification_overhead"] > 0.02
    assert clean["baseline"]["verification_overhead"] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["stream", "unary"])
def test_loadgen_small_fleet_completes_signed_cycles(tmp_path, transport):
    """Five simulated workers register, lease, sign and get their results accepted, over
    WorkStream and over one FetchTask call per task."""
    from bench.loadgen import run_scale

    report = run_scale([5], duration_s=1.5, warmup_s=0.5, out=tmp_path, profile=False,
                       log=lambda line: None, transport=transport)
    assert report["transport"] == transport
    (fleet,) = report["fleets"]
    assert fleet["cycles"] > 0 and fleet["rejected"] == {} and fleet["errors"] == {}
    assert fleet["fetch_task_p50_ms"] <= fleet["fetch_task_p99_ms"]
    assert 0 <= fleet["service_p50_ms"] <= fleet["fetch_task_p50_ms"]  # waiting for work removed
    assert 0 <= fleet["waited_share"] <= 1
    assert fleet["coordinator_rss_mb"] > 0
    assert json.loads((tmp_path / "scale.json").read_text())["fleets"][0]["cycles"] == fleet["cycles"]
    assert "| 5 |" in (tmp_path / "scale.md").read_text()


def test_hottest_frames_counts_each_function_once_per_sample(tmp_path):
    from bench.loadgen import hottest_frames

    raw = tmp_path / "profile.txt"
    raw.write_text("run (x.py:1);fetch_task (scheduler/core.py:10);fetch_task (scheduler/core.py:12) 3\n"
                   "run (x.py:1);submit (scheduler/submission.py:5) 1\n")
    shares = {row["function"]: row["share"] for row in hottest_frames(raw)}
    assert shares == {"fetch_task (scheduler/core.py)": 0.75, "submit (scheduler/submission.py)": 0.25}


def test_transport_bench_measures_both_shapes():
    """bench.transport runs a real echo server process and reports each transport's cost."""
    from bench.transport import run_transport

    report = run_transport(clients=20, seconds=1.0, calls=50, bursts=1)
    for name in ("unary", "stream"):
        row = report[name]
        assert row["exchanges_per_s"] > 0 and row["server_cpu_ms_per_exchange"] > 0
        assert row["round_trip_ms"] > 0
    assert report["server_cpu_ratio"] > 0 and report["round_trip_ratio"] > 0
    assert report["burst"]["server_cpu_ms_per_reply"] >= 0


def test_barrier_bench_leases_every_parked_worker(tmp_path):
    """bench.barrier parks a fleet on a real coordinator, then one job reaches all of it."""
    from bench.barrier import run_barrier

    report = run_barrier(workers=20, bursts=1, workdir=tmp_path)
    (burst,) = report["bursts"]
    assert burst["leased"] == 20
    assert 0 <= burst["p50_ms"] <= burst["last_ms"]
    assert report["coordinator_cpu_ms_per_lease"] >= 0
