"""End to end with real processes: a coordinator and worker processes over 127.0.0.1, the CLI as a
user runs it, and the bad-environment cases (port in use, dead coordinator, Ctrl-C)."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

import pytest

from deploy.local import LocalCluster, shardgrid_command
from scheduler.client import JobClient
from tests.conftest import JOBS


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(shardgrid_command(*args), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_cluster_trains_digits_over_grpc(tmp_path):
    """3 worker processes train the example MLP past 0.93 held-out accuracy; the CLI reports it."""
    with LocalCluster(workers=3, workdir=tmp_path) as cluster:
        submitted = run_cli("submit", str(JOBS / "digits-mlp.toml"), "--coordinator",
                            cluster.address, "--json")
        assert submitted.returncode == 0, submitted.stderr
        job_id = json.loads(submitted.stdout.strip().splitlines()[-1])["job_id"]
        with JobClient(cluster.address) as client:
            final = client.wait(job_id)
        status = run_cli("status", job_id, "--coordinator", cluster.address, "--json")
        workers = run_cli("workers", "--coordinator", cluster.address, "--json")
    assert final["status"] == "completed" and final["final_accuracy"] >= 0.93
    figures = json.loads(status.stdout.strip().splitlines()[-1])
    assert figures["job_id"] == job_id and figures["status"] == "completed"
    assert figures["final_accuracy"] == pytest.approx(final["final_accuracy"])
    assert figures["round"] == final["round"] and figures["results_rejected"] == 0
    rows = json.loads(workers.stdout.strip().splitlines()[-1])
    assert len(rows) == 3 and sum(r["shards_accepted"] for r in rows) == figures["results_accepted"]
    assert all(r["shards_accepted"] > 0 for r in rows)  # every process did real work


@pytest.mark.slow
def test_demo_json_summary():
    """`shardgrid demo --json` ends with one JSON summary of a completed, accurate job."""
    proc = run_cli("demo", "--json", timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["final_accuracy"] >= 0.93
    assert summary["workers"] == 4 and summary["results_accepted"] >= 4 * summary["rounds"]
    for key in ("job_id", "rounds", "wall_s", "results_rejected"):
        assert key in summary


def test_port_in_use_is_a_clear_error(tmp_path):
    """A coordinator given a taken port exits non-zero and says so."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli("coordinator", "--port", str(port), "--db", str(tmp_path / "s.db"))
    assert proc.returncode == 2
    assert "in use" in proc.stderr


def test_worker_waits_out_a_dead_coordinator(tmp_path):
    """A worker pointed at nothing retries with backoff, says so, and stops cleanly on SIGTERM."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    proc = subprocess.Popen(shardgrid_command("worker", "--coordinator", f"127.0.0.1:{port}",
                                              "--key", str(tmp_path / "w.key")),
                            stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert stderr.count("unreachable") >= 2 and "retrying in" in stderr
    assert (tmp_path / "w.key").exists()


def test_cluster_up_ctrl_c_leaves_no_orphans(tmp_path):
    """SIGINT to `shardgrid cluster up` stops the coordinator and every worker."""
    proc = subprocess.Popen(shardgrid_command("cluster", "up", "--workers", "2", "--port", "0",
                                              "--workdir", str(tmp_path)),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    assert "coordinator on 127.0.0.1:" in line
    children = _descendants(proc.pid)
    assert len(children) == 3
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    time.sleep(0.5)
    assert [pid for pid in children if _alive(pid)] == []


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_sigkilled_coordinator_leaves_no_pool_process_behind(tmp_path):
    """The coordinator's spawned re-execution process watches its parent: after kill -9 of the
    coordinator it exits on its own instead of lingering (they used to pile up, ~130 MB each)."""
    with LocalCluster(workers=0, workdir=tmp_path) as cluster:
        coordinator = cluster.coordinator.pid
        deadline = time.monotonic() + 30
        pool = []
        while not pool and time.monotonic() < deadline:  # spawned at start, imports for a while
            pool = [pid for pid in _descendants(coordinator)
                    if "spawn_main" in open(f"/proc/{pid}/cmdline").read().replace("\0", " ")]
            time.sleep(0.1)
        assert pool, "the coordinator starts its re-execution process at start-up"
        cluster.kill_coordinator(signal.SIGKILL)
        cluster.coordinator.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in pool) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in pool)
