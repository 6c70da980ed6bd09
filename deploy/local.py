"""A local cluster: one coordinator and N workers, each started as a fresh process (never forked).

Children get SIGTERM when the launcher dies (PR_SET_PDEATHSIG), so a killed launcher leaves no
orphans; `stop()` terminates them all and waits.
"""
from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LISTENING = re.compile(r"listening on (\S+:\d+)")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Several processes share the cores: one BLAS thread each avoids oversubscription.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def shardgrid_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "shardgrid", *args]


class ClusterError(RuntimeError):
    pass


class LocalCluster:
    def __init__(self, workers: int = 4, workdir: str | Path | None = None,
                 worker_args: list[str] | None = None, port: int = 0,
                 coordinator_args: list[str] | None = None,
                 fleet: list[list[str]] | None = None):
        """`fleet`, when given, starts one worker per entry with those extra arguments (see
        deploy/mix.py) instead of `workers` identical ones."""
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="shardgrid-")
        self.workdir = Path(workdir or self._tmp.name)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        (self.workdir / "keys").mkdir(exist_ok=True)
        self.fleet = fleet if fleet is not None else [[] for _ in range(workers)]
        self.worker_args = list(worker_args or [])
        self.coordinator_args = list(coordinator_args or [])
        self.port = port
        self.address = ""
        self.coordinator: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self._started = 0

    @property
    def db_path(self) -> Path:
        return self.workdir / "state.db"

    def _spawn(self, args: list[str], log_name: str,
               extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.workdir / "logs" / log_name, "ab")
        env = {**child_env(), **(extra_env or {})}
        try:
            return subprocess.Popen(shardgrid_command(*args), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env,
                                    preexec_fn=_die_with_parent)
        finally:
            log.close()

    def start_coordinator(self, timeout: float = 60.0,
                          extra_env: dict[str, str] | None = None) -> str:
        """Start (or restart, on the same address and database) the coordinator; `extra_env`
        reaches only this process, e.g. SHARDGRID_FAULT for one run in a durability test."""
        log_path = self.workdir / "logs" / "coordinator.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        port = self.port or (int(self.address.rsplit(":", 1)[1]) if self.address else 0)
        self.coordinator = self._spawn(["coordinator", "--port", str(port), "--db",
                                        str(self.db_path), *self.coordinator_args],
                                       "coordinator.log", extra_env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(log_path, "rb") as fh:
                fh.seek(offset)
                match = LISTENING.search(fh.read().decode(errors="replace"))
            if match:
                self.address = match.group(1)
                return self.address
            if self.coordinator.poll() is not None:
                raise ClusterError(f"coordinator exited with {self.coordinator.returncode}; "
                                   f"see {log_path}")
            time.sleep(0.05)
        raise ClusterError(f"coordinator did not start within {timeout:.0f}s; see {log_path}")

    def add_worker(self, extra_args: list[str] | None = None) -> subprocess.Popen:
        index = self._started
        self._started += 1
        key = self.workdir / "keys" / f"worker-{index}.key"
        proc = self._spawn(["worker", "--coordinator", self.address, "--key", str(key),
                            *self.worker_args, *(extra_args or [])], f"worker-{index}.log")
        self.workers.append(proc)
        return proc

    def start(self) -> "LocalCluster":
        self.start_coordinator()
        for extra_args in self.fleet:
            self.add_worker(extra_args)
        return self

    def kill_worker(self, index: int, sig: int = signal.SIGKILL) -> None:
        proc = self.workers[index]
        if proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=10)

    def kill_coordinator(self, sig: int = signal.SIGKILL) -> None:
        if self.coordinator and self.coordinator.poll() is None:
            self.coordinator.send_signal(sig)
            self.coordinator.wait(timeout=30)

    def alive_workers(self) -> list[int]:
        return [i for i, proc in enumerate(self.workers) if proc.poll() is None]

    def stop(self, timeout: float = 10.0) -> None:
        procs = [p for p in [*self.workers, self.coordinator] if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "LocalCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
