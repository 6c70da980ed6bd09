"""Server-side optimizers over the flat parameter vector, with state that can be saved and restored.

The coordinator steps them with the aggregated gradient (sync mode) or pseudo-gradient (local
mode); the Ray baseline uses the very same classes so both systems follow identical maths.
"""
from __future__ import annotations

import numpy as np


class Optimizer:
    """step(params, grad) -> new params; state() / load_state() round-trip through float32 arrays."""

    def __init__(self, name: str, lr: float, momentum: float = 0.9, size: int = 0):
        self.name, self.lr, self.momentum = name, np.float32(lr), np.float32(momentum)
        self.t = 0
        self.m = np.zeros(size, np.float32)
        self.v = np.zeros(size, np.float32)

    def step(self, params: np.ndarray, grad: np.ndarray) -> np.ndarray:
        self.t += 1
        if self.name == "sgd":
            return (params - self.lr * grad).astype(np.float32)
        if self.name == "momentum":
            self.m = self.momentum * self.m + grad
            # Nesterov form: the outer optimizer DiLoCo recommends for pseudo-gradients.
            return (params - self.lr * (grad + self.momentum * self.m)).astype(np.float32)
        if self.name == "adam":
            b1, b2 = np.float32(0.9), np.float32(0.999)
            self.m = b1 * self.m + (1 - b1) * grad
            self.v = b2 * self.v + (1 - b2) * grad * grad
            m_hat = self.m / (1 - b1 ** self.t)
            v_hat = self.v / (1 - b2 ** self.t)
            return (params - self.lr * m_hat / (np.sqrt(v_hat) + np.float32(1e-8))).astype(np.float32)
        raise ValueError(f"unknown optimizer {self.name!r}")

    def state(self) -> np.ndarray:
        """One float32 vector [t, m..., v...]: stored as a blob beside the parameters."""
        return np.concatenate([[np.float32(self.t)], self.m, self.v]).astype(np.float32)

    def load_state(self, state: np.ndarray) -> None:
        size = (len(state) - 1) // 2
        self.t = int(state[0])
        self.m = state[1:1 + size].astype(np.float32).copy()
        self.v = state[1 + size:].astype(np.float32).copy()
