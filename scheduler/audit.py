"""Durability audit: the invariants a coordinator database must satisfy, whatever instant it died at.

`audit(db_path)` reads one consistent snapshot (a single read transaction on the WAL database) plus
the blob directory beside it, never writes, and returns every violated invariant as a sentence; an
empty list means the database is sound. Per job:

- rounds 0..n-1 are each committed once, with no gap, and the job's pointer says round n;
- the parameter chain is unbroken: round 0 starts from the spec's initial parameters, round r's
  next_params_digest is round r+1's params_digest, and the last one is the job's current digest;
- each committed round applied shards_per_round results, one per shard, each an accepted result
  of that very round and shard, and no result was applied by two rounds;
- replaying every commit from the applied updates (same aggregation rule, same optimizer) gives,
  bit for bit, the stored aggregates, parameters and optimizer state: nothing was lost or applied
  twice, and the optimizer stepped exactly once per round;
- every credited result (accepted, or pending verification) has its lease marked used, by the same
  worker, round and shard, and exactly one ledger row; every ledger row has such a result;
- every digest the database names has its blob;
- a finished job holds no active lease, and no active lease belongs to a closed round;
- a completed job ran all its rounds or reached its target accuracy.

`python -m scheduler.audit STATE_DB` prints the problems and exits 1 if there are any.
"""
from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np

from protos.codec import encode_tensor, sha256_hex
from scheduler.blobs import BlobStore
from scheduler.errors import BlobNotFound
from scheduler.jobs import TERMINAL
from scheduler.optim import Optimizer
from scheduler.rounds import aggregate_updates
from scheduler.spec import JobSpec, parse_spec

__all__ = ["audit", "main"]

CREDITED = ("accepted", "pending")  # result states that carry a ledger row


class _ReadRows:
    """The audit's own read-only connection, as BlobStore reads small blobs through it."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def one(self, sql: str, args: tuple = ()):
        try:
            return self.db.execute(sql, args).fetchone()
        except sqlite3.OperationalError:  # a database from before the blobs table
            return None

    def query(self, sql: str, args: tuple = ()) -> list:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.OperationalError:  # a database from before the blobs table
            return []

    def execute(self, sql: str, args: tuple = ()) -> None:
        raise PermissionError("the audit never writes")


def audit(db_path: str | Path) -> list[str]:
    """Every invariant the database at `db_path` violates, as plain sentences (empty: sound)."""
    db_path = Path(db_path)
    if not db_path.exists():
        return [f"no database at {db_path}"]
    db = sqlite3.connect(db_path, isolation_level=None)  # reads only; may run WAL recovery
    db.row_factory = sqlite3.Row
    blobs = BlobStore(db_path.with_name(db_path.name + ".blobs"), _ReadRows(db))
    try:
        db.execute("BEGIN")  # one snapshot for every query below
        problems = _ledger_problems(db)
        for job in db.execute("SELECT * FROM jobs ORDER BY created_at").fetchall():
            problems += [f"{job['job_id']}: {p}" for p in _job_problems(db, blobs, job)]
        db.execute("COMMIT")
    finally:
        db.close()
    return problems


def _job_problems(db: sqlite3.Connection, blobs: BlobStore, job: sqlite3.Row) -> list[str]:
    job_id = job["job_id"]
    spec = parse_spec(job["spec_toml"])
    rounds = db.execute("SELECT * FROM rounds WHERE job_id=? ORDER BY round", (job_id,)).fetchall()
    results = {row["lease_id"]: row for row in db.execute(
        "SELECT * FROM results WHERE job_id=? ORDER BY received_at, rowid", (job_id,))}
    problems = _chain_problems(spec, job, rounds)
    problems += _applied_problems(spec, rounds, results)
    problems += _result_problems(db, job, results)
    problems += _missing_blobs(blobs, job, rounds, results)
    if not problems:  # a replay over a broken chain would only repeat what is already reported
        problems += _replay_problems(spec, job, rounds, results, blobs)
    return problems


def _chain_problems(spec: JobSpec, job: sqlite3.Row, rounds: list[sqlite3.Row]) -> list[str]:
    problems = []
    numbers = [row["round"] for row in rounds]
    if numbers != list(range(len(rounds))):
        problems.append(f"committed rounds are {numbers}, not 0..{len(rounds) - 1} each once")
    if job["round"] != len(rounds):
        problems.append(f"job points at round {job['round']} after {len(rounds)} committed rounds")
    initial = sha256_hex(encode_tensor(spec.workload.initial_params()))
    chain = [initial] + [row["next_params_digest"] for row in rounds]
    for row, expected in zip(rounds, chain):
        if row["params_digest"] != expected:
            problems.append(f"round {row['round']} started from {row['params_digest'][:12]}, "
                            f"not from the previous round's result {expected[:12]}")
    if job["params_digest"] != chain[-1]:
        problems.append(f"current parameters {job['params_digest'][:12]} are not the last "
                        f"round's result {chain[-1][:12]}")
    if len(rounds) > spec.rounds:
        problems.append(f"{len(rounds)} rounds committed, the spec asks for {spec.rounds}")
    if job["status"] == "completed":
        reached = (spec.target_accuracy > 0 and rounds
                   and rounds[-1]["accuracy"] >= spec.target_accuracy)
        if len(rounds) != spec.rounds and not reached:
            problems.append(f"completed after {len(rounds)} of {spec.rounds} rounds without "
                            f"reaching the target accuracy")
    if rounds and job["final_accuracy"] != rounds[-1]["accuracy"]:
        problems.append("the job's final accuracy is not its last round's")
    return problems


def _applied(row: sqlite3.Row, results: dict[str, sqlite3.Row], shards: int) -> list[str]:
    """Lease ids a round applied, in shard order; databases from before the column existed fall
    back to the earliest accepted result per shard, which is what the coordinator chose then."""
    if row["applied_leases"]:
        return json.loads(row["applied_leases"])
    first: dict[int, str] = {}
    for lease_id, result in results.items():
        if result["round"] == row["round"] and result["state"] == "accepted":
            first.setdefault(result["shard"], lease_id)
    return [first[s] for s in sorted(first)][:shards]


def _applied_problems(spec: JobSpec, rounds: list[sqlite3.Row],
                      results: dict[str, sqlite3.Row]) -> list[str]:
    problems, applied_by = [], {}
    for row in rounds:
        r = row["round"]
        applied = _applied(row, results, spec.shards)
        if row["updates"] != spec.shards or len(applied) != spec.shards:
            problems.append(f"round {r} applied {len(applied)} updates (recorded {row['updates']}),"
                            f" not shards_per_round={spec.shards}")
        for shard, lease_id in enumerate(applied):
            result = results.get(lease_id)
            if lease_id in applied_by:
                problems.append(f"result {lease_id} applied twice: rounds {applied_by[lease_id]} "
                                f"and {r}")
            applied_by[lease_id] = r
            if result is None:
                problems.append(f"round {r} applied {lease_id}, which has no result row")
            elif (result["round"], result["shard"], result["state"]) != (r, shard, "accepted"):
                problems.append(f"round {r} applied {lease_id} as shard {shard}, but it is a "
                                f"{result['state']} result of round {result['round']} shard "
                                f"{result['shard']}")
    return problems


def _result_problems(db: sqlite3.Connection, job: sqlite3.Row,
                     results: dict[str, sqlite3.Row]) -> list[str]:
    problems = []
    leases = {row["lease_id"]: row for row in db.execute(
        "SELECT * FROM leases WHERE job_id=?", (job["job_id"],))}
    for lease_id, result in results.items():
        if result["round"] > job["round"]:
            problems.append(f"result {lease_id} is for round {result['round']}, beyond the job's "
                            f"round {job['round']}")
        if result["state"] not in CREDITED:
            continue
        lease = leases.get(lease_id)
        if lease is None:
            problems.append(f"result {lease_id} has no lease")
        elif lease["state"] != "used" or any(lease[k] != result[k]
                                             for k in ("worker_id", "round", "shard")):
            problems.append(f"result {lease_id} does not match its lease ({lease['state']}, "
                            f"round {lease['round']} shard {lease['shard']})")
    for lease in leases.values():
        if lease["state"] != "active":
            continue
        if job["status"] in TERMINAL:
            problems.append(f"lease {lease['lease_id']} still active in a {job['status']} job")
        elif lease["round"] < job["round"]:
            problems.append(f"lease {lease['lease_id']} still active in closed round "
                            f"{lease['round']}")
    return problems


def _ledger_problems(db: sqlite3.Connection) -> list[str]:
    problems = []
    credited = {row["lease_id"]: row for row in db.execute(
        f"SELECT * FROM results WHERE state IN ({','.join('?' * len(CREDITED))})", CREDITED)}
    ledger = {row["lease_id"]: row for row in db.execute("SELECT * FROM ledger")}
    for lease_id in credited.keys() - ledger.keys():
        problems.append(f"result {lease_id} is credited but has no ledger row")
    for lease_id, entry in ledger.items():
        result = credited.get(lease_id)
        if result is None:
            problems.append(f"ledger row {lease_id} pays for no credited result")
        elif any(entry[k] != result[k] for k in ("worker_id", "job_id", "round", "shard")):
            problems.append(f"ledger row {lease_id} does not match its result")
    return problems


def _missing_blobs(blobs: BlobStore, job: sqlite3.Row, rounds: list[sqlite3.Row],
                   results: dict[str, sqlite3.Row]) -> list[str]:
    named = {job["params_digest"]: "current parameters"}
    if job["optimizer_digest"]:
        named[job["optimizer_digest"]] = "optimizer state"
    for row in rounds:
        named[row["next_params_digest"]] = f"round {row['round']} parameters"
        if row["aggregate_digest"]:
            named[row["aggregate_digest"]] = f"round {row['round']} aggregate"
    for lease_id, result in results.items():
        if result["state"] in CREDITED:
            named[result["payload_digest"]] = f"result {lease_id} payload"
    return [f"{what} ({digest[:12]}) has no blob" for digest, what in named.items()
            if not blobs.exists(digest)]


def _replay_problems(spec: JobSpec, job: sqlite3.Row, rounds: list[sqlite3.Row],
                     results: dict[str, sqlite3.Row], blobs: BlobStore) -> list[str]:
    """Redo every committed round from its applied updates and compare bit for bit."""
    params = spec.workload.initial_params()
    optimizer = Optimizer(spec.optimizer, spec.lr, spec.momentum, params.size)
    previous = None
    for row in rounds:
        applied = [results[lease_id] for lease_id in _applied(row, results, spec.shards)]
        updates = blobs.get_tensors([r["payload_digest"] for r in applied])
        samples = np.array([json.loads(r["metrics_json"] or "{}").get("samples", 0)
                            for r in applied], dtype=np.float64)
        previous = aggregate_updates(spec, updates, samples, previous)
        params = optimizer.step(params, previous)
        if row["aggregate_digest"] and _digest(previous) != row["aggregate_digest"]:
            return [f"round {row['round']}: replaying its updates gives another aggregate"]
        if _digest(params) != row["next_params_digest"]:
            return [f"round {row['round']}: replaying its updates gives other parameters"]
    if rounds and _digest(optimizer.state()) != job["optimizer_digest"]:
        return [f"optimizer state is not {len(rounds)} steps from the start"]
    return []


def _digest(array: np.ndarray) -> str:
    return sha256_hex(encode_tensor(array))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m scheduler.audit STATE_DB", file=sys.stderr)
        return 2
    try:
        problems = audit(args[0])
    except (sqlite3.Error, BlobNotFound) as exc:
        problems = [f"cannot audit {args[0]}: {exc}"]
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{args[0]}: no problem found")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
