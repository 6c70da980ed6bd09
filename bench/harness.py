"""The shardgrid side of the comparison: scenarios, and one job run on a fresh local cluster.

A scenario says how many workers join, with which extra worker flags (hardware profile,
misbehaviour), what happens to them during the run (churn) and how the job spec is adjusted
(verification on for byzantine). Flags the worker does not offer yet are detected from
`shardgrid worker --help`, and the scenario is skipped with a note instead of failing: it joins
the benchmark by itself once the capability lands.
"""
from __future__ import annotations

import math
import re
import statistics
import subprocess
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from threadpoolctl import threadpool_limits

from bench.baseline import REPO_ROOT
from deploy.local import LocalCluster, child_env, shardgrid_command
from protos import signing
from scheduler.client import JobClient
from scheduler.optim import Optimizer
from scheduler.spec import JobSpec, parse_spec
from worker.workloads import compute_update, evaluate_params, minibatch

# Per result, beside the payload: lease, header, metrics, signature, gRPC framing (measured order
# of magnitude of the serialized messages; small next to any real model).
PER_RESULT_OVERHEAD_BYTES = 1024

# Misbehaviours in order of preference, when the worker offers them: a poisoned but well-formed,
# correctly signed update is the one only replication and robust aggregation can catch.
BENIGN_BEHAVIORS = ("honest", "lazy")
PREFERRED_BEHAVIORS = ("sign-flip", "gaussian-noise", "alie", "ipm", "random-garbage")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    workers: int = 4
    needs: str = ""                       # "", "profile" or "behavior": a worker flag it requires
    byzantine_workers: int = 0
    churn_at: tuple[float, ...] = ()      # fractions of the expected rounds: kill one, add one
    repeated: bool = False                # cheap and headline-worthy: run --repeat times
    spec_overrides: dict = field(default_factory=dict)   # {section: {key: value}}


SCENARIOS = {
    "clean": Scenario("clean", "4 identical honest workers on one machine", repeated=True),
    "unverified": Scenario("unverified", "clean, with verification off (no replicas, no spot "
                           "checks): the difference to clean is what verification costs in time",
                           spec_overrides={"verification": {"enabled": False}}, repeated=True),
    "heterogeneous": Scenario("heterogeneous", "4 workers emulating different hardware profiles",
                              needs="profile"),
    "churn": Scenario("churn", "4 workers; at 25% and at 60% of the rounds one is killed (SIGKILL) "
                      "and a fresh one joins", churn_at=(0.25, 0.6)),
    "byzantine": Scenario("byzantine", "4 honest workers plus 1 that returns correctly signed but "
                          "poisoned updates; verification on, trimmed-mean aggregation",
                          needs="behavior", byzantine_workers=1,
                          spec_overrides={"verification": {"enabled": True},
                                          "aggregation": {"rule": "trimmed_mean", "beta": 0.25}}),
}


def detect_capabilities() -> dict[str, list[str]]:
    """The values `shardgrid worker` accepts for --profile and --behavior ([] when absent)."""
    try:
        # The way LocalCluster starts workers, so the answer is about the workers we will get.
        proc = subprocess.run(shardgrid_command("worker", "--help"), capture_output=True,
                              text=True, timeout=60, cwd=REPO_ROOT, env=child_env())
        text = proc.stdout
    except (OSError, subprocess.TimeoutExpired):
        text = ""
    found: dict[str, list[str]] = {}
    for flag in ("profile", "behavior"):
        if f"--{flag}" not in text:
            found[flag] = []
            continue
        choices = re.search(rf"--{flag}\s+\{{([^}}]*)\}}", text)
        found[flag] = [c.strip() for c in choices.group(1).split(",")] if choices else []
    return found


def worker_flags(scenario: Scenario, capabilities: dict[str, list[str]]) -> list[list[str]] | str:
    """Extra flags for each worker, or the reason the scenario cannot run here."""
    if scenario.needs == "profile":
        chosen = capabilities.get("profile", [])
        if not chosen:
            return "the worker has no --profile option with listed choices yet"
        return [["--profile", chosen[i % len(chosen)]] for i in range(scenario.workers)]
    flags: list[list[str]] = [[] for _ in range(scenario.workers)]
    if scenario.needs == "behavior":
        offered = capabilities.get("behavior", [])
        harmful = [b for b in PREFERRED_BEHAVIORS if b in offered] or \
                  [b for b in offered if b not in BENIGN_BEHAVIORS]
        if not harmful:
            return "the worker has no --behavior option offering a poisoned update yet"
        flags += [["--behavior", harmful[0]] for _ in range(scenario.byzantine_workers)]
    return flags


def dump_toml(tables: dict[str, dict]) -> str:
    """Enough TOML for a job spec: tables of strings, numbers, booleans and lists of numbers."""
    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)
    return "\n".join(f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items())
                     for name, table in tables.items())


def scenario_spec(spec_toml: str, scenario: Scenario, rounds: int | None = None) -> str:
    """The job spec a scenario runs: the base spec with the scenario's overrides applied."""
    tables = tomllib.loads(spec_toml)
    for section, values in scenario.spec_overrides.items():
        tables.setdefault(section, {}).update(values)
    if rounds is not None:
        tables["job"]["rounds"] = rounds
    text = dump_toml(tables)
    parse_spec(text)  # refuse a broken override here, not inside the coordinator
    return text


def samples_per_round(spec_toml: str) -> int:
    config = parse_spec(spec_toml).workload
    return sum(len(minibatch(config, 0, shard)) for shard in range(config.shards))


@dataclass
class ShardgridRun:
    """What one job on a local cluster produced, as seen through the job client."""
    scenario: str
    workers: int
    target_accuracy: float
    per_round: list[dict] = field(default_factory=list)   # round, wall_s, loss, accuracy, samples
    job: dict = field(default_factory=dict)               # JobClient.get at the end
    worker_stats: list[dict] = field(default_factory=list)
    setup_s: float = 0.0                                  # cluster start until all registered
    warmup_s: float = 0.0                                 # the one-round warm-up job's wall time
    events: list[str] = field(default_factory=list)       # churn actions, with their round

    @property
    def time_to_target_s(self) -> float | None:
        for r in self.per_round:
            if self.target_accuracy and r["accuracy"] >= self.target_accuracy:
                return r["wall_s"]
        return None


def _wait_for_workers(client, count: int, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        online = [w for w in client.workers() if w.get("online", True)]
        if len(online) >= count:
            return
        time.sleep(0.1)
    raise TimeoutError(f"only {len(online)} of {count} workers registered within {timeout_s:.0f}s")


def _add_final_round(run: ShardgridRun, samples: int) -> None:
    """The final round matters most (time to target): if the watch missed it (a coordinator that
    went away at the end), recover it from the job's final figures."""
    done = int(run.job.get("round", 0))
    if done and (not run.per_round or run.per_round[-1]["round"] < done - 1):
        run.per_round.append({"round": done - 1, "wall_s": float(run.job["wall_s"]),
                              "loss": float(run.job["final_loss"]),
                              "accuracy": float(run.job["final_accuracy"]), "samples": samples})


def _warm_up(client: JobClient, spec_toml: str) -> float:
    """Run one round of the job first, so workers have imported the workload code and built the
    dataset, as the baseline's actors have before its clock starts. Returns that round's wall
    time: the cold-start latency a brand-new worker fleet adds."""
    tables = tomllib.loads(spec_toml)
    tables["job"].update(name=tables["job"]["name"] + "-warmup", rounds=1, target_accuracy=0.0)
    job = client.wait(client.submit(dump_toml(tables)))
    if job["status"] != "completed":
        raise RuntimeError(f"warm-up job ended {job['status']}: {job.get('error', '')}")
    return float(job["wall_s"])


def run_shardgrid(spec_toml: str, scenario: Scenario, flags: list[list[str]], workdir: Path,
                  on_round: Callable[[dict], None] | None = None,
                  expected_rounds: int | None = None) -> ShardgridRun:
    """Start a fresh coordinator and workers, wait until every worker registered (so the clock
    runs on a warm cluster, as the baseline's does), run the job and collect the figures."""
    spec = parse_spec(spec_toml)
    per_round_samples = samples_per_round(spec_toml)
    run = ShardgridRun(scenario.name, len(flags), spec.target_accuracy)
    # Churn strikes at fractions of the rounds the job should need (the baseline's count).
    churn_at = {max(1, math.floor((expected_rounds or spec.rounds) * f)) for f in scenario.churn_at}
    started = time.perf_counter()
    with LocalCluster(workers=0, workdir=workdir) as cluster:
        for extra in flags:
            cluster.add_worker(extra_args=extra)
        client = JobClient(cluster.address)
        _wait_for_workers(client, len(flags))
        run.setup_s = time.perf_counter() - started
        run.warmup_s = _warm_up(client, spec_toml)
        job_id = client.submit(spec_toml)
        killed = 0
        for event in client.watch(job_id):
            summary = event["round"]
            if summary is None:
                continue
            record = {"round": int(summary["round"]), "wall_s": float(summary["wall_s"]),
                      "loss": float(summary["loss"]), "accuracy": float(summary["accuracy"]),
                      "samples": per_round_samples}
            run.per_round.append(record)
            if on_round:
                on_round(record)
            if record["round"] + 1 in churn_at:
                cluster.kill_worker(killed)
                cluster.add_worker()
                run.events.append(f"after round {record['round']}: killed worker {killed}, "
                                  "a fresh one joined")
                killed += 1
        run.job = client.wait(job_id)
        _add_final_round(run, per_round_samples)
        run.worker_stats = client.workers()
    return run


def calibrate(spec: JobSpec, repeats: int = 20) -> dict[str, float]:
    """Seconds for one shard computation, one aggregation + optimizer step, one evaluation and one
    signature check, measured in this process: the yardsticks that turn shardgrid's counters
    into a time split (its processes do not report their own timings)."""
    with threadpool_limits(1):  # as in the cluster's processes (deploy.local.child_env)
        return _calibrate(spec, repeats)


def _calibrate(spec: JobSpec, repeats: int) -> dict[str, float]:
    config = spec.workload
    params = config.initial_params()

    def timed(fn) -> float:
        fn(0)  # warm: first calls pay for thread pools and caches
        samples = []
        for i in range(repeats):
            started = time.perf_counter()
            fn(i)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)  # robust to a neighbour stealing the core

    updates = np.stack([compute_update(config, params, 0, s).update for s in range(config.shards)])
    optimizer = Optimizer(spec.optimizer, spec.lr, spec.momentum, params.size)
    key = Ed25519PrivateKey.generate()
    public, message = signing.public_bytes(key), b"x" * 32
    signature = key.sign(message)
    return {
        "shard_compute_s": timed(lambda i: compute_update(config, params, i, i % config.shards)),
        "aggregate_s": timed(lambda i: optimizer.step(params, updates.mean(axis=0))),
        "evaluate_s": timed(lambda i: evaluate_params(config, params)),
        "verify_signature_s": timed(lambda i: signing.verify(public, signature, message)),
    }


def summarize_shardgrid(run: ShardgridRun, spec: JobSpec, calib: dict[str, float]) -> dict:
    """The comparison figures for one shardgrid run; modelled parts are named as such."""
    rounds = len(run.per_round)
    wall = run.per_round[-1]["wall_s"] if run.per_round else 0.0
    samples = sum(r["samples"] for r in run.per_round)
    params_bytes = 4 * spec.workload.layout().size
    needed = rounds * spec.shards
    accepted = int(run.job.get("results_accepted", 0))
    # Late and superseded copies are listed by reason without counting as bad results; they
    # were computed all the same, so they count as redundant work here.
    rejected = max(int(run.job.get("results_rejected", 0)),
                   int(sum(run.job.get("rejected_by_reason", {}).values())))
    computed = max(accepted + rejected, needed)
    # The coordinator's own re-executions (second opinions on cheap tasks, spot checks,
    # disputes) are verification compute too, done by the coordinator instead of a worker.
    reexecuted = int(run.job.get("reexecutions", 0))
    redundant_fraction = ((computed + reexecuted - needed) / (computed + reexecuted)
                          if computed else 0.0)
    # Parameters are content addressed: each worker downloads a round's version at most once.
    fetches = rounds * min(run.workers, computed / rounds if rounds else 0)
    wire_bytes = fetches * params_bytes + computed * (params_bytes + PER_RESULT_OVERHEAD_BYTES)
    counters = {k: v for k, v in run.job.items() if "bytes" in k}
    if counters:
        wire_bytes = sum(counters.values())
    # Critical path: a round needs ceil(results / workers) shard computations back to back.
    per_round_needed = math.ceil(spec.shards / run.workers)
    per_round_done = math.ceil(computed / max(rounds, 1) / run.workers)
    compute_s = rounds * per_round_needed * calib["shard_compute_s"]
    verification_s = ((rounds * max(0, per_round_done - per_round_needed) + reexecuted)
                      * calib["shard_compute_s"] + computed * calib["verify_signature_s"])
    aggregate_s = rounds * calib["aggregate_s"]
    evaluate_s = rounds * calib["evaluate_s"]
    return {
        "system": "shardgrid", "scenario": run.scenario, "workers": run.workers,
        "rounds_run": rounds, "target_accuracy": run.target_accuracy,
        "time_to_target_s": run.time_to_target_s, "wall_s": wall, "setup_s": run.setup_s,
        "cold_start_s": run.warmup_s,
        "final_accuracy": run.per_round[-1]["accuracy"] if run.per_round else 0.0,
        "final_loss": run.per_round[-1]["loss"] if run.per_round else float("nan"),
        "status": run.job.get("status", "unknown"), "samples": samples,
        "samples_per_s": samples / wall if wall else 0.0,
        "results_accepted": accepted, "results_rejected": rejected,
        "rejected_by_reason": run.job.get("rejected_by_reason", {}),
        "verification_overhead": redundant_fraction,
        "bytes_per_sample": wire_bytes / samples if samples else 0.0,
        "bytes_source": "coordinator counters" if counters else "estimated from sizes and counts",
        "time_split": {"compute_s": compute_s, "verification_s": verification_s,
                       "aggregate_s": aggregate_s, "evaluate_s": evaluate_s,
                       "wire_idle_s": max(0.0, wall - compute_s - verification_s - aggregate_s
                                          - evaluate_s),
                       "modelled": True},
        "events": run.events, "worker_stats": run.worker_stats, "per_round": run.per_round,
    }
