"""The coordinator's state core: workers, jobs, leases, results and round commits, without gRPC.

Every public method takes and returns plain values and dataclasses, so the whole protocol logic is
testable in-process; scheduler/service.py only translates messages. One lock guards memory and
store; slow work (hashing, signature checks, aggregation) runs outside it.
"""
from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protos import signing
from scheduler import rounds
from scheduler.blobs import BlobStore
from scheduler.errors import GatewayError, JobNotFound, Reject
from scheduler.jobs import TERMINAL, JobRuntime, Lease
from scheduler.leasing import LeaseGrant, Leasing
from scheduler.polling import Polling, ThreadWaiter, Waiter
from scheduler.spec import parse_spec
from scheduler.store import Store, dumps
from scheduler.submission import ResultCheck, Submission, Verdict
from scheduler.verification import Trust
from scheduler.verifier import Verifier
from worker.workloads import WorkloadConfig

log = logging.getLogger("shardgrid.coordinator")

REGISTER_WINDOW_S = 120.0
RECHECK_S = 0.05   # an idle poller re-examines running leases for backups this often
REAP_EVERY = 5     # ... and every 5th time, expired leases are reaped (0.25 s)


@dataclass
class WorkerRecord:
    worker_id: str
    public_key: bytes
    token: bytes
    profile: dict
    last_seen: float
    trust: Trust
    registered_ms: int = 0   # timestamp of the last accepted registration: replays must be newer
    speed: float = 0.0       # EWMA of observed FLOP/s, lease to result; 0 until a first result
    last_leased: float = 0.0  # when it last got a lease (deferring may not starve it)
    streams: int = 0          # its open WorkStreams
    stream_lost: bool = False  # its last WorkStream ended and no other is open: likely dead


class Coordinator:
    def __init__(self, db_path: str | Path, *, heartbeat_interval_s: float = 2.0,
                 clock: Callable[[], float] = time.time):
        db_path = Path(db_path)
        self.store = Store(db_path)
        # Blobs live beside the database: state.db -> state.db.blobs/
        self.blobs = BlobStore(db_path.with_name(db_path.name + ".blobs"), self.store)
        self.clock = clock
        self.heartbeat_interval_s = heartbeat_interval_s
        self.lock = threading.RLock()
        # Watchers wait on `changed`, the round driver on `round_due`: waking the driver on
        # every accepted result cost a thread switch per result for nothing.
        self.changed = threading.Condition(self.lock)
        self.round_due = threading.Condition(self.lock)
        self.watchers = 0
        # Parked long-polls, oldest first, woken one per unit of new work: waking all of them on
        # every change made 1,000 workers queue on the lock (a thundering herd).
        self.parked: deque[Waiter] = deque()
        self.key = self._load_key()
        self.signer = signing.Signer(self.key)
        self.public_key = signing.public_bytes(self.key)
        self.workers: dict[str, WorkerRecord] = {}
        self.waiting: dict[str, int] = {}   # workers inside a FetchTask long-poll right now
        self.jobs: dict[str, JobRuntime] = {}
        self.checker = ResultCheck(self)
        self.verifier = Verifier(self)
        self.leasing = Leasing(self)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Set by the gRPC server: runs a callable on its event loop's thread, where writes join
        # the group commit and take the lock without blocking the loop from outside.
        self.run_on_loop: Callable[[Callable[[], None]], None] | None = None
        rounds.recover(self)

    # ------------------------------------------------------------------ lifecycle
    def _load_key(self) -> Ed25519PrivateKey:
        raw = self.store.get_meta("coordinator_key")
        if raw is None:
            key = Ed25519PrivateKey.generate()
            from cryptography.hazmat.primitives import serialization as ser
            raw = key.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())
            self.store.set_meta("coordinator_key", raw)
        return Ed25519PrivateKey.from_private_bytes(raw)

    def start(self) -> None:
        """Start the round driver (the only thread that aggregates) and the lease reaper."""
        self.verifier.warm()
        with self.lock:
            for job in self.jobs.values():
                if job.running:
                    self.verifier.resume(job)
        for target, name in ((self._drive_rounds, "round-driver"), (self._reap, "lease-reaper")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def drain(self) -> None:
        """Begin stopping: background threads end and parked long-polls return empty; the store
        stays open for calls still in flight."""
        self._stop.set()
        with self.changed:
            self.changed.notify_all()
            self.round_due.notify_all()
            self.offer_work(len(self.parked))

    def stop(self) -> None:
        self.drain()
        for thread in self._threads:
            thread.join(timeout=10)
        self.verifier.close()
        self.store.close()

    def apply(self, update: Callable[[], None]) -> None:
        """Run a state update from a helper thread (a finished re-execution): on the event loop
        when there is one, else here. Under load, applying it on the helper thread held the lock
        and forced two extra commits per result while the loop waited (FetchTask p50 2 -> 20 ms)."""
        if self.run_on_loop is None:
            update()
            return
        try:
            self.run_on_loop(update)
        except RuntimeError:  # the loop has closed: the coordinator is stopping
            log.info("coordinator stopping: a late re-execution result is dropped")

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def offer_work(self, copies: int) -> None:
        """Caller holds the lock: `copies` new leases can be had; wake that many pollers."""
        for _ in range(min(copies, len(self.parked))):
            self.parked.popleft().wake()

    def _notify(self, job: JobRuntime | None = None) -> None:
        if job is not None:
            job.version += 1
            if job.ready_to_close():
                self.round_due.notify()
        if self.watchers:
            self.changed.notify_all()

    # ------------------------------------------------------------------ workers
    def register(self, public_key: bytes, profile: dict, timestamp_ms: int,
                 signature: bytes) -> WorkerRecord:
        now = self.clock()
        if len(public_key) != 32:
            raise GatewayError(Reject.MALFORMED, "public key must be 32 raw Ed25519 bytes")
        if abs(now - timestamp_ms / 1000.0) > REGISTER_WINDOW_S:
            raise GatewayError(Reject.BAD_SIGNATURE, "registration timestamp outside the window")
        if not signing.verify(public_key, signature,
                              signing.register_bytes(public_key, timestamp_ms, profile)):
            raise GatewayError(Reject.BAD_SIGNATURE, "registration signature does not verify")
        worker_id = signing.worker_id_for(public_key)
        with self.lock:
            known = self.workers.get(worker_id)
            if known is not None and known.trust.banned:
                raise GatewayError(Reject.BANNED, f"worker {worker_id} is banned")
            if known is not None and timestamp_ms <= known.registered_ms:
                # A captured registration replayed inside the window must not mint a session.
                raise GatewayError(Reject.BAD_SIGNATURE, "registration is not newer than the last one")
            token = secrets.token_bytes(16)
            record = WorkerRecord(worker_id, public_key, token, profile, now,
                                  known.trust if known else Trust(), timestamp_ms)
            self.workers[worker_id] = record
            with self.store.transaction() as db:
                db.execute("INSERT INTO workers(worker_id, public_key, session_token, profile_json,"
                           " registered_at, last_seen) VALUES(?,?,?,?,?,?) ON CONFLICT(worker_id) DO"
                           " UPDATE SET session_token=excluded.session_token, profile_json="
                           "excluded.profile_json, last_seen=excluded.last_seen, registered_at="
                           "excluded.registered_at",
                           (worker_id, public_key, token, dumps(profile), timestamp_ms / 1000.0,
                            now))
            return record

    def authenticate(self, worker_id: str, token: bytes) -> WorkerRecord:
        """Caller holds the lock. Sessions are cheap bearer tokens; results carry signatures."""
        record = self.workers.get(worker_id)
        if record is None or not secrets.compare_digest(record.token, token or b""):
            raise GatewayError(Reject.UNKNOWN_WORKER, "unknown worker or stale session: register again")
        if record.trust.banned:
            raise GatewayError(Reject.BANNED, f"worker {worker_id} is banned")
        record.last_seen = self.clock()
        return record

    def heartbeat(self, worker_id: str, token: bytes, active_lease_ids: list[str]) -> list[str]:
        """Returns the leases the worker should abandon (expired, cancelled or round closed)."""
        with self.lock:
            self.authenticate(worker_id, token)
            self._release_forgotten(worker_id, set(active_lease_ids))
            return [lid for lid in active_lease_ids
                    if not any(lid in job.leases for job in self.jobs.values())]

    def _release_forgotten(self, worker_id: str, reported: set[str]) -> None:
        """A lease the worker no longer reports (it dropped it: a restart, a coordinator that
        vanished mid-submit) reopens now rather than at its deadline. Leases younger than a
        heartbeat may not have reached the worker's list yet, so they are left alone."""
        cutoff = self.clock() - self.heartbeat_interval_s
        for job in self.jobs.values():
            for lease in job.leases_of(worker_id):
                if (lease.state == "active" and lease.lease_id not in reported
                        and lease.issued_at < cutoff):
                    self._expire(job, lease)

    # ------------------------------------------------------------------ tasks
    def polling(self, worker_id: str) -> Polling:
        """Marks the worker idle-and-asking for the whole long-poll (placement defers to such
        workers when they are faster): `with co.polling(worker_id): ...`."""
        return Polling(self, worker_id)

    def poll_task(self, worker_id: str, token: bytes, waiter: Waiter | None) -> LeaseGrant | None:
        """One attempt of a long-poll: a lease, or None with `waiter` (if any) parked until
        new work is offered. The caller waits on its waiter, then polls again."""
        with self.lock:
            self.authenticate(worker_id, token)
            grant, deferred = self.leasing.try_lease(worker_id)
            if deferred:
                self.offer_work(1)  # hand the wake-up to a faster poller
            if grant is None and waiter is not None and not self.stopping:
                self.parked.append(waiter)
            return grant

    def unpark(self, waiter: Waiter) -> None:
        """The poll behind `waiter` ends without polling again (timed out, cancelled). If it was
        woken meanwhile, that wake-up goes to the next poller: no unit of work goes unannounced."""
        with self.lock:
            try:
                self.parked.remove(waiter)
            except ValueError:  # no longer parked: offer_work popped and woke it
                self.offer_work(1)

    def fetch_task(self, worker_id: str, token: bytes, wait_s: float = 0.0) -> LeaseGrant | None:
        """Lease the next pending shard to this worker, waiting up to `wait_s` for one (long-poll).
        The gRPC service runs the same loop on its event loop (scheduler/service.py)."""
        deadline = time.monotonic() + max(0.0, wait_s)
        with self.polling(worker_id):
            while True:
                remaining = deadline - time.monotonic()
                waiter = ThreadWaiter() if remaining > 0 else None
                grant = self.poll_task(worker_id, token, waiter)
                if grant is not None or waiter is None or self.stopping:
                    return grant
                if not waiter.event.wait(remaining):
                    self.unpark(waiter)

    def stream_changed(self, worker_id: str, opened: bool) -> None:
        """A worker's WorkStream opened, or ended (see Leasing.on_stream)."""
        with self.lock:
            self.leasing.on_stream(worker_id, opened)

    def read_blob(self, digest: str) -> bytes:
        return self.blobs.get(digest)

    def submit_result(self, submission: Submission, payload: bytes) -> Verdict:
        return self.checker.submit(submission, payload)

    def count(self, job_id: str, name: str, by: int = 1) -> None:
        """Caller holds the lock: a per-round verification counter (replicas, re-executions...)."""
        self.store.count(job_id, self.jobs[job_id].round, name, by)

    def save_trust(self, worker_id: str) -> None:
        trust = self.workers[worker_id].trust
        self.store.execute("UPDATE workers SET reputation=?, streak=?, proven_wrong=?, banned=? "
                           "WHERE worker_id=?", (trust.reputation, trust.streak,
                                                 trust.proven_wrong, int(trust.banned), worker_id))

    def _expire_leases(self) -> None:
        """Caller holds the lock: leases past their deadline, or held by silent workers, reopen."""
        now = self.clock()
        silent_after = 3 * self.heartbeat_interval_s
        for job in self.jobs.values():
            for lease in list(job.leases.values()):
                if lease.state != "active":
                    continue
                worker = self.workers.get(lease.worker_id)
                silent = worker is None or now - worker.last_seen > silent_after
                if now > lease.deadline or silent:
                    self._expire(job, lease)

    def _expire(self, job: JobRuntime, lease: Lease) -> None:
        """Caller holds the lock: the lease ends unanswered and its shard reopens."""
        job.end_lease(lease, "expired")
        # It brought no result: it may retake the shard, or a small fleet deadlocks.
        job.shard(lease.shard).holders.discard(lease.worker_id)
        self.store.execute("UPDATE leases SET state='expired' WHERE lease_id=?", (lease.lease_id,))
        self._notify(job)
        self.offer_work(1)

    def _reap(self) -> None:
        ticks = 0
        while not self._stop.wait(RECHECK_S):
            ticks += 1
            with self.lock:
                if ticks % REAP_EVERY == 0:
                    self.store.commit_group()  # a backstop: the service commits after every call
                    self._expire_leases()
                # Stragglers become worth backing up as time passes, with no event to say so:
                # let an idle poller look again (often: a killed worker's lease is overdue
                # 50 ms after its expected finish, and the round waits until someone looks).
                if self.waiting and any(job.running and job.leases for job in self.jobs.values()):
                    self.offer_work(1)

    # ------------------------------------------------------------------ rounds
    def _drive_rounds(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                ready = [job for job in self.jobs.values() if job.ready_to_close()]
                if not ready:
                    self.round_due.wait(0.5)
                    continue
                job = ready[0]
                job.aggregating = True
                self._notify(job)
                # The results it is about to apply become durable first, even those whose
                # workers are still waiting for the group commit to hear "accepted".
                self.store.commit_group()
            try:
                rounds.close_round(self, job)
            except Exception as exc:  # a bug must fail the job loudly, not hang it
                with self.lock:
                    job.aggregating = False
                    self.finish_job(job, "failed", error=f"aggregation failed: {exc!r}")

    def finish_job(self, job: JobRuntime, status: str, error: str | None = None) -> None:
        """Caller holds the lock."""
        job.status = status
        job.end_all_leases("cancelled")
        with self.store.transaction() as db:
            db.execute("UPDATE leases SET state='cancelled' WHERE job_id=? AND state='active'",
                       (job.job_id,))
            db.execute("UPDATE jobs SET status=?, finished_at=?, error=? WHERE job_id=?",
                       (status, self.clock(), error, job.job_id))
        self._notify(job)

    # ------------------------------------------------------------------ jobs
    def submit_job(self, spec_toml: str) -> str:
        spec = parse_spec(spec_toml)
        config: WorkloadConfig = spec.workload
        params = config.initial_params()
        job_id = f"job-{secrets.token_hex(4)}"
        rounds.create_job(self, job_id, spec, spec_toml, params)
        return job_id

    def job(self, job_id: str) -> JobRuntime:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r}")
        return job

    def cancel_job(self, job_id: str) -> None:
        with self.lock:
            job = self.job(job_id)
            if job.status not in TERMINAL:
                self.finish_job(job, "cancelled")

    def wait_for_change(self, job_id: str, seen_version: int, timeout: float) -> int:
        job = self.job(job_id)
        with self.changed:
            if job.version == seen_version and not self._stop.is_set():
                self.watchers += 1
                try:
                    self.changed.wait(timeout)
                finally:
                    self.watchers -= 1
            return job.version

    def model_bytes(self, job_id: str) -> tuple[str, bytes]:
        job = self.job(job_id)
        with self.lock:
            digest = job.params_digest
        return digest, self.blobs.get(digest)


def load_profile(raw: str) -> dict:
    return json.loads(raw or "{}")
