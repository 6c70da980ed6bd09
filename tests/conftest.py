"""Shared fixtures: an in-process coordinator on 127.0.0.1, job specs, and child-process reaping."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "deploy" / "jobs"


def small_spec(rounds: int = 3, shards: int = 2, extra: str = "", **job) -> str:
    """A fast digits job; `extra` appends TOML tables (aggregation, verification...)."""
    job_lines = "\n".join(f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"'
                          for k, v in job.items())
    return f"""
[job]
name = "test-job"
rounds = {rounds}
shards_per_round = {shards}
{job_lines}

[model]
workload = "softmax"

[data]
dataset = "digits"
batch_size = 32

[optimizer]
name = "sgd"
lr = 0.5
{extra}
"""


@pytest.fixture
def coordinator(tmp_path):
    from scheduler.server import CoordinatorServer

    with CoordinatorServer(tmp_path / "state.db", port=0) as server:
        yield server


@pytest.fixture
def client(coordinator):
    from scheduler.client import JobClient

    with JobClient(coordinator.address) as job_client:
        yield job_client


@pytest.fixture(autouse=True)
def reap_children():
    """A test that starts processes must not leave any behind, even when it fails."""
    before = _children()
    yield
    for pid in _children() - before:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _children() -> set[int]:
    me = os.getpid()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # field 4 is the parent pid; the command name in field 2 may contain spaces
        if int(stat.rsplit(")", 1)[1].split()[1]) != me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:  # multiprocessing's, shared by the whole session
            found.add(int(entry.name))
    return found
