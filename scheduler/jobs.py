"""A running job's in-memory round state, rebuilt from the store at start.

Holds the current parameters, the optimizer, the active leases and the accepted results of the
open round; the Coordinator owns the lock that guards it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scheduler.optim import Optimizer
from scheduler.spec import JobSpec

TERMINAL = ("completed", "failed", "cancelled")


@dataclass
class Lease:
    lease_id: str
    job_id: str
    round: int
    shard: int
    worker_id: str
    issued_at: float
    deadline: float
    state: str = "active"        # active -> submitting -> used | rejected | expired | cancelled


@dataclass
class Accepted:
    lease_id: str
    worker_id: str
    shard: int
    payload_digest: str
    samples: int


@dataclass
class ShardState:
    """Verification bookkeeping of one shard in the open round."""

    copies: int = 1                  # results wanted from distinct workers (2 = replicated)
    results: list[Accepted] = field(default_factory=list)   # protocol-valid, in arrival order
    settled: Accepted | None = None  # the result that goes into the aggregate
    spot_check: bool = False         # the coordinator re-executes it before settling
    checking: bool = False           # a re-execution is under way
    holders: set[str] = field(default_factory=set)          # workers that leased it this round
    backed_up: bool = False          # a straggler backup copy went out


@dataclass
class RoundSummary:
    round: int
    loss: float
    accuracy: float
    updates: int
    wall_s: float


@dataclass
class JobRuntime:
    job_id: str
    spec: JobSpec
    spec_toml: str
    status: str
    round: int
    params_digest: str
    params: np.ndarray
    optimizer: Optimizer
    created_at: float
    leases: dict[str, Lease] = field(default_factory=dict)      # active leases of this round
    shards: dict[int, ShardState] = field(default_factory=dict)   # open round, by shard
    aggregating: bool = False
    version: int = 0                                             # bumped on every visible change
    previous_aggregate: np.ndarray | None = None  # centered clipping starts from it

    @property
    def task_flops(self) -> float:
        config = self.spec.workload
        steps = config.local_steps if config.mode == "local" else 1
        return config.flops_per_sample() * config.batch_size * steps

    @property
    def memory_needed(self) -> int:
        """Bytes a worker needs: parameters, gradient and activations with headroom, plus data."""
        data = self.spec.workload.dataset_obj()
        return 4 * self.params.nbytes + data.x_train.nbytes + data.x_test.nbytes

    def straggling(self, expected_finish) -> dict[int, float]:
        """Unsettled shards whose wanted copies are all leased: shard -> expected finish time
        of the lease that will end last (`expected_finish(lease)`)."""
        needed = self.copies_needed()
        finish: dict[int, float] = {}
        for lease in self.leases.values():
            if lease.state == "active" and needed.get(lease.shard, 1) == 0:
                finish[lease.shard] = max(finish.get(lease.shard, 0.0), expected_finish(lease))
        return finish

    @property
    def running(self) -> bool:
        return self.status == "running"

    def shard(self, shard: int) -> ShardState:
        return self.shards.setdefault(shard, ShardState())

    def settled(self) -> set[int]:
        return {shard for shard, state in self.shards.items() if state.settled is not None}

    def copies_needed(self) -> dict[int, int]:
        """Further leases each shard still needs: wanted copies minus results and live leases."""
        leased = self.leased()
        needed = {}
        for shard in range(self.spec.shards):
            state = self.shards.get(shard)
            if state is None:
                needed[shard] = 1
            elif state.settled is None and not state.checking:
                live = len(leased.get(shard, ()))
                needed[shard] = max(0, state.copies - len(state.results) - live)
        return needed

    def leased(self) -> dict[int, set[str]]:
        by_shard: dict[int, set[str]] = {}
        for lease in self.leases.values():
            if lease.state in ("active", "submitting"):
                by_shard.setdefault(lease.shard, set()).add(lease.worker_id)
        return by_shard

    def ready_to_close(self) -> bool:
        return self.running and not self.aggregating and len(self.settled()) == self.spec.shards

    def waiting_for(self) -> str:
        if not self.running:
            return ""
        if self.aggregating:
            return f"aggregating round {self.round}"
        active = sum(1 for lease in self.leases.values() if lease.state == "active")
        waiting = sum(1 for n in self.copies_needed().values() if n > 0)
        checking = sum(1 for state in self.shards.values() if state.checking)
        parts = [f"{waiting} shard(s) waiting for a worker" if waiting else "",
                 f"{active} computing" if active else "",
                 f"{checking} being re-executed by the coordinator" if checking else ""]
        return f"round {self.round}: " + ", ".join(p for p in parts if p)
