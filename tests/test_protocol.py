"""The worker protocol against a real coordinator on 127.0.0.1: each bad result is refused with
its reason code and counted, and bad calls get the right gRPC status."""
from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protos import shardgrid_pb2 as pb
from protos import shardgrid_pb2_grpc as rpc
from protos import signing
from protos.codec import CHUNK_BYTES, GRPC_OPTIONS, decode_tensor, encode_tensor, reassemble, sha256_hex
from tests.conftest import small_spec
from worker.workloads import WorkloadConfig, compute_update


class RawWorker:
    """A worker spoken by hand, so each test can break exactly one thing."""

    def __init__(self, address: str):
        self.key = Ed25519PrivateKey.generate()
        self.public = signing.public_bytes(self.key)
        self.channel = grpc.insecure_channel(address, options=GRPC_OPTIONS)
        self.stub = rpc.WorkerGatewayStub(self.channel)
        profile = {"cores": 2, "device_class": "cpu"}
        ts = int(time.time() * 1000)
        reply = self.stub.Register(pb.RegisterRequest(
            public_key=self.public, profile=pb.HardwareProfile(**profile), timestamp_ms=ts,
            signature=self.key.sign(signing.register_bytes(self.public, ts, profile))))
        self.worker_id, self.token = reply.worker_id, reply.session_token

    def fetch(self) -> pb.TaskLease:
        reply = self.stub.FetchTask(pb.FetchTaskRequest(worker_id=self.worker_id,
                                                        session_token=self.token, wait_ms=3000))
        assert reply.has_task
        return reply.lease

    def honest_payload(self, lease: pb.TaskLease) -> tuple[bytes, dict]:
        chunks = self.stub.FetchBlob(pb.FetchBlobRequest(worker_id=self.worker_id,
                                                         session_token=self.token,
                                                         digest=lease.params_digest))
        params = decode_tensor(reassemble(((c.offset, c.total_size, c.data) for c in chunks),
                                          lease.params_digest))
        result = compute_update(WorkloadConfig.from_json(lease.workload_json), params,
                                lease.round, lease.shard)
        return encode_tensor(result.update), result.metrics()

    def submit(self, lease, payload, metrics, *, header_only=False, **signed) -> pb.SubmitReply:
        messages = [pb.ResultChunk(header=self.header(lease, payload, metrics, **signed))]
        if not header_only:
            messages.append(pb.ResultChunk(data=payload))
        return self.stub.SubmitResult(iter(messages))

    def fetch_reporting(self, lease, payload, metrics, wait_ms=3000, **signed) -> pb.FetchTaskReply:
        """The next FetchTask, carrying this result inline."""
        finished = pb.InlineResult(header=self.header(lease, payload, metrics, **signed),
                                   payload=payload)
        return self.stub.FetchTask(pb.FetchTaskRequest(
            worker_id=self.worker_id, session_token=self.token, wait_ms=wait_ms, finished=finished))

    def header(self, lease, payload, metrics, *, key=None, signed_payload=None,
               lease_id=None) -> pb.ResultHeader:
        lease_id = lease_id or lease.lease_id
        digest = sha256_hex(signed_payload if signed_payload is not None else payload)
        body = signing.result_digest(job_id=lease.job_id, round_no=lease.round, shard=lease.shard,
                                     lease_id=lease_id, params_digest=lease.params_digest,
                                     payload_digest=digest, metrics=metrics)
        header = pb.ResultHeader(
            worker_id=self.worker_id, session_token=self.token,
            protocol_version=signing.PROTOCOL_VERSION, job_id=lease.job_id, round=lease.round,
            shard=lease.shard, lease_id=lease_id, params_digest=lease.params_digest,
            payload_digest=digest, payload_size=len(payload), encoding="f32le",
            metrics=[pb.Metric(name=k, value=v) for k, v in metrics.items()],
            signature=(key or self.key).sign(body))
        return header


@pytest.fixture
def job(client):
    # protocol checks only: replication would hold honest results back as pending
    return client.submit(small_spec(rounds=50, shards=4, extra="[verification]\nenabled = false"))


def test_honest_result_accepted_with_receipt(coordinator, client, job):
    """An honest, signed result is accepted; the receipt verifies under the coordinator key."""
    worker = RawWorker(coordinator.address)
    lease = worker.fetch()
    assert signing.verify(coordinator.coordinator.public_key, lease.coordinator_signature,
                          signing.lease_bytes(lease_id=lease.lease_id, worker_id=worker.worker_id,
                                              job_id=lease.job_id, round_no=lease.round,
                                              shard=lease.shard, params_digest=lease.params_digest,
                                              deadline_ms=lease.deadline_ms))
    payload, metrics = worker.honest_payload(lease)
    reply = worker.submit(lease, payload, metrics)
    assert reply.accepted and reply.credits > 0
    assert client.get(job)["results_accepted"] == 1


def _tampered(payload):
    return bytes([payload[0] ^ 1]) + payload[1:]


CASES = {
    "tampered payload": (lambda w, l, p, m: w.submit(l, _tampered(p), m, signed_payload=p),
                         "REJECT_PAYLOAD_HASH", "payload_hash"),
    "wrong key": (lambda w, l, p, m: w.submit(l, p, m, key=Ed25519PrivateKey.generate()),
                  "REJECT_BAD_SIGNATURE", "bad_signature"),
    "wrong shape": (lambda w, l, p, m: w.submit(l, p[:-4], m), "REJECT_WRONG_SHAPE", "wrong_shape"),
    "nan update": (lambda w, l, p, m: w.submit(
        l, encode_tensor(np.full(len(p) // 4, np.nan, np.float32)), m),
        "REJECT_NON_FINITE", "non_finite"),
    "unknown lease": (lambda w, l, p, m: w.submit(l, p, m, lease_id="made-up"),
                      "REJECT_UNKNOWN_LEASE", "unknown_lease"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_results_rejected_with_reason(coordinator, client, job, case):
    """Each kind of bad result is refused with its code, counted, and its shard re-queued."""
    attack, wire_code, label = CASES[case]
    worker = RawWorker(coordinator.address)
    lease = worker.fetch()
    payload, metrics = worker.honest_payload(lease)
    reply = attack(worker, lease, payload, metrics)
    assert not reply.accepted
    assert reply.code == pb.RejectCode.Value(wire_code), reply.message
    figures = client.get(job)
    assert figures["rejected_by_reason"] == {label: 1}
    assert figures["results_accepted"] == 0
    if case != "unknown lease":  # the refused shard goes back to the queue for someone honest
        again = RawWorker(coordinator.address)
        assert [again.fetch().shard for _ in range(4)].count(lease.shard) == 1


def test_result_carried_by_the_next_fetch(coordinator, client, job):
    """A result reported inline with the next FetchTask is checked like a streamed one: the
    verdict (with its receipt) comes back with the next lease, and a bad one is refused with
    its code without costing the worker its next task."""
    worker = RawWorker(coordinator.address)
    first = worker.fetch()
    payload, metrics = worker.honest_payload(first)
    reply = worker.fetch_reporting(first, payload, metrics)
    assert reply.finished.accepted and reply.finished.credits > 0
    assert len(reply.finished.receipt) == 64  # an Ed25519 signature
    assert reply.has_task
    second = reply.lease
    payload, metrics = worker.honest_payload(second)
    refused = worker.fetch_reporting(second, payload, metrics, key=Ed25519PrivateKey.generate())
    assert not refused.finished.accepted
    assert refused.finished.code == pb.REJECT_BAD_SIGNATURE
    assert refused.has_task
    too_big = worker.fetch_reporting(refused.lease, b"\0" * (CHUNK_BYTES + 4), {"samples": 1.0})
    assert too_big.finished.code == pb.REJECT_MALFORMED and "SubmitResult" in too_big.finished.message
    info = client.get(job)
    assert info["results_accepted"] == 1
    assert info["rejected_by_reason"]["bad_signature"] == 1


def test_replayed_lease_rejected(coordinator, client, job):
    """A lease id is accepted once: the same result sent again is a replay."""
    worker = RawWorker(coordinator.address)
    lease = worker.fetch()
    payload, metrics = worker.honest_payload(lease)
    assert worker.submit(lease, payload, metrics).accepted
    reply = worker.submit(lease, payload, metrics)
    assert not reply.accepted and reply.code == pb.RejectCode.Value("REJECT_REPLAYED_LEASE")
    assert client.get(job)["rejected_by_reason"] == {"replayed_lease": 1}


def test_lease_of_another_worker_refused(coordinator, job):
    """A worker cannot submit under a lease issued to someone else."""
    owner, thief = RawWorker(coordinator.address), RawWorker(coordinator.address)
    lease = owner.fetch()
    payload, metrics = owner.honest_payload(lease)
    reply = thief.submit(lease, payload, metrics)
    assert reply.code == pb.RejectCode.Value("REJECT_UNKNOWN_LEASE")


def test_malformed_stream_and_bad_sessions_get_status_codes(coordinator, client, job):
    """No header -> INVALID_ARGUMENT; stale session -> UNAUTHENTICATED; bad registration too."""
    worker = RawWorker(coordinator.address)
    with pytest.raises(grpc.RpcError) as info:
        worker.stub.SubmitResult(iter([pb.ResultChunk(data=b"1234")]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        worker.stub.FetchTask(pb.FetchTaskRequest(worker_id=worker.worker_id, session_token=b"x"))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as info:
        worker.stub.Register(pb.RegisterRequest(public_key=worker.public, timestamp_ms=int(
            time.time() * 1000), signature=b"\x00" * 64))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    stale = int(time.time() * 1000) - 3_600_000
    with pytest.raises(grpc.RpcError) as info:
        worker.stub.Register(pb.RegisterRequest(
            public_key=worker.public, timestamp_ms=stale,
            signature=worker.key.sign(signing.register_bytes(worker.public, stale, {}))))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_job_service_errors(client):
    """Unknown jobs are NOT_FOUND and bad specs INVALID_ARGUMENT, with the field named."""
    from scheduler.client import ClientError

    with pytest.raises(ClientError) as info:
        client.get("job-nope")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ClientError) as info:
        client.submit(small_spec().replace("lr = 0.5", "lr = -2.0"))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "optimizer.lr" in str(info.value)


def test_parameters_come_with_the_lease_once_per_round(coordinator, job):
    """Parameters that fit one chunk ride with the lease to a worker that lacks them (no
    FetchBlob round trip), and only then; the agent's second and third tasks of the round reuse
    its cached copy."""
    from worker.agent import WorkerAgent

    worker = RawWorker(coordinator.address)
    request = pb.FetchTaskRequest(worker_id=worker.worker_id, session_token=worker.token,
                                  wait_ms=3000)
    first = worker.stub.FetchTask(request)
    assert first.params and sha256_hex(first.params) == first.lease.params_digest
    request.params_held = first.lease.params_digest
    again = worker.stub.FetchTask(request)
    assert again.has_task and not again.params

    agent = WorkerAgent(coordinator.address, coordinator.coordinator.store.path.parent / "w.key",
                        profile={"cores": 1, "device_class": "cpu"}, max_tasks=3)
    fetched = []
    original = agent.gateway.FetchBlob
    agent.gateway.FetchBlob = lambda *a, **k: fetched.append(1) or original(*a, **k)
    assert agent.run() == 0
    agent.close()
    assert agent.tasks_done == 3 and not fetched
    assert list(agent.params_cache) == [first.lease.params_digest]


def test_watch_reports_every_round(coordinator, client):
    """WatchJob sends each closed round once and in order, even when several close between
    two events, and ends with the job's final status."""
    import threading

    from worker.agent import WorkerAgent

    job_id = client.submit(small_spec(rounds=6, shards=2, extra="[verification]\nenabled = false"))
    stop = threading.Event()
    agents = [WorkerAgent(coordinator.address, coordinator.coordinator.store.path.parent / f"{i}.key",
                          profile={"cores": 1}, stop=stop) for i in range(2)]
    for agent in agents:
        threading.Thread(target=agent.run, daemon=True).start()
    events = list(client.watch(job_id))
    stop.set()
    rounds = [e["round"]["round"] for e in events if e["round"] is not None]
    assert rounds == list(range(6))
    assert events[-1]["job"]["status"] == "completed"
    # Watching a finished job: every round arrives in one batch, each event already carrying
    # the final status; the watch still delivers all of them before it ends.
    late = list(client.watch(job_id))
    assert [e["round"]["round"] for e in late] == list(range(6))
    assert all(e["job"]["status"] == "completed" for e in late)
