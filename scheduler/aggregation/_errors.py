"""Typed errors raised by the aggregation core.

Every error is a ``ValueError`` so callers that only know "bad input" still catch it::

    ValueError
     └── AggregationError            base of everything raised here
          ├── InvalidUpdatesError    updates array has the wrong dtype, rank or is empty
          ├── InvalidParameterError  unknown rule, unknown/missing/out-of-range parameter
          ├── ToleranceError         too few updates for the Byzantine count asked for
          └── NonFiniteUpdateError   some update rows hold NaN or Inf
"""

from __future__ import annotations

from collections.abc import Sequence


class AggregationError(ValueError):
    """Base class of every error raised by ``scheduler.aggregation``."""


class InvalidUpdatesError(AggregationError):
    """The updates array is not a non-empty 2-D float32 array."""


class InvalidParameterError(AggregationError):
    """A rule name or one of its parameters is unknown, missing or out of range."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param


class ToleranceError(AggregationError):
    """n updates are too few for the rule to tolerate the requested number of bad ones."""

    def __init__(self, rule: str, n: int, needed: int, condition: str):
        super().__init__(f"{rule} needs {condition}, i.e. n >= {needed} updates, got n = {n}")
        self.rule = rule
        self.n = n
        self.needed = needed


class NonFiniteUpdateError(AggregationError):
    """Some update rows contain NaN or Inf; ``rows`` lists their indices."""

    def __init__(self, rows: Sequence[int]):
        self.rows = tuple(int(r) for r in rows)
        shown = ", ".join(map(str, self.rows[:10])) + (", ..." if len(self.rows) > 10 else "")
        super().__init__(f"{len(self.rows)} update row(s) contain NaN or Inf: rows {shown}")
