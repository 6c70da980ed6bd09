from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RejectCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REJECT_NONE: _ClassVar[RejectCode]
    REJECT_MALFORMED: _ClassVar[RejectCode]
    REJECT_BAD_SIGNATURE: _ClassVar[RejectCode]
    REJECT_UNKNOWN_LEASE: _ClassVar[RejectCode]
    REJECT_REPLAYED_LEASE: _ClassVar[RejectCode]
    REJECT_LEASE_EXPIRED: _ClassVar[RejectCode]
    REJECT_STALE_ROUND: _ClassVar[RejectCode]
    REJECT_PARAMS_MISMATCH: _ClassVar[RejectCode]
    REJECT_PAYLOAD_HASH: _ClassVar[RejectCode]
    REJECT_WRONG_SHAPE: _ClassVar[RejectCode]
    REJECT_NON_FINITE: _ClassVar[RejectCode]
    REJECT_DISAGREEMENT: _ClassVar[RejectCode]
    REJECT_BANNED: _ClassVar[RejectCode]
    REJECT_UNKNOWN_WORKER: _ClassVar[RejectCode]
    REJECT_JOB_NOT_RUNNING: _ClassVar[RejectCode]
REJECT_NONE: RejectCode
REJECT_MALFORMED: RejectCode
REJECT_BAD_SIGNATURE: RejectCode
REJECT_UNKNOWN_LEASE: RejectCode
REJECT_REPLAYED_LEASE: RejectCode
REJECT_LEASE_EXPIRED: RejectCode
REJECT_STALE_ROUND: RejectCode
REJECT_PARAMS_MISMATCH: RejectCode
REJECT_PAYLOAD_HASH: RejectCode
REJECT_WRONG_SHAPE: RejectCode
REJECT_NON_FINITE: RejectCode
REJECT_DISAGREEMENT: RejectCode
REJECT_BANNED: RejectCode
REJECT_UNKNOWN_WORKER: RejectCode
REJECT_JOB_NOT_RUNNING: RejectCode

class HardwareProfile(_message.Message):
    __slots__ = ("cores", "memory_bytes", "gflops", "device_class", "bandwidth_mbps", "profile_name")
    CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    GFLOPS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_CLASS_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_MBPS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_NAME_FIELD_NUMBER: _ClassVar[int]
    cores: int
    memory_bytes: int
    gflops: float
    device_class: str
    bandwidth_mbps: float
    profile_name: str
    def __init__(self, cores: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., gflops: _Optional[float] = ..., device_class: _Optional[str] = ..., bandwidth_mbps: _Optional[float] = ..., profile_name: _Optional[str] = ...) -> None: ...

class Metric(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class BlobChunk(_message.Message):
    __slots__ = ("digest", "offset", "total_size", "data")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    digest: str
    offset: int
    total_size: int
    data: bytes
    def __init__(self, digest: _Optional[str] = ..., offset: _Optional[int] = ..., total_size: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("public_key", "profile", "timestamp_ms", "signature", "protocol_version", "worker_version")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKER_VERSION_FIELD_NUMBER: _ClassVar[int]
    public_key: bytes
    profile: HardwareProfile
    timestamp_ms: int
    signature: bytes
    protocol_version: int
    worker_version: str
    def __init__(self, public_key: _Optional[bytes] = ..., profile: _Optional[_Union[HardwareProfile, _Mapping]] = ..., timestamp_ms: _Optional[int] = ..., signature: _Optional[bytes] = ..., protocol_version: _Optional[int] = ..., worker_version: _Optional[str] = ...) -> None: ...

class RegisterReply(_message.Message):
    __slots__ = ("worker_id", "session_token", "coordinator_public_key", "heartbeat_interval_ms")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    session_token: bytes
    coordinator_public_key: bytes
    heartbeat_interval_ms: int
    def __init__(self, worker_id: _Optional[str] = ..., session_token: _Optional[bytes] = ..., coordinator_public_key: _Optional[bytes] = ..., heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("worker_id", "session_token", "active_lease_ids")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    session_token: bytes
    active_lease_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, worker_id: _Optional[str] = ..., session_token: _Optional[bytes] = ..., active_lease_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("cancelled_lease_ids",)
    CANCELLED_LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    cancelled_lease_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cancelled_lease_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class FetchTaskRequest(_message.Message):
    __slots__ = ("worker_id", "session_token", "wait_ms", "finished", "params_held")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    PARAMS_HELD_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    session_token: bytes
    wait_ms: int
    finished: InlineResult
    params_held: str
    def __init__(self, worker_id: _Optional[str] = ..., session_token: _Optional[bytes] = ..., wait_ms: _Optional[int] = ..., finished: _Optional[_Union[InlineResult, _Mapping]] = ..., params_held: _Optional[str] = ...) -> None: ...

class InlineResult(_message.Message):
    __slots__ = ("header", "payload")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    header: ResultHeader
    payload: bytes
    def __init__(self, header: _Optional[_Union[ResultHeader, _Mapping]] = ..., payload: _Optional[bytes] = ...) -> None: ...

class TaskLease(_message.Message):
    __slots__ = ("lease_id", "job_id", "round", "shard", "params_digest", "params_size", "workload_json", "deadline_ms", "coordinator_signature")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    PARAMS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PARAMS_SIZE_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    job_id: str
    round: int
    shard: int
    params_digest: str
    params_size: int
    workload_json: str
    deadline_ms: int
    coordinator_signature: bytes
    def __init__(self, lease_id: _Optional[str] = ..., job_id: _Optional[str] = ..., round: _Optional[int] = ..., shard: _Optional[int] = ..., params_digest: _Optional[str] = ..., params_size: _Optional[int] = ..., workload_json: _Optional[str] = ..., deadline_ms: _Optional[int] = ..., coordinator_signature: _Optional[bytes] = ...) -> None: ...

class FetchTaskReply(_message.Message):
    __slots__ = ("has_task", "lease", "finished", "params", "waited_s")
    HAS_TASK_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    WAITED_S_FIELD_NUMBER: _ClassVar[int]
    has_task: bool
    lease: TaskLease
    finished: SubmitReply
    params: bytes
    waited_s: float
    def __init__(self, has_task: _Optional[bool] = ..., lease: _Optional[_Union[TaskLease, _Mapping]] = ..., finished: _Optional[_Union[SubmitReply, _Mapping]] = ..., params: _Optional[bytes] = ..., waited_s: _Optional[float] = ...) -> None: ...

class FetchBlobRequest(_message.Message):
    __slots__ = ("worker_id", "session_token", "digest")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    session_token: bytes
    digest: str
    def __init__(self, worker_id: _Optional[str] = ..., session_token: _Optional[bytes] = ..., digest: _Optional[str] = ...) -> None: ...

class ResultHeader(_message.Message):
    __slots__ = ("worker_id", "session_token", "protocol_version", "job_id", "round", "shard", "lease_id", "params_digest", "payload_digest", "payload_size", "encoding", "metrics", "signature")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SIZE_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    session_token: bytes
    protocol_version: int
    job_id: str
    round: int
    shard: int
    lease_id: str
    params_digest: str
    payload_digest: str
    payload_size: int
    encoding: str
    metrics: _containers.RepeatedCompositeFieldContainer[Metric]
    signature: bytes
    def __init__(self, worker_id: _Optional[str] = ..., session_token: _Optional[bytes] = ..., protocol_version: _Optional[int] = ..., job_id: _Optional[str] = ..., round: _Optional[int] = ..., shard: _Optional[int] = ..., lease_id: _Optional[str] = ..., params_digest: _Optional[str] = ..., payload_digest: _Optional[str] = ..., payload_size: _Optional[int] = ..., encoding: _Optional[str] = ..., metrics: _Optional[_Iterable[_Union[Metric, _Mapping]]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ResultChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: ResultHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[ResultHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ("accepted", "code", "message", "receipt", "credits")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    code: RejectCode
    message: str
    receipt: bytes
    credits: float
    def __init__(self, accepted: _Optional[bool] = ..., code: _Optional[_Union[RejectCode, str]] = ..., message: _Optional[str] = ..., receipt: _Optional[bytes] = ..., credits: _Optional[float] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec_toml",)
    SPEC_TOML_FIELD_NUMBER: _ClassVar[int]
    spec_toml: str
    def __init__(self, spec_toml: _Optional[str] = ...) -> None: ...

class JobRef(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class RoundSummary(_message.Message):
    __slots__ = ("round", "loss", "accuracy", "updates", "wall_s")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    WALL_S_FIELD_NUMBER: _ClassVar[int]
    round: int
    loss: float
    accuracy: float
    updates: int
    wall_s: float
    def __init__(self, round: _Optional[int] = ..., loss: _Optional[float] = ..., accuracy: _Optional[float] = ..., updates: _Optional[int] = ..., wall_s: _Optional[float] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("job_id", "name", "status", "round", "rounds_total", "final_loss", "final_accuracy", "wall_s", "results_accepted", "results_rejected", "rejected_by_reason", "waiting_for", "error", "workers", "extra", "spec_toml")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FINAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    FINAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    WALL_S_FIELD_NUMBER: _ClassVar[int]
    RESULTS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    SPEC_TOML_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    name: str
    status: str
    round: int
    rounds_total: int
    final_loss: float
    final_accuracy: float
    wall_s: float
    results_accepted: int
    results_rejected: int
    rejected_by_reason: _containers.RepeatedCompositeFieldContainer[Metric]
    waiting_for: str
    error: str
    workers: int
    extra: _containers.RepeatedCompositeFieldContainer[Metric]
    spec_toml: str
    def __init__(self, job_id: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[str] = ..., round: _Optional[int] = ..., rounds_total: _Optional[int] = ..., final_loss: _Optional[float] = ..., final_accuracy: _Optional[float] = ..., wall_s: _Optional[float] = ..., results_accepted: _Optional[int] = ..., results_rejected: _Optional[int] = ..., rejected_by_reason: _Optional[_Iterable[_Union[Metric, _Mapping]]] = ..., waiting_for: _Optional[str] = ..., error: _Optional[str] = ..., workers: _Optional[int] = ..., extra: _Optional[_Iterable[_Union[Metric, _Mapping]]] = ..., spec_toml: _Optional[str] = ...) -> None: ...

class JobList(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job", "round")
    JOB_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    job: JobInfo
    round: RoundSummary
    def __init__(self, job: _Optional[_Union[JobInfo, _Mapping]] = ..., round: _Optional[_Union[RoundSummary, _Mapping]] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "profile", "last_seen_s", "online", "reputation", "banned", "shards_accepted", "samples", "flops", "credits", "observed_gflops")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_S_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    REPUTATION_FIELD_NUMBER: _ClassVar[int]
    BANNED_FIELD_NUMBER: _ClassVar[int]
    SHARDS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    FLOPS_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_GFLOPS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    profile: HardwareProfile
    last_seen_s: float
    online: bool
    reputation: float
    banned: bool
    shards_accepted: int
    samples: int
    flops: float
    credits: float
    observed_gflops: float
    def __init__(self, worker_id: _Optional[str] = ..., profile: _Optional[_Union[HardwareProfile, _Mapping]] = ..., last_seen_s: _Optional[float] = ..., online: _Optional[bool] = ..., reputation: _Optional[float] = ..., banned: _Optional[bool] = ..., shards_accepted: _Optional[int] = ..., samples: _Optional[int] = ..., flops: _Optional[float] = ..., credits: _Optional[float] = ..., observed_gflops: _Optional[float] = ...) -> None: ...

class WorkerList(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ...) -> None: ...
