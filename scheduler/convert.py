"""The one place where coordinator values become protobuf messages and back."""
from __future__ import annotations

from protos import shardgrid_pb2 as pb
from protos.signing import PROFILE_DEFAULTS
from scheduler.leasing import LeaseGrant
from scheduler.submission import Submission

PROFILE_FIELDS = tuple(PROFILE_DEFAULTS)


def profile_to_dict(profile: pb.HardwareProfile) -> dict:
    return {name: getattr(profile, name) for name in PROFILE_FIELDS}


def profile_from_dict(values: dict) -> pb.HardwareProfile:
    return pb.HardwareProfile(**{k: v for k, v in values.items() if k in PROFILE_FIELDS})


def lease_to_pb(grant: LeaseGrant) -> pb.TaskLease:
    lease = grant.lease
    return pb.TaskLease(lease_id=lease.lease_id, job_id=lease.job_id, round=lease.round,
                        shard=lease.shard, params_digest=grant.params_digest,
                        params_size=grant.params_size, workload_json=grant.workload_json,
                        deadline_ms=int(lease.deadline * 1000),
                        coordinator_signature=grant.signature)


def submission_from_pb(header: pb.ResultHeader) -> Submission:
    return Submission(
        worker_id=header.worker_id, token=header.session_token,
        protocol_version=header.protocol_version, job_id=header.job_id, round=header.round,
        shard=header.shard, lease_id=header.lease_id, params_digest=header.params_digest,
        payload_digest=header.payload_digest, payload_size=header.payload_size,
        encoding=header.encoding, metrics={m.name: m.value for m in header.metrics},
        signature=header.signature)


def metrics_to_pb(values: dict[str, float]) -> list[pb.Metric]:
    return [pb.Metric(name=k, value=float(v)) for k, v in sorted(values.items())]


def job_info_to_pb(figures: dict) -> pb.JobInfo:
    plain = {k: v for k, v in figures.items() if k not in ("rejected_by_reason", "extra")}
    return pb.JobInfo(**plain, rejected_by_reason=metrics_to_pb(figures["rejected_by_reason"]),
                      extra=metrics_to_pb(figures.get("extra", {})))


def job_info_to_dict(info: pb.JobInfo) -> dict:
    return {
        "job_id": info.job_id, "name": info.name, "status": info.status, "round": info.round,
        "rounds_total": info.rounds_total, "final_loss": info.final_loss,
        "final_accuracy": info.final_accuracy, "wall_s": info.wall_s,
        "results_accepted": info.results_accepted, "results_rejected": info.results_rejected,
        "rejected_by_reason": {m.name: int(m.value) for m in info.rejected_by_reason},
        "waiting_for": info.waiting_for, "error": info.error, "workers": info.workers,
        **{m.name: m.value for m in info.extra},
    }


def worker_info_to_pb(figures: dict) -> pb.WorkerInfo:
    return pb.WorkerInfo(**{**figures, "profile": profile_from_dict(figures["profile"])})


def worker_info_to_dict(info: pb.WorkerInfo) -> dict:
    return {
        "worker_id": info.worker_id, "profile": profile_to_dict(info.profile),
        "last_seen_s": info.last_seen_s, "online": info.online, "reputation": info.reputation,
        "banned": info.banned, "shards_accepted": info.shards_accepted, "samples": info.samples,
        "flops": info.flops, "credits": info.credits, "observed_gflops": info.observed_gflops,
    }
