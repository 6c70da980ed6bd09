"""Nothing is lost when the coordinator or workers die: real processes SIGKILLed mid-job, restarts
on the same database, and an audit that replays every commit. The long versions are bench/chaos.py."""
from __future__ import annotations

import signal
import sqlite3
import time

import numpy as np
import pytest

from bench.chaos import (FIVE_MOMENTS, MID_ROUND, chaos_spec, coordinator_kills,
                         uninterrupted_run, worker_churn)
from scheduler.audit import audit, main as audit_main
from scheduler.core import Coordinator
from scheduler.rounds import FAULT_ENV, FaultPoint, fault_plan
from tests.conftest import small_spec
from tests.test_core import Worker

NO_REPLICAS = "[verification]\nenabled = false\n"  # one in-process worker settles every shard


def test_fault_plan_reads_the_environment(monkeypatch):
    """SHARDGRID_FAULT is off by default, names a FaultPoint and a round, and refuses typos."""
    monkeypatch.delenv(FAULT_ENV, raising=False)
    assert fault_plan() is None
    monkeypatch.setenv(FAULT_ENV, "mid-commit:4")
    assert fault_plan() == (FaultPoint.MID_COMMIT, 4)
    monkeypatch.setenv(FAULT_ENV, "mid-comit:4")
    with pytest.raises(ValueError, match="after-aggregate"):
        fault_plan()


def _finished_job(tmp_path, rounds: int = 2, shards: int = 2) -> str:
    """Run a small job to completion in-process, one honest worker; returns the db path."""
    co = Coordinator(tmp_path / "s.db")
    co.start()
    job_id = co.submit_job(small_spec(rounds=rounds, shards=shards, extra=NO_REPLICAS))
    worker = Worker(co)
    for round_no in range(rounds):
        for _ in range(shards):
            assert co.submit_result(*worker.work_one()).accepted
        _wait(lambda: co.job(job_id).round > round_no)
    assert co.job(job_id).status == "completed"
    co.stop()
    return str(tmp_path / "s.db")


def _wait(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


CORRUPTIONS = {  # what is planted -> (SQL that plants it, words the audit must say)
    "ledger row dropped": ("DELETE FROM ledger WHERE rowid = (SELECT MIN(rowid) FROM ledger)",
                           "no ledger row"),
    "accepted result lost": ("DELETE FROM results WHERE rowid = (SELECT MIN(rowid) FROM results)",
                             "no result row"),
    "result applied twice": ("UPDATE rounds SET applied_leases = (SELECT applied_leases FROM "
                             "rounds WHERE round = 0) WHERE round = 1", "applied twice"),
    "committed round lost": ("DELETE FROM rounds WHERE round = 0", "each once"),
    "job pointer off the chain": ("UPDATE jobs SET params_digest = (SELECT params_digest FROM "
                                  "rounds WHERE round = 1)", "not the last round's result"),
    "update swapped": ("UPDATE results SET payload_digest = (SELECT payload_digest FROM results "
                       "WHERE round = 1 AND shard = 0) WHERE round = 0 AND shard = 0",
                       "replaying its updates gives another aggregate"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_audit_reports_planted_corruption(tmp_path, name):
    """A sound database audits clean; each planted inconsistency is reported."""
    db = _finished_job(tmp_path)
    assert audit(db) == [] and audit_main([db]) == 0
    sql, expected = CORRUPTIONS[name]
    with sqlite3.connect(db) as conn:
        conn.execute(sql)
    problems = audit(db)
    assert any(expected in p for p in problems), problems
    assert audit_main([db]) == 1


def test_audit_reports_a_missing_update_blob(tmp_path):
    """An accepted result whose payload blob vanished is a lost result (small updates are rows
    of the blobs table)."""
    db = _finished_job(tmp_path)
    with sqlite3.connect(db) as conn:
        digest = conn.execute("SELECT payload_digest FROM results LIMIT 1").fetchone()[0]
        assert conn.execute("DELETE FROM blobs WHERE digest=?", (digest,)).rowcount == 1
    assert any("payload" in p and "no blob" in p for p in audit(db))


def test_centered_clipping_keeps_its_center_across_a_restart(tmp_path):
    """The aggregate centered clipping starts from is committed with the round, so a restarted
    coordinator continues the same trajectory instead of falling back to the median."""
    spec = small_spec(rounds=5, shards=2, extra=NO_REPLICAS + '[aggregation]\nrule = "centered_clip"\ntau = 1.0\n')
    co = Coordinator(tmp_path / "s.db")
    co.start()
    job_id = co.submit_job(spec)
    worker = Worker(co)
    for _ in range(2):
        assert co.submit_result(*worker.work_one()).accepted
    _wait(lambda: co.job(job_id).round == 1)
    center = co.job(job_id).previous_aggregate.copy()
    co.stop()

    again = Coordinator(tmp_path / "s.db")
    np.testing.assert_array_equal(again.job(job_id).previous_aggregate, center)
    again.stop()


def test_coordinator_sigkilled_at_five_moments_resumes_the_same_job(tmp_path):
    """SIGKILL mid-round, after aggregating, before, inside and right after the commit: each
    restart on the same db and port resumes; the same worker processes reconnect on their own;
    nothing accepted is lost or applied twice; the model is bit for bit the uninterrupted one."""
    spec = chaos_spec(rounds=7)
    outcome = coordinator_kills(spec, FIVE_MOMENTS, workers=2, workdir=tmp_path,
                                worker_args=["--profile", "edge-box"])
    clean = uninterrupted_run(spec)

    assert outcome["job"]["status"] == "completed" and outcome["job"]["round"] == 7
    assert outcome["audit"] == []
    assert outcome["lost_results"] == []
    assert outcome["final_params_digest"] == clean["params_digest"]
    assert outcome["job"]["final_accuracy"] == clean["accuracy"]
    assert outcome["alive_workers"] == 2 and outcome["job"]["workers"] == 2
    for kill in outcome["kills"]:
        assert kill["exit_code"] == -signal.SIGKILL
        if kill["moment"] == MID_ROUND:
            assert kill["job_round_at_kill"] == kill["round"]
            assert 0 < kill["accepted_in_open_round"] < 4
        elif kill["moment"] == FaultPoint.AFTER_COMMIT.value:
            assert kill["job_round_at_kill"] == kill["round"] + 1
        else:  # died before its commit landed: the round is still open, all its results kept
            assert kill["job_round_at_kill"] == kill["round"]
            assert kill["accepted_in_open_round"] == 4


def test_workers_sigkilled_every_round_while_new_ones_join(tmp_path):
    """30% of the workers die each round (lease holders first) and fresh ones join: the dead
    workers' leases end without a result (backed up by an idle worker, or expired), their shards
    are redone by others, and the model is the clean one."""
    spec = chaos_spec(rounds=3, model='workload = "mlp"\nhidden = [32]')
    outcome = worker_churn(spec, workers=4, kill_fraction=0.3, workdir=tmp_path,
                           worker_args=["--profile", "edge-box"])  # slow: victims die mid-task
    clean = uninterrupted_run(spec)

    assert outcome["job"]["status"] == "completed" and outcome["audit"] == []
    assert outcome["workers_killed"] == outcome["workers_joined"] == 2 * 2  # rounds 1 and 2
    # a lease holder is the first victim of each round
    assert outcome["leases_lost_with_workers"] >= 2
    assert outcome["lost_shards_redone_by_others"] == outcome["leases_lost_with_workers"]
    assert outcome["final_params_digest"] == clean["params_digest"]
    assert outcome["job"]["final_accuracy"] == clean["accuracy"]
