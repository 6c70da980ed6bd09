"""The coordinator core without a network: placement, round commits, and state that survives a
restart from the same database."""
from __future__ import annotations

import time

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protos import signing
from protos.codec import encode_tensor, sha256_hex
from scheduler.core import Coordinator
from scheduler.errors import Reject
from scheduler.jobs import Lease, ShardState
from scheduler.submission import Submission
from tests.conftest import small_spec
from worker.workloads import WorkloadConfig, compute_update


def test_placement_fills_lowest_shard_needing_a_copy(tmp_path):
    """Shards needing copies go out lowest first; a worker never gets a shard it already held;
    a shard whose lease ends (or that needs a replica) is offered again."""
    co = Coordinator(tmp_path / "state.db")
    try:
        job = co.jobs[co.submit_job(small_spec(shards=4))]
        leases = {}

        def lease(shard: int, worker: str) -> None:
            job.shard(shard).holders.add(worker)
            leases[shard] = Lease(f"l{shard}{worker}", job.job_id, 0, shard, worker, 0.0, 9.0)
            job.add_lease(leases[shard])

        assert job.next_open("w") == 0
        lease(0, "w")
        lease(1, "w")
        assert job.next_open("w") == 2
        job.shard(1).copies = 2   # a replica is wanted, but not from "w"
        job.reopen(1)
        assert job.next_open("w") == 2 and job.next_open("v") == 1
        job.end_lease(leases[0], "expired")
        job.shard(0).holders.discard("w")
        assert job.next_open("w") == 0 and job.copies_wanted(0) == 1
        assert job.shards[0].live == 0 and not job.leases_of("x")
        assert [l.shard for l in job.leases_of("w")] == [1]
        needed = job.copies_needed()   # {0: 1, 1: 1, 2: 1, 3: 1}
        assert job.open_copies(limit=100) == sum(needed.values()) == 4
        assert sorted(job.open_shards()) == sorted(s for s, n in needed.items() if n > 0)
        assert job.open_copies(limit=1) == 2  # stops counting once past the limit
    finally:
        co.stop()


def test_slow_worker_defers_when_enough_faster_workers_are_idle(tmp_path):
    """Through the coordinator: a slow worker gets no lease while clearly faster workers wait
    for the open copies, and works as soon as there are more copies than they can take."""
    co = Coordinator(tmp_path / "state.db")
    try:
        job = co.jobs[co.submit_job(small_spec(shards=2) + NO_VERIFY)]
        slow, fast_a, fast_b = Worker(co), Worker(co), Worker(co)
        co.workers[slow.id].speed = 1e9
        for fast in (fast_a, fast_b):
            co.workers[fast.id].speed = 10e9
            co.waiting[fast.id] = 1   # parked in a long-poll right now
        co.workers[slow.id].last_leased = co.clock()
        assert co.leasing.try_lease(slow.id) == (None, True)
        job.shard(1).copies = 2       # three copies open, two fast workers idle
        job.reopen(1)
        grant, deferred = co.leasing.try_lease(slow.id)
        assert grant is not None and not deferred
    finally:
        co.stop()


class Worker:
    def __init__(self, co: Coordinator):
        self.key = Ed25519PrivateKey.generate()
        public = signing.public_bytes(self.key)
        ts = int(time.time() * 1000)
        record = co.register(public, {"cores": 1}, ts,
                             self.key.sign(signing.register_bytes(public, ts, {"cores": 1})))
        self.co, self.id, self.token = co, record.worker_id, record.token

    def work_one(self) -> tuple[Submission, bytes]:
        grant = self.co.fetch_task(self.id, self.token)
        lease = grant.lease
        params = self.co.blobs.get_tensor(grant.params_digest)
        result = compute_update(WorkloadConfig.from_json(grant.workload_json), params, lease.round,
                                lease.shard)
        payload = encode_tensor(result.update)
        fields = dict(job_id=lease.job_id, round=lease.round, shard=lease.shard,
                      lease_id=lease.lease_id, params_digest=grant.params_digest,
                      payload_digest=sha256_hex(payload), metrics=result.metrics())
        unsigned = Submission(worker_id=self.id, token=self.token,
                              protocol_version=signing.PROTOCOL_VERSION, payload_size=len(payload),
                              encoding="f32le", **fields)
        submission = Submission(**{**vars(unsigned), "signature": self.key.sign(unsigned.digest())})
        return submission, payload


NO_VERIFY = "\n[verification]\nenabled = false\n"


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_accepted_results_and_leases_survive_restart(tmp_path):
    """A restart from the same database keeps accepted results; their leases stay used."""
    co = Coordinator(tmp_path / "s.db")
    job_id = co.submit_job(small_spec(rounds=5, shards=3, extra=NO_VERIFY))
    worker = Worker(co)
    submission, payload = worker.work_one()
    assert co.submit_result(submission, payload).accepted
    co.store.close()  # no orderly shutdown: only what was committed remains

    again = Coordinator(tmp_path / "s.db")
    job = again.job(job_id)
    assert job.settled() == {submission.shard} and job.round == 0
    verdict = again.submit_result(submission, payload)
    assert not verdict.accepted and verdict.code == Reject.REPLAYED_LEASE
    again.stop()


@pytest.mark.parametrize("blobs_in", ["database rows", "files"])
def test_round_commit_is_durable_and_matches_the_math(tmp_path, monkeypatch, blobs_in):
    """Closing a round applies exactly the mean of the shard gradients, once, durably, whether
    its blobs are rows of the database (small models) or files written side by side (large)."""
    if blobs_in == "files":
        from scheduler import blobs
        monkeypatch.setattr(blobs, "SMALL_BLOB_BYTES", 8)
    co = Coordinator(tmp_path / "s.db")
    co.start()
    job_id = co.submit_job(small_spec(rounds=5, shards=2, extra=NO_VERIFY))
    start = co.job(job_id).params.copy()
    worker = Worker(co)
    updates = []
    for _ in range(2):
        submission, payload = worker.work_one()
        updates.append(np.frombuffer(payload, "<f4"))
        assert co.submit_result(submission, payload).accepted
    _wait(lambda: co.job(job_id).round == 1)
    expected = start - np.float32(0.5) * np.mean(updates, axis=0)
    np.testing.assert_allclose(co.job(job_id).params, expected, rtol=1e-5, atol=1e-7)
    digest, params = co.job(job_id).params_digest, co.job(job_id).params.copy()
    co.stop()

    again = Coordinator(tmp_path / "s.db")
    assert again.job(job_id).round == 1 and again.job(job_id).params_digest == digest
    np.testing.assert_array_equal(again.job(job_id).params, params)  # read back from the blob
    rows = again.store.query("SELECT COUNT(*) AS n FROM rounds WHERE job_id=?", (job_id,))
    assert rows[0]["n"] == 1
    files = list((tmp_path / "s.db.blobs").rglob("*"))
    assert any(f.name == digest for f in files) == (blobs_in == "files")
    again.stop()


def test_expired_lease_goes_back_and_late_result_is_refused(tmp_path):
    """A lease past its deadline reopens its shard; its late result gets LEASE_EXPIRED."""
    now = [time.time()]
    co = Coordinator(tmp_path / "s.db", clock=lambda: now[0])
    co.submit_job(small_spec(rounds=5, shards=1, extra=NO_VERIFY, lease_timeout_s=5))
    slow, fast = Worker(co), Worker(co)
    submission, payload = slow.work_one()
    assert co.fetch_task(fast.id, fast.token) is None  # the only shard is leased
    now[0] += 6
    with co.lock:
        co._expire_leases()
    assert co.fetch_task(fast.id, fast.token) is not None
    verdict = co.submit_result(submission, payload)
    assert verdict.code == Reject.LEASE_EXPIRED
    co.stop()


@pytest.mark.parametrize("status", ["completed", "cancelled"])
def test_finished_jobs_refuse_results(tmp_path, status):
    """Results for a job that ended are refused with JOB_NOT_RUNNING or as stale."""
    co = Coordinator(tmp_path / "s.db")
    job_id = co.submit_job(small_spec(rounds=5, shards=2))
    submission, payload = Worker(co).work_one()
    with co.lock:
        co.finish_job(co.job(job_id), status)
    verdict = co.submit_result(submission, payload)
    assert not verdict.accepted and verdict.code in (Reject.JOB_NOT_RUNNING, Reject.STALE_ROUND)
    co.stop()


def test_speed_sizes_deadlines_and_backups_go_to_faster_workers():
    """Pure placement maths: EWMA speed, deadlines from it, backups only when clearly faster."""
    from scheduler import placement

    speed = placement.update_speed(0.0, 1e9, 1.0)
    assert speed == 1e9 and placement.update_speed(speed, 1e9, 0.5) == pytest.approx(1.3e9)
    assert placement.lease_seconds(1e9, 0.0, cap_s=30) == 30          # unknown: the full timeout
    assert placement.lease_seconds(1e9, 1e9, cap_s=30) == 4.0         # 4x expected
    assert placement.lease_seconds(1e6, 1e9, cap_s=30) == placement.DEADLINE_FLOOR_S
    # shard 1's holder finishes at t=50; a worker needing 2 s at t=10 backs it up, shard 0's
    # (finishing at t=11) it does not; nor one it held, nor one already backed up or checking
    def straggling(shard: int, finish: float, **state) -> tuple[float, int, ShardState]:
        return finish, shard, ShardState(live=1, holders={"h"}, **state)

    assert placement.choose_backup([straggling(1, 50.0), straggling(0, 11.0)], "w", 10.0, 2.0) == 1
    assert placement.choose_backup([straggling(1, 50.0, backed_up=True), straggling(0, 11.0)],
                                   "w", 10.0, 2.0) is None
    assert placement.choose_backup([straggling(1, 50.0)], "h", 10.0, 2.0) is None
    assert placement.choose_backup([straggling(1, 50.0, checking=True)], "w", 10.0, 2.0) is None
    # a lease is counted on at its holder's pace until overdue by another task time (at least
    # OVERDUE_SLACK_S); then only its deadline is certain, so an idle worker backs it up
    assert placement.expected_finish(10.0, 2.0, 40.0, now=13.0) == 12.0
    assert placement.expected_finish(10.0, 2.0, 40.0, now=14.5) == 40.0
    assert placement.expected_finish(10.0, 0.001, 13.0, now=10.03) == 10.001
    assert placement.expected_finish(10.0, 0.001, 13.0, now=10.06) == 13.0
    assert placement.expected_finish(10.0, None, 13.0, now=10.0) == 13.0
    assert placement.fits_in_memory({"memory_bytes": 0}, 10**9)
    assert not placement.fits_in_memory({"memory_bytes": 10**6}, 10**9)


def test_backup_copy_wins_and_the_straggler_is_cancelled(tmp_path):
    """When the only shard's holder is slow, an idle fast worker gets a backup; the first valid
    result settles the shard and the straggler's lease is cancelled."""
    now = [time.time()]
    co = Coordinator(tmp_path / "s.db", clock=lambda: now[0])
    job_id = co.submit_job(small_spec(rounds=5, shards=1, extra=NO_VERIFY, lease_timeout_s=60))
    slow, fast = Worker(co), Worker(co)
    co.workers[slow.id].speed, co.workers[fast.id].speed = 1e3, 1e12  # as if measured
    slow_sub, _ = slow.work_one()
    now[0] += 1.0
    fast_sub, fast_payload = fast.work_one()
    assert fast_sub.shard == slow_sub.shard
    assert co.submit_result(fast_sub, fast_payload).accepted
    assert co.job(job_id).settled() == {0}
    assert co.heartbeat(slow.id, slow.token, [slow_sub.lease_id]) == [slow_sub.lease_id]
    co.stop()


def test_a_lost_workers_shard_is_backed_up_long_before_its_deadline(tmp_path):
    """A worker that took a lease and went silent (killed, stalled) holds up the round only
    until its lease is clearly overdue, not until the deadline: an idle worker backs it up."""
    now = [time.time()]
    co = Coordinator(tmp_path / "s.db", clock=lambda: now[0])
    job_id = co.submit_job(small_spec(rounds=5, shards=1, extra=NO_VERIFY, lease_timeout_s=60))
    lost, idle = Worker(co), Worker(co)
    co.workers[lost.id].speed = co.workers[idle.id].speed = 1e9  # equals, as if measured
    lost_sub, _ = lost.work_one()
    assert co.fetch_task(idle.id, idle.token) is None   # on time: nothing to back up
    now[0] += 0.5                                        # long overdue for a ~ms task
    idle_sub, payload = idle.work_one()
    assert idle_sub.shard == lost_sub.shard
    assert co.submit_result(idle_sub, payload).accepted
    assert co.job(job_id).settled() == {0}
    co.stop()


def test_workers_too_small_for_the_job_get_no_task(tmp_path):
    """A worker whose reported memory cannot hold the job is never leased a shard."""
    co = Coordinator(tmp_path / "s.db")
    co.submit_job(small_spec(rounds=5, shards=2))
    tiny = Worker(co)
    co.workers[tiny.id].profile["memory_bytes"] = 1024
    assert co.fetch_task(tiny.id, tiny.token) is None
    co.stop()


def test_robust_rules_give_each_worker_one_vote():
    """A worker that delivered several shards of a round counts once under a robust rule, so
    two attackers holding 6 of 14 shards cannot outvote the trimmed mean; too few workers for
    the rule falls back to per-shard votes."""
    from scheduler.rounds import aggregate_updates
    from scheduler.spec import parse_spec

    spec = parse_spec(small_spec(shards=14, extra='[aggregation]\nrule = "trimmed_mean"\nbeta = 0.2'))
    honest = np.ones((8, 3), np.float32)
    poisoned = np.full((6, 3), 1e6, np.float32)
    workers = [f"h{i}" for i in range(8)] + ["a", "a", "a", "b", "b", "b"]
    updates, samples = np.concatenate([honest, poisoned]), np.ones(14)
    per_shard = aggregate_updates(spec, updates, samples, None)
    per_worker = aggregate_updates(spec, updates, samples, None, workers)
    assert per_shard[0] > 1e5                   # 6 of 14 shard votes: the attackers win
    np.testing.assert_allclose(per_worker, 1.0)  # 2 of 10 worker votes: trimmed away
    two = aggregate_updates(spec, updates, samples, None, ["x"] * 7 + ["y"] * 7)
    np.testing.assert_allclose(two, per_shard)   # 2 workers cannot be trimmed: shard votes


def test_slow_workers_defer_only_to_enough_faster_idle_workers():
    """A slow worker leaves open copies to clearly faster idle workers, but never for long."""
    from scheduler.placement import defer_to_faster

    assert defer_to_faster(1.0, [10.0, 10.0], copies_needed=2)
    assert not defer_to_faster(1.0, [10.0], copies_needed=2)         # not enough of them
    assert not defer_to_faster(1.0, [1.2, 1.3], copies_needed=1)     # not clearly faster
    assert not defer_to_faster(0.0, [10.0], copies_needed=1)         # unknown speed: works
    assert not defer_to_faster(1.0, [10.0], copies_needed=0)
    assert not defer_to_faster(1.0, [10.0, 10.0], 2, idle_s=5.0, max_idle_s=3.0)  # starved: works


def test_lease_the_worker_forgot_reopens_at_its_next_heartbeat(tmp_path):
    """A lease missing from the worker's heartbeat (it restarted, or lost the reply) reopens at
    once instead of at its deadline; a lease younger than one heartbeat is left alone."""
    now = [time.time()]
    co = Coordinator(tmp_path / "s.db", clock=lambda: now[0])
    co.submit_job(small_spec(rounds=5, shards=1, extra=NO_VERIFY, lease_timeout_s=60))
    worker, other = Worker(co), Worker(co)
    grant = co.fetch_task(worker.id, worker.token)
    co.heartbeat(worker.id, worker.token, [])
    assert co.fetch_task(other.id, other.token) is None      # too young to call forgotten
    now[0] += 3 * co.heartbeat_interval_s / 2
    co.heartbeat(other.id, other.token, [])                  # keeps the other worker alive
    co.heartbeat(worker.id, worker.token, [])
    assert co.fetch_task(other.id, other.token).lease.shard == grant.lease.shard
    co.stop()


def test_copy_arriving_after_its_shard_settled_is_stale(tmp_path):
    """A second copy whose check overlapped the first copy's settlement is refused as stale:
    no ledger credit without an accepted result."""
    co = Coordinator(tmp_path / "s.db")
    job_id = co.submit_job(small_spec(rounds=5, shards=1, extra=NO_VERIFY, lease_timeout_s=60))
    first, second = Worker(co), Worker(co)
    a = first.work_one()
    co.workers[first.id].speed, co.workers[second.id].speed = 1e3, 1e12
    b = second.work_one()                                    # a backup copy of the same shard
    lease_b = co.job(job_id).leases[b[0].lease_id]
    lease_b.state = "submitting"                             # b's check is under way...
    assert co.submit_result(*a).accepted                     # ...when a settles the shard
    lease_b.state = "active"
    co.job(job_id).leases[lease_b.lease_id] = lease_b
    verdict = co.submit_result(*b)
    assert verdict.code == Reject.STALE_ROUND
    ledger = co.store.query("SELECT COUNT(*) AS n FROM ledger")[0]["n"]
    assert ledger == co.store.accepted_count(job_id) == 1
    co.stop()
