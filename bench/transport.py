"""What a task's round trip costs in gRPC alone: a unary call per task against one message each
way on a long-lived stream (WorkStream's shape), with an echo handler so nothing but gRPC runs.

    python -m bench.transport [--clients 1000] [--seconds 8] [--json]

Two figures per transport, each beside the other as a ratio:
- server CPU per exchange: a grpc.aio echo server in its own process, `--clients` concurrent
  grpc.aio clients in this one (the coordinator's situation with a fleet of workers);
- round-trip time of one blocking client (the worker agent's situation: grpc's sync API).
And the server's CPU per reply when `--clients` parked streams are answered at once, as at a
round barrier: the part of a barrier's cost that is gRPC's alone.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import queue
import sys
import time

import grpc

from bench.loadgen import WORKERS_PER_CHANNEL, cpu_seconds

PAYLOAD = b"x" * 600  # about a FetchTask reply with a lease and 10 parameters inline
SERVICE = "shardgrid.bench.Echo"


def _same(data: bytes) -> bytes:
    return data


def _channels(address: str, clients: int) -> list[grpc.aio.Channel]:
    """Connections shared by the clients as the load generator's workers share them."""
    return [grpc.aio.insecure_channel(address)
            for _ in range(max(1, -(-clients // WORKERS_PER_CHANNEL)))]


async def _serve(port_queue) -> None:
    async def unary(request, context):
        return request

    async def stream(requests, context):
        async for request in requests:
            yield request

    release = asyncio.Event()  # a round barrier's shape: every parked stream answered at once

    async def parked(requests, context):
        async for request in requests:
            await release.wait()
            yield request

    async def go(request, context):
        release.set()
        return b""

    async def rearm(request, context):
        release.clear()
        return b""

    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 1 << 20)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, _same, _same),
        "Stream": grpc.stream_stream_rpc_method_handler(stream, _same, _same),
        "Parked": grpc.stream_stream_rpc_method_handler(parked, _same, _same),
        "Go": grpc.unary_unary_rpc_method_handler(go, _same, _same),
        "Rearm": grpc.unary_unary_rpc_method_handler(rearm, _same, _same)}),))
    port_queue.put(server.add_insecure_port("127.0.0.1:0"))
    await server.start()
    await server.wait_for_termination()


def _server_process(port_queue) -> None:
    asyncio.run(_serve(port_queue))


async def _fleet_cost(address: str, server_pid: int, transport: str, clients: int,
                      seconds: float) -> dict:
    """Exchanges per second and server CPU per exchange with `clients` busy clients."""
    channels = _channels(address, clients)
    done, stop = [0], asyncio.Event()

    async def client(channel) -> None:
        if transport == "unary":
            call = channel.unary_unary(f"/{SERVICE}/Unary", request_serializer=_same,
                                       response_deserializer=_same)
            while not stop.is_set():
                await call(PAYLOAD)
                done[0] += 1
            return
        stream = channel.stream_stream(f"/{SERVICE}/Stream", request_serializer=_same,
                                       response_deserializer=_same)()
        while not stop.is_set():
            await stream.write(PAYLOAD)
            await stream.read()
            done[0] += 1
        await stream.done_writing()

    tasks = [asyncio.create_task(client(channels[i % len(channels)])) for i in range(clients)]
    await asyncio.sleep(min(2.0, seconds / 2))  # warm-up: connections, first calls
    count, cpu, started = done[0], cpu_seconds(server_pid), time.perf_counter()
    await asyncio.sleep(seconds)
    exchanges, elapsed = done[0] - count, time.perf_counter() - started
    server_cpu = cpu_seconds(server_pid) - cpu
    stop.set()
    await asyncio.wait(tasks, timeout=10)
    for channel in channels:
        await channel.close()
    return {"exchanges_per_s": exchanges / elapsed,
            "server_cpu_ms_per_exchange": 1000 * server_cpu / max(1, exchanges)}


async def _burst_cost(address: str, server_pid: int, clients: int, bursts: int) -> dict:
    """`clients` streams parked on the server, then all released at once: the server's CPU per
    reply, which is what gRPC alone costs a coordinator at a round barrier."""
    channels = _channels(address, clients)
    streams = [channels[i % len(channels)].stream_stream(
        f"/{SERVICE}/Parked", request_serializer=_same, response_deserializer=_same)()
        for i in range(clients)]
    control = channels[0]
    go = control.unary_unary(f"/{SERVICE}/Go", request_serializer=_same,
                             response_deserializer=_same)
    rearm = control.unary_unary(f"/{SERVICE}/Rearm", request_serializer=_same,
                                response_deserializer=_same)
    cpu_ms = []
    for burst in range(bursts + 1):  # the first one opens the streams: not counted
        await rearm(b"")
        for stream in streams:
            await stream.write(PAYLOAD)
        await asyncio.sleep(1.0)  # every request reaches its handler and parks
        cpu = cpu_seconds(server_pid)
        await go(b"")
        await asyncio.gather(*(stream.read() for stream in streams))
        if burst:
            cpu_ms.append(1000 * (cpu_seconds(server_pid) - cpu))
    for stream in streams:
        await stream.done_writing()
    for channel in channels:
        await channel.close()
    median = sorted(cpu_ms)[len(cpu_ms) // 2]  # /proc counts CPU in 10 ms ticks
    return {"server_cpu_ms_per_burst": median, "server_cpu_ms_per_reply": median / clients}


def _round_trip_ms(address: str, transport: str, calls: int) -> float:
    """Mean time of `calls` sequential round trips from one blocking client."""
    with grpc.insecure_channel(address) as channel:
        if transport == "unary":
            call = channel.unary_unary(f"/{SERVICE}/Unary", request_serializer=_same,
                                       response_deserializer=_same)
            call(PAYLOAD)
            started = time.perf_counter()
            for _ in range(calls):
                call(PAYLOAD)
            return 1000 * (time.perf_counter() - started) / calls
        requests: queue.SimpleQueue = queue.SimpleQueue()
        replies = channel.stream_stream(f"/{SERVICE}/Stream", request_serializer=_same,
                                        response_deserializer=_same)(iter(requests.get, None))
        requests.put(PAYLOAD)
        next(replies)
        started = time.perf_counter()
        for _ in range(calls):
            requests.put(PAYLOAD)
            next(replies)
        elapsed = time.perf_counter() - started
        requests.put(None)
        return 1000 * elapsed / calls


def run_transport(clients: int = 1000, seconds: float = 8.0, calls: int = 3000,
                  bursts: int = 5) -> dict:
    context = multiprocessing.get_context("spawn")  # gRPC and fork do not mix
    port_queue = context.Queue()
    server = context.Process(target=_server_process, args=(port_queue,), daemon=True)
    server.start()
    try:
        address = f"127.0.0.1:{port_queue.get(timeout=60)}"
        report: dict = {"clients": clients, "payload_bytes": len(PAYLOAD)}
        for transport in ("unary", "stream"):
            fleet = asyncio.run(_fleet_cost(address, server.pid, transport, clients, seconds))
            report[transport] = {**fleet, "round_trip_ms": _round_trip_ms(address, transport, calls)}
        report["burst"] = asyncio.run(_burst_cost(address, server.pid, clients, bursts))
    finally:
        server.kill()
        server.join(timeout=10)
    unary, stream = report["unary"], report["stream"]
    report["server_cpu_ratio"] = (stream["server_cpu_ms_per_exchange"]
                                  / unary["server_cpu_ms_per_exchange"])
    report["round_trip_ratio"] = stream["round_trip_ms"] / unary["round_trip_ms"]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transport",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--calls", type=int, default=3000, help="round trips of the lone client")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run_transport(args.clients, args.seconds, args.calls)
    for name in ("unary", "stream"):
        row = report[name]
        print(f"{name:>6}: {row['exchanges_per_s']:8,.0f} exchanges/s with {args.clients:,} clients, "
              f"server CPU {row['server_cpu_ms_per_exchange']:.3f} ms per exchange; "
              f"lone blocking client {row['round_trip_ms']:.3f} ms per round trip", file=sys.stderr)
    print(f"stream / unary: server CPU {report['server_cpu_ratio']:.2f}x, "
          f"round trip {report['round_trip_ratio']:.2f}x", file=sys.stderr)
    burst = report["burst"]
    print(f"{args.clients:,} parked streams answered at once: server CPU "
          f"{burst['server_cpu_ms_per_burst']:.0f} ms, {burst['server_cpu_ms_per_reply']:.3f} ms "
          "per reply", file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
