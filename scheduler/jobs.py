"""A running job's in-memory round state, rebuilt from the store at start.

Holds the current parameters, the optimizer, the active leases and the accepted results of the
open round; the Coordinator owns the lock that guards it.
"""
from __future__ import annotations

import functools
import heapq
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
    live: int = 0                    # its leases still active or submitting


EMPTY_SHARD = ShardState()


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
    leases: dict[str, Lease] = field(default_factory=dict)      # live leases of this round
    shards: dict[int, ShardState] = field(default_factory=dict)   # open round, by shard
    aggregating: bool = False
    version: int = 0                                             # bumped on every visible change
    previous_aggregate: np.ndarray | None = None  # centered clipping starts from it
    # Indexes that keep a poll O(1) with 1,000 workers (a scan per poll was quadratic):
    by_worker: dict[str, set[str]] = field(default_factory=dict)  # worker -> its live lease ids
    # Shards that may want another copy, lowest first. Anything that can raise a shard's need
    # calls reopen(); shards found wanting nothing are dropped lazily when polled.
    _open: list[int] = field(default_factory=list)
    _in_open: set[int] = field(default_factory=set)
    settled_count: int = 0
    straggler_view: tuple | None = None  # (computed at, ranking): see Coordinator._stragglers

    def __post_init__(self) -> None:
        self.reopen_all()

    # ---------------------------------------------------------------- leases
    def add_lease(self, lease: Lease) -> None:
        self.leases[lease.lease_id] = lease
        self.shard(lease.shard).live += 1
        self.by_worker.setdefault(lease.worker_id, set()).add(lease.lease_id)

    def end_lease(self, lease: Lease, state: str) -> None:
        """The lease stops being live (used, rejected, expired, cancelled)."""
        lease.state = state
        if self.leases.get(lease.lease_id) is not lease:
            return
        del self.leases[lease.lease_id]
        self.shards[lease.shard].live -= 1
        mine = self.by_worker.get(lease.worker_id)
        if mine is not None:
            mine.discard(lease.lease_id)
            if not mine:
                del self.by_worker[lease.worker_id]
        self.reopen(lease.shard)

    def end_all_leases(self, state: str) -> None:
        for lease in list(self.leases.values()):
            self.end_lease(lease, state)

    def leases_of(self, worker_id: str) -> list[Lease]:
        return [self.leases[lid] for lid in self.by_worker.get(worker_id, ())]

    def next_round(self) -> None:
        """Caller ended every lease: the new round starts with no shard state."""
        self.shards.clear()
        self.by_worker.clear()
        self.settled_count = 0
        self.straggler_view = None
        self.reopen_all()

    # ---------------------------------------------------------------- open copies
    def copies_wanted(self, shard: int) -> int:
        """Further leases a shard needs: wanted copies minus results and live leases."""
        state = self.shards.get(shard)
        if state is None:
            return 1
        if state.settled is not None or state.checking:
            return 0
        return max(0, state.copies - len(state.results) - state.live)

    def reopen(self, shard: int) -> None:
        if shard not in self._in_open:
            self._in_open.add(shard)
            heapq.heappush(self._open, shard)

    def reopen_all(self) -> None:
        for shard in range(self.spec.shards):
            self.reopen(shard)

    def next_open(self, worker_id: str) -> int | None:
        """The lowest shard that wants a copy and that `worker_id` has not held this round
        (replicas must come from distinct workers), or None."""
        skipped, found = [], None
        while self._open:
            shard = self._open[0]
            if self.copies_wanted(shard) == 0:
                heapq.heappop(self._open)
                self._in_open.discard(shard)
            elif worker_id in self.shards.get(shard, EMPTY_SHARD).holders:
                skipped.append(heapq.heappop(self._open))
            else:
                found = shard
                break
        for shard in skipped:
            heapq.heappush(self._open, shard)
        return found

    # The spec never changes, so what polls derive from it is computed once per job.
    @functools.cached_property
    def flops_per_sample(self) -> float:
        return self.spec.workload.flops_per_sample()

    @functools.cached_property
    def task_flops(self) -> float:
        config = self.spec.workload
        steps = config.local_steps if config.mode == "local" else 1
        return self.flops_per_sample * config.batch_size * steps

    @functools.cached_property
    def workload_json(self) -> str:
        return self.spec.workload.to_json()

    @functools.cached_property
    def memory_needed(self) -> int:
        """Bytes a worker needs: parameters, gradient and activations with headroom, plus data."""
        data = self.spec.workload.dataset_obj()
        return 4 * self.params.nbytes + data.x_train.nbytes + data.x_test.nbytes

    def straggling(self, expected_finish) -> dict[int, float]:
        """Unsettled shards whose wanted copies are all leased: shard -> expected finish time
        of the lease that will end last (`expected_finish(lease)`)."""
        finish: dict[int, float] = {}
        for lease in self.leases.values():
            state = self.shards[lease.shard]
            if (lease.state == "active" and state.settled is None and not state.checking
                    and self.copies_wanted(lease.shard) == 0):
                finish[lease.shard] = max(finish.get(lease.shard, 0.0), expected_finish(lease))
        return finish

    @property
    def running(self) -> bool:
        return self.status == "running"

    def shard(self, shard: int) -> ShardState:
        return self.shards.setdefault(shard, ShardState())

    def settled(self) -> set[int]:
        return {shard for shard, state in self.shards.items() if state.settled is not None}

    def settle(self, state: ShardState, result: Accepted) -> None:
        if state.settled is None:
            self.settled_count += 1
        state.settled = result

    def open_copies(self, limit: int) -> int:
        """Further leases the round needs, counted only until the count exceeds `limit` (a
        caller asking "more than N?" pays for N shards, not for all of them)."""
        total = 0
        for shard in self._open:  # every shard wanting a copy is in it (see reopen)
            total += self.copies_wanted(shard)
            if total > limit:
                break
        return total

    def open_shards(self) -> list[int]:
        """The shards that want a copy now, in no particular order."""
        return [shard for shard in self._open if self.copies_wanted(shard) > 0]

    def copies_needed(self) -> dict[int, int]:
        """Further leases each unsettled shard needs (for status and tests; polls use next_open)."""
        return {shard: self.copies_wanted(shard) for shard in range(self.spec.shards)
                if self.shards.get(shard, EMPTY_SHARD).settled is None}

    def ready_to_close(self) -> bool:
        return self.running and not self.aggregating and self.settled_count == self.spec.shards

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
