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


# ---------------------------------------------------------------- speed, deadlines, backups
EWMA_ALPHA = 0.3
DEADLINE_FACTOR = 4.0   # a lease lasts this many expected task times ...
DEADLINE_FLOOR_S = 3.0  # ... but never less (scheduling jitter, a GC pause, a slow link)


def update_speed(previous: float, flops: float, seconds: float) -> float:
    """EWMA of a worker's observed FLOP/s, measured lease-to-result (so it includes the wire)."""
    if flops <= 0 or seconds <= 0:
        return previous
    sample = flops / seconds
    return sample if previous <= 0 else (1 - EWMA_ALPHA) * previous + EWMA_ALPHA * sample


def expected_seconds(task_flops: float, speed: float) -> float | None:
    """How long a task should take this worker, or None while its speed is unknown."""
    return task_flops / speed if speed > 0 else None


def lease_seconds(task_flops: float, speed: float, cap_s: float) -> float:
    """Deadline of a lease: generous against the worker's own pace, capped by the job's timeout.
    A worker of unknown speed gets the full timeout."""
    expected = expected_seconds(task_flops, speed)
    if expected is None:
        return cap_s
    return min(cap_s, max(DEADLINE_FLOOR_S, DEADLINE_FACTOR * expected))


def choose_backup(open_shards: Mapping[int, float], backed_up: Set[int], held: Set[int],
                  now: float, asker_seconds: float | None) -> int | None:
    """A straggler's shard to copy onto an idle worker, or None.

    `open_shards` maps each unsettled shard whose copies are all leased to the time its current
    holder is expected to finish. A backup goes out when the asker would finish clearly earlier
    (by half its own task time); the first valid result wins, the other lease is cancelled.
    Each shard gets at most one backup, and never from a worker that held it already."""
    if asker_seconds is None:
        return None
    asker_done = now + asker_seconds
    candidates = [(finish, shard) for shard, finish in open_shards.items()
                  if shard not in backed_up and shard not in held
                  and asker_done + 0.5 * asker_seconds < finish]
    return max(candidates)[1] if candidates else None


def fits_in_memory(profile: Mapping, needed_bytes: int) -> bool:
    """Never hand a worker a task its reported memory cannot hold (0 means not reported)."""
    memory = int(profile.get("memory_bytes", 0) or 0)
    return memory == 0 or memory >= needed_bytes


SPEED_MARGIN = 1.5  # "clearly faster": noise in measured speeds must not reorder equals


def defer_to_faster(asker_speed: float, waiting_speeds: list[float], copies_needed: int,
                    idle_s: float = 0.0, max_idle_s: float = float("inf")) -> bool:
    """Should a worker leave the open copies to faster workers that are waiting right now?

    Pull scheduling lets whoever asks first win, so a slow machine often grabs a shard and the
    round then waits on it. It defers only when enough clearly faster, eligible workers are
    idle to take every copy still needed; otherwise it works. A worker idle for `max_idle_s`
    works regardless: its speed estimate must stay fresh (it may have been a fluke) and it
    must stay under verification, so nobody is starved for good."""
    if copies_needed <= 0 or asker_speed <= 0 or idle_s >= max_idle_s:
        return False
    faster = sum(1 for speed in waiting_speeds if speed > SPEED_MARGIN * asker_speed)
    return faster >= copies_needed


def max_idle_seconds(task_flops: float, speed: float) -> float:
    """How long deferring may keep a worker idle: ten of its own tasks, at least 3 s."""
    expected = expected_seconds(task_flops, speed)
    return max(DEADLINE_FLOOR_S, 10 * expected) if expected is not None else DEADLINE_FLOOR_S
