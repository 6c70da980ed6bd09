"""Round lifecycle: create a job, close a round (aggregate, step, evaluate, commit), recover.

Only the round-driver thread calls close_round, so aggregation kernels never run concurrently.
A round commit is a single transaction (holding its small blobs) after its large blobs are on
disk: a coordinator killed at any point either redoes the aggregation from the stored updates or
finds it done.

Fault injection (tests and bench/chaos.py only, off by default): SHARDGRID_FAULT="POINT:ROUND"
makes the coordinator SIGKILL itself when closing round ROUND reaches POINT, one of FaultPoint.
A restart without the variable must then resume as if nothing happened; scheduler/audit.py checks.
"""
from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np

from protos.codec import encode_tensor, sha256_hex
from scheduler.jobs import TERMINAL, Accepted, JobRuntime, Lease
from scheduler.optim import Optimizer
from scheduler.spec import JobSpec, parse_spec
from worker.workloads import evaluate_params

if TYPE_CHECKING:
    from scheduler.core import Coordinator


FAULT_ENV = "SHARDGRID_FAULT"


class FaultPoint(str, Enum):
    """The instants of a round close at which a test may kill the coordinator."""

    AFTER_AGGREGATE = "after-aggregate"  # aggregate and step done in memory, nothing written
    BEFORE_COMMIT = "before-commit"      # new parameter and optimizer blobs on disk, no transaction
    MID_COMMIT = "mid-commit"            # round row and job pointer written, transaction open
    AFTER_COMMIT = "after-commit"        # transaction committed, memory not advanced yet


def fault_plan() -> tuple[FaultPoint, int] | None:
    """The fault SHARDGRID_FAULT asks for, or None; a malformed value fails the coordinator start."""
    raw = os.environ.get(FAULT_ENV, "").strip()
    if not raw:
        return None
    point, _, round_no = raw.rpartition(":")
    try:
        return FaultPoint(point), int(round_no)
    except ValueError:
        known = ", ".join(p.value for p in FaultPoint)
        raise ValueError(f"{FAULT_ENV}={raw!r}: expected POINT:ROUND with POINT one of {known}"
                         ) from None


def _maybe_die(point: FaultPoint, round_no: int) -> None:
    if fault_plan() == (point, round_no):
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: exactly like kill -9


MEAN_RULES = ("mean", "weighted_mean")


def per_worker(updates: np.ndarray, samples: np.ndarray,
               workers: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One row per worker: the mean of its updates this round, with its total samples."""
    ids = sorted(set(workers))
    rows = np.stack([updates[[i for i, w in enumerate(workers) if w == wid]].mean(axis=0)
                     for wid in ids]).astype(np.float32)
    totals = np.array([samples[[i for i, w in enumerate(workers) if w == wid]].sum() for wid in ids])
    return rows, totals


def aggregate_updates(spec: JobSpec, updates: np.ndarray, samples: np.ndarray,
                      previous: np.ndarray | None, workers: list[str] | None = None) -> np.ndarray:
    """Apply the job's rule. Robust rules count *workers*, not shards: a worker that computed
    several shards of a round must not cast several votes, so its updates are averaged first.
    If fewer workers delivered the round than the rule tolerates, it falls back to the shards."""
    from scheduler.aggregation import ToleranceError

    rule = spec.aggregation["rule"]
    if workers is not None and rule not in MEAN_RULES and len(set(workers)) < len(workers):
        rows, totals = per_worker(updates, samples, workers)
        try:
            return _apply_rule(spec, rows, totals, previous)
        except ToleranceError:
            pass  # too few distinct workers this round for the rule: vote per shard
    return _apply_rule(spec, updates, samples, previous)


def _apply_rule(spec: JobSpec, rows: np.ndarray, weights: np.ndarray,
                previous: np.ndarray | None) -> np.ndarray:
    from scheduler.aggregation import aggregate

    params = {k: v for k, v in spec.aggregation.items() if k != "rule"}
    if spec.aggregation["rule"] == "weighted_mean":
        params["weights"] = weights.astype(np.float32)
    if spec.aggregation["rule"] == "centered_clip":
        params["center"] = previous
    return aggregate(rows, spec.aggregation["rule"], **params)


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
        co.offer_work(2 * spec.shards)  # every shard, and its replica


_blob_writers: ThreadPoolExecutor | None = None


def _store_large(co: "Coordinator", blobs: list[bytes]) -> list[str]:
    """The blobs' digests, large ones written to files first, side by side on threads (hashing
    and writing release the GIL, and the workers are idle while a round closes): on a 1.2 MB
    model the three writes were ~12 ms of a ~27 ms round close, one after the other."""
    global _blob_writers

    def store(data: bytes) -> str:
        digest = sha256_hex(data)
        if not co.blobs.is_small(len(data)):
            co.blobs.put(data, digest)
        return digest

    if all(co.blobs.is_small(len(data)) for data in blobs):
        return [store(data) for data in blobs]  # no file: not worth a thread hand-off
    if _blob_writers is None:
        _blob_writers = ThreadPoolExecutor(max_workers=3, thread_name_prefix="round-blobs")
    return list(_blob_writers.map(store, blobs))


def close_round(co: "Coordinator", job: JobRuntime) -> None:
    with co.lock:
        round_no, params = job.round, job.params
        chosen = [job.shards[shard].settled for shard in range(job.spec.shards)]
    updates = co.blobs.get_tensors([a.payload_digest for a in chosen])
    samples = np.array([a.samples for a in chosen], dtype=np.float64)
    aggregate = aggregate_updates(job.spec, updates, samples, job.previous_aggregate,
                                  [a.worker_id for a in chosen])
    new_params = job.optimizer.step(params, aggregate)
    loss, accuracy = evaluate_params(job.spec.workload, new_params)
    _maybe_die(FaultPoint.AFTER_AGGREGATE, round_no)
    # The aggregate is stored so that centered clipping restarts from the same center after a
    # coordinator restart. Large blobs are files written now, outside the lock; small ones are
    # rows of the round's own transaction below (one commit, not one per blob).
    blobs = [encode_tensor(a) for a in (new_params, job.optimizer.state(), aggregate)]
    digests = _store_large(co, blobs)
    params_digest, optimizer_digest, aggregate_digest = digests
    _maybe_die(FaultPoint.BEFORE_COMMIT, round_no)
    now = co.clock()
    with co.lock:
        wall_s = now - job.created_at
        finished = (round_no + 1 >= job.spec.rounds
                    or (job.spec.target_accuracy > 0 and accuracy >= job.spec.target_accuracy))
        with co.store.transaction() as db:
            for data, digest in zip(blobs, digests):
                if co.blobs.is_small(len(data)):
                    co.blobs.put(data, digest)
            db.execute("INSERT INTO rounds(job_id, round, params_digest, next_params_digest, loss,"
                       " accuracy, updates, wall_s, closed_at, aggregate_digest, applied_leases)"
                       " VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                       (job.job_id, round_no, job.params_digest, params_digest, loss, accuracy,
                        len(chosen), wall_s, now, aggregate_digest,
                        json.dumps([a.lease_id for a in chosen])))
            db.execute("UPDATE jobs SET round=?, params_digest=?, optimizer_digest=?, final_loss=?,"
                       " final_accuracy=? WHERE job_id=?",
                       (round_no + 1, params_digest, optimizer_digest, loss, accuracy, job.job_id))
            db.execute("UPDATE leases SET state='cancelled' WHERE job_id=? AND round=? AND "
                       "state='active'", (job.job_id, round_no))
            if finished:
                co.finish_job(job, "completed")
            _maybe_die(FaultPoint.MID_COMMIT, round_no)
        _maybe_die(FaultPoint.AFTER_COMMIT, round_no)
        job.end_all_leases("cancelled")
        job.next_round()
        job.round, job.params, job.params_digest = round_no + 1, new_params, params_digest
        job.previous_aggregate = aggregate
        job.aggregating = False
        co._notify(job)
        co.offer_work(2 * job.spec.shards)  # the new round's shards and replicas


def recover(co: "Coordinator") -> None:
    """Rebuild memory from the store: workers, every job, and each running round's progress."""
    from scheduler.core import WorkerRecord, load_profile
    from scheduler.verification import Trust

    for row in co.store.query("SELECT * FROM workers"):
        trust = Trust(row["reputation"], row["streak"], row["proven_wrong"], bool(row["banned"]))
        co.workers[row["worker_id"]] = WorkerRecord(
            row["worker_id"], bytes(row["public_key"]), bytes(row["session_token"] or b""),
            load_profile(row["profile_json"]), co.clock(), trust,
            round((row["registered_at"] or 0) * 1000))
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
        if last is not None and last["aggregate_digest"]:
            job.previous_aggregate = co.blobs.get_tensor(last["aggregate_digest"])
        if job.status not in TERMINAL:
            _recover_round(co, job)
        co.jobs[job.job_id] = job


def _recover_round(co: "Coordinator", job: JobRuntime) -> None:
    for row in co.store.query("SELECT * FROM results WHERE job_id=? AND round=? AND state IN "
                              "('accepted', 'pending') ORDER BY received_at", (job.job_id, job.round)):
        samples = int(json.loads(row["metrics_json"] or "{}").get("samples", 0))
        result = Accepted(row["lease_id"], row["worker_id"], row["shard"], row["payload_digest"],
                          samples)
        state = job.shard(row["shard"])
        state.results.append(result)
        state.holders.add(row["worker_id"])
        if row["state"] == "accepted" and state.settled is None:
            job.settle(state, result)  # the earliest verified result, as before the restart
    for row in co.store.query("SELECT * FROM leases WHERE job_id=? AND round=? AND state='active'",
                              (job.job_id, job.round)):
        job.add_lease(Lease(row["lease_id"], job.job_id, row["round"], row["shard"],
                            row["worker_id"], row["issued_at"], row["deadline"]))
        job.shard(row["shard"]).holders.add(row["worker_id"])
