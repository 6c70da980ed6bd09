"""A round barrier in isolation: N workers parked on their WorkStreams, then work for all of them
appears at once. How long until the last one holds its lease, and what it costs the coordinator.

    python -m bench.barrier [--workers 1000] [--bursts 8] [--json]

The simulated workers only receive here (no computing or signing between replies), so the
figures are the coordinator's own: what `bench.loadgen --task-ms` reports for the calls woken at
a barrier adds the load generator's work for 1,000 workers on the other core. Each burst is a
fresh job of 4 shards per worker submitted while every worker is parked; timings are client-side
arrival times of the replies, measured from the first reply of the burst.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from bench.loadgen import LOAD_JOB, SHARDS_PER_WORKER, WORKERS_PER_CHANNEL, SimWorker, cpu_seconds
from deploy.local import LocalCluster
from protos import shardgrid_pb2 as pb
from protos import shardgrid_pb2_grpc as rpc
from protos.codec import GRPC_OPTIONS
from scheduler.client import JobClient

PARK_S = 2.0  # long enough for every worker's poll to reach the coordinator and park


async def _bursts(address: str, client: JobClient, coordinator_pid: int, workers: int,
                  bursts: int) -> list[dict]:
    channels = [grpc.aio.insecure_channel(address, options=GRPC_OPTIONS)
                for _ in range(max(1, -(-workers // WORKERS_PER_CHANNEL)))]
    fleet = [SimWorker(rpc.WorkerGatewayStub(channels[i % len(channels)])) for i in range(workers)]
    await asyncio.gather(*(worker.register() for worker in fleet))
    job_toml = LOAD_JOB.format(verification="false", shards=SHARDS_PER_WORKER * workers)
    figures = []
    for _ in range(bursts + 1):  # the first burst warms imports and caches: not reported
        arrivals: list[float] = []

        async def park(worker: SimWorker) -> pb.FetchTaskReply:
            reply = await worker.fetch(pb.FetchTaskRequest(
                worker_id=worker.worker_id, session_token=worker.token, wait_ms=30_000))
            arrivals.append(time.perf_counter())
            return reply

        polls = [asyncio.create_task(park(worker)) for worker in fleet]
        await asyncio.sleep(PARK_S)
        cpu_before = cpu_seconds(coordinator_pid)
        job_id = await asyncio.to_thread(client.submit, job_toml)
        replies = await asyncio.gather(*polls)
        cpu = cpu_seconds(coordinator_pid) - cpu_before
        await asyncio.to_thread(client.cancel, job_id)
        after_first = (np.array(arrivals) - min(arrivals)) * 1000
        figures.append({"leased": sum(reply.has_task for reply in replies),
                        "p50_ms": float(np.percentile(after_first, 50)),
                        "last_ms": float(after_first.max()),
                        "coordinator_cpu_ms": cpu * 1000})
    for worker in fleet:
        if worker.stream is not None:
            await worker.stream.done_writing()
    for channel in channels:
        await channel.close()
    return figures[1:]


def run_barrier(workers: int = 1000, bursts: int = 8, workdir: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        with LocalCluster(workers=0, workdir=workdir or Path(scratch)) as cluster:
            with JobClient(cluster.address) as client:
                runs = asyncio.run(_bursts(cluster.address, client, cluster.coordinator.pid,
                                           workers, bursts))
    last = [run["last_ms"] for run in runs]
    cpu = [run["coordinator_cpu_ms"] for run in runs]
    return {"workers": workers, "bursts": runs,
            "median_last_lease_ms": float(np.median(last)),
            "median_coordinator_cpu_ms": float(np.median(cpu)),
            "coordinator_cpu_ms_per_lease": float(np.median(cpu)) / workers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.barrier",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--bursts", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run_barrier(args.workers, args.bursts)
    print(f"{args.workers:,} parked workers, {args.bursts} bursts: the last lease arrives "
          f"{report['median_last_lease_ms']:.0f} ms after the first (median; p50 of a burst "
          f"{np.median([b['p50_ms'] for b in report['bursts']]):.0f} ms); coordinator CPU "
          f"{report['median_coordinator_cpu_ms']:.0f} ms per burst, "
          f"{report['coordinator_cpu_ms_per_lease']:.3f} ms per lease", file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
