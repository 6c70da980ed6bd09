"""Datasets a workload trains on, rebuilt identically on every machine from a name and a seed.

Workers never receive training data over the wire: each one rebuilds the dataset locally, so two
replicas of a shard (and the coordinator's spot check) see the very same samples.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

DATASETS = ("digits", "blobs")


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray  # (n, features) float32
    y_train: np.ndarray  # (n,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int

    @property
    def features(self) -> int:
        return self.x_train.shape[1]


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    # A fixed, seeded permutation: the held-out split never depends on the machine or the run.
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


@functools.lru_cache(maxsize=8)
def load_dataset(name: str, samples: int = 2000, features: int = 20, classes: int = 4,
                 test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Build a dataset deterministically. `samples`, `features`, `classes` only apply to `blobs`."""
    if name == "digits":
        from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

        bunch = load_digits()
        x = (bunch.data / 16.0).astype(np.float32)
        y = bunch.target.astype(np.int64)
        n_classes = 10
    elif name == "blobs":
        from sklearn.datasets import make_blobs

        x, y = make_blobs(n_samples=samples, n_features=features, centers=classes,
                          cluster_std=4.0, random_state=seed)
        x = ((x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)).astype(np.float32)
        y = y.astype(np.int64)
        n_classes = classes
    else:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    x_train, y_train, x_test, y_test = _split(x, y, test_fraction, seed)
    for array in (x_train, y_train, x_test, y_test):
        array.setflags(write=False)  # cached and shared: nobody may mutate it
    return Dataset(x_train, y_train, x_test, y_test, n_classes)
