"""Round lifecycle: create a job, close a round (aggregate, step, evaluate, commit), recover.

Only the round-driver thread calls close_round, so aggregation kernels never run concurrently.
A round commit is a single transaction after the new blobs are on disk: a coordinator killed at
any point either redoes the aggregation from the stored updates or finds it done.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from scheduler.jobs import TERMINAL, Accepted, JobRuntime, Lease, RoundSummary
from scheduler.optim import Optimizer
from scheduler.spec import JobSpec, parse_spec
from worker.workloads import evaluate_params

if TYPE_CHECKING:
    from scheduler.core import Coordinator


def aggregate_updates(spec: JobSpec, updates: np.ndarray, samples: np.ndarray,
                      previous: np.ndarray | None) -> np.ndarray:
    from scheduler.aggregation import aggregate

    params = {k: v for k, v in spec.aggregation.items() if k != "rule"}
    rule = spec.aggregation["rule"]
    if rule == "weighted_mean":
        params["weights"] = samples.astype(np.float32)
    if rule == "centered_clip":
        params["center"] = previous
    return aggregate(updates, rule, **params)


def _new_optimizer(spec: JobSpec, size: int) -> Optimizer:
    return Optimizer(spec.optimizer, spec.lr, spec.momentum, size)


def create_job(co: "Coordinator", job_id: str, spec: JobSpec, spec_toml: str,
               params: np.ndarray) -> None:
    digest = co.blobs.put_tensor(params)
    now = co.clock()
    job = JobRuntime(job_id, spec, spec_toml, "running", 0, digest, params,
                     _new_optimizer(spec, params.size), now)
    with co.lock:
        co.store.execute("INSERT INTO jobs(job_id, name, spec_toml, status, round, params_digest, "
                         "created_at) VALUES(?,?,?,?,?,?,?)",
                         (job_id, spec.name, spec_toml, "running", 0, digest, now))
        co.jobs[job_id] = job
        co._notify(job)


def close_round(co: "Coordinator", job: JobRuntime) -> None:
    with co.lock:
        round_no, params = job.round, job.params
        chosen = [job.accepted[shard][0] for shard in range(job.spec.shards)]
    updates = np.stack([co.blobs.get_tensor(a.payload_digest) for a in chosen])
    samples = np.array([a.samples for a in chosen], dtype=np.float64)
    aggregate = aggregate_updates(job.spec, updates, samples, job.previous_aggregate)
    new_params = job.optimizer.step(params, aggregate)
    loss, accuracy = evaluate_params(job.spec.workload, new_params)
    params_digest = co.blobs.put_tensor(new_params)
    optimizer_digest = co.blobs.put_tensor(job.optimizer.state())
    now = co.clock()
    with co.lock:
        wall_s = now - job.created_at
        finished = (round_no + 1 >= job.spec.rounds
                    or (job.spec.target_accuracy > 0 and accuracy >= job.spec.target_accuracy))
        with co.store.transaction() as db:
            db.execute("INSERT INTO rounds VALUES(?,?,?,?,?,?,?,?,?)",
                       (job.job_id, round_no, job.params_digest, params_digest, loss, accuracy,
                        len(chosen), wall_s, now))
            db.execute("UPDATE jobs SET round=?, params_digest=?, optimizer_digest=?, final_loss=?,"
                       " final_accuracy=? WHERE job_id=?",
                       (round_no + 1, params_digest, optimizer_digest, loss, accuracy, job.job_id))
            db.execute("UPDATE leases SET state='cancelled' WHERE job_id=? AND round=? AND "
                       "state='active'", (job.job_id, round_no))
            if finished:
                co.finish_job(job, "completed")
        for lease in job.leases.values():
            lease.state = "cancelled"
        job.leases.clear()
        job.accepted.clear()
        job.round, job.params, job.params_digest = round_no + 1, new_params, params_digest
        job.previous_aggregate = aggregate
        job.last_round = RoundSummary(round_no, loss, accuracy, len(chosen), wall_s)
        job.aggregating = False
        co._notify(job)


def recover(co: "Coordinator") -> None:
    """Rebuild memory from the store: workers, every job, and each running round's progress."""
    from scheduler.core import WorkerRecord, load_profile

    for row in co.store.query("SELECT * FROM workers"):
        co.workers[row["worker_id"]] = WorkerRecord(
            row["worker_id"], bytes(row["public_key"]), bytes(row["session_token"] or b""),
            load_profile(row["profile_json"]), co.clock(), row["reputation"], bool(row["banned"]))
    for row in co.store.query("SELECT * FROM jobs ORDER BY created_at"):
        spec = parse_spec(row["spec_toml"])
        params = co.blobs.get_tensor(row["params_digest"])
        optimizer = _new_optimizer(spec, params.size)
        if row["optimizer_digest"]:
            optimizer.load_state(co.blobs.get_tensor(row["optimizer_digest"]))
        job = JobRuntime(row["job_id"], spec, row["spec_toml"], row["status"], row["round"],
                         row["params_digest"], params, optimizer, row["created_at"])
        last = co.store.one("SELECT * FROM rounds WHERE job_id=? ORDER BY round DESC LIMIT 1",
                            (job.job_id,))
        if last is not None:
            job.last_round = RoundSummary(last["round"], last["loss"], last["accuracy"],
                                          last["updates"], last["wall_s"])
        if job.status not in TERMINAL:
            _recover_round(co, job)
        co.jobs[job.job_id] = job


def _recover_round(co: "Coordinator", job: JobRuntime) -> None:
    for row in co.store.query("SELECT * FROM results WHERE job_id=? AND round=? AND "
                              "state='accepted' ORDER BY received_at", (job.job_id, job.round)):
        samples = int(json.loads(row["metrics_json"] or "{}").get("samples", 0))
        job.accepted.setdefault(row["shard"], []).append(
            Accepted(row["lease_id"], row["worker_id"], row["shard"], row["payload_digest"], samples))
    for row in co.store.query("SELECT * FROM leases WHERE job_id=? AND round=? AND state='active'",
                              (job.job_id, job.round)):
        job.leases[row["lease_id"]] = Lease(row["lease_id"], job.job_id, row["round"], row["shard"],
                                            row["worker_id"], row["issued_at"], row["deadline"])
