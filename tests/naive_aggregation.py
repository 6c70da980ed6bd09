"""Slow, obvious numpy references for every aggregation rule (float64 throughout).

Written from the definitions, sharing no code with the kernels.
"""

from __future__ import annotations

import math

import numpy as np


def naive_mean(x):
    return x.astype(np.float64).mean(axis=0)


def naive_weighted_mean(x, weights, cap_factor=2.0):
    w = np.asarray(weights, dtype=np.float64)
    cap = cap_factor * np.median(w[w > 0])
    w = np.array([min(v, cap) for v in w])
    w = w / w.sum()
    return (x.astype(np.float64) * w[:, None]).sum(axis=0)


def naive_median(x):
    s = np.sort(x.astype(np.float64), axis=0)
    n = x.shape[0]
    return (s[(n - 1) // 2] + s[n // 2]) / 2


def naive_trim_count(beta, n):
    k = int(math.floor(beta * n))
    return max(k, 1) if beta > 0 else 0


def naive_trimmed_mean(x, beta):
    n = x.shape[0]
    k = naive_trim_count(beta, n)
    s = np.sort(x.astype(np.float64), axis=0)
    return s[k : n - k].mean(axis=0)


def naive_sq_distances(x):
    x = x.astype(np.float64)
    n = x.shape[0]
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            dist[i, j] = ((x[i] - x[j]) ** 2).sum()
    return dist


def naive_krum_scores(dist, candidates, f):
    scores = []
    for i in candidates:
        others = sorted(dist[i, j] for j in candidates if j != i)
        scores.append(sum(others[: max(len(candidates) - f - 2, 1)]))
    return np.array(scores)


def naive_krum(x, f):
    scores = naive_krum_scores(naive_sq_distances(x), list(range(x.shape[0])), f)
    return x[int(np.argmin(scores))].astype(np.float64)


def naive_multi_krum(x, f, m=None):
    m = x.shape[0] - f if m is None else m
    scores = naive_krum_scores(naive_sq_distances(x), list(range(x.shape[0])), f)
    chosen = np.argsort(scores, kind="stable")[:m]
    return x[chosen].astype(np.float64).mean(axis=0)


def naive_bulyan(x, f):
    n = x.shape[0]
    dist = naive_sq_distances(x)
    remaining = list(range(n))
    chosen = []
    while len(chosen) < n - 2 * f:
        scores = naive_krum_scores(dist, remaining, f)
        chosen.append(remaining.pop(int(np.argmin(scores))))
    selected = x[chosen].astype(np.float64)
    theta, keep = len(chosen), len(chosen) - 2 * f
    out = np.empty(x.shape[1])
    for col in range(x.shape[1]):
        values = np.sort(selected[:, col])
        median = (values[(theta - 1) // 2] + values[theta // 2]) / 2
        lo, hi = (theta - 1) // 2, theta // 2
        while hi - lo + 1 < keep:
            low_gap = median - values[lo - 1] if lo > 0 else math.inf
            high_gap = values[hi + 1] - median if hi < theta - 1 else math.inf
            if low_gap <= high_gap:
                lo -= 1
            else:
                hi += 1
        out[col] = values[lo : hi + 1].mean()
    return out


def naive_centered_clip(x, tau, iterations=1, center=None):
    x = x.astype(np.float64)
    v = naive_median(x) if center is None else np.asarray(center, dtype=np.float64)
    for _ in range(iterations):
        total = np.zeros_like(v)
        for row in x:
            norm = np.linalg.norm(row - v)
            total += (row - v) * (min(1.0, tau / norm) if norm > 0 else 1.0)
        v = v + total / len(x)
    return v


def naive_clip_rows(x, clip_norm):
    out = x.copy()
    for i, row in enumerate(x):
        norm = np.sqrt((row.astype(np.float64) ** 2).sum())
        if norm > clip_norm:
            out[i] = row * np.float32(clip_norm / norm)
    return out


NAIVE = {
    "mean": lambda x, **p: naive_mean(x),
    "weighted_mean": lambda x, weights, cap_factor=2.0: naive_weighted_mean(x, weights, cap_factor),
    "median": lambda x: naive_median(x),
    "trimmed_mean": lambda x, beta: naive_trimmed_mean(x, beta),
    "krum": lambda x, f: naive_krum(x, f),
    "multi_krum": lambda x, f, m=None: naive_multi_krum(x, f, m),
    "bulyan": lambda x, f: naive_bulyan(x, f),
    "centered_clip": lambda x, tau, iterations=1, center=None: naive_centered_clip(x, tau, iterations, center),
}
