"""The coordinator process: serve both gRPC services until SIGINT/SIGTERM, then shut down cleanly."""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from pathlib import Path

import grpc

from protos import shardgrid_pb2_grpc as rpc
from protos.codec import GRPC_OPTIONS
from scheduler.core import Coordinator
from scheduler.service import Blocking, JobService, WorkerGateway
from worker.heap import settle_garbage_collector

log = logging.getLogger("shardgrid.coordinator")


class PortInUse(RuntimeError):
    pass


def warm_kernels() -> None:
    """Compile (or load from cache) every aggregation kernel before the first round needs it."""
    from scheduler.aggregation import warmup

    warmup()


class CoordinatorServer:
    """A coordinator bound to a port; `port=0` picks a free one (tests, local clusters).

    The gRPC server is grpc.aio on an event loop of its own thread, so callers (the CLI, tests,
    local clusters) use it as a plain synchronous object.
    """

    def __init__(self, db_path: str | Path, host: str = "127.0.0.1", port: int = 50051,
                 heartbeat_interval_s: float = 2.0):
        self.coordinator = Coordinator(db_path, heartbeat_interval_s=heartbeat_interval_s)
        self.blocking = Blocking()
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="grpc-loop",
                                             daemon=True)
        self._loop_thread.start()
        try:
            self.port = self._on_loop(self._bind(host, port))
        except BaseException:
            self._close_loop()
            self.coordinator.stop()
            raise
        self.address = f"{host}:{self.port}"

    def _on_loop(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _bind(self, host: str, port: int) -> int:
        options = [*GRPC_OPTIONS, ("grpc.so_reuseport", 0)]  # a port in use must fail to bind
        self.server = grpc.aio.server(options=options)
        rpc.add_WorkerGatewayServicer_to_server(
            WorkerGateway(self.coordinator, self.blocking, asyncio.get_running_loop()), self.server)
        rpc.add_JobServiceServicer_to_server(JobService(self.coordinator, self.blocking), self.server)
        try:
            bound = self.server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise PortInUse(f"cannot listen on {host}:{port}: the port is in use or not allowed")
        return bound

    def start(self) -> "CoordinatorServer":
        warm_kernels()
        self.coordinator.store.group_commit_for(self._loop_thread.ident)
        self.coordinator.run_on_loop = self._loop.call_soon_threadsafe
        self.coordinator.start()
        self._on_loop(self.server.start())
        return self

    def stop(self, grace: float = 2.0) -> None:
        # Parked long-polls end first (empty replies), so the grace period is not spent on them.
        self.coordinator.drain()
        self._on_loop(self.server.stop(grace))
        self.coordinator.stop()
        self.blocking.close()
        self._close_loop()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> "CoordinatorServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(grace=0.5)


def run(db_path: str, host: str, port: int) -> int:
    """Entry point of `shardgrid coordinator`: blocks until a signal, returns the exit code."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = CoordinatorServer(db_path, host, port)
    except PortInUse as exc:
        print(f"shardgrid coordinator: {exc}", file=sys.stderr)
        return 2
    try:
        server.start()
        settle_garbage_collector()
        print(f"shardgrid coordinator listening on {server.address} (state: {db_path})", flush=True)
        stop.wait()
        log.info("signal received, shutting down")
    finally:
        server.stop()
    return 0
