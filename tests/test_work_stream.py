"""WorkStream: FetchTask on one long-lived stream, against a real coordinator on 127.0.0.1.
Each request gets its reply in order on the same stream; a typed error ends the stream with
FetchTask's status and the next fetch opens a new one; an overdue reply cancels the stream; a
worker whose stream ends has its leases backed up at once."""
from __future__ import annotations

import threading
import time

import grpc
import pytest

from protos import shardgrid_pb2 as pb
from scheduler.core import Coordinator
from tests.conftest import small_spec
from tests.test_core import NO_VERIFY, Worker, _wait
from tests.test_protocol import RawWorker
from worker.task_stream import TaskStream


@pytest.fixture
def job(client):
    return client.submit(small_spec(rounds=50, shards=4, extra="[verification]\nenabled = false"))


def test_tasks_and_their_results_ride_one_stream(coordinator, client, job):
    worker = RawWorker(coordinator.address)
    tasks = TaskStream(worker.stub)
    request = pb.FetchTaskRequest(worker_id=worker.worker_id, session_token=worker.token,
                                  wait_ms=3000)
    reply = tasks.fetch(request, timeout_s=10)
    stream = tasks._replies
    for _ in range(3):
        assert reply.has_task
        payload, metrics = worker.honest_payload(reply.lease)
        finished = pb.InlineResult(header=worker.header(reply.lease, payload, metrics),
                                   payload=payload)
        previous = reply.lease
        reply = tasks.fetch(pb.FetchTaskRequest(worker_id=worker.worker_id,
                                                session_token=worker.token, wait_ms=3000,
                                                finished=finished), timeout_s=10)
        assert reply.finished.accepted, reply.finished.message
        assert reply.lease.lease_id != previous.lease_id
    assert tasks._replies is stream  # one stream for all four tasks
    assert client.get(job)["results_accepted"] == 3
    tasks.close()


def test_typed_error_ends_the_stream_and_the_next_fetch_reopens(coordinator, job):
    worker = RawWorker(coordinator.address)
    tasks = TaskStream(worker.stub)
    with pytest.raises(grpc.RpcError) as info:
        tasks.fetch(pb.FetchTaskRequest(worker_id=worker.worker_id, session_token=b"stale"),
                    timeout_s=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    reply = tasks.fetch(pb.FetchTaskRequest(worker_id=worker.worker_id,
                                            session_token=worker.token, wait_ms=3000), timeout_s=10)
    assert reply.has_task
    tasks.close()


def test_overdue_reply_cancels_the_stream_and_leaves_nothing_parked(coordinator):
    """No job: the poll parks. Past its deadline, cancel_if_overdue (the agent's heartbeat
    thread) cancels the stream; the fetch fails and the coordinator forgets the poll."""
    co = coordinator.coordinator
    worker = RawWorker(coordinator.address)
    tasks = TaskStream(worker.stub)
    assert not tasks.cancel_if_overdue()  # nothing pending
    errors = []

    def fetch():
        try:
            tasks.fetch(pb.FetchTaskRequest(worker_id=worker.worker_id,
                                            session_token=worker.token, wait_ms=20_000),
                        timeout_s=0.2)
        except grpc.RpcError as exc:
            errors.append(exc.code())

    thread = threading.Thread(target=fetch)
    thread.start()
    deadline = time.monotonic() + 10
    while not co.parked and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(co.parked) == 1
    while not tasks.cancel_if_overdue() and time.monotonic() < deadline:
        time.sleep(0.05)
    thread.join(timeout=10)
    assert errors == [grpc.StatusCode.CANCELLED]
    while (co.parked or co.waiting) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not co.parked and not co.waiting


def test_a_lost_stream_makes_its_leases_backup_candidates(tmp_path):
    """The holder is expected to finish in 10 s, the idle worker would need 20 s: no backup while
    the holder's stream is open. Once it ends, the idle worker backs the shard up at once, and
    the holder's lease stays valid (a reconnecting worker loses nothing)."""
    co = Coordinator(tmp_path / "s.db")
    job_id = co.submit_job(small_spec(rounds=3, shards=1, extra=NO_VERIFY))
    holder, idle = Worker(co), Worker(co)
    flops = co.job(job_id).task_flops
    co.workers[holder.id].speed = flops / 10
    co.workers[idle.id].speed = flops / 20
    co.stream_changed(holder.id, opened=True)
    grant = co.fetch_task(holder.id, holder.token)
    assert co.fetch_task(idle.id, idle.token) is None
    co.stream_changed(holder.id, opened=False)
    backup = co.fetch_task(idle.id, idle.token)
    assert backup is not None and backup.lease.shard == grant.lease.shard
    assert grant.lease.lease_id in co.job(job_id).leases
    co.stop()


def test_the_stream_handler_reports_open_and_end_for_checked_sessions_only(coordinator, job):
    co = coordinator.coordinator
    worker = RawWorker(coordinator.address)
    stranger = TaskStream(worker.stub)  # names the worker with a wrong token: refused, not counted
    with pytest.raises(grpc.RpcError):
        stranger.fetch(pb.FetchTaskRequest(worker_id=worker.worker_id, session_token=b"forged"),
                       timeout_s=10)
    assert co.workers[worker.worker_id].streams == 0
    assert not co.workers[worker.worker_id].stream_lost
    tasks = TaskStream(worker.stub)
    tasks.fetch(pb.FetchTaskRequest(worker_id=worker.worker_id, session_token=worker.token,
                                    wait_ms=3000), timeout_s=10)
    assert co.workers[worker.worker_id].streams == 1
    tasks.close()
    _wait(lambda: co.workers[worker.worker_id].stream_lost)
    assert co.workers[worker.worker_id].streams == 0
