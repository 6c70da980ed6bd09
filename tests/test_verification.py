"""Verification: the pure policy, and the coordinator core settling, disputing and banning."""
from __future__ import annotations

import random

import numpy as np
import pytest

from protos.codec import encode_tensor, sha256_hex
from scheduler import verifier
from scheduler.core import Coordinator
from scheduler.figures import job_figures
from scheduler.errors import GatewayError, Reject
from scheduler.spec import VerificationPolicy
from scheduler.submission import Submission
from scheduler.verification import (CHEAP_TASK_FLOPS, Trust, agree, coordinator_checks,
                                    record_agreement, record_proven_wrong, relative_distance,
                                    wants_second_opinion)
from tests.conftest import small_spec
from tests.test_core import Worker, _wait


def test_replication_until_trusted_then_rarely():
    """New workers are always replicated; after N agreeing results only about 1/streak of the time."""
    policy, rng = VerificationPolicy(replicate_until=10), random.Random(0)
    assert all(wants_second_opinion(Trust(streak=s), policy, rng) for s in range(10))
    rate = np.mean([wants_second_opinion(Trust(streak=50), policy, rng) for _ in range(20000)])
    assert rate == pytest.approx(1 / 50, abs=0.005)
    assert not wants_second_opinion(Trust(), VerificationPolicy(enabled=False), rng)


def test_agreement_bitwise_or_within_tolerance():
    """Equal digests agree; otherwise the relative L2 distance decides."""
    a = np.ones(100, np.float32)
    assert agree("x", "x", None, None, 0.0)
    assert agree("x", "y", a, a * (1 + 1e-6), 1e-4)
    assert not agree("x", "y", a, -a, 1e-4)
    assert not agree("x", "y", a, a[:50], 1e-4)
    assert relative_distance(np.zeros(3), np.zeros(3)) == 0.0


def test_trust_rises_with_agreement_and_collapses_on_proof():
    """Agreement builds a streak; a proven-wrong result zeroes trust; ban_after of them ban."""
    trust, policy = Trust(), VerificationPolicy(ban_after=2)
    for _ in range(5):
        record_agreement(trust)
    assert trust.streak == 5 and trust.reputation == pytest.approx(0.5)
    record_proven_wrong(trust, policy)
    assert (trust.streak, trust.reputation, trust.banned) == (0, 0.0, False)
    record_proven_wrong(trust, policy)
    assert trust.banned


# These tests exercise replication itself: the demo-sized jobs they use are cheap enough that
# the default ("auto") would have the coordinator give the second opinion instead.
BY_REPLICA = '\n[verification]\nsecond_opinion = "replica"\n'


def test_second_opinion_policy():
    """auto: the coordinator recomputes tasks cheaper than CHEAP_TASK_FLOPS, replicas otherwise."""
    cheap, dear = CHEAP_TASK_FLOPS / 2, CHEAP_TASK_FLOPS * 2
    assert coordinator_checks(VerificationPolicy(), cheap)
    assert not coordinator_checks(VerificationPolicy(), dear)
    assert coordinator_checks(VerificationPolicy(second_opinion="coordinator"), dear)
    assert not coordinator_checks(VerificationPolicy(second_opinion="replica"), cheap)


def test_cheap_shards_of_newcomers_are_checked_by_the_coordinator(tmp_path):
    """No replica for a cheap task: the coordinator re-executes a newcomer's result, settles an
    honest one (its streak grows) and proves a wrong one wrong, with no second worker involved."""
    co = Coordinator(tmp_path / "s.db")
    co.start()
    job_id = co.submit_job(small_spec(rounds=5, shards=2))
    honest, liar = Worker(co), Worker(co)
    good, (bad_sub, payload) = honest.work_one(), liar.work_one()
    assert good[0].shard != bad_sub.shard  # no replica: each took an open shard of its own
    flipped = encode_tensor(-4 * np.frombuffer(payload, "<f4"))
    assert co.submit_result(*good).accepted
    assert co.submit_result(_signed(liar, bad_sub, flipped), flipped).accepted
    _wait(lambda: job_figures(co, job_id)["rejected_by_reason"].get("disagreement") == 1)
    _wait(lambda: good[0].shard in co.job(job_id).settled() or co.job(job_id).round == 1)
    assert co.workers[honest.id].trust.streak == 1
    assert co.workers[liar.id].trust.proven_wrong == 1
    extra = job_figures(co, job_id)["extra"]
    assert extra["reexecutions"] == 2 and extra["shards_replicated"] == 0
    co.stop()


def _signed(worker: Worker, submission: Submission, payload: bytes) -> Submission:
    fields = {**vars(submission), "payload_digest": sha256_hex(payload),
              "payload_size": len(payload)}
    unsigned = Submission(**{**fields, "signature": b""})
    return Submission(**{**fields, "signature": worker.key.sign(unsigned.digest())})


def test_replicas_that_agree_settle_and_build_trust(tmp_path):
    """Two honest copies of a shard from distinct workers settle it and raise both streaks;
    as both are newcomers, the coordinator confirms their agreement first."""
    co = Coordinator(tmp_path / "s.db")
    co.start()
    job_id = co.submit_job(small_spec(rounds=5, shards=1, extra=BY_REPLICA))
    a, b = Worker(co), Worker(co)
    first, second = a.work_one(), b.work_one()
    assert first[0].shard == second[0].shard == 0  # the new worker's shard is replicated
    assert co.submit_result(*first).accepted
    assert co.job(job_id).settled() == set()       # waits for its replica
    assert co.submit_result(*second).accepted
    _wait(lambda: co.job(job_id).settled() == {0} or co.job(job_id).round == 1)
    assert co.workers[a.id].trust.streak == co.workers[b.id].trust.streak == 1
    assert job_figures(co, job_id)["rejected_by_reason"] == {}
    co.stop()


def test_colluding_newcomers_that_agree_are_caught(tmp_path):
    """Two new workers sending the same wrong update agree bit for bit; the coordinator's
    confirmation proves both wrong."""
    co = Coordinator(tmp_path / "s.db")
    co.start()
    job_id = co.submit_job(small_spec(rounds=5, shards=1, extra=BY_REPLICA))
    a, b = Worker(co), Worker(co)
    (sub_a, payload), (sub_b, _) = a.work_one(), b.work_one()
    flipped = encode_tensor(-4 * np.frombuffer(payload, "<f4"))
    assert co.submit_result(_signed(a, sub_a, flipped), flipped).accepted
    assert co.submit_result(_signed(b, sub_b, flipped), flipped).accepted
    _wait(lambda: job_figures(co, job_id)["rejected_by_reason"].get("disagreement") == 2)
    assert co.job(job_id).settled() == set()
    assert co.workers[a.id].trust.proven_wrong == co.workers[b.id].trust.proven_wrong == 1
    co.stop()


@pytest.mark.parametrize("reexecuted_in", ["helper thread", "process pool"])
def test_disagreement_is_settled_by_reexecution_and_liars_are_banned(tmp_path, monkeypatch,
                                                                     reexecuted_in):
    """A wrong replica is proven wrong by re-execution; at ban_after it is banned, refused, and
    its pending results are dropped; the honest copy settles the shard. Tiny shards are
    re-executed on a thread of the coordinator, bigger ones in its process pool."""
    if reexecuted_in == "process pool":
        monkeypatch.setattr(verifier, "INLINE_REEXECUTION_FLOPS", 0)
    co = Coordinator(tmp_path / "s.db")
    co.start()
    job_id = co.submit_job(small_spec(rounds=5, shards=2, extra=BY_REPLICA + "ban_after = 1\n"))
    honest, liar = Worker(co), Worker(co)
    good = honest.work_one()
    bad_sub, payload = liar.work_one()
    assert good[0].shard == bad_sub.shard
    flipped = encode_tensor(-4 * np.frombuffer(payload, "<f4"))
    assert co.submit_result(*good).accepted
    assert co.submit_result(_signed(liar, bad_sub, flipped), flipped).accepted  # valid protocol
    _wait(lambda: co.job(job_id).settled() == {good[0].shard})
    assert co.workers[liar.id].trust.banned
    assert job_figures(co, job_id)["rejected_by_reason"] == {"disagreement": 1}
    with pytest.raises(GatewayError) as info:
        co.fetch_task(liar.id, liar.token)
    assert info.value.code == Reject.BANNED
    assert not co.store.query("SELECT * FROM ledger WHERE worker_id=?", (liar.id,))
    co.stop()


def test_replayed_registration_mints_no_session(tmp_path):
    """A captured Register message sent again (inside the time window) is refused."""
    import time

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from protos import signing

    co = Coordinator(tmp_path / "s.db")
    key = Ed25519PrivateKey.generate()
    public, ts = signing.public_bytes(key), int(time.time() * 1000)
    message = (public, {"cores": 1}, ts, key.sign(signing.register_bytes(public, ts, {"cores": 1})))
    co.register(*message)
    with pytest.raises(GatewayError) as info:
        co.register(*message)
    assert info.value.code == Reject.BAD_SIGNATURE
    co.stop()
    again = Coordinator(tmp_path / "s.db")  # the bound survives a restart
    with pytest.raises(GatewayError):
        again.register(*message)
    again.stop()


def test_worker_pins_coordinator_key_and_checks_leases(tmp_path, coordinator, client):
    """A worker pins the key on first contact, refuses another coordinator at that address, and
    ignores a lease whose signature does not verify."""
    from protos import shardgrid_pb2 as pb
    from scheduler.server import CoordinatorServer
    from worker.agent import WorkerAgent

    client.submit(small_spec(rounds=3, shards=2))
    key = tmp_path / "w.key"
    agent = WorkerAgent(coordinator.address, key, profile={"cores": 1}, max_tasks=1)
    assert agent.run() == 0
    grant_reply = agent.gateway.FetchTask(pb.FetchTaskRequest(
        worker_id=agent.worker_id, session_token=agent.token, wait_ms=2000))
    assert grant_reply.has_task and agent._lease_is_genuine(grant_reply.lease)
    grant_reply.lease.shard += 1
    assert not agent._lease_is_genuine(grant_reply.lease)
    agent.close()

    impostor = CoordinatorServer(tmp_path / "other.db", port=0)
    with impostor:
        pins = key.with_name("w.key.pins")
        pins.write_text(pins.read_text().replace(coordinator.address, impostor.address))
        agent = WorkerAgent(impostor.address, key, profile={"cores": 1}, max_tasks=1)
        assert agent.run() == 4
        agent.close()


def test_trusted_streak_grows_with_unchecked_results(tmp_path):
    """Once trusted, a worker's unreplicated results still extend its streak, so replication
    becomes rarer and rarer (probability 1/streak)."""
    co = Coordinator(tmp_path / "s.db")
    co.submit_job(small_spec(rounds=50, shards=1,
                             extra="[verification]\nreplicate_until = 1\nspot_check_fraction = 0.0"))
    worker = Worker(co)
    co.workers[worker.id].trust = Trust(reputation=1.0, streak=10**6)  # replication ~never
    before = co.workers[worker.id].trust.streak
    assert co.submit_result(*worker.work_one()).accepted
    assert co.workers[worker.id].trust.streak == before + 1
    co.stop()


def test_a_banned_workers_leases_go_to_parked_workers(tmp_path):
    """The liar holds a second lease when it is banned; that shard reopens and a worker parked
    in a long-poll is woken for it, not left to sleep out its poll."""
    from scheduler.polling import ThreadWaiter

    co = Coordinator(tmp_path / "s.db")
    co.start()
    co.submit_job(small_spec(rounds=5, shards=2, extra=BY_REPLICA + "ban_after = 1\n"))
    honest, liar, idle = Worker(co), Worker(co), Worker(co)
    bad_sub, payload = liar.work_one()
    held = co.fetch_task(liar.id, liar.token)  # the liar's second lease, never answered
    assert held.lease.shard != bad_sub.shard
    good = honest.work_one()
    if good[0].shard != bad_sub.shard:  # the honest worker must replicate the liar's shard
        good = honest.work_one()
    assert good[0].shard == bad_sub.shard
    while co.fetch_task(idle.id, idle.token) is not None:
        pass  # the idle worker takes every copy left, so nothing is open when it parks
    waiter = ThreadWaiter()
    assert co.poll_task(idle.id, idle.token, waiter) is None
    flipped = encode_tensor(-4 * np.frombuffer(payload, "<f4"))
    assert co.submit_result(*good).accepted
    assert co.submit_result(_signed(liar, bad_sub, flipped), flipped).accepted
    _wait(lambda: co.workers[liar.id].trust.banned)
    assert waiter.event.wait(5.0), "the banned worker's shard woke no parked poll"
    co.unpark(waiter)
    co.stop()
