"""Verification policy: who gets replicated, when two results agree, how trust moves. Pure logic.

Adaptive replication (BOINC style): a worker's shards get a second opinion until it has
`replicate_until` consecutive valid results; after that only with probability 1/streak, so the
expected extra compute of a trusted fleet decays like 1/streak. The second opinion is a replica
computed by a distinct worker, or, for tasks cheap enough to recompute, the coordinator's own
re-execution (`second_opinion`). Every accepted result that is not proven wrong extends the
streak, checked or not.
A disagreement is settled by the coordinator re-executing the shard: the result that matches the
re-execution stands, any that does not is *proven wrong*.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from scheduler.spec import VerificationPolicy


@dataclass
class Trust:
    """A worker's standing. `streak`: consecutive verified-correct results; `proven_wrong`: count."""

    reputation: float = 0.0
    streak: int = 0
    proven_wrong: int = 0
    banned: bool = False


def wants_second_opinion(trust: Trust, policy: VerificationPolicy, rng: random.Random) -> bool:
    if not policy.enabled:
        return False
    if trust.streak < policy.replicate_until:
        return True
    return rng.random() < 1.0 / trust.streak


# Below this, recomputing a task costs the coordinator a fraction of a millisecond: less than a
# second worker's round trip, and the coordinator cannot collude.
CHEAP_TASK_FLOPS = 20e6


def coordinator_checks(policy: VerificationPolicy, task_flops: float) -> bool:
    """Whether the second opinion on a result comes from the coordinator's re-execution rather
    than from a replica on another worker."""
    if policy.second_opinion == "auto":
        return task_flops < CHEAP_TASK_FLOPS
    return policy.second_opinion == "coordinator"


def wants_spot_check(policy: VerificationPolicy, rng: random.Random) -> bool:
    return policy.enabled and rng.random() < policy.spot_check_fraction


def relative_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / max(||a||, ||b||), in float64; 0 for two zero vectors."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    scale = max(float(np.linalg.norm(a64)), float(np.linalg.norm(b64)))
    if scale == 0.0:
        return 0.0
    return float(np.linalg.norm(a64 - b64)) / scale


def agree(a_digest: str, b_digest: str, a: np.ndarray | None, b: np.ndarray | None,
          tolerance: float) -> bool:
    """Bitwise equal payloads agree outright (deterministic workloads on one platform); otherwise
    the relative L2 distance decides (other BLAS, other thread counts)."""
    if a_digest == b_digest:
        return True
    if a is None or b is None:
        return False
    return matches_reference(a, b, tolerance)


def matches_reference(update: np.ndarray, reference: np.ndarray, tolerance: float) -> bool:
    """A result against the coordinator's own computation: always by distance, since the
    coordinator's BLAS and thread count may differ from the worker's."""
    return update.shape == reference.shape and relative_distance(update, reference) <= tolerance


def record_agreement(trust: Trust) -> None:
    trust.streak += 1
    trust.reputation = min(1.0, trust.reputation + 0.1)


def record_proven_wrong(trust: Trust, policy: VerificationPolicy) -> None:
    """A proven-wrong result drops trust to zero; `ban_after` of them ban the worker."""
    trust.streak = 0
    trust.reputation = 0.0
    trust.proven_wrong += 1
    if trust.proven_wrong >= policy.ban_after:
        trust.banned = True
