"""Rules every layer shares, written once: argument checks, what makes an entry live, and
who may take a leased lock."""

from __future__ import annotations

import contextlib
import math
from math import isfinite

from .errors import ConfigError


def positive_seconds(
    name: str, value: object, error: type[Exception] = ConfigError, *, text: bool = False
) -> float:
    """`value` as float seconds; `error` naming `name` unless a finite number above zero.
    With `text`, a numeric string (an option read from a URL) counts as its number."""
    number = value
    if text and isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    seconds = math.nan
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        with contextlib.suppress(OverflowError):  # an int past float's range: not finite
            seconds = float(number)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise error(f"{name} must be a positive number of seconds, not {value!r}")
    return seconds


# -- entries ---------------------------------------------------------------------------------


def live(expires_at: float | None, now: float) -> bool:
    """Whether an entry expiring at `expires_at` (None: never) is live at `now`: an entry is
    expired from the instant its expiry is reached, on every store."""
    return expires_at is None or expires_at > now


def finite_times(created_at: float | None, expires_at: float | None) -> None:
    """`ValueError` unless an entry's times (None: not given, or never expires) are finite
    epoch seconds: a NaN or infinite expiry would compare as live, or expired, for ever."""
    if (created_at is None or isfinite(created_at)) and (
        expires_at is None or isfinite(expires_at)
    ):
        return  # (the common case, on the write path of every store: no loop)
    for name, value in (("created_at", created_at), ("expires_at", expires_at)):
        if value is not None and not isfinite(value):
            raise ValueError(f"{name} must be finite epoch seconds, not {value!r}")


# -- leased locks (`SupportsLocks`) ------------------------------------------------------------


def may_take(holder: object, until: float, token: object, now: float) -> bool:
    """Whether `token` may take, at `now`, a lock `holder` (None: nobody) holds until `until`:
    it is free, its lease ran out, or `token` holds it already (taking it again extends it)."""
    return holder is None or holder == token or until <= now


def holds(holder: object, until: float, token: object, now: float) -> bool:
    """Whether `token` is the `holder` of a lock whose lease runs `until` a time after `now`
    (a lease that ran out is nobody's: a fenced write must not land on it)."""
    return holder == token and until > now
