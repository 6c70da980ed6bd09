"""The coordinator process: serve both gRPC services until SIGINT/SIGTERM, then shut down cleanly."""
from __future__ import annotations

import logging
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc

from protos import shardgrid_pb2_grpc as rpc
from protos.codec import GRPC_OPTIONS
from scheduler.core import Coordinator
from scheduler.service import JobService, WorkerGateway

log = logging.getLogger("shardgrid.coordinator")


class PortInUse(RuntimeError):
    pass


def warm_kernels() -> None:
    """Compile (or load from cache) every aggregation kernel before the first round needs it."""
    from scheduler.aggregation import warmup

    warmup()


class CoordinatorServer:
    """A coordinator bound to a port; `port=0` picks a free one (tests, local clusters)."""

    def __init__(self, db_path: str | Path, host: str = "127.0.0.1", port: int = 50051,
                 max_workers: int = 256, heartbeat_interval_s: float = 2.0):
        self.coordinator = Coordinator(db_path, heartbeat_interval_s=heartbeat_interval_s)
        # Long-polling FetchTask holds a thread per waiting worker: size the pool for the fleet.
        options = [*GRPC_OPTIONS, ("grpc.so_reuseport", 0)]  # a port in use must fail to bind
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                             thread_name_prefix="rpc"),
                                  options=options)
        rpc.add_WorkerGatewayServicer_to_server(WorkerGateway(self.coordinator), self.server)
        rpc.add_JobServiceServicer_to_server(JobService(self.coordinator), self.server)
        try:
            self.port = self.server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            self.coordinator.stop()
            raise PortInUse(f"cannot listen on {host}:{port}: the port is in use or not allowed")
        self.address = f"{host}:{self.port}"

    def start(self) -> "CoordinatorServer":
        warm_kernels()
        self.coordinator.start()
        self.server.start()
        return self

    def stop(self, grace: float = 2.0) -> None:
        self.server.stop(grace).wait()
        self.coordinator.stop()

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
        print(f"shardgrid coordinator listening on {server.address} (state: {db_path})", flush=True)
        stop.wait()
        log.info("signal received, shutting down")
    finally:
        server.stop()
    return 0
