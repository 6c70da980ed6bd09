"""What status calls report: a job's figures and the workers' standing, read from memory and
the store. Reads only; nothing here changes state."""
from __future__ import annotations

from typing import TYPE_CHECKING

from scheduler.errors import BENIGN_REJECTIONS, Reject
from scheduler.jobs import TERMINAL, JobRuntime, RoundSummary

if TYPE_CHECKING:
    from scheduler.core import Coordinator


def job_figures(co: "Coordinator", job_id: str) -> dict:
    """Everything a status call reports, as plain values."""
    job = co.job(job_id)
    # The row and the in-memory status in one snapshot: a round closes (row written, status
    # set) under the lock, so neither can show a finished job with the previous round's figures.
    with co.lock:
        row = co.store.one("SELECT * FROM jobs WHERE job_id=?", (job_id,))
        status, round_no, waiting = job.status, job.round, job.waiting_for()
    counts = co.store.rejection_counts(job_id)
    rejected = {Reject(code).label: n for code, n in counts.items()}
    late = sum(n for code, n in counts.items() if Reject(code) in BENIGN_REJECTIONS)
    end = row["finished_at"] or co.clock()
    return {
        "job_id": job_id, "name": job.spec.name, "status": status, "round": round_no,
        "rounds_total": job.spec.rounds, "final_loss": row["final_loss"] or 0.0,
        "final_accuracy": row["final_accuracy"] or 0.0, "wall_s": end - row["created_at"],
        "results_accepted": co.store.accepted_count(job_id),
        # late or superseded copies are listed by reason but are not bad results
        "results_rejected": sum(rejected.values()) - late, "rejected_by_reason": rejected,
        "waiting_for": waiting, "error": row["error"] or "",
        "workers": co.store.contributing_workers(job_id), "spec_toml": job.spec_toml,
        "extra": verification_figures(co, job),
    }


def verification_figures(co: "Coordinator", job: JobRuntime) -> dict[str, float]:
    """Extra compute spent on verification, as a share of the shards the job needed: overall,
    and over the second half of the rounds so far (steady state, after trust is earned)."""
    figures: dict[str, float] = {}
    for label, from_round in (("", 0), ("_steady", job.round // 2)):
        counts = co.store.counter_totals(job.job_id, from_round)
        primary = max(1, (job.round - from_round) * job.spec.shards)
        extra = counts.get("shards_replicated", 0) + counts.get("reexecutions", 0)
        figures[f"verification_overhead{label}_pct"] = round(100.0 * extra / primary, 2)
        if not label:
            for name in ("shards_replicated", "shards_spot_checked", "reexecutions", "disputes"):
                figures[name] = float(counts.get(name, 0))
    return figures


def worker_figures(co: "Coordinator") -> list[dict]:
    """Each worker's profile, liveness, standing and verified work (from the ledger)."""
    ledger = co.store.ledger_by_worker()
    now = co.clock()
    with co.lock:
        records = list(co.workers.values())
    return [{
        "worker_id": w.worker_id, "profile": w.profile, "last_seen_s": now - w.last_seen,
        "online": now - w.last_seen <= 3 * co.heartbeat_interval_s,
        "reputation": w.trust.reputation, "banned": w.trust.banned,
        "shards_accepted": ledger.get(w.worker_id, {}).get("shards") or 0,
        "samples": ledger.get(w.worker_id, {}).get("samples") or 0,
        "flops": ledger.get(w.worker_id, {}).get("flops") or 0.0,
        "credits": ledger.get(w.worker_id, {}).get("credits") or 0.0,
        "observed_gflops": w.speed / 1e9,
    } for w in sorted(records, key=lambda w: w.worker_id)]


def round_closed_or_ended(co: "Coordinator", job_id: str, after: int) -> bool:
    """Whether a round numbered above `after` has closed, or the job has ended: news a watcher
    gets at once (other changes are mere progress)."""
    job = co.job(job_id)
    with co.lock:
        return job.round - 1 > after or job.status in TERMINAL


def rounds_after(co: "Coordinator", job_id: str, after: int) -> list[RoundSummary]:
    """The job's closed rounds numbered above `after`, in order."""
    rows = co.store.query("SELECT round, loss, accuracy, updates, wall_s FROM rounds "
                          "WHERE job_id=? AND round>? ORDER BY round", (job_id, after))
    return [RoundSummary(r["round"], r["loss"], r["accuracy"], r["updates"], r["wall_s"])
            for r in rows]
