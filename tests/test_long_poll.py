"""Long-polls: parked FetchTasks cost no thread, every unit of new work wakes one of them, and a
poll that ends without using its wake-up passes it on."""
from __future__ import annotations

import asyncio
import time

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protos import shardgrid_pb2 as pb
from protos import shardgrid_pb2_grpc as rpc
from protos import signing
from protos.codec import GRPC_OPTIONS
from scheduler.core import Coordinator
from scheduler.polling import ThreadWaiter
from tests.conftest import small_spec

PROFILE = {"cores": 1, "device_class": "cpu"}


def _register(co: Coordinator) -> tuple[str, bytes]:
    key = Ed25519PrivateKey.generate()
    public, ts = signing.public_bytes(key), int(time.time() * 1000)
    record = co.register(public, PROFILE, ts, key.sign(signing.register_bytes(public, ts, PROFILE)))
    return record.worker_id, record.token


def test_unused_wake_up_goes_to_the_next_poller(tmp_path):
    co = Coordinator(tmp_path / "state.db")
    try:
        (a, a_token), (b, b_token) = _register(co), _register(co)
        first, second = ThreadWaiter(), ThreadWaiter()
        assert co.poll_task(a, a_token, first) is None      # no job yet: both park
        assert co.poll_task(b, b_token, second) is None
        with co.lock:
            co.offer_work(1)
        assert first.event.is_set() and not second.event.is_set()
        co.unpark(first)  # its poll timed out instead of polling again
        assert second.event.is_set()
        co.unpark(second)  # nobody left to pass it to
        assert not co.parked
    finally:
        co.stop()


async def _fleet_polls(address: str, workers: list[tuple[str, bytes]], wait_ms: int) -> list:
    async with grpc.aio.insecure_channel(address, options=GRPC_OPTIONS) as channel:
        stub = rpc.WorkerGatewayStub(channel)
        return await asyncio.gather(*(stub.FetchTask(pb.FetchTaskRequest(
            worker_id=worker_id, session_token=token, wait_ms=wait_ms))
            for worker_id, token in workers))


def test_more_parked_polls_than_any_thread_pool(coordinator, client):
    """300 workers park at once (the old thread-per-call server had 256 threads); a job of 300
    shards then reaches every one of them while their polls are still parked."""
    co = coordinator.coordinator
    workers = [_register(co) for _ in range(300)]

    async def scenario():
        polls = asyncio.create_task(_fleet_polls(coordinator.address, workers, wait_ms=20_000))
        while len(co.parked) < len(workers):
            await asyncio.sleep(0.05)
        await asyncio.to_thread(client.submit, small_spec(
            rounds=1, shards=300, extra="[verification]\nenabled = false"))
        return await polls

    replies = asyncio.run(scenario())
    assert all(reply.has_task for reply in replies)
    assert sorted(reply.lease.shard for reply in replies) == list(range(300))
    assert not co.parked and not co.waiting


def test_cancelled_poll_leaves_nothing_parked(coordinator):
    co = coordinator.coordinator
    worker_id, token = _register(co)
    channel = grpc.insecure_channel(coordinator.address, options=GRPC_OPTIONS)
    poll = rpc.WorkerGatewayStub(channel).FetchTask.future(pb.FetchTaskRequest(
        worker_id=worker_id, session_token=token, wait_ms=20_000))
    deadline = time.monotonic() + 10
    while not co.parked and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(co.parked) == 1
    poll.cancel()
    while (co.parked or co.waiting) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not co.parked and not co.waiting
    channel.close()


def test_a_burst_of_wake_ups_is_delivered_in_bounded_batches():
    """A round barrier wakes every parked poll at once, from the round-driver thread. They are
    resumed at most WAKE_BATCH per loop iteration, so the first replies need not wait for the
    whole burst; every one is delivered, and each knows when its work appeared."""
    from scheduler.service import WAKE_BATCH, LoopWaiter, WakeQueue

    async def scenario():
        wakes = WakeQueue(asyncio.get_running_loop())
        waiters = [LoopWaiter(wakes) for _ in range(3 * WAKE_BATCH + 5)]
        await asyncio.to_thread(lambda: [waiter.wake() for waiter in waiters])
        seen = []
        while not all(waiter.future.done() for waiter in waiters):
            seen.append(sum(waiter.future.done() for waiter in waiters))
            await asyncio.sleep(0)  # one loop iteration
        seen.append(len(waiters))
        return waiters, seen

    waiters, seen = asyncio.run(scenario())
    steps = [b - a for a, b in zip(seen, seen[1:])]
    assert max(steps) <= WAKE_BATCH and sum(steps) == len(waiters) - seen[0]
    assert all(waiter.woken_at is not None for waiter in waiters)
