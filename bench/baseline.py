"""The centralized baseline: the same job as classic synchronous data-parallel training on Ray.

One Ray actor per worker computes its share of the round's shard gradients with the very same
`compute_update` the shardgrid workers run; the driver averages them (plain numpy mean), steps the
same `Optimizer` and evaluates with `evaluate_params`, stopping at the job's target accuracy just
as the coordinator does. No gRPC, no signatures, no verification: this is what the maths costs on
a trusted cluster, so the difference to shardgrid is what decentralization costs.

Ray runs as a private, loopback-only, single-node instance (`local_ray`): it never joins another
cluster, binds its node address to 127.0.0.1 and keeps its sockets and auth token in a scratch
directory instead of the user's home.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

# Read by ray's constants at import time: with clusters "disabled" Ray takes the loopback address
# as the node address instead of probing the route to a public resolver. Must precede `import ray`.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray  # noqa: E402

from scheduler.optim import Optimizer  # noqa: E402
from scheduler.spec import JobSpec  # noqa: E402
from worker.workloads import WorkloadConfig, compute_update, evaluate_params  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
# The coordinator numbers the first round 0, and the round number seeds every minibatch.
FIRST_ROUND = 0


class RayLoopbackError(RuntimeError):
    """Ray came up on an address other than 127.0.0.1."""


@contextlib.contextmanager
def local_ray(num_cpus: int = 2) -> Iterator[None]:
    """A private single-node Ray on 127.0.0.1 for the duration of the block.

    Reuses a session somebody already started (the test suite shares one: `ray.init` costs
    seconds) and then leaves it running for its owner.
    """
    if ray.is_initialized():
        yield
        return
    # Short path: Ray's unix socket paths live below it and have a ~107-byte limit.
    scratch = tempfile.mkdtemp(prefix="sg-ray-", dir="/tmp")
    overrides = {
        # Ray turns token auth on for a new local cluster; its token lives with us, not in ~/.ray.
        "RAY_AUTH_TOKEN_PATH": _process_token_path(),
        # Actors import the project's packages whether or not it is pip-installed.
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _temp_dir=scratch,
                 log_to_driver=False, logging_level="WARNING", configure_logging=True)
        host = ray.get_runtime_context().gcs_address.rsplit(":", 1)[0]
        if host != "127.0.0.1":
            raise RayLoopbackError(f"Ray bound {host}, not 127.0.0.1: was ray imported before "
                                   "bench.baseline set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0?")
        yield
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(scratch, ignore_errors=True)


@functools.cache
def _process_token_path() -> str:
    """One auth token file per process: Ray's client may cache the token it first read, so every
    session this process starts must find the same one."""
    folder = tempfile.mkdtemp(prefix="sg-raytok-", dir="/tmp")
    atexit.register(shutil.rmtree, folder, True)
    path = os.path.join(folder, "auth_token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    return path


@dataclass
class RoundRecord:
    round: int
    wall_s: float          # since training started (warm actors), after this round's evaluation
    loss: float            # held-out
    accuracy: float        # held-out
    samples: int           # training samples behind this round's update
    compute_s: float       # summed over actors: time inside compute_update
    critical_compute_s: float  # the slowest actor's compute: what the round had to wait for
    gather_s: float        # driver: from dispatch until every update is back
    aggregate_s: float     # driver: mean + optimizer step
    evaluate_s: float      # driver: held-out evaluation


@dataclass
class RunResult:
    system: str
    workers: int
    rounds: list[RoundRecord] = field(default_factory=list)
    target_accuracy: float = 0.0
    time_to_target_s: float | None = None   # None: never reached
    setup_s: float = 0.0                    # actor start and dataset warm-up, not in wall_s
    params_size: int = 0

    @property
    def wall_s(self) -> float:
        return self.rounds[-1].wall_s if self.rounds else 0.0

    @property
    def final_accuracy(self) -> float:
        return self.rounds[-1].accuracy if self.rounds else 0.0

    @property
    def final_loss(self) -> float:
        return self.rounds[-1].loss if self.rounds else float("nan")

    @property
    def samples(self) -> int:
        return sum(r.samples for r in self.rounds)

    def time_split(self) -> dict[str, float]:
        """The wall time along the critical path: the slowest worker's compute, dispatch and
        transfer (Ray scheduling, object store), driver aggregation and evaluation; plus how busy
        the workers were overall (the rest of their time they idled waiting for the round)."""
        compute = sum(r.critical_compute_s for r in self.rounds)
        gather = sum(r.gather_s for r in self.rounds)
        busy = sum(r.compute_s for r in self.rounds)
        return {"compute_s": compute, "wire_s": gather - compute, "verification_s": 0.0,
                "aggregate_s": sum(r.aggregate_s for r in self.rounds),
                "evaluate_s": sum(r.evaluate_s for r in self.rounds),
                "worker_utilization": busy / (self.wall_s * self.workers) if self.wall_s else 0.0}

    def summary(self) -> dict:
        return {"system": self.system, "workers": self.workers, "rounds_run": len(self.rounds),
                "target_accuracy": self.target_accuracy, "time_to_target_s": self.time_to_target_s,
                "wall_s": self.wall_s, "setup_s": self.setup_s, "final_accuracy": self.final_accuracy,
                "final_loss": self.final_loss, "samples": self.samples,
                "samples_per_s": self.samples / self.wall_s if self.wall_s else 0.0,
                "params_size": self.params_size, "time_split": self.time_split()}

    def to_dict(self) -> dict:
        return {**self.summary(), "per_round": [asdict(r) for r in self.rounds]}


class ShardActor:
    """Holds the dataset warm and computes the shard updates it is handed, timing each one."""

    def __init__(self, workload_json: str):
        self.config = WorkloadConfig.from_json(workload_json)
        self.config.dataset_obj()  # built once here, outside any timed round

    def ready(self) -> bool:
        return True

    def compute(self, params: np.ndarray, round_no: int,
                shards: list[int]) -> tuple[list[tuple[int, np.ndarray, int]], float]:
        started = time.perf_counter()
        out = []
        for shard in shards:
            update = compute_update(self.config, params, round_no, shard)
            out.append((shard, update.update, update.samples))
        return out, time.perf_counter() - started


def assign_shards(shards: int, workers: int) -> list[list[int]]:
    """Static round-robin placement: actor i owns shards i, i+workers, ... (Ray has no leases)."""
    return [list(range(i, shards, workers)) for i in range(workers)]


def aggregate_mean(updates_by_shard: dict[int, np.ndarray]) -> np.ndarray:
    """Plain mean in shard order, so the result never depends on which actor answered first."""
    return np.mean(np.stack([updates_by_shard[s] for s in sorted(updates_by_shard)]), axis=0)


def run_baseline(spec: JobSpec, workers: int = 4,
                 on_round: Callable[[RoundRecord], None] | None = None) -> RunResult:
    """Train `spec` on `workers` Ray actors (inside `local_ray`) and record every round."""
    if not ray.is_initialized():
        raise RuntimeError("run_baseline needs a Ray session: call it inside bench.baseline.local_ray()")
    config = spec.workload
    setup_started = time.perf_counter()
    cpus = float(ray.available_resources().get("CPU", 1.0))
    # Fractional CPUs so every actor is placed even when workers outnumber cores, as shardgrid's
    # worker processes share the same cores.
    actor_cls = ray.remote(num_cpus=min(1.0, cpus / workers))(ShardActor)
    actors = [actor_cls.remote(config.to_json()) for _ in range(workers)]
    try:
        ray.get([a.ready.remote() for a in actors])
        # One untimed call per actor, as shardgrid's workers run a one-round warm-up job: the
        # first remote call with an array pays Ray's lazy set-up (about 0.1 s here), not training.
        warm_params = ray.put(config.initial_params())
        ray.get([a.compute.remote(warm_params, FIRST_ROUND, [0]) for a in actors])
        result = RunResult("ray-baseline", workers, target_accuracy=spec.target_accuracy,
                           setup_s=time.perf_counter() - setup_started)
        # One BLAS thread in the driver, like the coordinator process: small matrices evaluated
        # on several threads that share two cores with the actors run many times slower.
        with threadpool_limits(1):
            _train(spec, actors, result, on_round)
        return result
    finally:
        for actor in actors:
            ray.kill(actor)


def _train(spec: JobSpec, actors: list, result: RunResult,
           on_round: Callable[[RoundRecord], None] | None) -> None:
    config = spec.workload
    params = config.initial_params()
    result.params_size = params.size
    optimizer = Optimizer(spec.optimizer, spec.lr, spec.momentum, params.size)
    placement = assign_shards(config.shards, len(actors))
    started = time.perf_counter()
    for round_no in range(FIRST_ROUND, FIRST_ROUND + spec.rounds):
        dispatched = time.perf_counter()
        params_ref = ray.put(params)
        replies = ray.get([actor.compute.remote(params_ref, round_no, shards)
                           for actor, shards in zip(actors, placement) if shards])
        gathered = time.perf_counter()
        updates = {shard: update for items, _ in replies for shard, update, _ in items}
        samples = sum(n for items, _ in replies for _, _, n in items)
        params = optimizer.step(params, aggregate_mean(updates))
        aggregated = time.perf_counter()
        loss, accuracy = evaluate_params(config, params)
        evaluated = time.perf_counter()
        record = RoundRecord(
            round=round_no, wall_s=evaluated - started, loss=loss, accuracy=accuracy,
            samples=samples, compute_s=sum(t for _, t in replies),
            critical_compute_s=max(t for _, t in replies), gather_s=gathered - dispatched,
            aggregate_s=aggregated - gathered, evaluate_s=evaluated - aggregated)
        result.rounds.append(record)
        if on_round:
            on_round(record)
        if spec.target_accuracy and accuracy >= spec.target_accuracy:
            result.time_to_target_s = record.wall_s
            break


def run_serial(spec: JobSpec) -> list[tuple[float, float]]:
    """The same training as one plain loop, no Ray: the per-round (loss, accuracy) the maths
    dictates. Any distributed run of the same spec must reproduce it."""
    config = spec.workload
    params = config.initial_params()
    optimizer = Optimizer(spec.optimizer, spec.lr, spec.momentum, params.size)
    history = []
    for round_no in range(FIRST_ROUND, FIRST_ROUND + spec.rounds):
        updates = {s: compute_update(config, params, round_no, s).update for s in range(config.shards)}
        params = optimizer.step(params, aggregate_mean(updates))
        history.append(evaluate_params(config, params))
        if spec.target_accuracy and history[-1][1] >= spec.target_accuracy:
            break
    return history
