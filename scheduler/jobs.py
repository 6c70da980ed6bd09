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
    accepted: dict[int, list[Accepted]] = field(default_factory=dict)
    aggregating: bool = False
    version: int = 0                                             # bumped on every visible change
    last_round: RoundSummary | None = None
    previous_aggregate: np.ndarray | None = None  # centered clipping starts from it

    @property
    def running(self) -> bool:
        return self.status == "running"

    def settled(self) -> set[int]:
        return {shard for shard, results in self.accepted.items() if results}

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
        open_shards = self.spec.shards - len(self.settled())
        active = sum(1 for lease in self.leases.values() if lease.state == "active")
        pending = open_shards - len({l.shard for l in self.leases.values() if l.state == "active"})
        if pending > 0:
            return f"round {self.round}: {pending} shard(s) waiting for a worker, {active} computing"
        return f"round {self.round}: {active} shard(s) computing"
