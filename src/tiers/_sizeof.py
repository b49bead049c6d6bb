"""Cheap estimate of how many bytes a live Python object holds (for memory-tier limits)."""

from __future__ import annotations

import sys
from typing import Any

_SAMPLE = 64  # items looked at in a container, divided by 8 at each level down


def estimate_size(obj: Any, _depth: int = 0) -> int:
    """Bytes held by `obj` and what it contains, sampled for big containers; never raises."""
    try:
        return _estimate(obj, _depth)
    except Exception:  # an object whose __sizeof__ or len misbehaves: count a shallow guess
        return 64


def _estimate(obj: Any, depth: int) -> int:
    kind = type(obj)
    if kind in (bytes, str, int, float, bool, type(None), bytearray):
        return sys.getsizeof(obj)
    if kind is memoryview:
        return int(obj.nbytes) + 200
    nbytes = getattr(obj, "nbytes", None)  # numpy arrays and friends
    if isinstance(nbytes, int) and "numpy" in kind.__module__:
        return nbytes + 112
    if "pandas" in kind.__module__ and hasattr(obj, "memory_usage"):
        usage = obj.memory_usage(index=True, deep=False)
        return int(getattr(usage, "sum", lambda: usage)()) + 200
    size = sys.getsizeof(obj)
    if depth >= 4:
        return size
    if isinstance(obj, dict):
        return size + _sampled(list(obj.items()), depth)
    if isinstance(obj, (list, tuple, set, frozenset)):
        return size + _sampled(list(obj), depth)
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict):
        size += _sampled(list(attrs.values()), depth)
    return size


def _sampled(items: list[Any], depth: int) -> int:
    if not items:
        return 0
    budget = max(1, _SAMPLE >> (3 * depth))  # 64, 8, 1: bounded work on deep, wide values
    step = max(1, -(-len(items) // budget))
    picked = items[::step]
    total = sum(_estimate(item, depth + 1) for item in picked)
    return total * len(items) // len(picked)
