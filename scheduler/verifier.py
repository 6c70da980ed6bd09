"""Applies the verification policy to the open rounds: replicas, spot checks, disputes, bans.

Re-executions run off the RPC threads: a tiny shard (below `INLINE_REEXECUTION_FLOPS`, a fraction
of a millisecond) on one helper thread of the coordinator, since handing it to another process
costs more than computing it; anything bigger in a process pool of the coordinator's own
(spawned, never forked), so a long computation never holds the coordinator's interpreter. Their
outcome is applied under the coordinator lock when it arrives, on the gRPC event loop when there
is one (Coordinator.apply), so its writes join the group commit.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import random
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from scheduler import verification as policy
from scheduler.errors import Reject
from scheduler.jobs import Accepted, JobRuntime, ShardState
from worker.workloads import WorkloadConfig, compute_update

if TYPE_CHECKING:
    from scheduler.core import Coordinator

log = logging.getLogger("shardgrid.verify")

# About 0.2 ms of numpy here; the process pool's pickling and hand-off alone take longer.
INLINE_REEXECUTION_FLOPS = policy.CHEAP_TASK_FLOPS


def reexecute(workload_json: str, params: np.ndarray, round_no: int, shard: int) -> np.ndarray:
    """Runs in the pool: the coordinator's own computation of a shard."""
    return compute_update(WorkloadConfig.from_json(workload_json), params, round_no, shard).update


def reexecute_warmup() -> None:
    import sklearn.datasets  # noqa: F401  the slowest import of a first re-execution


def exit_with_parent(parent_pid: int, check_s: float = 1.0) -> None:
    """Pool initializer: a spawned pool process outlived a SIGKILLed coordinator (65 of them,
    ~130 MB each, after a day of tests), so it watches its parent and exits once it is gone."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(check_s)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class HelperThread:
    """One daemon thread running submitted calls in order. ThreadPoolExecutor.submit (a future,
    locks, a thread-count check) cost ~4% of the coordinator with every result re-executed at
    1,000 workers; a queue put costs a fraction. Calls pending at shutdown are dropped."""

    def __init__(self, name: str):
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, function, *args) -> None:
        self._calls.put((function, args))

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            if self._closed:
                continue  # drain what is left without running it
            function, args = call
            try:
                function(*args)
            except Exception:  # the callers handle their own failures; never kill the thread
                log.exception("helper call %r failed", function)

    def shutdown(self) -> None:
        self._closed = True
        self._calls.put(None)
        self._thread.join(timeout=10)


class Verifier:
    def __init__(self, co: "Coordinator", seed: int | None = None):
        self.co = co
        self.rng = random.Random(seed)
        self._pool: ProcessPoolExecutor | None = None
        self._inline = HelperThread("reexecute")

    def warm(self) -> None:
        """Start the pool process now, so the first spot check does not wait for its imports."""
        self._ensure_pool().submit(reexecute_warmup)

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=exit_with_parent,
                                             initargs=(os.getpid(),))
        return self._pool

    def close(self) -> None:
        self._inline.shutdown()
        if self._pool is not None:
            # waiting (a re-execution takes milliseconds) lets the pool release its semaphores
            self._pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ decisions (lock held)
    def on_lease(self, job: JobRuntime, shard: int, worker_id: str) -> None:
        state = job.shards.get(shard)
        if state is None:
            state = job.shard(shard)
            trust = self.co.workers[worker_id].trust
            second_opinion = policy.wants_second_opinion(trust, job.spec.verification, self.rng)
            if second_opinion and policy.coordinator_checks(job.spec.verification, job.task_flops):
                state.spot_check = True  # re-executed on arrival (see on_result)
            elif second_opinion:
                state.copies = 2
                job.reopen(shard)
                self.co.count(job.job_id, "shards_replicated")
                self.co.offer_work(1)  # someone else must take the replica
        state.holders.add(worker_id)

    def on_result(self, job: JobRuntime, shard: int) -> None:
        """A protocol-valid result arrived: settle the shard, wait for more, or re-execute."""
        state = job.shards[shard]
        if state.settled is not None or state.checking or len(state.results) < state.copies:
            return
        if not job.spec.verification.enabled:
            self._settle(job, state, state.results[0], state.results[:1])
            return
        if state.copies == 1:
            if not state.spot_check and policy.wants_spot_check(job.spec.verification, self.rng):
                state.spot_check = True
                self.co.count(job.job_id, "shards_spot_checked")
            if state.spot_check:
                self._start_reexecution(job, shard)
            else:
                self._settle(job, state, state.results[0], [])
            return
        first, second = state.results[0], state.results[1]
        if policy.agree(first.payload_digest, second.payload_digest, self._update(first),
                        self._update(second), job.spec.verification.tolerance):
            if self._trusted(job, first) or self._trusted(job, second):
                self._settle(job, state, first, [first, second])
            else:
                # Two newcomers agreeing prove little: colluding identities send identical
                # wrong updates and agree bit for bit. The coordinator confirms, until trusted.
                self.co.count(job.job_id, "collusion_checks")
                self._start_reexecution(job, shard)
        else:
            self.co.count(job.job_id, "disputes")
            self._start_reexecution(job, shard)

    def _settle(self, job: JobRuntime, state: ShardState, chosen: Accepted,
                verified: list[Accepted]) -> None:
        job.settle(state, chosen)
        self._cancel_other_copies(job, chosen.shard)
        self.co._notify(job)
        if not job.spec.verification.enabled:
            return  # recorded as accepted on arrival: nothing more to write
        # "Consecutive valid" counts every accepted result not proven wrong, checked or not:
        # otherwise a trusted worker's streak stalls at replicate_until and its replication
        # rate never decays below 1/replicate_until.
        for result in verified or [chosen]:
            policy.record_agreement(self.co.workers[result.worker_id].trust)
            self.co.save_trust(result.worker_id)
        ids = {chosen.lease_id, *(r.lease_id for r in verified)}
        self.co.store.execute(f"UPDATE results SET state='accepted' WHERE lease_id IN "
                              f"({','.join('?' * len(ids))})", tuple(ids))

    def _trusted(self, job: JobRuntime, result: Accepted) -> bool:
        return self.co.workers[result.worker_id].trust.streak >= job.spec.verification.replicate_until

    def _cancel_other_copies(self, job: JobRuntime, shard: int) -> None:
        """The first valid result wins: leases still computing this shard (backups) are
        cancelled, and their workers hear so at their next heartbeat."""
        if job.shards[shard].live == 0:
            return
        losers = [l for l in job.leases.values() if l.shard == shard and l.state == "active"]
        for lease in losers:
            job.end_lease(lease, "cancelled")
            self.co.store.execute("UPDATE leases SET state='cancelled' WHERE lease_id=?",
                                  (lease.lease_id,))

    def _update(self, result: Accepted) -> np.ndarray:
        return self.co.blobs.get_tensor(result.payload_digest)

    def resume(self, job: JobRuntime) -> None:
        """After a restart, results recovered unverified are settled by re-execution."""
        for shard, state in job.shards.items():
            if state.settled is None and state.results and not state.checking:
                self._start_reexecution(job, shard)

    # ------------------------------------------------------------------ re-execution
    def _start_reexecution(self, job: JobRuntime, shard: int) -> None:
        state = job.shards[shard]
        state.checking = True
        self.co.count(job.job_id, "reexecutions")
        round_no = job.round
        args = (job.workload_json, job.params, round_no, shard)
        if job.task_flops < INLINE_REEXECUTION_FLOPS:
            # Computed on the helper thread, never in the caller, which holds the lock in the
            # middle of an update.
            self._inline.submit(self._reexecute_here, job, round_no, shard, args)
        else:
            future = self._ensure_pool().submit(reexecute, *args)
            future.add_done_callback(lambda f: self._apply_reference(job, round_no, shard, f))

    def _apply_reference(self, job: JobRuntime, round_no: int, shard: int, future: Future) -> None:
        self.co.apply(lambda: self._on_reference(job, round_no, shard, future))

    def _reexecute_here(self, job: JobRuntime, round_no: int, shard: int, args: tuple) -> None:
        future: Future = Future()
        try:
            future.set_result(reexecute(*args))
        except Exception as exc:  # handled like a pool failure (_on_reference)
            future.set_exception(exc)
        self._apply_reference(job, round_no, shard, future)

    def _on_reference(self, job: JobRuntime, round_no: int, shard: int, future: Future) -> None:
        with self.co.lock:
            state = job.shards.get(shard)
            if job.round != round_no or state is None or not job.running:
                return  # the round moved on (or the job ended) while we computed
            state.checking = False
            try:
                reference = future.result()
            except Exception as exc:  # the pool died: retry rather than settle unverified
                log.warning("re-execution of round %d shard %d failed: %r", round_no, shard, exc)
                self._start_reexecution(job, shard)
                return
            tolerance = job.spec.verification.tolerance
            good = [r for r in state.results
                    if policy.matches_reference(self._update(r), reference, tolerance)]
            for result in [r for r in state.results if r not in good]:
                self.prove_wrong(job, state, result)
            if good:
                self._settle(job, state, good[0], good)
            else:
                state.copies = 2  # every result was wrong: redo it, replicated
                job.reopen(shard)
                self.co.offer_work(2)
            self.co._notify(job)

    # ------------------------------------------------------------------ punishment
    def prove_wrong(self, job: JobRuntime, state: ShardState, result: Accepted) -> None:
        """Discard a result shown wrong, drop its worker's trust, ban at the policy's limit."""
        co = self.co
        state.results.remove(result)
        job.reopen(result.shard)
        with co.store.transaction() as db:
            db.execute("UPDATE results SET state='rejected' WHERE lease_id=?", (result.lease_id,))
            db.execute("DELETE FROM ledger WHERE lease_id=?", (result.lease_id,))
            db.execute("INSERT INTO rejections(job_id, worker_id, lease_id, code, message, at) "
                       "VALUES(?,?,?,?,?,?)", (job.job_id, result.worker_id, result.lease_id,
                                               int(Reject.DISAGREEMENT),
                                               "disagrees with the coordinator's re-execution",
                                               co.clock()))
        worker = co.workers[result.worker_id]
        policy.record_proven_wrong(worker.trust, job.spec.verification)
        co.save_trust(worker.worker_id)
        log.warning("worker %s proven wrong (round %d shard %d)%s", worker.worker_id, job.round,
                    result.shard, "; banned" if worker.trust.banned else "")
        if worker.trust.banned:
            self._discard_pending(worker.worker_id)

    def _discard_pending(self, worker_id: str) -> None:
        """A banned worker's leases and unsettled results in every open round go; their shards
        reopen. Each reopened shard wakes a parked poll: without that wake-up, the honest
        workers slept out their long-poll (5 s) while the shard waited."""
        for job in self.co.jobs.values():
            for lease in job.leases_of(worker_id):
                job.end_lease(lease, "cancelled")
                self.co.offer_work(1)  # its shard wants a copy again: wake a parked poll
            for state in job.shards.values():
                for result in [r for r in state.results if r.worker_id == worker_id]:
                    if state.settled is None:
                        state.results.remove(result)
                        job.reopen(result.shard)
                        self.co.offer_work(1)
                        self.co.store.execute("UPDATE results SET state='rejected' WHERE "
                                              "lease_id=?", (result.lease_id,))
            self.co._notify(job)
