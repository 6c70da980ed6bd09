"""One shard task: which samples it owns and the update it produces, as a pure function.

Everything here is deterministic in (config, round, shard, params): a replica on another worker or
the coordinator's spot check recomputes the same update from the same inputs.
"""
from __future__ import annotations

import functools

import json
from dataclasses import asdict, dataclass

import numpy as np

from .datasets import Dataset, load_dataset
from .models import Layout, evaluate, init_params, layout_for, loss_and_grad

MODES = ("sync", "local")


@dataclass(frozen=True)
class WorkloadConfig:
    """The part of a job spec a worker needs to compute a shard; travels in every lease as JSON."""

    model: str = "mlp"
    hidden: tuple[int, ...] = (64,)
    dataset: str = "digits"
    samples: int = 2000
    features: int = 20
    classes: int = 4
    test_fraction: float = 0.2
    seed: int = 0
    shards: int = 4
    batch_size: int = 64
    mode: str = "sync"
    local_steps: int = 1
    local_lr: float = 0.1

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "WorkloadConfig":
        # Every lease carries the same JSON for a whole job: parse it once (the config is frozen).
        return _config_from_json(text)

    def dataset_obj(self) -> Dataset:
        return load_dataset(self.dataset, self.samples, self.features, self.classes,
                            self.test_fraction, self.seed)

    def layout(self) -> Layout:
        data = self.dataset_obj()
        return layout_for(self.model, data.features, data.classes, self.hidden)

    def initial_params(self) -> np.ndarray:
        return init_params(self.layout(), self.seed)

    def flops_per_sample(self) -> float:
        # forward + backward of a dense net: about 6 multiply-adds per parameter per sample
        return 6.0 * self.layout().size


@functools.lru_cache(maxsize=16)
def _config_from_json(text: str) -> WorkloadConfig:
    raw = json.loads(text)
    raw["hidden"] = tuple(raw.get("hidden", ()))
    return WorkloadConfig(**raw)


@functools.lru_cache(maxsize=8)
def _training_order(seed: int, n: int) -> np.ndarray:
    """The seeded shuffle every shard is cut from: computed once per process, not per task."""
    order = np.random.default_rng([seed, 7919]).permutation(n)
    order.flags.writeable = False
    return order


def shard_indices(config: WorkloadConfig, shard: int) -> np.ndarray:
    """Training-set indices owned by `shard`: a seeded, disjoint partition of the training set."""
    return _training_order(config.seed, len(config.dataset_obj().y_train))[shard::config.shards]


def minibatch(config: WorkloadConfig, round_no: int, shard: int, step: int = 0) -> np.ndarray:
    owned = shard_indices(config, shard)
    rng = np.random.default_rng([config.seed, round_no, shard, step])
    take = min(config.batch_size, len(owned))
    return np.sort(rng.choice(owned, size=take, replace=False))


@dataclass(frozen=True)
class ShardUpdate:
    update: np.ndarray  # float32 (d,)
    loss: float
    accuracy: float
    samples: int

    def metrics(self) -> dict[str, float]:
        return {"loss": self.loss, "accuracy": self.accuracy, "samples": float(self.samples)}


def compute_update(config: WorkloadConfig, params: np.ndarray, round_no: int, shard: int) -> ShardUpdate:
    """sync: the gradient of the shard's minibatch. local: H SGD steps, returning the
    pseudo-gradient params_start - params_end (DiLoCo style), so the coordinator's outer optimizer
    treats both modes alike."""
    data = config.dataset_obj()
    layout = config.layout()
    if params.shape != (layout.size,):
        raise ValueError(f"parameters have shape {params.shape}, the model needs ({layout.size},)")
    if config.mode == "sync":
        idx = minibatch(config, round_no, shard)
        loss, acc, grad = loss_and_grad(layout, params, data.x_train[idx], data.y_train[idx])
        return ShardUpdate(grad, loss, acc, len(idx))
    local = params.copy()
    losses, accs, samples = [], [], 0
    for step in range(config.local_steps):
        idx = minibatch(config, round_no, shard, step)
        loss, acc, grad = loss_and_grad(layout, local, data.x_train[idx], data.y_train[idx])
        local -= np.float32(config.local_lr) * grad
        losses.append(loss)
        accs.append(acc)
        samples += len(idx)
    return ShardUpdate((params - local).astype(np.float32), float(np.mean(losses)),
                       float(np.mean(accs)), samples)


def evaluate_params(config: WorkloadConfig, params: np.ndarray) -> tuple[float, float]:
    """(loss, accuracy) on the held-out split."""
    data = config.dataset_obj()
    return evaluate(config.layout(), params, data.x_test, data.y_test)
