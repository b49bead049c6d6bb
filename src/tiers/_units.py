"""Parsing of sizes and durations given by users (pure functions)."""

from __future__ import annotations

import math
import numbers
import re
from datetime import timedelta

from .errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?i?b?)?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(value: object, what: str = "max_size") -> int | None:
    """Bytes from an int or a string like ``"64MB"`` (10^6) or ``"1GiB"`` (2^30); None stays."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{what} must be an int or a string like '64MB', not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{what} must not be negative, got {value}")
        return value
    match = _SIZE.match(value)
    if not match:
        raise ConfigError(f"{what} {value!r} is not a size; write e.g. '512KB', '64MB' or '1GiB'")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    base = 1024 if "i" in unit else 1000
    return int(number * base ** _POWERS[unit.rstrip("ib")[:1]])


def parse_count(value: object, what: str) -> int | None:
    """A non-negative int (or None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an int or None, not {value!r}")
    if value < 0:
        raise ConfigError(f"{what} must not be negative, got {value}")
    return value


def parse_ttl(value: object, what: str = "ttl") -> float | None:
    """Seconds from a positive int, float or timedelta; None means never expire."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf  # an int too large for a float: reported as not finite below
    else:
        raise TypeError(
            f"{what} must be seconds (int or float), a timedelta or None, "
            f"not {type(value).__qualname__!r}"
        )
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"{what} must be a finite number of seconds (use None for no expiry)")
    if seconds <= 0:
        raise ValueError(f"{what} must be positive, got {seconds:g} seconds")
    return seconds
