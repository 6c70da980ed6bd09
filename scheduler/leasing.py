"""Leasing: which shard a polling worker gets, under the coordinator lock.

The decisions themselves (deadlines, backups, deferring) are pure functions in placement.py; this
applies them to the coordinator's live state and records the lease (row, signature).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protos import signing
from scheduler import placement
from scheduler.jobs import EMPTY_SHARD, JobRuntime, Lease, ShardState

if TYPE_CHECKING:
    from scheduler.core import Coordinator, WorkerRecord

# How stale the straggler ranking idle polls read may be: a backup is worth it only for leases
# running seconds late, so a tenth of a second changes nothing but the cost.
STRAGGLER_VIEW_S = 0.1


@dataclass(frozen=True)
class LeaseGrant:
    lease: Lease
    params_digest: str
    params_size: int
    workload_json: str
    signature: bytes


class Leasing:
    """Caller holds the coordinator lock for every method."""

    def __init__(self, coordinator: "Coordinator"):
        self.co = coordinator

    def try_lease(self, worker_id: str) -> tuple[LeaseGrant | None, bool]:
        """(a lease for this worker or None, whether it deferred an open copy to faster ones)."""
        co = self.co
        worker = co.workers[worker_id]
        now = co.clock()
        deferred = False
        for job in sorted(co.jobs.values(), key=lambda j: j.created_at):
            if not job.running or job.aggregating:
                continue
            if not placement.fits_in_memory(worker.profile, job.memory_needed):
                continue
            shard = job.next_open(worker_id)
            if shard is not None and self._should_defer(job, worker):
                deferred = True
                continue
            if shard is None:
                shard = self._backup_shard(job, worker, now) if job.spec.backups else None
                if shard is None:
                    continue
                job.shards[shard].backed_up = True
                co.count(job.job_id, "backups")
            co.verifier.on_lease(job, shard, worker_id)
            seconds = placement.lease_seconds(job.task_flops, worker.speed, job.spec.lease_timeout_s)
            lease = Lease(secrets.token_hex(12), job.job_id, job.round, shard, worker_id, now,
                          now + seconds)
            job.add_lease(lease)
            worker.last_leased = now
            co.store.execute("INSERT INTO leases VALUES(?,?,?,?,?,?,?,?)",
                             (lease.lease_id, job.job_id, job.round, shard, worker_id, now,
                              lease.deadline, "active"))
            deadline_ms = int(lease.deadline * 1000)
            signature = co.signer.sign(signing.lease_bytes(
                lease_id=lease.lease_id, worker_id=worker_id, job_id=job.job_id,
                round_no=job.round, shard=shard, params_digest=job.params_digest,
                deadline_ms=deadline_ms))
            return LeaseGrant(lease, job.params_digest, job.params.nbytes,
                              job.workload_json, signature), deferred
        return None, deferred

    def on_stream(self, worker_id: str, opened: bool) -> None:
        """A worker's WorkStream opened or ended. The worker holds its stream open while it
        computes, so a stream ending with no other open is the first sign of a dead worker (a
        killed process's connection closes at once): its leases become backup candidates now,
        instead of once overdue. They stay valid, so a worker that merely reconnects, or hands
        in its last result while stopping, loses nothing."""
        worker = self.co.workers.get(worker_id)
        if worker is None:
            return
        worker.streams += 1 if opened else -1
        worker.stream_lost = worker.streams == 0
        if not worker.stream_lost:
            return
        held = 0
        for job in self.co.jobs.values():
            leases = job.leases_of(worker_id)
            if leases:
                held += len(leases)
                job.straggler_view = None  # idle polls must see it now, not in 0.1 s
        self.co.offer_work(held)

    def _should_defer(self, job: JobRuntime, worker: WorkerRecord) -> bool:
        """Leave this job's open copies to clearly faster workers idle right now (see
        placement.defer_to_faster); only those that could take an open copy count."""
        co = self.co
        if worker.speed <= 0:
            return False  # unknown speed: it works (and gets measured)
        # Deferring needs at least as many idle others as open copies. Asked first, that costs
        # O(idle workers) per lease instead of O(shards + idle workers): at 1,000 workers and
        # 4,000 shards a round the full check took a quarter of the coordinator's time.
        others = len(co.waiting) - (worker.worker_id in co.waiting)
        needed = job.open_copies(limit=others)
        if needed == 0 or needed > others:
            return False
        bar = placement.SPEED_MARGIN * worker.speed
        faster = [w for w in co.waiting if w != worker.worker_id and w in co.workers
                  and co.workers[w].speed > bar]
        if not faster:
            return False
        open_shards = job.open_shards()
        speeds = [co.workers[w].speed for w in faster
                  if any(w not in job.shards.get(s, EMPTY_SHARD).holders for s in open_shards)]
        return placement.defer_to_faster(
            worker.speed, speeds, needed, idle_s=co.clock() - worker.last_leased,
            max_idle_s=placement.max_idle_seconds(job.task_flops, worker.speed))

    def _backup_shard(self, job: JobRuntime, worker: WorkerRecord, now: float) -> int | None:
        """An idle worker copies a straggler's shard when it would clearly finish first."""
        asker_seconds = placement.expected_seconds(job.task_flops, worker.speed)
        if asker_seconds is None or not job.leases:
            return None
        return placement.choose_backup(self._stragglers(job, now), worker.worker_id, now,
                                       asker_seconds)

    def _stragglers(self, job: JobRuntime, now: float) -> list[tuple[float, int, ShardState]]:
        """The job's fully leased, unsettled shards by expected finish, latest first. Rebuilt at
        most every STRAGGLER_VIEW_S: idle polls read it instead of scanning every lease."""
        co = self.co
        view = job.straggler_view
        if view is not None and now - view[0] < STRAGGLER_VIEW_S:
            return view[1]
        known = sorted(w.speed for w in co.workers.values() if w.speed > 0)
        typical = known[len(known) // 2] if known else 0.0  # a newcomer is assumed typical

        def expected_finish(lease: Lease) -> float:
            holder = co.workers.get(lease.worker_id)
            if holder is not None and holder.stream_lost:
                return float("inf")  # its connection closed: count on nothing
            speed = holder.speed if holder and holder.speed > 0 else typical
            return placement.expected_finish(lease.issued_at,
                                             placement.expected_seconds(job.task_flops, speed),
                                             lease.deadline, now)

        ranked = sorted(((finish, shard, job.shards[shard])
                         for shard, finish in job.straggling(expected_finish).items()), reverse=True)
        job.straggler_view = (now, ranked)
        return ranked
