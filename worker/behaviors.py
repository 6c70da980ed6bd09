"""Misbehaviour for tests and benchmarks: the ways a worker can lie, as an explicit registry.

These are test instruments. A real volunteer runs `honest`; the others let the coordinator's
verification, reputation and robust aggregation be exercised against known attacks.

Two layers are attacked, and the agent offers a hook for each:

- the *update* (what the gradient says): the agent routes the honest update through
  `Misbehavior.update` before encoding and signing, so the result is authentic but wrong. Only
  replication, spot checks and robust aggregation can catch these.
- the *protocol* (what the envelope says): `Misbehavior.envelope` decides which payload the
  header vouches for, which bytes are sent and which key signs; `replays` asks the agent to send
  an accepted result a second time. The coordinator's checks refuse these with a typed code.

Update attacks, with d the model size and g the worker's honest update:

- sign-flip       -k g (k = SIGN_FLIP_SCALE): pushes the model uphill.
- gaussian-noise  N(0, sigma^2) per coordinate, sigma = NOISE_SIGMA: replaces signal with noise.
- alie            mu - z sigma per coordinate ("A little is enough", Baruch et al. 2019), where mu,
                  sigma are the coordinate mean and standard deviation of the round's honest
                  updates. A worker cannot see other workers' updates, so it recomputes every shard
                  of the round itself from the same parameters: small enough to hide among honest
                  updates, consistent enough across attackers to shift a median.
- ipm             -eps mu (inner product manipulation, Xie et al. 2019), mu estimated as for alie:
                  flips the sign of the aggregate's inner product with the true gradient.
- lazy            the previous task's honest update (a stale gradient), zeros on the first task:
                  free-riding that costs nothing to compute.
- random-garbage  uniform noise of magnitude GARBAGE_MAGNITUDE.
- nan             g with every NAN_STRIDE-th coordinate (starting at 0) set to NaN.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SIGN_FLIP_SCALE = 4.0
NOISE_SIGMA = 100.0
ALIE_Z = 1.0
IPM_EPSILON = 0.5
GARBAGE_MAGNITUDE = 1e6
NAN_STRIDE = 100


class Behavior(str, Enum):
    HONEST = "honest"
    SIGN_FLIP = "sign-flip"
    GAUSSIAN_NOISE = "gaussian-noise"
    ALIE = "alie"
    IPM = "ipm"
    LAZY = "lazy"
    RANDOM_GARBAGE = "random-garbage"
    NAN = "nan"
    FORGED_SIGNATURE = "forged-signature"
    REPLAY = "replay"
    WRONG_SHAPE = "wrong-shape"
    TAMPERED_PAYLOAD = "tampered-payload"


@dataclass(frozen=True)
class TaskView:
    """What an update attack may look at for one task."""

    honest: np.ndarray                       # this worker's honest update, float32 (d,)
    round_updates: Callable[[], np.ndarray]  # honest updates of every shard of the round, (n, d);
    #                                          a callable because only alie and ipm pay for it
    previous: np.ndarray | None              # the honest update of this worker's previous task
    rng: np.random.Generator


def _sign_flip(view: TaskView) -> np.ndarray:
    return -SIGN_FLIP_SCALE * view.honest


def _gaussian_noise(view: TaskView) -> np.ndarray:
    return view.rng.normal(0.0, NOISE_SIGMA, view.honest.shape)


def _alie(view: TaskView) -> np.ndarray:
    updates = view.round_updates()
    return updates.mean(axis=0) - ALIE_Z * updates.std(axis=0)


def _ipm(view: TaskView) -> np.ndarray:
    return -IPM_EPSILON * view.round_updates().mean(axis=0)


def _lazy(view: TaskView) -> np.ndarray:
    if view.previous is None or view.previous.shape != view.honest.shape:
        return np.zeros_like(view.honest)
    return view.previous


def _random_garbage(view: TaskView) -> np.ndarray:
    return view.rng.uniform(-GARBAGE_MAGNITUDE, GARBAGE_MAGNITUDE, view.honest.shape)


def _nan(view: TaskView) -> np.ndarray:
    poisoned = view.honest.copy()
    poisoned[::NAN_STRIDE] = np.nan
    return poisoned


UPDATE_ATTACKS: dict[Behavior, Callable[[TaskView], np.ndarray]] = {
    Behavior.SIGN_FLIP: _sign_flip,
    Behavior.GAUSSIAN_NOISE: _gaussian_noise,
    Behavior.ALIE: _alie,
    Behavior.IPM: _ipm,
    Behavior.LAZY: _lazy,
    Behavior.RANDOM_GARBAGE: _random_garbage,
    Behavior.NAN: _nan,
}


@dataclass(frozen=True)
class Envelope:
    """One result on the wire: the payload the header vouches for (its hash and size are signed),
    the bytes actually streamed, and the key that signs (None: the worker's registered key)."""

    vouched_payload: bytes
    sent_payload: bytes
    signing_key: Ed25519PrivateKey | None = None


def _forged_signature(payload: bytes, rng: np.random.Generator) -> Envelope:
    # A valid Ed25519 signature, by a key the coordinator never registered for this worker.
    impostor = Ed25519PrivateKey.from_private_bytes(rng.bytes(32))
    return Envelope(payload, payload, impostor)


def _wrong_shape(payload: bytes, rng: np.random.Generator) -> Envelope:
    # One float32 short, signed and hashed correctly: only the length check can refuse it.
    short = payload[:-4]
    return Envelope(short, short)


def _tampered_payload(payload: bytes, rng: np.random.Generator) -> Envelope:
    # The signature covers the honest bytes; one value is changed in transit afterwards.
    tampered = bytearray(payload)
    position = int(rng.integers(0, max(1, len(payload) // 4))) * 4
    tampered[position:position + 4] = np.float32(12345.0).tobytes()
    return Envelope(payload, bytes(tampered))


PROTOCOL_ATTACKS: dict[Behavior, Callable[[bytes, np.random.Generator], Envelope]] = {
    Behavior.FORGED_SIGNATURE: _forged_signature,
    Behavior.WRONG_SHAPE: _wrong_shape,
    Behavior.TAMPERED_PAYLOAD: _tampered_payload,
}

SUMMARIES: dict[Behavior, str] = {
    Behavior.HONEST: "the honest computation (default)",
    Behavior.SIGN_FLIP: f"update times -{SIGN_FLIP_SCALE:g}",
    Behavior.GAUSSIAN_NOISE: f"update replaced by N(0, {NOISE_SIGMA:g}^2) noise",
    Behavior.ALIE: f"'a little is enough': mean - {ALIE_Z:g} std of the round's honest updates",
    Behavior.IPM: f"inner product manipulation: -{IPM_EPSILON:g} x mean of honest updates",
    Behavior.LAZY: "previous task's update (stale), zeros at first",
    Behavior.RANDOM_GARBAGE: f"uniform noise of magnitude {GARBAGE_MAGNITUDE:g}",
    Behavior.NAN: f"honest update with every {NAN_STRIDE}th value NaN",
    Behavior.FORGED_SIGNATURE: "signs with a key other than the registered one",
    Behavior.REPLAY: "sends every accepted result a second time, same lease id",
    Behavior.WRONG_SHAPE: "payload one value short (correctly hashed and signed)",
    Behavior.TAMPERED_PAYLOAD: "payload altered after signing",
}

NAMES = tuple(b.value for b in Behavior)


class Misbehavior:
    """One worker's misbehaviour over its lifetime: honest for the first `attack_after` tasks
    (to earn reputation first), then `behavior` on every task. Seeded, so reruns repeat.

    Per task the agent calls `start_task()`, then `update()`, then `envelope()`, and after an
    accepted result sends it again if `replays`.
    """

    def __init__(self, behavior: Behavior | str = Behavior.HONEST, seed: int = 0,
                 attack_after: int = 0):
        self.behavior = Behavior(behavior)
        if attack_after < 0:
            raise ValueError("attack_after must be >= 0")
        self.attack_after = attack_after
        self.rng = np.random.default_rng(seed)
        self.tasks_started = 0
        self.attacking = False
        self.previous: np.ndarray | None = None

    def start_task(self) -> None:
        self.attacking = (self.behavior is not Behavior.HONEST
                          and self.tasks_started >= self.attack_after)
        self.tasks_started += 1

    @property
    def needs_round_updates(self) -> bool:
        return self.attacking and self.behavior in (Behavior.ALIE, Behavior.IPM)

    def update(self, honest: np.ndarray,
               round_updates: Callable[[], np.ndarray] | None = None) -> np.ndarray:
        """The update to report for this task, given the honest one."""
        attack = UPDATE_ATTACKS.get(self.behavior) if self.attacking else None
        if attack is None:
            reported = honest
        else:
            # Without a way to see the round, the worker's own update is the only sample.
            view = TaskView(honest, round_updates or (lambda: honest[None, :]), self.previous,
                            self.rng)
            reported = np.asarray(attack(view), dtype=np.float32)
        self.previous = honest
        return reported

    def envelope(self, payload: bytes) -> Envelope:
        """How this task's encoded update goes on the wire."""
        attack = PROTOCOL_ATTACKS.get(self.behavior) if self.attacking else None
        return attack(payload, self.rng) if attack else Envelope(payload, payload)

    @property
    def replays(self) -> bool:
        return self.attacking and self.behavior is Behavior.REPLAY
