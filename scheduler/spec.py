"""Job specs: a TOML file parsed into a frozen dataclass, refused field by field before anything runs.

    [job]          name, mode (sync|local), rounds, shards_per_round, target_accuracy, lease_timeout_s,
                   backups
    [model]        workload (softmax|mlp), hidden
    [data]         dataset (digits|blobs), samples, features, classes, test_fraction, seed, batch_size
    [optimizer]    name (sgd|momentum|adam), lr, momentum; local_steps and local_lr for mode=local
    [aggregation]  rule, plus the rule's parameters
    [verification] replication and spot-check policy
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.workloads import DATASETS, MODELS, MODES, WorkloadConfig

OPTIMIZERS = ("sgd", "momentum", "adam")


class SpecError(ValueError):
    """A job spec that cannot run; `field` names the offending key as section.key."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


SECOND_OPINIONS = ("auto", "replica", "coordinator")


@dataclass(frozen=True)
class VerificationPolicy:
    enabled: bool = True             # volunteers are untrusted: verify unless told otherwise
    replicate_until: int = 10        # consecutive agreeing results before a worker is trusted
    spot_check_fraction: float = 0.02  # of unreplicated results, re-executed by the coordinator
    tolerance: float = 1e-4          # relative L2 distance under which two replicas agree
    ban_after: int = 2               # proven-wrong results before a ban
    # Who checks a result the policy wants checked (a newcomer's, a trusted worker's 1/streak):
    # "replica" (a second worker), "coordinator" (its own re-execution) or "auto" (the coordinator
    # for tasks cheap enough to recompute, see verification.CHEAP_TASK_FLOPS; a replica otherwise).
    second_opinion: str = "auto"


@dataclass(frozen=True)
class JobSpec:
    name: str
    workload: WorkloadConfig
    rounds: int = 60
    target_accuracy: float = 0.0     # 0 disables early stop
    lease_timeout_s: float = 30.0
    backups: bool = True             # copy stragglers' shards onto idle, faster workers
    optimizer: str = "adam"
    lr: float = 0.01
    momentum: float = 0.9
    aggregation: dict[str, Any] = field(default_factory=lambda: {"rule": "mean"})
    verification: VerificationPolicy = field(default_factory=VerificationPolicy)

    @property
    def shards(self) -> int:
        return self.workload.shards


_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "job": {"name": str, "mode": str, "rounds": int, "shards_per_round": int,
            "target_accuracy": (int, float), "lease_timeout_s": (int, float), "backups": bool},
    "model": {"workload": str, "hidden": list},
    "data": {"dataset": str, "samples": int, "features": int, "classes": int,
             "test_fraction": (int, float), "seed": int, "batch_size": int},
    "optimizer": {"name": str, "lr": (int, float), "momentum": (int, float),
                  "local_steps": int, "local_lr": (int, float)},
    "verification": {"enabled": bool, "replicate_until": int, "spot_check_fraction": (int, float),
                     "tolerance": (int, float), "ban_after": int, "second_opinion": str},
}
_REQUIRED = {"job": ("name", "rounds", "shards_per_round"), "model": ("workload",),
             "data": ("dataset", "batch_size"), "optimizer": ("name", "lr")}


def _check_types(raw: dict[str, Any]) -> None:
    for section in raw:
        if section not in _SCHEMA and section != "aggregation":
            raise SpecError(section, f"unknown section; expected one of {', '.join([*_SCHEMA, 'aggregation'])}")
        if not isinstance(raw[section], dict):
            raise SpecError(section, "must be a table")
    for section, required in _REQUIRED.items():
        for key in required:
            if key not in raw.get(section, {}):
                raise SpecError(f"{section}.{key}", "missing required field")
    for section, keys in _SCHEMA.items():
        for key, value in raw.get(section, {}).items():
            if key not in keys:
                raise SpecError(f"{section}.{key}", f"unknown field; expected one of {', '.join(keys)}")
            expected = keys[key]
            if isinstance(value, bool) and expected is not bool:
                raise SpecError(f"{section}.{key}", f"expected {_type_name(expected)}, got a boolean")
            if not isinstance(value, expected):
                raise SpecError(f"{section}.{key}", f"expected {_type_name(expected)}, got {value!r}")


def _type_name(expected) -> str:
    names = {int: "an integer", float: "a number", str: "a string", list: "a list", bool: "true/false"}
    if isinstance(expected, tuple):
        return "a number"
    return names[expected]


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise SpecError(name, f"must be {'non-negative' if allow_zero else 'positive'}, got {value}")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(name, f"unknown value {value!r}; expected one of {', '.join(allowed)}")


def parse_spec(text: str) -> JobSpec:
    """Parse and validate a TOML job spec; raise SpecError naming the first bad field."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError("toml", f"not valid TOML: {exc}") from None
    _check_types(raw)
    job, model, data = raw["job"], raw["model"], raw["data"]
    opt, verification = raw["optimizer"], raw.get("verification", {})

    _choice("job.mode", job.get("mode", "sync"), MODES)
    _choice("model.workload", model["workload"], MODELS)
    _choice("data.dataset", data["dataset"], DATASETS)
    _choice("optimizer.name", opt["name"], OPTIMIZERS)
    for name, value in (("job.rounds", job["rounds"]), ("job.shards_per_round", job["shards_per_round"]),
                        ("data.batch_size", data["batch_size"]), ("optimizer.lr", opt["lr"]),
                        ("job.lease_timeout_s", job.get("lease_timeout_s", 30.0)),
                        ("data.samples", data.get("samples", 2000)),
                        ("data.features", data.get("features", 20)),
                        ("optimizer.local_steps", opt.get("local_steps", 1)),
                        ("optimizer.local_lr", opt.get("local_lr", 0.1))):
        _positive(name, value)
    _positive("optimizer.momentum", opt.get("momentum", 0.9), allow_zero=True)
    if data.get("classes", 4) < 2:
        raise SpecError("data.classes", f"needs at least 2 classes, got {data['classes']}")
    if not 0 < data.get("test_fraction", 0.2) < 1:
        raise SpecError("data.test_fraction", "must lie strictly between 0 and 1")
    if not 0 <= job.get("target_accuracy", 0.0) <= 1:
        raise SpecError("job.target_accuracy", "must lie in [0, 1]")
    hidden = tuple(model.get("hidden", [64] if model["workload"] == "mlp" else []))
    if any(not isinstance(h, int) or isinstance(h, bool) or h <= 0 for h in hidden):
        raise SpecError("model.hidden", f"must be a list of positive integers, got {list(hidden)}")
    if model["workload"] == "mlp" and not hidden:
        raise SpecError("model.hidden", "an mlp needs at least one hidden layer")

    workload = WorkloadConfig(
        model=model["workload"], hidden=hidden, dataset=data["dataset"],
        samples=data.get("samples", 2000), features=data.get("features", 20),
        classes=data.get("classes", 4), test_fraction=float(data.get("test_fraction", 0.2)),
        seed=data.get("seed", 0), shards=job["shards_per_round"], batch_size=data["batch_size"],
        mode=job.get("mode", "sync"), local_steps=opt.get("local_steps", 1),
        local_lr=float(opt.get("local_lr", 0.1)))
    aggregation = _parse_aggregation(raw.get("aggregation", {}), job["shards_per_round"])
    policy = VerificationPolicy(**{k: (float(v) if k in ("spot_check_fraction", "tolerance") else v)
                                   for k, v in verification.items()})
    if not 0 <= policy.spot_check_fraction <= 1:
        raise SpecError("verification.spot_check_fraction", "must lie in [0, 1]")
    for name in ("replicate_until", "ban_after"):
        if getattr(policy, name) < 1:
            raise SpecError(f"verification.{name}", "must be at least 1")
    if policy.tolerance < 0:
        raise SpecError("verification.tolerance", "must be non-negative")
    if policy.second_opinion not in SECOND_OPINIONS:
        raise SpecError("verification.second_opinion", f"must be one of {', '.join(SECOND_OPINIONS)}")
    return JobSpec(name=job["name"], workload=workload, rounds=job["rounds"],
                   target_accuracy=float(job.get("target_accuracy", 0.0)),
                   lease_timeout_s=float(job.get("lease_timeout_s", 30.0)),
                   backups=job.get("backups", True), optimizer=opt["name"],
                   lr=float(opt["lr"]), momentum=float(opt.get("momentum", 0.9)),
                   aggregation=aggregation, verification=policy)


def _parse_aggregation(table: dict[str, Any], shards: int) -> dict[str, Any]:
    params = dict(table)
    rule = params.pop("rule", "mean")
    if not isinstance(rule, str):
        raise SpecError("aggregation.rule", f"expected a string, got {rule!r}")
    try:
        from scheduler.aggregation import validate_params
    except ImportError:  # aggregation core not built yet: only the plain mean exists
        if rule != "mean" or params:
            raise SpecError("aggregation.rule", f"unknown rule {rule!r}; expected mean") from None
    else:
        try:
            validate_params(rule, shards, **params)
        except (ValueError, TypeError) as exc:
            raise SpecError(f"aggregation.{rule}", str(exc)) from None
    return {"rule": rule, **params}


def load_spec(path: str | Path) -> JobSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError("file", f"cannot read {path}: {exc.strerror}") from None
    return parse_spec(text)
