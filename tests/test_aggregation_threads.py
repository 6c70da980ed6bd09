"""The threading-layer choice: concurrent callers, fresh processes and forked children.

Each check runs in a freshly started interpreter so that an abort inside numba's
thread pool shows up as a non-zero exit code instead of killing pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CONCURRENT_SCRIPT = textwrap.dedent(
    """
    import threading
    import numpy as np
    from scheduler import aggregation as agg

    CASES = [("mean", {}), ("median", {}), ("trimmed_mean", {"beta": 0.2}), ("krum", {"f": 2}),
             ("bulyan", {"f": 1}), ("centered_clip", {"tau": 1.0})]
    agg.warmup()
    x = np.random.default_rng(0).standard_normal((9, 200_000)).astype(np.float32)
    expected = {rule: agg.aggregate(x, rule, **params) for rule, params in CASES}
    errors = []

    def hammer(offset):
        try:
            for k in range(6):
                rule, params = CASES[(offset + k) % len(CASES)]
                if not np.array_equal(agg.aggregate(x, rule, **params), expected[rule]):
                    errors.append(rule)
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    print(agg.THREADING_LAYER)
    """
)

FORK_SCRIPT = textwrap.dedent(
    """
    import os
    import numpy as np
    from scheduler import aggregation as agg

    x = np.random.default_rng(1).standard_normal((7, 50_000)).astype(np.float32)
    parent = agg.aggregate(x, "median")
    pid = os.fork()
    if pid == 0:
        ok = np.array_equal(agg.aggregate(x, "median"), parent)
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    raise SystemExit(os.waitstatus_to_exitcode(status))
    """
)


def run_fresh(code: str, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra_env}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_tbb_is_the_chosen_layer():
    """Where TBB loads (it is a declared dependency) it is the layer, with no serializing lock."""
    from scheduler.aggregation import _config

    assert _config._tbb_loadable()
    assert _config.THREADING_LAYER == "tbb" and not _config.SERIALIZE_KERNELS


def test_eight_threads_call_aggregate_concurrently():
    """Eight threads aggregating at once neither crash the process nor change results."""
    result = run_fresh(CONCURRENT_SCRIPT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "tbb"


def test_serialized_fallback_survives_concurrent_calls():
    """With the workqueue layer (no TBB) the kernel lock keeps concurrent callers alive."""
    result = run_fresh(CONCURRENT_SCRIPT, SHARDGRID_FORCE_THREADING_LAYER="workqueue")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "workqueue"


def test_fresh_process_can_aggregate():
    """A newly started interpreter loads the cached kernels and aggregates correctly."""
    code = (
        "import numpy as np; from scheduler import aggregation as agg; agg.warmup();"
        "x = np.arange(12, dtype=np.float32).reshape(3, 4);"
        "assert agg.aggregate(x, 'median').tolist() == [4.0, 5.0, 6.0, 7.0]; print('ok')"
    )
    result = run_fresh(code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_can_aggregate_after_parent_did():
    """A child forked after the parent ran parallel kernels can still run them (OpenMP could not)."""
    result = run_fresh(FORK_SCRIPT)
    assert result.returncode == 0, result.stderr[-2000:]
