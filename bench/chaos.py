"""Chaos runs: a job that survives its coordinator being SIGKILLed, and workers dying every round.

    python -m bench.chaos [--quick] [--json]

- `coordinator_kills`: one job on a local cluster; the coordinator is SIGKILLed at chosen moments
  (mid-round with results already accepted, or at a `scheduler.rounds.FaultPoint` of a round
  close: after the aggregation, before / in the middle of / right after the commit transaction)
  and restarted on the same port and database each time. The workers are never restarted.
- `worker_churn`: every round, 30% of the live workers are SIGKILLed and as many fresh ones join.

Both end with `scheduler.audit.audit` over the database and compare the final parameters with an
uninterrupted run of the same spec. Sync-mode training is a pure function of the spec (every shard
gradient is a function of (params, round, shard), aggregated in shard order), so "the same model"
is checked as the same SHA-256 of the final parameters, not as a tolerance.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deploy.local import LocalCluster
from protos import signing
from protos.codec import encode_tensor, sha256_hex
from scheduler.audit import audit
from scheduler.client import JobClient
from scheduler.optim import Optimizer
from scheduler.rounds import FAULT_ENV, FaultPoint, aggregate_updates
from scheduler.spec import parse_spec
from worker.workloads import compute_update, evaluate_params

MID_ROUND = "mid-round"
FIVE_MOMENTS = [(MID_ROUND, 1), (FaultPoint.AFTER_AGGREGATE.value, 2),
                (FaultPoint.BEFORE_COMMIT.value, 3), (FaultPoint.MID_COMMIT.value, 4),
                (FaultPoint.AFTER_COMMIT.value, 5)]


def chaos_spec(rounds: int, shards: int = 4, lease_timeout_s: float = 5.0,
               model: str = 'workload = "softmax"', verification: bool = False) -> str:
    """A digits job small enough for many restarts; short leases so lost ones come back soon.
    Verification is off by default: these runs are about crashes, not about lying workers."""
    return f"""
[job]
name = "chaos"
rounds = {rounds}
shards_per_round = {shards}
lease_timeout_s = {lease_timeout_s}

[model]
{model}

[data]
dataset = "digits"
batch_size = 32

[optimizer]
name = "momentum"
lr = 0.1

[verification]
enabled = {str(verification).lower()}
"""


def uninterrupted_run(spec_toml: str) -> dict:
    """What the coordinator computes when nothing fails: the same maths, in this process."""
    spec = parse_spec(spec_toml)
    params = spec.workload.initial_params()
    optimizer = Optimizer(spec.optimizer, spec.lr, spec.momentum, params.size)
    previous, accuracy, rounds = None, 0.0, 0
    while rounds < spec.rounds:
        shards = [compute_update(spec.workload, params, rounds, s) for s in range(spec.shards)]
        previous = aggregate_updates(spec, np.stack([u.update for u in shards]),
                                     np.array([u.samples for u in shards], np.float64), previous)
        params = optimizer.step(params, previous)
        _, accuracy = evaluate_params(spec.workload, params)
        rounds += 1
        if spec.target_accuracy > 0 and accuracy >= spec.target_accuracy:
            break
    return {"params_digest": sha256_hex(encode_tensor(params)), "accuracy": accuracy,
            "rounds": rounds}


# ---------------------------------------------------------------------- reading the database
def _read(db_path: Path, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
    db = sqlite3.connect(db_path, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def progress(db_path: Path, job_id: str) -> dict:
    """The job's round and status, and how many results its open round has accepted."""
    job = _read(db_path, "SELECT round, status FROM jobs WHERE job_id=?", (job_id,))[0]
    accepted = _read(db_path, "SELECT COUNT(*) AS n FROM results WHERE job_id=? AND round=? AND "
                     "state='accepted'", (job_id, job["round"]))[0]["n"]
    return {"round": job["round"], "status": job["status"], "accepted_in_round": accepted}


def accepted_leases(db_path: Path, job_id: str) -> dict[str, tuple[int, int, str]]:
    """lease id -> (round, shard, payload digest) of every accepted result."""
    rows = _read(db_path, "SELECT lease_id, round, shard, payload_digest FROM results WHERE "
                 "job_id=? AND state='accepted'", (job_id,))
    return {row["lease_id"]: (row["round"], row["shard"], row["payload_digest"]) for row in rows}


def applied_updates(db_path: Path, job_id: str) -> set[tuple[int, int, str]]:
    """(round, shard, payload digest) of every update a committed round applied."""
    accepted = accepted_leases(db_path, job_id)
    rows = _read(db_path, "SELECT applied_leases FROM rounds WHERE job_id=?", (job_id,))
    return {accepted.get(lease) for row in rows for lease in json.loads(row["applied_leases"])}


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str,
               interval_s: float = 0.005) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


# ---------------------------------------------------------------------- coordinator kills
def coordinator_kills(spec_toml: str, moments: list[tuple[str, int]], workers: int,
                      workdir: Path, worker_args: list[str] | None = None) -> dict:
    """Kill the coordinator at each (moment, round) in turn, restart it, and let the job finish.

    A moment is MID_ROUND (SIGKILL from outside once the round has some, not all, results) or a
    FaultPoint value (the coordinator, started with SHARDGRID_FAULT, SIGKILLs itself there)."""
    spec = parse_spec(spec_toml)

    def env_for(index: int) -> dict[str, str]:
        if index < len(moments) and moments[index][0] != MID_ROUND:
            return {FAULT_ENV: f"{moments[index][0]}:{moments[index][1]}"}
        return {}

    kills, before = [], {}
    cluster = LocalCluster(workers=0, workdir=workdir, worker_args=worker_args)
    db = cluster.db_path
    try:
        cluster.start_coordinator(extra_env=env_for(0))
        for _ in range(workers):
            cluster.add_worker()
        with JobClient(cluster.address) as client:
            job_id = client.submit(spec_toml)
        for index, (moment, round_no) in enumerate(moments):
            if moment == MID_ROUND:
                def mid_round() -> bool:
                    now = progress(db, job_id)
                    return now["round"] == round_no and 0 < now["accepted_in_round"] < spec.shards
                wait_until(mid_round, 120, f"round {round_no} to be partly done")
                cluster.kill_coordinator()
            else:
                cluster.coordinator.wait(timeout=120)  # it kills itself at the fault point
            state = progress(db, job_id)
            kills.append({"moment": moment, "round": round_no,
                          "exit_code": cluster.coordinator.returncode,
                          "job_round_at_kill": state["round"],
                          "accepted_in_open_round": state["accepted_in_round"]})
            before.update(accepted_leases(db, job_id))
            restarted = time.monotonic()
            cluster.start_coordinator(extra_env=env_for(index + 1))
            wait_until(lambda: progress(db, job_id)["round"] > state["round"]
                       or progress(db, job_id)["status"] != "running", 120,
                       "the job to move on after the restart", interval_s=0.05)
            kills[-1]["resume_s"] = round(time.monotonic() - restarted, 2)
        with JobClient(cluster.address) as client:
            final = client.wait(job_id, reconnect_s=120)
        alive_workers = len(cluster.alive_workers())
    finally:
        cluster.stop()
    after_accepted = accepted_leases(db, job_id)
    applied = applied_updates(db, job_id)
    return {
        "job": final, "kills": kills, "audit": audit(db), "alive_workers": alive_workers,
        "final_params_digest": _read(db, "SELECT params_digest FROM jobs WHERE job_id=?",
                                     (job_id,))[0]["params_digest"],
        # accepted before a kill, yet gone, or its shard settled by a different update: lost
        # (an agreeing replica of it may be the one applied: same round, shard and payload)
        "lost_results": sorted(lease for lease, update in before.items()
                               if after_accepted.get(lease) != update or update not in applied),
    }


# ---------------------------------------------------------------------- worker churn
def _lease_holders(cluster: LocalCluster, db: Path, job_id: str, round_no: int) -> list[int]:
    """Indices of live worker processes holding an active lease in `round_no`."""
    rows = _read(db, "SELECT worker_id FROM leases WHERE job_id=? AND round=? AND state='active'",
                 (job_id, round_no))
    holding = {row["worker_id"] for row in rows}
    return [i for i in cluster.alive_workers()
            if _worker_id(cluster.workdir / "keys" / f"worker-{i}.key") in holding]


def _worker_id(key_path: Path) -> str | None:
    """The id of the worker using this key file; None while the worker has not written it yet."""
    try:
        raw = key_path.read_bytes()
    except FileNotFoundError:
        return None
    if len(raw) != 32:
        return None
    return signing.worker_id_for(signing.public_bytes(Ed25519PrivateKey.from_private_bytes(raw)))


def worker_churn(spec_toml: str, workers: int, kill_fraction: float, workdir: Path,
                 seed: int = 0, worker_args: list[str] | None = None) -> dict:
    """Each time the job enters a new round, SIGKILL ceil(kill_fraction * live) workers and start
    as many fresh ones (new keys: new identities), until the job ends. Victims are taken among the
    workers that hold a lease of the new round first, so their shards must be redone."""
    rng = random.Random(seed)
    killed = joined = 0
    victims: set[str] = set()
    with LocalCluster(workers=workers, workdir=workdir, worker_args=worker_args) as cluster:
        db = cluster.db_path
        with JobClient(cluster.address) as client:
            job_id = client.submit(spec_toml)
            seen_round = 0
            while (now := progress(db, job_id))["status"] == "running":
                if now["round"] > seen_round:
                    seen_round = now["round"]
                    wait_until(lambda: _lease_holders(cluster, db, job_id, seen_round)
                               or progress(db, job_id)["round"] != seen_round, 30,
                               f"leases of round {seen_round}")
                    alive = cluster.alive_workers()
                    holders = _lease_holders(cluster, db, job_id, seen_round)
                    others = [i for i in alive if i not in holders]
                    rng.shuffle(holders)
                    rng.shuffle(others)
                    for index in (holders + others)[:math.ceil(kill_fraction * len(alive))]:
                        if victim := _worker_id(cluster.workdir / "keys" / f"worker-{index}.key"):
                            victims.add(victim)
                        cluster.kill_worker(index)
                        killed += 1
                        cluster.add_worker()
                        joined += 1
                time.sleep(0.01)
            final = client.get(job_id)
    expired = _read(db, "SELECT COUNT(*) AS n FROM leases WHERE job_id=? AND state='expired'",
                    (job_id,))[0]["n"]
    contributors = _read(db, "SELECT COUNT(DISTINCT worker_id) AS n FROM results WHERE job_id=? "
                         "AND state='accepted'", (job_id,))[0]["n"]
    # Leases the victims died holding end without a result: expired, or cancelled once an idle
    # worker's backup settled the shard. Each such shard must be settled by someone else.
    marks = ",".join("?" * len(victims))
    lost = f"l.job_id=? AND l.worker_id IN ({marks}) AND l.state IN ('expired', 'cancelled')"
    args = (job_id, *victims)
    lost_leases = _read(db, f"SELECT COUNT(*) AS n FROM leases l WHERE {lost}", args)[0]["n"]
    redone = _read(db, f"SELECT COUNT(*) AS n FROM leases l WHERE {lost} AND EXISTS(SELECT 1 "
                   "FROM results r WHERE r.job_id=l.job_id AND r.round=l.round AND "
                   "r.shard=l.shard AND r.state='accepted' AND r.worker_id != l.worker_id)",
                   args)[0]["n"]
    return {"job": final, "audit": audit(db), "workers_killed": killed, "workers_joined": joined,
            "leases_expired": expired, "leases_lost_with_workers": lost_leases,
            "lost_shards_redone_by_others": redone,
            "contributing_workers": contributors,
            "final_params_digest": _read(db, "SELECT params_digest FROM jobs WHERE job_id=?",
                                         (job_id,))[0]["params_digest"]}


# ---------------------------------------------------------------------- the benchmark entry
def run(quick: bool = False, workdir: Path | None = None) -> dict:
    """Figures of both chaos runs; `quick` shortens the jobs (same kills, fewer rounds)."""
    with tempfile.TemporaryDirectory(prefix="shardgrid-chaos-") as tmp:
        root = Path(workdir or tmp)
        kills_spec = chaos_spec(rounds=8 if quick else 20)
        churn_spec = chaos_spec(rounds=4 if quick else 12, model='workload = "mlp"\nhidden = [32]')
        figures = {}
        for name, spec_toml, go in (
                ("coordinator_kills", kills_spec,
                 lambda d: coordinator_kills(kills_spec, FIVE_MOMENTS, 3, d,
                                             ["--profile", "edge-box"])),
                ("worker_churn", churn_spec,
                 lambda d: worker_churn(churn_spec, 6 if quick else 10, 0.3, d))):
            started = time.monotonic()
            outcome = go(root / name)
            clean = uninterrupted_run(spec_toml)
            job = outcome.pop("job")
            figures[name] = {
                **outcome, "wall_s": round(time.monotonic() - started, 1), "status": job["status"],
                "rounds": job["round"], "final_accuracy": job["final_accuracy"],
                "clean_accuracy": clean["accuracy"],
                "accuracy_gap_points": round(100 * abs(job["final_accuracy"] - clean["accuracy"]), 3),
                "same_final_params_as_clean": outcome["final_params_digest"] == clean["params_digest"],
            }
        return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter jobs, same kinds of failure")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    figures = run(quick=args.quick)
    print(json.dumps(figures, indent=None if args.json else 2, sort_keys=True))
    sound = all(f["status"] == "completed" and not f["audit"] and f["same_final_params_as_clean"]
                for f in figures.values())
    return 0 if sound else 1


if __name__ == "__main__":
    sys.exit(main())
