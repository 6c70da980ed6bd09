"""Coordinator scale: one process plays 10, 100, 1,000 lightweight workers over grpc.aio.

    python -m bench.loadgen [--fleet 10 100 1000] [--duration 15] [--task-ms MS] [--out DIR]
                            [--profile] [--no-verification] [--json]

Every simulated worker has its own Ed25519 key, registers with a signed timestamp, and loops the
worker agent's exact call sequence: one FetchTask (long-poll) per task, carrying the previous
task's signed result, and answered with the next lease (plus the round's parameters when the
worker lacks them and they fit one chunk; otherwise a FetchBlob). The update is computed honestly
(a 10-parameter softmax: microseconds), because the coordinator verifies by default: replicas
must agree and spot checks must match its own re-execution.

Workers run back to back by default (saturation: with N workers always asking, FetchTask latency
is N / throughput by Little's law); `--task-ms` gives each task simulated compute instead, so the
fleet offers a set load and the latencies show how the coordinator serves it.

Per fleet size, against a fresh coordinator process: signed task cycles per second (a lease
handed out whose signed result was then accepted), FetchTask latency p50/p99 for calls that
returned a lease, and the coordinator's resident memory per registered worker. `--profile`
samples the coordinator with py-spy during the largest fleet's run and lists its hottest frames.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deploy.local import LocalCluster
from protos import shardgrid_pb2 as pb
from protos import shardgrid_pb2_grpc as rpc
from protos import signing
from protos.codec import (ENCODING_F32LE, GRPC_OPTIONS, decode_tensor, encode_tensor, reassemble,
                          sha256_hex)
from scheduler.client import JobClient
from worker.heap import settle_garbage_collector
from worker.workloads import WorkloadConfig, compute_update

# Tiny and plentiful shards: a 4-feature, 2-class softmax (10 parameters). A round has
# SHARDS_PER_WORKER shards per worker (at least 100), as a job sized for its fleet would: with
# fewer shards than workers, most of the fleet idles at every round barrier and each task
# costs a parameter download.
SHARDS_PER_WORKER = 4
LOAD_JOB = """
[job]
name = "loadgen"
rounds = 1000000
shards_per_round = {shards}
target_accuracy = 0.0
lease_timeout_s = 30
[model]
workload = "softmax"
[data]
dataset = "blobs"
samples = 50000
features = 4
classes = 2
batch_size = 4
[optimizer]
name = "sgd"
lr = 0.01
[verification]
enabled = {verification}
"""
PROFILE = {"cores": 1, "memory_bytes": 1 << 30, "gflops": 1.0, "device_class": "cpu",
           "bandwidth_mbps": 0.0, "profile_name": ""}
WORKERS_PER_CHANNEL = 50    # HTTP/2 connections shared like a NAT'd office would share them
LONG_POLL_MS = 2000


@functools.lru_cache(maxsize=4)
def workload_config(workload_json: str) -> WorkloadConfig:
    return WorkloadConfig.from_json(workload_json)


@dataclass
class FleetStats:
    cycles: int = 0
    rejected: Counter = field(default_factory=Counter)
    empty_polls: int = 0
    errors: Counter = field(default_factory=Counter)
    fetch_latencies_s: list[float] = field(default_factory=list)
    service_latencies_s: list[float] = field(default_factory=list)  # minus waiting for work
    # The same, split: calls that found a shard waiting, and calls parked until work appeared
    # (at a round barrier), counted from the wake-up.
    ready_latencies_s: list[float] = field(default_factory=list)
    woken_latencies_s: list[float] = field(default_factory=list)
    waited_s: float = 0.0
    measuring: bool = False


class StreamEnded(Exception):
    """The coordinator closed a WorkStream without a status (it is shutting down)."""


class SimWorker:
    def __init__(self, stub: rpc.WorkerGatewayStub, task_s: float = 0.0, stream: bool = True):
        self.stub = stub
        self.use_stream = stream  # WorkStream, as the agent; False: one FetchTask call per task
        self.stream = None
        self.task_s = task_s  # simulated compute per task (0: back to back, saturation)
        key = Ed25519PrivateKey.generate()
        self.key = signing.Signer(key)  # same signatures as the agent's key, made faster
        self.public_key = signing.public_bytes(key)
        self.worker_id = signing.worker_id_for(self.public_key)
        self.token = b""
        self.params_digest = ""
        self.params = np.zeros(0, np.float32)
        self.finished: pb.InlineResult | None = None  # rides on the next FetchTask

    async def register(self) -> None:
        timestamp_ms = int(time.time() * 1000)
        signature = self.key.sign(signing.register_bytes(self.public_key, timestamp_ms, PROFILE))
        reply = await self.stub.Register(pb.RegisterRequest(
            public_key=self.public_key, profile=pb.HardwareProfile(**PROFILE),
            timestamp_ms=timestamp_ms, signature=signature,
            protocol_version=signing.PROTOCOL_VERSION))
        self.token = reply.session_token

    async def cycle(self, stats: FleetStats) -> None:
        """One FetchTask, carrying the previous task's signed result as the agent does."""
        request = pb.FetchTaskRequest(worker_id=self.worker_id, session_token=self.token,
                                      wait_ms=LONG_POLL_MS)
        carried, self.finished = self.finished, None
        if carried is not None:
            request.finished.CopyFrom(carried)
        request.params_held = self.params_digest
        started = time.perf_counter()
        reply = await self.fetch(request)
        latency = time.perf_counter() - started
        if carried is not None and stats.measuring:
            if reply.finished.accepted:
                stats.cycles += 1
            else:
                stats.rejected[pb.RejectCode.Name(reply.finished.code)] += 1
        if not reply.has_task:
            stats.empty_polls += stats.measuring
            return
        if stats.measuring:
            service = max(0.0, latency - reply.waited_s)
            stats.fetch_latencies_s.append(latency)
            stats.service_latencies_s.append(service)
            (stats.woken_latencies_s if reply.waited_s else stats.ready_latencies_s).append(service)
            stats.waited_s += reply.waited_s
        # One process plays the whole fleet: let the other replies that arrived meanwhile take
        # their timestamps before this worker computes, as each would on a machine of its own.
        await asyncio.sleep(0)
        lease = reply.lease
        if reply.params:  # as the agent: small parameters come with the lease
            self.params = decode_tensor(reassemble([(0, len(reply.params), reply.params)],
                                                   lease.params_digest))
            self.params_digest = lease.params_digest
        elif lease.params_digest != self.params_digest:  # else fetched once per round
            chunks = [(c.offset, c.total_size, c.data) async for c in self.stub.FetchBlob(
                pb.FetchBlobRequest(worker_id=self.worker_id, session_token=self.token,
                                    digest=lease.params_digest))]
            self.params = decode_tensor(reassemble(chunks, lease.params_digest))
            self.params_digest = lease.params_digest
        result = compute_update(workload_config(lease.workload_json), self.params, lease.round,
                                lease.shard)
        payload, metrics = encode_tensor(result.update), result.metrics()
        payload_digest = sha256_hex(payload)
        digest = signing.result_digest(job_id=lease.job_id, round_no=lease.round, shard=lease.shard,
                                       lease_id=lease.lease_id, params_digest=lease.params_digest,
                                       payload_digest=payload_digest, metrics=metrics)
        header = pb.ResultHeader(
            worker_id=self.worker_id, session_token=self.token,
            protocol_version=signing.PROTOCOL_VERSION, job_id=lease.job_id, round=lease.round,
            shard=lease.shard, lease_id=lease.lease_id, params_digest=lease.params_digest,
            payload_digest=payload_digest, payload_size=len(payload), encoding=ENCODING_F32LE,
            metrics=[pb.Metric(name=k, value=v) for k, v in sorted(metrics.items())],
            signature=self.key.sign(digest))
        self.finished = pb.InlineResult(header=header, payload=payload)
        if self.task_s:  # jittered, so the fleet does not fall into lockstep
            await asyncio.sleep(self.task_s * random.uniform(0.5, 1.5))

    async def fetch(self, request: pb.FetchTaskRequest) -> pb.FetchTaskReply:
        if not self.use_stream:
            return await self.stub.FetchTask(request)
        if self.stream is None:
            self.stream = self.stub.WorkStream()
        try:
            await self.stream.write(request)
            reply = await self.stream.read()
        except grpc.aio.AioRpcError:
            self.stream = None  # the next task opens a new stream
            raise
        if reply is grpc.aio.EOF:
            self.stream = None
            raise StreamEnded
        return reply

    async def run(self, stats: FleetStats, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.cycle(stats)
            except grpc.aio.AioRpcError as exc:
                stats.errors[exc.code().name] += stats.measuring
                await asyncio.sleep(0.05)
            except StreamEnded:
                stats.errors["STREAM_ENDED"] += stats.measuring
                await asyncio.sleep(0.05)
        if self.stream is not None:
            await self.stream.done_writing()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def drive_fleet(address: str, workers: int, warmup_s: float, duration_s: float,
                      coordinator_pid: int, task_s: float = 0.0, stream: bool = True) -> dict:
    channels = [grpc.aio.insecure_channel(address, options=GRPC_OPTIONS)
                for _ in range(max(1, -(-workers // WORKERS_PER_CHANNEL)))]
    fleet = [SimWorker(rpc.WorkerGatewayStub(channels[i % len(channels)]), task_s, stream)
             for i in range(workers)]
    settle_garbage_collector()  # as the coordinator does: the load generator allocates as much
    rss_before = rss_bytes(coordinator_pid)
    started = time.perf_counter()
    await asyncio.gather(*(w.register() for w in fleet))
    register_s = time.perf_counter() - started
    rss_registered = rss_bytes(coordinator_pid)
    stats, stop = FleetStats(), asyncio.Event()
    tasks = [asyncio.create_task(w.run(stats, stop)) for w in fleet]
    await asyncio.sleep(warmup_s)
    stats.measuring = True
    measured_from = time.perf_counter()
    cpu_from, own_cpu_from = cpu_seconds(coordinator_pid), time.process_time()
    await asyncio.sleep(duration_s)
    stats.measuring = False
    elapsed = time.perf_counter() - measured_from
    coordinator_cpu = (cpu_seconds(coordinator_pid) - cpu_from) / elapsed
    loadgen_cpu = (time.process_time() - own_cpu_from) / elapsed
    rss_end = rss_bytes(coordinator_pid)
    stop.set()
    await asyncio.wait(tasks, timeout=LONG_POLL_MS / 1000 + 5)
    for channel in channels:
        await channel.close()
    latencies = np.array(stats.fetch_latencies_s or [float("nan")])
    service = np.array(stats.service_latencies_s or [float("nan")])
    ready = np.array(stats.ready_latencies_s or [float("nan")])
    woken = np.array(stats.woken_latencies_s or [float("nan")])
    return {
        "workers": workers, "measured_s": elapsed, "cycles": stats.cycles,
        "cycles_per_s": stats.cycles / elapsed, "register_s": register_s,
        "registrations_per_s": workers / register_s if register_s else 0.0,
        "fetch_task_p50_ms": float(np.percentile(latencies, 50) * 1000),
        "fetch_task_p99_ms": float(np.percentile(latencies, 99) * 1000),
        # The same calls minus the time the coordinator held them parked because no work
        # existed (a round barrier): what the coordinator's own speed costs a worker.
        "service_p50_ms": float(np.percentile(service, 50) * 1000),
        "service_p99_ms": float(np.percentile(service, 99) * 1000),
        "ready_p99_ms": float(np.percentile(ready, 99) * 1000),
        "woken_p50_ms": float(np.percentile(woken, 50) * 1000),
        "woken_p99_ms": float(np.percentile(woken, 99) * 1000),
        "woken_share": len(stats.woken_latencies_s) / max(1, len(stats.service_latencies_s)),
        "waited_share": stats.waited_s / max(1e-9, float(np.sum(latencies))),
        "empty_polls": stats.empty_polls, "rejected": dict(stats.rejected),
        "errors": dict(stats.errors), "coordinator_rss_mb": rss_end / 2**20,
        "coordinator_rss_per_worker_kb": (rss_registered - rss_before) / workers / 1024,
        "coordinator_rss_growth_mb": (rss_end - rss_before) / 2**20,
        # In cores: ~1.0 means the coordinator is bound by one core (the GIL); well under 1.0
        # means it waits (locks, I/O) or is starved by the load generator.
        "coordinator_cpu_cores": coordinator_cpu, "loadgen_cpu_cores": loadgen_cpu,
    }


def profile_coordinator(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    """py-spy in the background: raw collapsed stacks, summarized by `hottest_frames`."""
    # --gil: only the thread holding the GIL is sampled, so shares are of the CPU the coordinator's
    # Python actually burns (the GIL is one core), not of threads parked on locks.
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--rate", "100", "--format", "raw", "--output", str(out), "--gil"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def thread_census(pid: int) -> dict[str, int]:
    """Where the coordinator's threads are at one instant (py-spy dump): for each thread its
    innermost frame and the coordinator function it is in. Shows what the fleet waits on."""
    dump = subprocess.run(["py-spy", "dump", "--pid", str(pid), "--nonblocking"],
                          capture_output=True, text=True, timeout=60).stdout
    census: Counter = Counter()
    for block in dump.split("\nThread ")[1:]:
        frames = [line.strip().split(" (")[0] for line in block.splitlines()[1:] if line.strip()]
        files = [line.strip() for line in block.splitlines()[1:] if line.strip()]
        ours = next((f.split(" (")[0] for f in files if "scheduler/" in f), "")
        innermost = frames[0] if frames else "?"
        census[f"{innermost} in {ours}" if ours and ours != innermost else ours or innermost] += 1
    return dict(census.most_common())


def hottest_frames(raw_path: Path, top: int = 15) -> list[dict]:
    """Inclusive share of the coordinator's GIL-holding samples per function (any line), for the
    coordinator's own code, the gRPC server machinery and lock/condition handling."""
    interesting = ("scheduler/", "protos/", "grpc/_server.py", "Condition.")
    inclusive, total = Counter(), 0
    for line in raw_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        functions = set()
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            if any(key in frame for key in interesting):
                functions.add(f"{name} ({where.rsplit(':', 1)[0].rsplit('site-packages/', 1)[-1]})")
        for function in functions:
            inclusive[function] += int(count)
    return [{"function": f, "share": n / total} for f, n in inclusive.most_common(top)] if total else []


def scale_markdown(report: dict) -> str:
    """The scale figures as a markdown table, plus the profile's hottest functions."""
    lines = [f"Verification {'on' if report['verification'] else 'off'}, "
             f"{report.get('task_ms', 0):.0f} ms of simulated compute per task, "
             f"{report['duration_s']:.0f} s measured per fleet.", "",
             "| workers | signed cycles/s | FetchTask p50 / p99 (ms) | less waiting for work: p50 / "
             "p99 (ms) | p99, work waiting (ms) | p50 / p99, woken at a barrier (ms) | time parked "
             "| coordinator RSS (MiB) | RSS per worker (KiB) | coordinator CPU (cores) | "
             "rounds closed |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in report["fleets"]:
        lines.append(f"| {f['workers']:,} | {f['cycles_per_s']:,.0f} | {f['fetch_task_p50_ms']:.1f} / "
                     f"{f['fetch_task_p99_ms']:.1f} | {f['service_p50_ms']:.1f} / "
                     f"{f['service_p99_ms']:.1f} | {f['ready_p99_ms']:.1f} | {f['woken_p50_ms']:.1f} / "
                     f"{f['woken_p99_ms']:.1f} | {f['waited_share']:.0%} | {f['coordinator_rss_mb']:.0f} | "
                     f"{f['coordinator_rss_per_worker_kb']:.1f} | {f['coordinator_cpu_cores']:.2f} | "
                     f"{f['rounds_closed']} |")
    if report.get("profile_hottest"):
        lines += ["", f"Hottest coordinator functions at {max(f['workers'] for f in report['fleets']):,} "
                  "workers (share of GIL-holding samples, inclusive):", ""]
        lines += [f"- {row['share']:.0%} `{row['function']}`" for row in report["profile_hottest"]]
    if report.get("thread_census"):
        lines += ["", "Where the coordinator's threads were, mid-run (py-spy dump):", ""]
        lines += [f"- {n} x `{where}`" for where, n in report["thread_census"].items()]
    return "\n".join(lines) + "\n"


def run_scale(fleets: list[int], duration_s: float, warmup_s: float, out: Path,
              profile: bool, verification: bool = True, task_s: float = 0.0, log=print,
              transport: str = "stream") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    results, report_census = [], {}
    for workers in fleets:
        job_toml = LOAD_JOB.format(verification="true" if verification else "false",
                                   shards=max(100, SHARDS_PER_WORKER * workers))
        workdir = out / f"coordinator-{workers}"
        with LocalCluster(workers=0, workdir=workdir) as cluster:
            with JobClient(cluster.address) as client:
                job_id = client.submit(job_toml)
                spy = census = None
                if profile and workers == max(fleets):
                    census = threading.Timer(warmup_s + duration_s / 2 + workers / 500, lambda: report_census.update(
                        thread_census(cluster.coordinator.pid)))
                    census.start()
                    # Starts now, samples through registration+warm-up into the measured window.
                    spy = profile_coordinator(cluster.coordinator.pid, warmup_s + duration_s + 5,
                                              out / "coordinator-profile.txt")
                figures = asyncio.run(drive_fleet(cluster.address, workers, warmup_s, duration_s,
                                                  cluster.coordinator.pid, task_s,
                                                  stream=transport == "stream"))
                job = client.get(job_id)
                figures.update(rounds_closed=job["round"], results_accepted=job["results_accepted"])
                client.cancel(job_id)
                if spy is not None:
                    spy.wait(timeout=120)
                if census is not None:
                    census.join()
        log(f"{workers:>5} workers (verification {'on' if verification else 'off'}): {figures['cycles_per_s']:,.0f} cycles/s, FetchTask p50 "
            f"{figures['fetch_task_p50_ms']:.1f} ms p99 {figures['fetch_task_p99_ms']:.1f} ms, "
            f"{figures['coordinator_rss_per_worker_kb']:.1f} KiB/worker")
        results.append(figures)
    report = {"fleets": results, "job": job_toml, "duration_s": duration_s,
              "verification": verification, "task_ms": task_s * 1000, "transport": transport}
    raw = out / "coordinator-profile.txt"
    if profile and raw.exists():
        report["profile_hottest"] = hottest_frames(raw)
        report["thread_census"] = report_census
    (out / "scale.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "scale.md").write_text(scale_markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("--fleet", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per fleet")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--out", default="bench-results/scale")
    parser.add_argument("--profile", action="store_true", help="py-spy the largest fleet's run")
    parser.add_argument("--no-verification", action="store_true",
                        help="job without replication/spot checks: the protocol's cost alone")
    parser.add_argument("--task-ms", type=float, default=0.0,
                        help="simulated compute per task (jittered 0.5-1.5x); 0 runs back to back, "
                             "which measures saturation; with N workers it offers about "
                             "N / task seconds of load")
    parser.add_argument("--transport", choices=("stream", "unary"), default="stream",
                        help="FetchTask on one WorkStream per worker (as the agent), or one unary "
                             "call per task")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run_scale(args.fleet, args.duration, args.warmup, Path(args.out), args.profile,
                       verification=not args.no_verification, task_s=args.task_ms / 1000,
                       transport=args.transport,
                       log=lambda line: print(line, file=sys.stderr))
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
