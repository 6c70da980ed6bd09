"""Which shard a worker gets next: pure functions over the round's bookkeeping, no I/O.

A shard is *open* while it is not settled (no accepted result yet). An open shard with no active
lease is *pending* and goes to the first worker that asks, lowest shard first so rounds fill in
order. A worker never holds two leases on the same shard.
"""
from __future__ import annotations

from collections.abc import Mapping, Set


def pending_shards(shards: int, settled: Set[int], leased: Mapping[int, Set[str]]) -> list[int]:
    return [s for s in range(shards) if s not in settled and not leased.get(s)]


def choose_shard(shards: int, settled: Set[int], leased: Mapping[int, Set[str]],
                 worker_id: str) -> int | None:
    """The shard to lease to `worker_id`, or None when nothing is pending for it."""
    for shard in pending_shards(shards, settled, leased):
        if worker_id not in leased.get(shard, ()):
            return shard
    return None
