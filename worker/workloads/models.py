"""Models as a flat float32 parameter vector plus pure forward/backward functions.

A flat vector is what travels on the wire and what the aggregation core works on, so the model
never needs another representation: `layout` says how to slice it into weight matrices.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODELS = ("softmax", "mlp")


@dataclass(frozen=True)
class Layout:
    """Shapes of the (weight, bias) pairs, in order, inside the flat parameter vector."""

    sizes: tuple[int, ...]  # input, hidden..., output

    @property
    def shapes(self) -> list[tuple[tuple[int, int], tuple[int]]]:
        return [((a, b), (b,)) for a, b in zip(self.sizes[:-1], self.sizes[1:])]

    @property
    def size(self) -> int:
        return sum(a * b + b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    def unflatten(self, flat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        layers, offset = [], 0
        for (wshape, bshape) in self.shapes:
            w_len = wshape[0] * wshape[1]
            w = flat[offset:offset + w_len].reshape(wshape)
            offset += w_len
            b = flat[offset:offset + bshape[0]]
            offset += bshape[0]
            layers.append((w, b))
        return layers


def layout_for(model: str, features: int, classes: int, hidden: tuple[int, ...] = ()) -> Layout:
    if model == "softmax":
        return Layout((features, classes))
    if model == "mlp":
        if not hidden:
            raise ValueError("model 'mlp' needs at least one hidden layer size")
        return Layout((features, *hidden, classes))
    raise ValueError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")


def init_params(layout: Layout, seed: int) -> np.ndarray:
    """He-initialised weights, zero biases; the same seed gives the same bits everywhere."""
    rng = np.random.default_rng(seed)
    parts = []
    for (fan_in, fan_out), _ in layout.shapes:
        parts.append((rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).ravel())
        parts.append(np.zeros(fan_out))
    return np.concatenate(parts).astype(np.float32)


def _softmax_xent(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probs = exp / exp.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(-np.log(probs[np.arange(n), y] + 1e-12).mean())
    dlogits = probs
    dlogits[np.arange(n), y] -= 1.0
    return loss, dlogits / n


def loss_and_grad(layout: Layout, params: np.ndarray, x: np.ndarray,
                  y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Mean cross-entropy, batch accuracy and the gradient (flat float32) on one batch."""
    layers = layout.unflatten(params)
    activations = [x]
    h = x
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
        activations.append(h)
    logits = activations[-1]
    accuracy = float((logits.argmax(axis=1) == y).mean()) if len(y) else 0.0
    loss, delta = _softmax_xent(logits, y)
    grads: list[np.ndarray] = []
    for i in range(len(layers) - 1, -1, -1):
        w, _ = layers[i]
        a_in = activations[i]
        grads.append(delta.sum(axis=0))
        grads.append((a_in.T @ delta).ravel())
        if i > 0:
            delta = (delta @ w.T) * (activations[i] > 0)
    grads.reverse()
    return loss, accuracy, np.concatenate(grads).astype(np.float32)


def evaluate(layout: Layout, params: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) without the backward pass."""
    h = x
    layers = layout.unflatten(params)
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    shifted = h - h.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(y)), y].mean())
    return loss, float((h.argmax(axis=1) == y).mean())
