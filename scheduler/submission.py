"""Accepting or refusing a submitted result: every check, in order, each with its reason code.

Cheap identity checks run under the coordinator lock and claim the lease (so a concurrent replay
sees it taken); hashing, the signature and the NaN screen run outside the lock; the accepted
result is recorded in one transaction with its lease and ledger entry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from protos import signing
from protos.codec import ENCODING_F32LE, BlobError, decode_tensor, sha256_hex
from scheduler.errors import GatewayError, Reject, ResultRejected
from scheduler.jobs import Accepted, Lease
from scheduler.placement import update_speed
from scheduler.store import dumps

if TYPE_CHECKING:
    from scheduler.core import Coordinator

CREDITS_PER_GFLOP = 1.0


@dataclass(frozen=True)
class Submission:
    """A result header, as the worker signed it."""

    worker_id: str
    token: bytes
    protocol_version: int
    job_id: str
    round: int
    shard: int
    lease_id: str
    params_digest: str
    payload_digest: str
    payload_size: int
    encoding: str
    metrics: dict[str, float] = field(default_factory=dict)
    signature: bytes = b""

    def digest(self) -> bytes:
        """What the worker signed (computed once: it is checked, then receipted)."""
        cached = self.__dict__.get("_digest")
        if cached is None:
            cached = self._compute_digest()
            object.__setattr__(self, "_digest", cached)
        return cached

    def _compute_digest(self) -> bytes:
        return signing.result_digest(job_id=self.job_id, round_no=self.round, shard=self.shard,
                                     lease_id=self.lease_id, params_digest=self.params_digest,
                                     payload_digest=self.payload_digest, metrics=self.metrics,
                                     protocol_version=self.protocol_version)


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    code: Reject = Reject.NONE
    message: str = ""
    receipt: bytes = b""
    credits: float = 0.0


class ResultCheck:
    def __init__(self, coordinator: "Coordinator"):
        self.co = coordinator

    def submit(self, sub: Submission, payload: bytes) -> Verdict:
        """Never raises for a bad result: the refusal is the Verdict, and it is recorded."""
        try:
            lease, public_key, expected_len = self._claim(sub)
        except ResultRejected as exc:
            self._record_rejection(sub, None, exc)
            return Verdict(False, exc.code, exc.message)
        try:
            update = self._check_content(sub, payload, public_key, expected_len)
            return self._accept(sub, lease, payload, update)
        except ResultRejected as exc:
            self._record_rejection(sub, lease, exc)
            return Verdict(False, exc.code, exc.message)

    def _claim(self, sub: Submission) -> tuple[Lease, bytes, int]:
        co = self.co
        with co.lock:
            try:
                worker = co.authenticate(sub.worker_id, sub.token)
            except GatewayError as exc:
                raise ResultRejected(exc.code, exc.message) from None
            if sub.protocol_version != signing.PROTOCOL_VERSION:
                raise ResultRejected(Reject.MALFORMED, f"protocol version {sub.protocol_version}, "
                                     f"the coordinator speaks {signing.PROTOCOL_VERSION}")
            job = co.jobs.get(sub.job_id)
            lease = job.leases.get(sub.lease_id) if job else None
            if lease is None:
                raise self._explain_missing_lease(sub)
            if lease.worker_id != sub.worker_id:
                raise ResultRejected(Reject.UNKNOWN_LEASE, "lease was issued to another worker")
            if lease.state != "active":
                raise ResultRejected(Reject.REPLAYED_LEASE, f"lease already {lease.state}")
            if not job.running:
                raise ResultRejected(Reject.JOB_NOT_RUNNING, f"job is {job.status}")
            if (sub.round, sub.shard) != (lease.round, lease.shard):
                raise ResultRejected(Reject.MALFORMED, "round/shard differ from the lease's")
            if sub.params_digest != job.params_digest:
                raise ResultRejected(Reject.PARAMS_MISMATCH, "computed on other parameters")
            lease.state = "submitting"
            return lease, worker.public_key, job.params.size

    def _explain_missing_lease(self, sub: Submission) -> ResultRejected:
        row = self.co.store.one("SELECT state, worker_id FROM leases WHERE lease_id=?", (sub.lease_id,))
        if row is None:
            return ResultRejected(Reject.UNKNOWN_LEASE, "no such lease")
        if row["worker_id"] != sub.worker_id:
            return ResultRejected(Reject.UNKNOWN_LEASE, "lease was issued to another worker")
        if row["state"] == "expired":
            return ResultRejected(Reject.LEASE_EXPIRED, "lease expired and went back to the queue")
        if row["state"] in ("used", "rejected"):
            return ResultRejected(Reject.REPLAYED_LEASE, "lease id already used")
        return ResultRejected(Reject.STALE_ROUND, f"lease {row['state']}: its round is over")

    def _check_content(self, sub: Submission, payload: bytes, public_key: bytes,
                       expected_len: int) -> np.ndarray:
        if sub.encoding != ENCODING_F32LE:
            raise ResultRejected(Reject.MALFORMED, f"unsupported encoding {sub.encoding!r}")
        if len(payload) != sub.payload_size or sha256_hex(payload) != sub.payload_digest:
            raise ResultRejected(Reject.PAYLOAD_HASH, "payload does not match its signed digest")
        if not signing.verify(public_key, sub.signature, sub.digest()):
            raise ResultRejected(Reject.BAD_SIGNATURE, "signature does not verify under the worker key")
        try:
            update = decode_tensor(payload, expected_len)
        except BlobError as exc:
            raise ResultRejected(Reject.WRONG_SHAPE, str(exc)) from None
        if not np.isfinite(update).all():
            raise ResultRejected(Reject.NON_FINITE, "update contains NaN or Inf")
        return update

    def _accept(self, sub: Submission, lease: Lease, payload: bytes, update: np.ndarray) -> Verdict:
        co = self.co
        # A large blob is written first, outside the lock (a row never names a missing blob);
        # a small one is a row written in the result's own transaction.
        small = co.blobs.is_small(len(payload))
        # _check_content verified the payload against its digest: no second hash
        digest = sub.payload_digest if small else co.blobs.put(payload, sub.payload_digest)
        samples = int(sub.metrics.get("samples", 0))
        with co.lock:
            job = co.jobs.get(sub.job_id)
            if job is None or lease.state != "submitting" or job.leases.get(lease.lease_id) is not lease:
                raise ResultRejected(Reject.LEASE_EXPIRED, "lease ended while the result was checked")
            if job.shard(sub.shard).settled is not None:
                # another copy (a backup, a replica) settled the shard while this one was checked
                raise ResultRejected(Reject.STALE_ROUND, "the shard was settled by another copy")
            flops = samples * job.flops_per_sample
            credits = flops / 1e9 * CREDITS_PER_GFLOP
            receipt = co.signer.sign(signing.receipt_bytes(worker_id=sub.worker_id, result=sub.digest(),
                                                        samples=samples, flops=flops, credits=credits))
            now = co.clock()
            # Unverified results wait as 'pending' until the verifier settles them.
            state = "pending" if job.spec.verification.enabled else "accepted"
            with co.store.transaction() as db:
                if small:
                    co.blobs.put(payload, digest)
                db.execute("INSERT INTO results VALUES(?,?,?,?,?,?,?,?,?,?)",
                           (lease.lease_id, sub.job_id, sub.round, sub.shard, sub.worker_id, digest,
                            dumps(sub.metrics), sub.signature, state, now))
                db.execute("UPDATE leases SET state='used' WHERE lease_id=?", (lease.lease_id,))
                db.execute("INSERT INTO ledger VALUES(?,?,?,?,?,?,?,?,?,?)",
                           (lease.lease_id, sub.worker_id, sub.job_id, sub.round, sub.shard, samples,
                            flops, credits, receipt, now))
            worker = co.workers[sub.worker_id]
            worker.speed = update_speed(worker.speed, flops, now - lease.issued_at)
            job.end_lease(lease, "used")
            job.shard(sub.shard).results.append(
                Accepted(lease.lease_id, sub.worker_id, sub.shard, digest, samples))
            co.verifier.on_result(job, sub.shard)
        return Verdict(True, receipt=receipt, credits=credits)

    def _record_rejection(self, sub: Submission, lease: Lease | None, exc: ResultRejected) -> None:
        co = self.co
        with co.lock:
            job_id = sub.job_id if sub.job_id in co.jobs else None
            with co.store.transaction() as db:
                db.execute("INSERT INTO rejections(job_id, worker_id, lease_id, code, message, at) "
                           "VALUES(?,?,?,?,?,?)", (job_id, sub.worker_id, sub.lease_id,
                                                   int(exc.code), exc.message, co.clock()))
                if lease is not None:
                    db.execute("UPDATE leases SET state='rejected' WHERE lease_id=?", (lease.lease_id,))
            if lease is not None and lease.state == "submitting":
                # The shard goes back to the queue for an honest worker.
                lease.state = "rejected"
                job = co.jobs.get(lease.job_id)
                if job is not None:
                    job.end_lease(lease, "rejected")
                    co._notify(job)
                    co.offer_work(1)
