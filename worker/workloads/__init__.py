"""Workloads: datasets, models and the pure shard computation shared by workers, the coordinator
(evaluation and spot checks) and the centralized Ray baseline."""
from .datasets import DATASETS, Dataset, load_dataset
from .models import MODELS, Layout, evaluate, init_params, layout_for, loss_and_grad
from .task import (MODES, ShardUpdate, WorkloadConfig, compute_update, evaluate_params, minibatch,
                   shard_indices)

__all__ = [
    "DATASETS", "MODELS", "MODES", "Dataset", "Layout", "ShardUpdate", "WorkloadConfig",
    "compute_update", "evaluate", "evaluate_params", "init_params", "layout_for", "load_dataset",
    "loss_and_grad", "minibatch", "shard_indices",
]
