"""gRPC servicers: validate the message, call the coordinator core, map errors. Nothing else."""
from __future__ import annotations

import logging
from collections.abc import Iterator

from protos import shardgrid_pb2 as pb
from protos import shardgrid_pb2_grpc as rpc
from protos.codec import CHUNK_BYTES, iter_chunks
from scheduler import convert, figures
from scheduler.core import Coordinator
from scheduler.errors import GatewayError, Reject, rpc_errors, wire_code
from scheduler.jobs import TERMINAL

log = logging.getLogger("shardgrid.coordinator")
MAX_LONG_POLL_S = 30.0


def _blob_stream(digest: str, data: bytes) -> Iterator[pb.BlobChunk]:
    for offset, piece in iter_chunks(data, CHUNK_BYTES):
        yield pb.BlobChunk(digest=digest, offset=offset, total_size=len(data), data=piece)


class WorkerGateway(rpc.WorkerGatewayServicer):
    def __init__(self, coordinator: Coordinator):
        self.co = coordinator

    def Register(self, request, context):
        with rpc_errors(context):
            record = self.co.register(request.public_key, convert.profile_to_dict(request.profile),
                                      request.timestamp_ms, request.signature)
            log.info("worker %s registered (%s)", record.worker_id,
                     request.profile.profile_name or request.profile.device_class)
            return pb.RegisterReply(worker_id=record.worker_id, session_token=record.token,
                                    coordinator_public_key=self.co.public_key,
                                    heartbeat_interval_ms=int(self.co.heartbeat_interval_s * 1000))

    def Heartbeat(self, request, context):
        with rpc_errors(context):
            cancelled = self.co.heartbeat(request.worker_id, request.session_token,
                                          list(request.active_lease_ids))
            return pb.HeartbeatReply(cancelled_lease_ids=cancelled)

    def FetchTask(self, request, context):
        with rpc_errors(context):
            wait_s = min(max(request.wait_ms, 0) / 1000.0, MAX_LONG_POLL_S)
            grant = self.co.fetch_task(request.worker_id, request.session_token, wait_s)
            if grant is None:
                return pb.FetchTaskReply(has_task=False)
            return pb.FetchTaskReply(has_task=True, lease=convert.lease_to_pb(grant))

    def FetchBlob(self, request, context):
        with rpc_errors(context):
            with self.co.lock:
                self.co.authenticate(request.worker_id, request.session_token)
            data = self.co.read_blob(request.digest)
        yield from _blob_stream(request.digest, data)

    def SubmitResult(self, request_iterator, context):
        with rpc_errors(context):
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("part") != "header":
                raise GatewayError(Reject.MALFORMED, "a result stream starts with its header")
            header = first.header
            payload = bytearray()
            for chunk in request_iterator:
                if chunk.WhichOneof("part") != "data":
                    raise GatewayError(Reject.MALFORMED, "only payload chunks may follow the header")
                payload.extend(chunk.data)
                if len(payload) > header.payload_size:
                    break  # longer than announced: the hash check below refuses it
            verdict = self.co.submit_result(convert.submission_from_pb(header), bytes(payload))
            if not verdict.accepted:
                log.info("rejected result from %s: %s", header.worker_id, verdict.message)
            return pb.SubmitReply(accepted=verdict.accepted, code=wire_code(verdict.code),
                                  message=verdict.message, receipt=verdict.receipt,
                                  credits=verdict.credits)


class JobService(rpc.JobServiceServicer):
    def __init__(self, coordinator: Coordinator):
        self.co = coordinator

    def _info(self, job_id: str) -> pb.JobInfo:
        return convert.job_info_to_pb(figures.job_figures(self.co, job_id))

    def SubmitJob(self, request, context):
        with rpc_errors(context):
            job_id = self.co.submit_job(request.spec_toml)
            log.info("job %s submitted", job_id)
            return self._info(job_id)

    def GetJob(self, request, context):
        with rpc_errors(context):
            return self._info(request.job_id)

    def ListJobs(self, request, context):
        with rpc_errors(context):
            with self.co.lock:
                ids = list(self.co.jobs)
            return pb.JobList(jobs=[self._info(job_id) for job_id in ids])

    def CancelJob(self, request, context):
        with rpc_errors(context):
            self.co.cancel_job(request.job_id)
            return self._info(request.job_id)

    def WatchJob(self, request, context):
        with rpc_errors(context):
            self.co.job(request.job_id)  # NOT_FOUND before the stream starts
            version, sent_round = -1, -1
            while context.is_active():
                seen = version
                version = self.co.wait_for_change(request.job_id, version, timeout=1.0)
                if version == seen:
                    continue
                info = self._info(request.job_id)
                # every round closed since the last event gets its own, even if several closed
                rounds = figures.rounds_after(self.co, request.job_id, sent_round) or [None]
                for summary in rounds:
                    event = pb.JobEvent(job=info)
                    if summary is not None:
                        event.round.CopyFrom(pb.RoundSummary(**vars(summary)))
                        sent_round = summary.round
                    yield event
                if info.status in TERMINAL:  # decided on what was sent: no lost last event
                    return

    def GetModel(self, request, context):
        with rpc_errors(context):
            digest, data = self.co.model_bytes(request.job_id)
        yield from _blob_stream(digest, data)

    def ListWorkers(self, request, context):
        with rpc_errors(context):
            return pb.WorkerList(workers=[convert.worker_info_to_pb(w)
                                          for w in figures.worker_figures(self.co)])

