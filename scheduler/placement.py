"""Which shard a worker gets next: pure functions over the round's bookkeeping, no I/O.

A shard needs further copies while its wanted copies (1, or 2 when replicated) exceed its results
plus live leases. Such a shard goes to the first worker that asks, lowest shard first so rounds
fill in order; a worker never computes the same shard twice in a round.
"""
from __future__ import annotations

from collections.abc import Mapping, Set


def choose_shard(needed: Mapping[int, int], holders: Mapping[int, Set[str]],
                 worker_id: str) -> int | None:
    """The lowest shard that still needs a copy and that `worker_id` has not worked on this round
    (replicas must come from distinct workers), or None."""
    for shard in sorted(needed):
        if needed[shard] > 0 and worker_id not in holders.get(shard, ()):
            return shard
    return None
