"""Rule names and parameter validation, shared by ``aggregate`` and the job-spec parser.

Parameters fall in two groups: *spec* parameters fixed when a job is submitted
(``f``, ``beta``, ``m``, ``tau``, ``iterations``, ``cap_factor``, ``clip_norm``) and
*round* parameters only known when a round closes (``weights``, ``center``). A job spec
may omit round parameters; ``aggregate`` demands the required ones.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from ._errors import InvalidParameterError, ToleranceError

RULES: tuple[str, ...] = (
    "mean",
    "weighted_mean",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "bulyan",
    "centered_clip",
)

_REQUIRED = object()
_ROUND_PARAMS = frozenset({"weights", "center"})
_COMMON_PARAMS: dict[str, Any] = {"clip_norm": None}
_RULE_PARAMS: dict[str, dict[str, Any]] = {
    "mean": {},
    "weighted_mean": {"weights": _REQUIRED, "cap_factor": 2.0},
    "median": {},
    "trimmed_mean": {"beta": _REQUIRED},
    "krum": {"f": _REQUIRED},
    "multi_krum": {"f": _REQUIRED, "m": None},
    "bulyan": {"f": _REQUIRED},
    "centered_clip": {"tau": _REQUIRED, "iterations": 1, "center": None},
}


def trim_count(beta: float, n: int) -> int:
    """Values dropped on each side by trimmed_mean: floor(beta * n), at least 1 if beta > 0."""
    k = math.floor(beta * n)
    return max(k, 1) if beta > 0 else 0


def _int_param(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidParameterError(name, f"must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidParameterError(name, f"must be >= {minimum}, got {value}")
    return int(value)


def _positive_float(name: str, value: Any, minimum: float = 0.0, inclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidParameterError(name, f"must be a number, got {value!r}")
    value = float(value)
    too_small = value < minimum if inclusive else value <= minimum
    if not math.isfinite(value) or too_small:
        relation = ">=" if inclusive else ">"
        raise InvalidParameterError(name, f"must be finite and {relation} {minimum}, got {value}")
    return value


def validate_params(rule: str, n_expected: int | None = None, **params: Any) -> dict[str, Any]:
    """Check a rule name and its parameters; return them with defaults filled in.

    ``n_expected`` is the number of updates per aggregation (shards per round); when
    given, the Byzantine tolerance conditions are checked too. Round parameters
    (``weights``, ``center``) may be missing here. Raises ``InvalidParameterError``
    naming the bad parameter, or ``ToleranceError`` when n is too small.
    """
    if rule not in _RULE_PARAMS:
        raise InvalidParameterError("rule", f"unknown rule {rule!r}; expected one of {', '.join(RULES)}")
    allowed = {**_RULE_PARAMS[rule], **_COMMON_PARAMS}
    for name in params:
        if name not in allowed:
            raise InvalidParameterError(
                name, f"not a parameter of {rule!r}; accepted: {', '.join(sorted(allowed)) or 'none'}"
            )
    resolved: dict[str, Any] = {}
    for name, default in allowed.items():
        if name in params and params[name] is not None:
            resolved[name] = params[name]
        elif default is _REQUIRED and name not in _ROUND_PARAMS:
            raise InvalidParameterError(name, f"required by rule {rule!r}")
        else:
            resolved[name] = None if default is _REQUIRED else default

    if n_expected is not None:
        n_expected = _int_param("n_expected", n_expected, 1)
    if resolved["clip_norm"] is not None:
        resolved["clip_norm"] = _positive_float("clip_norm", resolved["clip_norm"])
    if "f" in resolved:
        resolved["f"] = _int_param("f", resolved["f"], 0)
    if rule == "weighted_mean":
        resolved["cap_factor"] = _positive_float("cap_factor", resolved["cap_factor"], 1.0, inclusive=True)
    if rule == "trimmed_mean":
        beta = resolved["beta"] = _positive_float("beta", resolved["beta"], 0.0, inclusive=True)
        if beta >= 0.5:
            raise InvalidParameterError("beta", f"must be < 0.5, got {beta}")
        if n_expected is not None and 2 * trim_count(beta, n_expected) >= n_expected:
            raise ToleranceError(
                rule, n_expected, 2 * trim_count(beta, n_expected) + 1, f"2*max(1, floor(beta*n)) < n (beta={beta})"
            )
    if rule == "centered_clip":
        resolved["tau"] = _positive_float("tau", resolved["tau"])
        resolved["iterations"] = _int_param("iterations", resolved["iterations"], 1)
    if rule in ("krum", "multi_krum", "bulyan") and n_expected is not None:
        f = resolved["f"]
        factor = 4 if rule == "bulyan" else 2
        if n_expected < factor * f + 3:
            raise ToleranceError(rule, n_expected, factor * f + 3, f"n >= {factor}f + 3 with f = {f}")
    if rule == "multi_krum" and resolved["m"] is not None:
        m = resolved["m"] = _int_param("m", resolved["m"], 1)
        if n_expected is not None and m > n_expected:
            raise InvalidParameterError("m", f"must be <= n = {n_expected}, got {m}")
    return resolved
