"""The worker agent: register, then lease shards, compute them, sign and stream the results.

Workers open every connection (NAT friendly). A dead or restarting coordinator is waited out with
capped exponential backoff, announced on stderr; a lost session means registering again.

Two test instruments hook into the task path: a `Misbehavior` (worker/behaviors.py) sees the
honest update before it is encoded and decides the envelope (payload, signing key, replay), and a
`Pacing` (worker/profiles.py) adds the delays of an emulated hardware class.
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import OrderedDict
from pathlib import Path

import grpc
import numpy as np

from protos import shardgrid_pb2 as pb
from protos import shardgrid_pb2_grpc as rpc
from protos import signing
from protos.codec import (CHUNK_BYTES, ENCODING_F32LE, GRPC_OPTIONS, decode_tensor, encode_tensor,
                          iter_chunks, reassemble, sha256_hex)
from worker.behaviors import Envelope, Misbehavior
from worker.profile import measure_profile
from worker.profiles import Pacing
from worker.task_stream import TaskStream
from worker.workloads import WorkloadConfig, compute_update

log = logging.getLogger("shardgrid.worker")
LONG_POLL_MS = 5000
RPC_TIMEOUT_S = 30.0


class WorkerBanned(RuntimeError):
    pass


class CoordinatorKeyMismatch(RuntimeError):
    """The coordinator at a pinned address presented another key: possibly an impostor."""


class KeyPins:
    """Trust on first use: the coordinator key seen at each address, kept beside the worker key."""

    def __init__(self, path: Path):
        self.path = path

    def _load(self) -> dict[str, str]:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def check(self, address: str, public_key: bytes) -> bytes:
        pins = self._load()
        pinned = pins.get(address)
        if pinned is None:
            pins[address] = public_key.hex()
            self.path.write_text(json.dumps(pins, indent=1, sort_keys=True))
            return public_key
        if bytes.fromhex(pinned) != public_key:
            raise CoordinatorKeyMismatch(
                f"the coordinator at {address} presents a different key than the one pinned in "
                f"{self.path}; refusing to work for it (remove the pin if it was re-keyed on purpose)")
        return public_key


class Backoff:
    """Capped exponential backoff with jitter, so a restarted coordinator is not stampeded."""

    def __init__(self, first: float = 0.5, cap: float = 10.0):
        self.first, self.cap, self.delay = first, cap, first

    def next(self) -> float:
        delay = self.delay * random.uniform(0.8, 1.2)
        self.delay = min(self.cap, self.delay * 2)
        return delay

    def reset(self) -> None:
        self.delay = self.first


class WorkerAgent:
    def __init__(self, coordinator: str, key_path: str | Path, profile: dict | None = None,
                 stop: threading.Event | None = None, max_tasks: int | None = None,
                 misbehavior: Misbehavior | None = None, pacing: Pacing | None = None):
        self.address = coordinator
        self.key = signing.load_or_create_key(key_path)
        self.public_key = signing.public_bytes(self.key)
        self.worker_id = signing.worker_id_for(self.public_key)
        self.profile = profile or measure_profile()
        self.stop = stop or threading.Event()
        self.max_tasks = max_tasks
        self.channel = grpc.insecure_channel(coordinator, options=GRPC_OPTIONS)
        self.gateway = rpc.WorkerGatewayStub(self.channel)
        # Long-polls get a channel of their own (same connection underneath), so request_stop()
        # can cut one short by closing it while the fetch waits.
        self.poll_channel = grpc.insecure_channel(coordinator, options=GRPC_OPTIONS)
        self.tasks = TaskStream(rpc.WorkerGatewayStub(self.poll_channel))
        self.token = b""
        self.pins = KeyPins(Path(str(key_path) + ".pins"))
        self.coordinator_key = b""
        self.heartbeat_interval_s = 2.0
        self.params_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.active_leases: set[str] = set()
        # A finished result that rides on the next FetchTask (one round trip per task, not two).
        self._finished: tuple[pb.TaskLease, pb.InlineResult] | None = None
        self.cancelled: set[str] = set()
        self.tasks_done = 0
        self.backoff = Backoff()
        self.misbehavior = misbehavior or Misbehavior()
        self.pacing = pacing or Pacing()

    # ------------------------------------------------------------------ session
    def register(self) -> None:
        timestamp_ms = int(time.time() * 1000)
        signature = self.key.sign(signing.register_bytes(self.public_key, timestamp_ms, self.profile))
        reply = self.gateway.Register(pb.RegisterRequest(
            public_key=self.public_key, profile=pb.HardwareProfile(**self.profile),
            timestamp_ms=timestamp_ms, signature=signature,
            protocol_version=signing.PROTOCOL_VERSION), timeout=RPC_TIMEOUT_S)
        self.coordinator_key = self.pins.check(self.address, reply.coordinator_public_key)
        self.token = reply.session_token
        self.heartbeat_interval_s = reply.heartbeat_interval_ms / 1000.0 or 2.0
        log.info("registered with %s as %s", self.address, self.worker_id)

    def _heartbeats(self) -> None:
        while not self.stop.wait(self.heartbeat_interval_s):
            if self.tasks.cancel_if_overdue():
                log.warning("no answer from %s within %.0fs; reconnecting", self.address,
                            LONG_POLL_MS / 1000.0 + RPC_TIMEOUT_S)
            if not self.token:
                continue
            try:
                reply = self.gateway.Heartbeat(pb.HeartbeatRequest(
                    worker_id=self.worker_id, session_token=self.token,
                    active_lease_ids=sorted(self.active_leases)), timeout=5.0)
                self.cancelled.update(reply.cancelled_lease_ids)
            except grpc.RpcError:
                pass  # the task loop notices a dead coordinator and reconnects

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        """Work until stopped (or `max_tasks` done). Returns a process exit code."""
        threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True).start()
        try:
            return self._serve()
        finally:
            self._flush_finished()

    def _serve(self) -> int:
        while not self.stop.is_set():
            try:
                if not self.token:
                    self.register()
                    self.backoff.reset()
                self._one_task()
                if self.max_tasks is not None and self.tasks_done >= self.max_tasks:
                    return 0
            except CoordinatorKeyMismatch as exc:
                log.error("%s", exc)
                return 4
            except (ValueError, OSError, ArithmeticError) as exc:
                # a task this worker cannot compute (a bad workload from the coordinator, a
                # local failure): drop that lease, say why, and keep serving
                log.exception("task failed, lease dropped: %s", exc)
                self.stop.wait(self.backoff.next())
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.PERMISSION_DENIED:
                    log.error("coordinator refused this worker: %s", exc.details())
                    return 3
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    log.warning("session not valid (%s); registering again", exc.details())
                    self.token = b""
                    continue
                delay = self.backoff.next()
                log.warning("coordinator at %s unreachable (%s); retrying in %.1fs",
                            self.address, code.name if code else exc, delay)
                self.stop.wait(delay)
        return 0

    def _flush_finished(self) -> None:
        """A result still waiting for the next FetchTask when the worker stops is sent on its own."""
        carried, self._finished = self._finished, None
        if carried is None or not self.token:
            return
        lease, inline = carried
        try:
            self._settled(lease, self._send(inline.header, inline.payload, pace=False))
        except grpc.RpcError as exc:
            log.warning("could not hand in the last result (%s); its lease will expire", exc.code())
        finally:
            self._forget(lease.lease_id)

    def _one_task(self) -> None:
        request = pb.FetchTaskRequest(worker_id=self.worker_id, session_token=self.token,
                                      wait_ms=LONG_POLL_MS)
        carried, self._finished = self._finished, None
        if carried is not None:
            request.finished.CopyFrom(carried[1])
        if self.params_cache:
            request.params_held = next(reversed(self.params_cache))
        try:
            reply = self.tasks.fetch(request, timeout_s=LONG_POLL_MS / 1000.0 + RPC_TIMEOUT_S)
        except (grpc.RpcError, ValueError):
            if self.stop.is_set():
                return  # request_stop() closed the long-poll's channel
            raise
        finally:
            if carried is not None:  # answered or lost with the call: the lease is done either way
                self._forget(carried[0].lease_id)
        self.backoff.reset()
        if carried is not None:
            self._settled(carried[0], reply.finished)
        if not reply.has_task:
            return
        lease = reply.lease
        if not self._lease_is_genuine(lease):
            log.error("lease %s is not signed by the pinned coordinator key; ignoring it",
                      lease.lease_id)
            return
        if reply.params:  # sent along because they fit one chunk
            self._cache_params(lease.params_digest, reassemble(
                [(0, len(reply.params), reply.params)], lease.params_digest))
        self.active_leases.add(lease.lease_id)
        try:
            self._work_on(lease)
        finally:
            if self._finished is None or self._finished[0] is not lease:
                self._forget(lease.lease_id)

    def _forget(self, lease_id: str) -> None:
        self.active_leases.discard(lease_id)
        self.cancelled.discard(lease_id)

    def _settled(self, lease: pb.TaskLease, answer: pb.SubmitReply) -> None:
        if answer.accepted:
            self.tasks_done += 1
        else:
            log.warning("result for round %d shard %d rejected: %s", lease.round, lease.shard,
                        answer.message)

    def _carries_next(self, payload: bytes) -> bool:
        """Whether a result can ride on the next FetchTask: it fits one chunk, the worker will
        ask for more work, and it is not a test instrument that must see its own verdict."""
        last_task = self.max_tasks is not None and self.tasks_done + 1 >= self.max_tasks
        return (len(payload) <= CHUNK_BYTES and not last_task and not self.stop.is_set()
                and not self.misbehavior.replays)

    def _lease_is_genuine(self, lease: pb.TaskLease) -> bool:
        return signing.verify(self.coordinator_key, lease.coordinator_signature, signing.lease_bytes(
            lease_id=lease.lease_id, worker_id=self.worker_id, job_id=lease.job_id,
            round_no=lease.round, shard=lease.shard, params_digest=lease.params_digest,
            deadline_ms=lease.deadline_ms))

    def _work_on(self, lease: pb.TaskLease) -> None:
        params = self._params(lease.params_digest)
        config = WorkloadConfig.from_json(lease.workload_json)
        config.layout()  # loads the dataset once (cached): set-up, not compute, so never paced
        started = time.perf_counter()
        result = compute_update(config, params, lease.round, lease.shard)
        self._pause(self.pacing.after_compute(time.perf_counter() - started))

        self.misbehavior.start_task()
        round_updates = None
        if self.misbehavior.needs_round_updates:
            def round_updates() -> np.ndarray:
                return np.stack([compute_update(config, params, lease.round, shard).update
                                 for shard in range(config.shards)])
        update = self.misbehavior.update(result.update, round_updates)
        envelope = self.misbehavior.envelope(encode_tensor(update))
        if lease.lease_id in self.cancelled:
            log.info("lease %s cancelled while computing; dropping the result", lease.lease_id)
            return

        header = self._header(lease, envelope, result.metrics())
        if self._carries_next(envelope.sent_payload):
            self._pause(self.pacing.transfer(len(envelope.sent_payload)))
            self._finished = (lease, pb.InlineResult(header=header, payload=envelope.sent_payload))
            return
        answer = self._send(header, envelope.sent_payload)
        self._settled(lease, answer)
        if answer.accepted and self.misbehavior.replays:
            again = self._send(header, envelope.sent_payload)
            log.info("replayed lease %s: %s", lease.lease_id,
                     "accepted (!)" if again.accepted else again.message)

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self.stop.wait(seconds)

    # ------------------------------------------------------------------ transfers
    def _params(self, digest: str) -> np.ndarray:
        """Each round's parameters cross the wire once per worker; a few versions stay cached."""
        if digest in self.params_cache:
            self.params_cache.move_to_end(digest)
            return self.params_cache[digest]
        stream = self.gateway.FetchBlob(pb.FetchBlobRequest(
            worker_id=self.worker_id, session_token=self.token, digest=digest), timeout=RPC_TIMEOUT_S)
        return self._cache_params(digest, reassemble(
            ((c.offset, c.total_size, c.data) for c in stream), digest))

    def _cache_params(self, digest: str, data: bytes) -> np.ndarray:
        """`data` arrived hash-checked against `digest`."""
        self._pause(self.pacing.transfer(len(data)))
        params = decode_tensor(data)
        self.params_cache[digest] = params
        while len(self.params_cache) > 3:
            self.params_cache.popitem(last=False)
        return params

    def submit(self, lease: pb.TaskLease, payload: bytes, metrics: dict[str, float],
               sign_with=None) -> pb.SubmitReply:
        """Sign and stream one result (`sign_with`: another key than the worker's, for tests)."""
        header = self._header(lease, Envelope(payload, payload, sign_with), metrics)
        return self._send(header, payload)

    def _header(self, lease: pb.TaskLease, envelope: Envelope,
                metrics: dict[str, float]) -> pb.ResultHeader:
        vouched = envelope.vouched_payload
        payload_digest = sha256_hex(vouched)
        digest = signing.result_digest(job_id=lease.job_id, round_no=lease.round, shard=lease.shard,
                                       lease_id=lease.lease_id, params_digest=lease.params_digest,
                                       payload_digest=payload_digest, metrics=metrics)
        return pb.ResultHeader(
            worker_id=self.worker_id, session_token=self.token,
            protocol_version=signing.PROTOCOL_VERSION, job_id=lease.job_id, round=lease.round,
            shard=lease.shard, lease_id=lease.lease_id, params_digest=lease.params_digest,
            payload_digest=payload_digest, payload_size=len(vouched), encoding=ENCODING_F32LE,
            metrics=[pb.Metric(name=k, value=v) for k, v in sorted(metrics.items())],
            signature=(envelope.signing_key or self.key).sign(digest))

    def _send(self, header: pb.ResultHeader, payload: bytes, pace: bool = True) -> pb.SubmitReply:
        def messages():
            yield pb.ResultChunk(header=header)
            for _, piece in iter_chunks(payload, CHUNK_BYTES):
                yield pb.ResultChunk(data=piece)

        if pace:
            self._pause(self.pacing.transfer(len(payload)))
        return self.gateway.SubmitResult(messages(), timeout=RPC_TIMEOUT_S)

    def request_stop(self) -> None:
        """Stop soon, from any thread or a signal handler: a parked long-poll is cancelled
        instead of being waited out, so the process exits at once."""
        self.stop.set()
        self.poll_channel.close()

    def close(self) -> None:
        self.stop.set()
        self.tasks.close()
        self.poll_channel.close()
        self.channel.close()
