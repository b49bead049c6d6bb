"""Usage counters (`SupportsUsage`): the calls the caches of every process made on a store,
kept in ``<root>/.usage.json`` as a `CounterFile` (padded JSON, rewritten in place under its
exclusive flock, so additions from several processes add up exactly)."""

from __future__ import annotations

import math
from pathlib import Path

from .._protocol import Usage
from ._counters import MAX_COUNT, CounterFile, Values

FILE = ".usage.json"
COUNTS = ("hits", "misses", "sets", "deletes", "errors")


def usage_file(root: Path, *, read_only: bool) -> CounterFile:
    return CounterFile(root, FILE, COUNTS, ("since",), read_only=read_only)


def as_usage(values: Values) -> Usage:
    return Usage(**{name: values[name] for name in COUNTS}, since=values["since"])


def check(usage: Usage) -> None:
    """`ValueError` unless `usage` holds counts (ints from 0) and a finite `since` or None."""
    for name in COUNTS:
        value = getattr(usage, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"Usage.{name} must be an int from 0, not {value!r}")
    since = usage.since
    if since is not None and not (isinstance(since, (int, float)) and math.isfinite(since)):
        raise ValueError(f"Usage.since must be epoch seconds or None, not {since!r}")


def added(values: Values, usage: Usage, now: float) -> Values:
    """`values` with `usage` added: counts saturate at `MAX_COUNT`; `since` is the earliest
    known start (the time of this addition if neither says)."""
    total = as_usage(values) + usage
    since = total.since if total.since is not None or not total else now
    counts = {name: min(MAX_COUNT, getattr(total, name)) for name in COUNTS}
    return {**counts, "since": None if since is None else float(since)}
