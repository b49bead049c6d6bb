"""Pure range and block arithmetic for the read-through store (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Span = tuple[int, int]
"""A half-open byte range [start, end)."""


def _non_negative(name: str, value: int) -> int:
    value = int(value)
    if value < 0:  # the error obstore raises for a negative offset or length
        raise OverflowError(f"{name} must be a non-negative int, got {value}")
    return value


def check_range(start: int, end: int | None, length: int | None) -> Span:
    """The [start, end) asked for by `get_range` arguments; errors as obstore raises them."""
    if end is not None and length is not None:
        raise ValueError("end and length cannot both be non-None.")
    if end is None and length is None:
        raise ValueError("Either end or length must be non-None.")
    start = _non_negative("start", start)
    if end is None:
        end = start + _non_negative("length", length or 0)
    end = _non_negative("end", end)
    if end <= start:
        raise ValueError(f"Invalid range requested, start: {start} end: {end}")
    return start, end


def check_ranges(
    starts: Sequence[int], ends: Sequence[int] | None, lengths: Sequence[int] | None
) -> list[Span]:
    """The spans asked for by `get_ranges` arguments."""
    if ends is not None and lengths is not None:
        raise ValueError("ends and lengths cannot both be non-None.")
    if ends is None and lengths is None:
        raise ValueError("Either ends or lengths must be non-None.")
    other = ends if ends is not None else lengths or []
    if len(starts) != len(other):
        name = "ends" if ends is not None else "lengths"
        raise ValueError(
            f"starts and {name} must have the same length ({len(starts)} != {len(other)})."
        )
    if ends is not None:
        return [check_range(s, e, None) for s, e in zip(starts, ends, strict=True)]
    return [check_range(s, None, n) for s, n in zip(starts, other, strict=True)]


def clip(spans: Iterable[Span], size: int) -> list[Span] | None:
    """Spans cut to the object's size (as obstore does), or None if one starts past its end."""
    out = []
    for start, end in spans:
        if start >= size:
            return None
        out.append((start, min(end, size)))
    return out


def covering(spans: Iterable[Span], block_size: int) -> list[int]:
    """Sorted indices of the aligned blocks that cover every span."""
    needed: set[int] = set()
    for start, end in spans:
        needed.update(range(start // block_size, (end - 1) // block_size + 1))
    return sorted(needed)


def runs(indices: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive block indices merged into (first, last) runs: one origin range each."""
    out: list[tuple[int, int]] = []
    for index in sorted(set(indices)):
        if out and index == out[-1][1] + 1:
            out[-1] = (out[-1][0], index)
        else:
            out.append((index, index))
    return out


def run_span(run: tuple[int, int], block_size: int, size: int) -> Span:
    """The byte range of a run of blocks within an object of `size` bytes."""
    return run[0] * block_size, min((run[1] + 1) * block_size, size)


def split_run(data: bytes, first: int, block_size: int) -> dict[int, bytes]:
    """A run's bytes cut into its blocks, keyed by block index."""
    return {
        first + i: data[offset : offset + block_size]
        for i, offset in enumerate(range(0, len(data), block_size))
    }


def assemble(span: Span, blocks: Mapping[int, bytes], block_size: int) -> bytes:
    """The bytes of `span` cut from the blocks that cover it."""
    start, end = span
    first, last = start // block_size, (end - 1) // block_size
    parts = [blocks[i] for i in range(first, last + 1)]
    joined = parts[0] if len(parts) == 1 else b"".join(parts)
    offset = start - first * block_size
    return joined[offset : offset + end - start]


def option_span(wanted: Any, size: int) -> Span | None:
    """The span of a GetOptions `range` (tuple, offset or suffix) within `size`; None if invalid."""
    if isinstance(wanted, Mapping):
        if "offset" in wanted:
            start, end = int(wanted["offset"]), size
        elif "suffix" in wanted:
            start, end = max(size - int(wanted["suffix"]), 0), size
        else:
            return None
    else:
        start, end = (int(v) for v in wanted)
        end = min(end, size)
    if start < 0 or start >= end:
        return None
    return start, end
