"""Misbehaviours: each one's output without a network, then a real WorkerAgent misbehaving against
a real coordinator, refused with the right reason code."""
from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protos import signing
from protos.codec import decode_tensor, encode_tensor, sha256_hex
from tests.conftest import small_spec
from worker import behaviors
from worker.agent import WorkerAgent
from worker.behaviors import Behavior, Misbehavior

HONEST = np.linspace(-1.0, 1.0, 250, dtype=np.float32)
ROUND = np.stack([HONEST * s for s in (0.5, 1.0, 1.5, 2.0)])  # four shards' honest updates
# These tests are about the protocol checks: replication would hold honest results as pending.
NO_REPLICATION = "[verification]\nenabled = false\n"
FIXED_PROFILE = {"cores": 2, "memory_bytes": 1 << 30, "gflops": 10.0, "device_class": "cpu",
                 "bandwidth_mbps": 0.0, "profile_name": ""}


def reported(behavior: Behavior, honest=HONEST, seed: int = 0) -> np.ndarray:
    bad = Misbehavior(behavior, seed=seed)
    bad.start_task()
    return bad.update(honest, lambda: ROUND)


def envelope(behavior: Behavior, payload: bytes = encode_tensor(HONEST)) -> behaviors.Envelope:
    bad = Misbehavior(behavior, seed=0)
    bad.start_task()
    return bad.envelope(encode_tensor(bad.update(decode_tensor(payload))))


# ---------------------------------------------------------------- update attacks, no network

def test_registry_covers_every_behavior():
    """Each behaviour is honest, an update attack, a protocol attack or the replay, and is documented."""
    handled = {Behavior.HONEST, Behavior.REPLAY, *behaviors.UPDATE_ATTACKS, *behaviors.PROTOCOL_ATTACKS}
    assert handled == set(Behavior)
    assert not set(behaviors.UPDATE_ATTACKS) & set(behaviors.PROTOCOL_ATTACKS)
    assert set(behaviors.SUMMARIES) == set(Behavior)


def test_honest_passes_the_update_and_payload_through():
    """honest changes nothing: same update, same bytes, the worker's own key."""
    assert reported(Behavior.HONEST) is HONEST
    env = envelope(Behavior.HONEST)
    assert env.vouched_payload == env.sent_payload == encode_tensor(HONEST)
    assert env.signing_key is None


def test_sign_flip_scales_and_negates():
    """sign-flip reports -k times the honest update."""
    np.testing.assert_allclose(reported(Behavior.SIGN_FLIP), -behaviors.SIGN_FLIP_SCALE * HONEST)


def test_gaussian_noise_is_large_seeded_and_unrelated_to_the_update():
    """gaussian-noise: shape kept, spread about sigma, repeatable per seed, different across seeds."""
    noise = reported(Behavior.GAUSSIAN_NOISE, honest=np.zeros(20000, np.float32))
    assert noise.shape == (20000,) and noise.dtype == np.float32
    assert abs(noise.std() / behaviors.NOISE_SIGMA - 1.0) < 0.05
    np.testing.assert_array_equal(noise, reported(Behavior.GAUSSIAN_NOISE, np.zeros(20000, np.float32)))
    assert not np.array_equal(noise, reported(Behavior.GAUSSIAN_NOISE, np.zeros(20000, np.float32), 1))


def test_alie_is_mean_minus_z_std_of_the_round():
    """alie reports mu - z*sigma of the round's honest updates, coordinate-wise."""
    expected = ROUND.mean(axis=0) - behaviors.ALIE_Z * ROUND.std(axis=0)
    np.testing.assert_allclose(reported(Behavior.ALIE), expected, rtol=1e-6)


def test_ipm_points_against_the_honest_mean():
    """ipm reports -eps*mu: a negative inner product with the true mean gradient."""
    mean = ROUND.mean(axis=0)
    update = reported(Behavior.IPM)
    np.testing.assert_allclose(update, -behaviors.IPM_EPSILON * mean, rtol=1e-6)
    assert float(update @ mean) < 0


def test_lazy_returns_zeros_then_the_previous_tasks_update():
    """lazy costs nothing: zeros at first, then always the stale update of the task before."""
    lazy = Misbehavior(Behavior.LAZY)
    first, second = HONEST, HONEST[::-1].copy()
    lazy.start_task()
    assert not lazy.update(first).any()
    lazy.start_task()
    np.testing.assert_array_equal(lazy.update(second), first)


def test_random_garbage_is_huge_and_bounded():
    """random-garbage: uniform values of magnitude up to GARBAGE_MAGNITUDE."""
    garbage = reported(Behavior.RANDOM_GARBAGE)
    assert garbage.shape == HONEST.shape
    assert np.abs(garbage).max() > behaviors.GARBAGE_MAGNITUDE / 10
    assert np.abs(garbage).max() <= behaviors.GARBAGE_MAGNITUDE


def test_nan_poisons_a_stride_and_keeps_the_rest():
    """nan: NaN on every NAN_STRIDE-th coordinate, honest elsewhere."""
    poisoned = reported(Behavior.NAN)
    nan_at = np.flatnonzero(np.isnan(poisoned))
    np.testing.assert_array_equal(nan_at, np.arange(0, HONEST.size, behaviors.NAN_STRIDE))
    keep = ~np.isnan(poisoned)
    np.testing.assert_array_equal(poisoned[keep], HONEST[keep])
    assert not np.isnan(HONEST).any()  # the caller's array is untouched


def test_attack_after_stays_honest_first():
    """--attack-after N: N honest tasks, then the attack on every task."""
    bad = Misbehavior(Behavior.SIGN_FLIP, attack_after=2)
    outputs = []
    for _ in range(4):
        bad.start_task()
        outputs.append(bad.update(HONEST))
    assert [np.array_equal(o, HONEST) for o in outputs] == [True, True, False, False]


# ---------------------------------------------------------------- protocol attacks, no network

def test_forged_signature_uses_a_key_the_worker_does_not_own():
    """forged-signature signs with another key: the signature fails under the worker's key."""
    env = envelope(Behavior.FORGED_SIGNATURE)
    assert env.signing_key is not None and env.vouched_payload == env.sent_payload
    worker_key = Ed25519PrivateKey.generate()
    message = b"result digest"
    assert not signing.verify(signing.public_bytes(worker_key), env.signing_key.sign(message), message)


def test_wrong_shape_is_one_value_short_but_consistently_signed():
    """wrong-shape: one float32 fewer, with hash and signature matching the short payload."""
    env = envelope(Behavior.WRONG_SHAPE)
    assert len(env.sent_payload) == len(encode_tensor(HONEST)) - 4
    assert env.vouched_payload == env.sent_payload and env.signing_key is None


def test_tampered_payload_differs_from_what_was_signed():
    """tampered-payload: same length, different bytes from the vouched (signed) payload."""
    env = envelope(Behavior.TAMPERED_PAYLOAD)
    assert len(env.sent_payload) == len(env.vouched_payload)
    assert sha256_hex(env.sent_payload) != sha256_hex(env.vouched_payload)
    assert env.vouched_payload == encode_tensor(HONEST)


def test_only_replay_replays():
    """The agent re-sends accepted results for replay only."""
    for behavior in Behavior:
        bad = Misbehavior(behavior)
        bad.start_task()
        assert bad.replays == (behavior is Behavior.REPLAY)


# ---------------------------------------------------------------- against a real coordinator

@contextlib.contextmanager
def running_agent(address: str, key_path, **kwargs):
    agent = WorkerAgent(address, key_path, dict(FIXED_PROFILE), **kwargs)
    thread = threading.Thread(target=agent.run, name="agent", daemon=True)
    thread.start()
    try:
        yield agent
    finally:
        agent.close()
        thread.join(timeout=15)
        assert not thread.is_alive(), "the agent did not stop"


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


REFUSED = {
    "forged-signature": "bad_signature",
    "tampered-payload": "payload_hash",
    "wrong-shape": "wrong_shape",
    "nan": "non_finite",
    "replay": "replayed_lease",
}


@pytest.mark.parametrize("behavior", sorted(REFUSED))
def test_coordinator_refuses_misbehaving_agent(coordinator, client, tmp_path, behavior):
    """A real agent with --behavior NAME is refused with that behaviour's reason code."""
    job = client.submit(small_spec(rounds=50, shards=2, extra=NO_REPLICATION))
    label = REFUSED[behavior]
    with running_agent(coordinator.address, tmp_path / "w.key",
                       misbehavior=Misbehavior(behavior, seed=3)):
        figures = wait_for(lambda: (f := client.get(job))["rejected_by_reason"].get(label) and f)
    assert set(figures["rejected_by_reason"]) == {label}
    # A replayer's first sending is honest and accepted; every other attack earns nothing.
    assert (figures["results_accepted"] > 0) == (behavior == "replay")


def test_update_attack_passes_protocol_checks(coordinator, client, tmp_path):
    """A sign-flipped update is authentic: only verification or robust aggregation can stop it."""
    job = client.submit(small_spec(rounds=2, shards=2, extra=NO_REPLICATION))
    with running_agent(coordinator.address, tmp_path / "w.key", max_tasks=2,
                       misbehavior=Misbehavior("sign-flip", seed=0)):
        figures = wait_for(lambda: (f := client.get(job))["results_accepted"] >= 2 and f)
    assert figures["rejected_by_reason"] == {}
