"""gRPC servicers (grpc.aio): validate the message, call the coordinator core, map errors.

The handlers are coroutines on one event loop, so a parked long-poll costs a future rather than a
thread. Core calls that only touch memory under the lock run on the loop; anything that may take
milliseconds (big payloads, blob reads, job set-up, watchers' condition waits) runs in `blocking`.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from protos import shardgrid_pb2 as pb
from protos import shardgrid_pb2_grpc as rpc
from protos.codec import CHUNK_BYTES, iter_chunks
from scheduler import convert, figures
from scheduler.core import Coordinator
from scheduler.errors import GatewayError, Reject, rpc_errors, wire_code
from scheduler.jobs import TERMINAL
from scheduler.leasing import LeaseGrant
from scheduler.submission import Verdict

log = logging.getLogger("shardgrid.coordinator")
MAX_LONG_POLL_S = 30.0
# Results up to this size are checked on the event loop (hash and signature take microseconds);
# larger ones in a thread, so one big update cannot stall every other call.
CHECK_ON_LOOP_BYTES = 64 * 1024
WATCH_PROGRESS_S = 0.1
WAKE_BATCH = 32


class LoopWaiter:
    """A long-poll parked on the event loop; woken from any thread, through a WakeQueue."""

    __slots__ = ("wakes", "future", "woken_at")

    def __init__(self, wakes: "WakeQueue"):
        self.wakes = wakes
        self.future: asyncio.Future = wakes.loop.create_future()
        self.woken_at: float | None = None  # when work was offered to it (time.monotonic)

    def wake(self) -> None:
        self.woken_at = time.monotonic()
        self.wakes.push(self)


class WakeQueue:
    """Wake-ups reach parked polls at most WAKE_BATCH per loop iteration. A round barrier wakes
    a thousand polls at once; resumed in one iteration, every one of their replies waited for
    all of them (their group commit runs after the iteration): ~120 ms at 1,000 workers. One
    cross-thread hand-off per burst also replaces one per wake-up."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._lock = threading.Lock()
        self._pending: deque[LoopWaiter] = deque()
        self._scheduled = False

    def push(self, waiter: LoopWaiter) -> None:
        with self._lock:
            self._pending.append(waiter)
            if self._scheduled:
                return
            self._scheduled = True
        self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            batch = [self._pending.popleft() for _ in range(min(WAKE_BATCH, len(self._pending)))]
            more = self._scheduled = bool(self._pending)
        for waiter in batch:
            if not waiter.future.done():
                waiter.future.set_result(None)
        if more:
            self.loop.call_soon(self._deliver)  # the next batch, after this one's handlers


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class Blocking:
    """Runs blocking core calls off the event loop."""

    def __init__(self, threads: int = 32):
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rpc-blocking")

    async def __call__(self, function, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, partial(function, *args, **kwargs))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


async def _blob_stream(digest: str, data: bytes) -> AsyncIterator[pb.BlobChunk]:
    for offset, piece in iter_chunks(data, CHUNK_BYTES):
        yield pb.BlobChunk(digest=digest, offset=offset, total_size=len(data), data=piece)


def verdict_to_pb(verdict: Verdict) -> pb.SubmitReply:
    return pb.SubmitReply(accepted=verdict.accepted, code=wire_code(verdict.code),
                          message=verdict.message, receipt=verdict.receipt, credits=verdict.credits)


class GroupCommit:
    """One COMMIT per event-loop iteration for every call handled in it (Store group commit):
    a handler awaits `durable()` after its writes and before its reply."""

    def __init__(self, coordinator: Coordinator, loop: asyncio.AbstractEventLoop):
        self.co = coordinator
        self.loop = loop
        self._next: asyncio.Future | None = None

    async def durable(self) -> None:
        if self._next is None:
            self._next = self.loop.create_future()
            # runs after the handlers already ready in this iteration: they share the commit
            self.loop.call_soon(self._commit)
        await asyncio.shield(self._next)

    def _commit(self) -> None:
        done, self._next = self._next, None
        try:
            self.co.store.commit_group()
        except Exception as exc:  # the disk failed: no caller may report success
            done.set_exception(exc)
        else:
            done.set_result(None)


class WorkerGateway(rpc.WorkerGatewayServicer):
    def __init__(self, coordinator: Coordinator, blocking: Blocking,
                 loop: asyncio.AbstractEventLoop):
        self.co = coordinator
        self.blocking = blocking
        # The loop the server runs on, kept: on Python 3.11 each asyncio.get_running_loop() is a
        # getpid() system call, ~7% of the event loop's time at 1,000 workers with grpc's own.
        self.loop = loop
        self.group = GroupCommit(coordinator, loop)
        self.wakes = WakeQueue(loop)

    async def Register(self, request, context):
        async with rpc_errors(context):
            record = self.co.register(request.public_key, convert.profile_to_dict(request.profile),
                                      request.timestamp_ms, request.signature)
            await self.group.durable()
            log.info("worker %s registered (%s)", record.worker_id,
                     request.profile.profile_name or request.profile.device_class)
            return pb.RegisterReply(worker_id=record.worker_id, session_token=record.token,
                                    coordinator_public_key=self.co.public_key,
                                    heartbeat_interval_ms=int(self.co.heartbeat_interval_s * 1000))

    async def Heartbeat(self, request, context):
        async with rpc_errors(context):
            cancelled = self.co.heartbeat(request.worker_id, request.session_token,
                                          list(request.active_lease_ids))
            await self.group.durable()  # it may have expired forgotten leases
            return pb.HeartbeatReply(cancelled_lease_ids=cancelled)

    async def FetchTask(self, request, context):
        async with rpc_errors(context):
            return await self._fetch(request)

    async def WorkStream(self, request_iterator, context):
        """FetchTask over one stream: a message each way costs the coordinator ~0.06 ms of
        gRPC machinery, a unary call ~0.19 ms (python -m bench.transport, 1,000 clients).
        A typed error ends the stream with the status FetchTask would have returned. The end of
        a worker's stream is news for leasing (Leasing.on_stream), once its session was checked:
        nobody can end another worker's stream by naming it."""
        worker_id = None
        try:
            async with rpc_errors(context):
                async for request in request_iterator:
                    reply = await self._fetch(request)  # checked the session, or raised
                    if worker_id is None:
                        worker_id = request.worker_id
                        self.co.stream_changed(worker_id, opened=True)
                    yield reply
        finally:
            if worker_id is not None:
                self.co.stream_changed(worker_id, opened=False)

    async def _fetch(self, request: pb.FetchTaskRequest) -> pb.FetchTaskReply:
        reply = pb.FetchTaskReply()
        if request.HasField("finished"):
            verdict = await self._submit_inline(request.finished)
            reply.finished.CopyFrom(verdict_to_pb(verdict))
        wait_s = min(max(request.wait_ms, 0) / 1000.0, MAX_LONG_POLL_S)
        grant, reply.waited_s = await self._long_poll(request.worker_id,
                                                      request.session_token, wait_s)
        if grant is not None:
            reply.has_task = True
            reply.lease.CopyFrom(convert.lease_to_pb(grant))
            if grant.params_digest != request.params_held and grant.params_size <= CHUNK_BYTES:
                reply.params = await self._read_blob(grant.params_digest)
        await self.group.durable()  # the verdict and the lease are on disk before we say so
        return reply

    async def _read_blob(self, digest: str) -> bytes:
        cheap = self.co.blobs.get_cheap(digest)  # memory or a row lookup: fine on the loop
        return cheap if cheap is not None else await self.blocking(self.co.read_blob, digest)

    async def _submit_inline(self, finished: pb.InlineResult) -> Verdict:
        if len(finished.payload) > CHUNK_BYTES:
            return Verdict(False, Reject.MALFORMED, f"inline results are limited to {CHUNK_BYTES} "
                           "bytes; stream larger ones with SubmitResult")
        return await self._submit(convert.submission_from_pb(finished.header), finished.payload)

    async def _submit(self, submission, payload: bytes) -> Verdict:
        if len(payload) <= CHECK_ON_LOOP_BYTES:
            verdict = self.co.submit_result(submission, payload)
        else:
            verdict = await self.blocking(self.co.submit_result, submission, payload)
        if not verdict.accepted:
            log.info("rejected result from %s: %s", submission.worker_id, verdict.message)
        return verdict

    async def _long_poll(self, worker_id: str, token: bytes,
                         wait_s: float) -> tuple[LeaseGrant | None, float]:
        """The core's fetch_task loop, with the wait as an awaited future instead of a thread.
        Returns the lease (or None) and the seconds spent parked while no work existed: until
        the wake-up, not until this coroutine resumed, which is the coordinator's own delay."""
        deadline = time.monotonic() + wait_s
        parked = 0.0
        with self.co.polling(worker_id):
            while True:
                remaining = deadline - time.monotonic()
                waiter = LoopWaiter(self.wakes) if remaining > 0 else None
                grant = self.co.poll_task(worker_id, token, waiter)
                if grant is not None or waiter is None or self.co.stopping:
                    return grant, parked
                parked_at = time.monotonic()
                # call_later rather than asyncio.timeout: no task cancellation machinery
                timer = self.loop.call_later(remaining, _expire, waiter.future)
                try:
                    await waiter.future
                except asyncio.CancelledError:  # the caller went away
                    self.co.unpark(waiter)
                    raise
                finally:
                    timer.cancel()
                    parked += (waiter.woken_at or time.monotonic()) - parked_at
                if waiter.woken_at is None:  # timed out
                    self.co.unpark(waiter)

    async def FetchBlob(self, request, context):
        async with rpc_errors(context):
            with self.co.lock:
                self.co.authenticate(request.worker_id, request.session_token)
            data = await self._read_blob(request.digest)
        async for chunk in _blob_stream(request.digest, data):
            yield chunk

    async def SubmitResult(self, request_iterator, context):
        async with rpc_errors(context):
            first = await anext(request_iterator, None)
            if first is None or first.WhichOneof("part") != "header":
                raise GatewayError(Reject.MALFORMED, "a result stream starts with its header")
            header = first.header
            payload = bytearray()
            async for chunk in request_iterator:
                if chunk.WhichOneof("part") != "data":
                    raise GatewayError(Reject.MALFORMED, "only payload chunks may follow the header")
                payload.extend(chunk.data)
                if len(payload) > header.payload_size:
                    break  # longer than announced: the hash check refuses it
            verdict = await self._submit(convert.submission_from_pb(header), bytes(payload))
            await self.group.durable()
            return verdict_to_pb(verdict)


class JobService(rpc.JobServiceServicer):
    """Operator calls: rare, so each runs in a thread (job set-up loads datasets, figures query
    SQLite) and the event loop stays free for workers."""

    def __init__(self, coordinator: Coordinator, blocking: Blocking):
        self.co = coordinator
        self.blocking = blocking

    def _info(self, job_id: str) -> pb.JobInfo:
        return convert.job_info_to_pb(figures.job_figures(self.co, job_id))

    def _submit(self, spec_toml: str) -> pb.JobInfo:
        job_id = self.co.submit_job(spec_toml)
        log.info("job %s submitted", job_id)
        return self._info(job_id)

    def _list(self) -> pb.JobList:
        with self.co.lock:
            ids = list(self.co.jobs)
        return pb.JobList(jobs=[self._info(job_id) for job_id in ids])

    def _cancel(self, job_id: str) -> pb.JobInfo:
        self.co.cancel_job(job_id)
        return self._info(job_id)

    async def SubmitJob(self, request, context):
        async with rpc_errors(context):
            return await self.blocking(self._submit, request.spec_toml)

    async def GetJob(self, request, context):
        async with rpc_errors(context):
            return await self.blocking(self._info, request.job_id)

    async def ListJobs(self, request, context):
        async with rpc_errors(context):
            return await self.blocking(self._list)

    async def CancelJob(self, request, context):
        async with rpc_errors(context):
            return await self.blocking(self._cancel, request.job_id)

    def _events_since(self, job_id: str, sent_round: int) -> list[pb.JobEvent]:
        info = self._info(job_id)
        # every round closed since the last event gets its own, even if several closed
        events = []
        for summary in figures.rounds_after(self.co, job_id, sent_round) or [None]:
            event = pb.JobEvent(job=info)
            if summary is not None:
                event.round.CopyFrom(pb.RoundSummary(**vars(summary)))
            events.append(event)
        return events

    async def WatchJob(self, request, context):
        async with rpc_errors(context):
            self.co.job(request.job_id)  # NOT_FOUND before the stream starts
        loop = asyncio.get_running_loop()
        version, sent_round, sent_at = -1, -1, float("-inf")
        while not self.co.stopping:
            seen = version
            version = await self.blocking(self.co.wait_for_change, request.job_id, version, 1.0)
            if version == seen:
                continue
            # A closed round or the end goes out at once; other changes (a lease, a result) are
            # progress, sent at most every WATCH_PROGRESS_S: figures for each one cost the
            # coordinator ~0.5 ms of CPU, several times a round, on the cores the workers need.
            if not figures.round_closed_or_ended(self.co, request.job_id, sent_round):
                await asyncio.sleep(sent_at + WATCH_PROGRESS_S - loop.time())
            sent_at = loop.time()
            events = await self.blocking(self._events_since, request.job_id, sent_round)
            for event in events:
                if event.HasField("round"):
                    sent_round = event.round.round
                yield event
            if events[-1].job.status in TERMINAL:  # decided on what was sent: no lost last event
                return

    async def GetModel(self, request, context):
        async with rpc_errors(context):
            digest, data = await self.blocking(self.co.model_bytes, request.job_id)
        async for chunk in _blob_stream(digest, data):
            yield chunk

    async def ListWorkers(self, request, context):
        async with rpc_errors(context):
            workers = await self.blocking(figures.worker_figures, self.co)
            return pb.WorkerList(workers=[convert.worker_info_to_pb(w) for w in workers])
