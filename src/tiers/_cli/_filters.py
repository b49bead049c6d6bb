"""``--filter``, ``--sort`` and durations as people type them (pure functions).

A filter is ``FIELD OP VALUE``: ``size>1MB``, ``age>7d``, ``idle>=14d``, ``expires<1h``,
``key=report:2024``. Fields: ``size`` (bytes), ``age`` (since created), ``idle`` (since last
read; unknown where the store does not record reads, and such entries never match),
``expires`` (seconds left; an entry that never expires has infinitely many), ``key``
(text; ``=``, ``!=`` and ``~`` for "contains"). Operators: ``> >= < <= = !=``.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._units import parse_size
from ..errors import ConfigError
from ._errors import USAGE, CLIError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|d|w|y)?\s*$", re.IGNORECASE)
_SECONDS = {
    "ms": 1e-3, "": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400,
    "w": 7 * 86400, "y": 365 * 86400,
}  # fmt: skip
_FILTER = re.compile(r"^\s*([a-z]+)\s*(>=|<=|!=|>|<|=|~)\s*(.+?)\s*$", re.IGNORECASE)
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "=": operator.eq, "!=": operator.ne, "~": lambda a, b: b in a,
}  # fmt: skip
FIELDS = ("size", "age", "idle", "expires", "key")
SORTS = ("size", "created", "accessed", "expires", "key")


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds from ``90``, ``30s``, ``15min``, ``12h``, ``7d``, ``2w``, ``1y``."""
    found = _DURATION.match(text)
    if not found:
        raise CLIError(f"{what} {text!r} is not a duration; write e.g. 30s, 15min, 12h, 7d", USAGE)
    return float(found.group(1)) * _SECONDS[(found.group(2) or "").lower()]


def parse_bytes(text: str, what: str = "size") -> int:
    """Bytes from ``512``, ``64KB``, ``10GB``, ``1GiB``."""
    try:
        value = parse_size(text, what)
    except ConfigError as exc:
        raise CLIError(str(exc), USAGE) from None
    return value or 0


@dataclass(frozen=True)
class Filter:
    """One parsed ``--filter``: `test(row, now)` on a row of `_entries.row`."""

    field: str
    op: str
    value: Any
    text: str

    def test(self, row: dict[str, Any], now: float) -> bool:
        if self.field == "key":
            return bool(_OPS[self.op](row["key"], self.value))
        if self.field == "size":
            have: float | None = row["size"]
        elif self.field == "age":
            have = now - row["created"]
        elif self.field == "idle":
            accessed = row["accessed"]
            have = None if accessed is None else now - accessed
        else:
            expires = row["expires"]
            have = math.inf if expires is None else expires - now
        return have is not None and bool(_OPS[self.op](have, self.value))


def parse_filter(text: str) -> Filter:
    found = _FILTER.match(text)
    if not found:
        raise CLIError(
            f"--filter {text!r} is not FIELD OP VALUE; write e.g. 'size>1MB' or 'age>7d'", USAGE
        )
    field, op, raw = found.group(1).lower(), found.group(2), found.group(3)
    if field not in FIELDS:
        known = ", ".join(FIELDS)
        raise CLIError(f"--filter {text!r}: unknown field {field!r}; use {known}", USAGE)
    if field == "key":
        if op not in ("=", "!=", "~"):
            raise CLIError(f"--filter {text!r}: a key compares with =, != or ~ (contains)", USAGE)
        return Filter(field, op, raw, text)
    if op == "~":
        raise CLIError(f"--filter {text!r}: ~ (contains) is for key only", USAGE)
    value = (
        parse_bytes(raw, f"--filter {text!r}:")
        if field == "size"
        else parse_duration(raw, f"--filter {text!r}:")
    )
    return Filter(field, op, value, text)


@dataclass(frozen=True)
class Sort:
    """``--sort FIELD[:asc|:desc]``; `key(row)` orders rows, unknown values last."""

    field: str
    descending: bool

    def key(self, row: dict[str, Any]) -> tuple[int, Any]:
        """Sort key for ``sorted(..., reverse=self.descending)``: unknowns last either way."""
        value = row[self.field]
        if self.field == "expires" and value is None:
            value = math.inf  # never expires: after every time
        known = 1 if self.descending else 0
        if value is None:
            return (1 - known, 0)
        return (known, value)


def parse_sort(text: str) -> Sort:
    field, _, order = text.partition(":")
    field = field.strip().lower()
    order = order.strip().lower() or ("desc" if field == "size" else "asc")
    if field not in SORTS or order not in ("asc", "desc"):
        raise CLIError(
            f"--sort {text!r}: write one of {', '.join(SORTS)}, optionally :asc or :desc", USAGE
        )
    return Sort(field, order == "desc")
