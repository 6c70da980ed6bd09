"""Byzantine-robust aggregation of worker updates (numba kernels).

Typical use by the coordinator::

    from scheduler import aggregation
    aggregation.warmup()                               # once at start
    ok = aggregation.screen_finite(updates)             # reject bad rows with a reason code
    new = aggregation.aggregate(updates[ok], "krum", f=2, clip_norm=10.0)

Importing this package fixes numba's threading layer (see ``_config``), so import it
before anything else compiles a parallel numba kernel.
"""

from . import _config
from ._api import aggregate, dequantize_int8, quantize_int8, screen_finite, warmup
from ._errors import (
    AggregationError,
    InvalidParameterError,
    InvalidUpdatesError,
    NonFiniteUpdateError,
    ToleranceError,
)
from ._params import RULES, trim_count, validate_params

THREADING_LAYER = _config.THREADING_LAYER

__all__ = [
    "RULES",
    "THREADING_LAYER",
    "AggregationError",
    "InvalidParameterError",
    "InvalidUpdatesError",
    "NonFiniteUpdateError",
    "ToleranceError",
    "aggregate",
    "dequantize_int8",
    "quantize_int8",
    "screen_finite",
    "trim_count",
    "validate_params",
    "warmup",
]
