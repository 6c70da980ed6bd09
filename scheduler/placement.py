"""Which shard a worker gets next: pure functions over the round's bookkeeping, no I/O.

A shard needs further copies while its wanted copies (1, or 2 when replicated) exceed its results
plus live leases. Such a shard goes to the first worker that asks, lowest shard first so rounds
fill in order; a worker never computes the same shard twice in a round (JobRuntime.next_open
keeps that O(1) per poll). Here: speeds, deadlines, straggler backups, memory and deferring.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


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


# A lease overdue by another task time, and at least this, is presumed lost (a killed or
# stalled worker): its shard is worth a backup at once instead of after the lease deadline.
OVERDUE_SLACK_S = 0.05


def expected_finish(issued_at: float, seconds: float | None, deadline: float, now: float) -> float:
    """When a lease's result can be counted on: the holder's own pace from the issue time; once
    the lease is overdue by another task time (at least OVERDUE_SLACK_S) only the deadline is
    certain. Without that, a killed worker's shard waited for the full deadline (~3 s a kill
    on the demo job), since an expected finish in the past never looks late."""
    if seconds is None:
        return deadline
    finish = issued_at + seconds
    return deadline if now > finish + max(seconds, OVERDUE_SLACK_S) else finish


def choose_backup(stragglers: Sequence[tuple[float, int, Any]], asker: str, now: float,
                  asker_seconds: float) -> int | None:
    """A straggler's shard to copy onto an idle worker, or None.

    `stragglers` holds (expected finish of its current holder, shard, ShardState) for each
    unsettled shard whose copies are all leased, latest finish first. A backup goes out when the
    asker would finish clearly earlier (by half its own task time); the first valid result wins,
    the other lease is cancelled. Each shard gets at most one backup, never from a worker that
    held it already, and only while it is still unsettled and fully leased (the list may be a
    moment old)."""
    latest_useful = now + 1.5 * asker_seconds
    for finish, shard, state in stragglers:
        if finish <= latest_useful:
            return None  # every later entry finishes sooner still
        if (not state.backed_up and asker not in state.holders and state.settled is None
                and not state.checking and state.live > 0):
            return shard
    return None


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
