"""JobClient: submit, follow and inspect jobs on a coordinator. Used by the CLI, demo and bench."""
from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import numpy as np

from protos import shardgrid_pb2 as pb
from protos import shardgrid_pb2_grpc as rpc
from protos.codec import GRPC_OPTIONS, decode_tensor, reassemble
from scheduler import convert
from scheduler.jobs import TERMINAL


class ClientError(RuntimeError):
    """A call the coordinator refused or could not answer; the message says why in plain words."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.code = code


def _translate(exc: grpc.RpcError, address: str) -> ClientError:
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return ClientError(f"no coordinator reachable at {address}", code)
    return ClientError(exc.details() or str(code), code)


class JobClient:
    def __init__(self, address: str, timeout: float = 15.0):
        self.address = address
        self.timeout = timeout
        self.channel = grpc.insecure_channel(address, options=GRPC_OPTIONS)
        self.stub = rpc.JobServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "JobClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout, wait_for_ready=False)
        except grpc.RpcError as exc:
            raise _translate(exc, self.address) from None

    def submit(self, spec_toml: str) -> str:
        return self._call(self.stub.SubmitJob, pb.SubmitJobRequest(spec_toml=spec_toml)).job_id

    def get(self, job_id: str) -> dict:
        return convert.job_info_to_dict(self._call(self.stub.GetJob, pb.JobRef(job_id=job_id)))

    def list(self) -> list[dict]:
        reply = self._call(self.stub.ListJobs, pb.ListJobsRequest())
        return [convert.job_info_to_dict(info) for info in reply.jobs]

    def cancel(self, job_id: str) -> dict:
        return convert.job_info_to_dict(self._call(self.stub.CancelJob, pb.JobRef(job_id=job_id)))

    def workers(self) -> list[dict]:
        reply = self._call(self.stub.ListWorkers, pb.ListWorkersRequest())
        return [convert.worker_info_to_dict(info) for info in reply.workers]

    def model(self, job_id: str) -> np.ndarray:
        try:
            chunks = list(self.stub.GetModel(pb.JobRef(job_id=job_id), timeout=self.timeout))
        except grpc.RpcError as exc:
            raise _translate(exc, self.address) from None
        data = reassemble(((c.offset, c.total_size, c.data) for c in chunks), chunks[0].digest)
        return decode_tensor(data)

    def watch(self, job_id: str, reconnect_s: float = 60.0) -> Iterator[dict]:
        """Progress events until the job ends: {"job": {...}, "round": {...} or None}.

        A coordinator that goes away (restart, crash) is waited for up to `reconnect_s`."""
        seen_round = -1
        lost_since = None
        while True:
            try:
                for event in self.stub.WatchJob(pb.JobRef(job_id=job_id)):
                    lost_since = None
                    job = convert.job_info_to_dict(event.job)
                    summary = None
                    if event.HasField("round") and event.round.round > seen_round:
                        seen_round = event.round.round
                        summary = {"round": event.round.round, "loss": event.round.loss,
                                   "accuracy": event.round.accuracy, "updates": event.round.updates,
                                   "wall_s": event.round.wall_s}
                    yield {"job": job, "round": summary}
                    # Rounds that closed together arrive as one event each, all carrying the
                    # job's latest figures: the end is the event of the last round (or none).
                    last_round = int(job.get("round", 0)) - 1
                    if job["status"] in TERMINAL and (summary is None
                                                      or summary["round"] >= last_round):
                        return
                return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise _translate(exc, self.address) from None
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > reconnect_s:
                    raise _translate(exc, self.address) from None
                time.sleep(0.5)

    def wait(self, job_id: str, reconnect_s: float = 60.0) -> dict:
        last = None
        for event in self.watch(job_id, reconnect_s):
            last = event["job"]
        return last if last is not None else self.get(job_id)
