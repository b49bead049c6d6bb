"""Small JSON documents that come back from outside the process: parsed within bounds.

FolderStore's ``metadata.json`` and the ``meta`` of a Redis/S3 record are JSON objects tiers
wrote, so anything else read back is damage. ``json.loads`` alone is no defence: it recurses
once per nesting level (200,000 brackets raise `RecursionError`, and a deep enough C stack can
overflow on some builds), turns long digit strings into ints in quadratic time when Python's
digit limit is off, and returns any JSON value. `load_object` measures the nesting before
parsing, bounds ints, and raises `ValueError` for everything wrong; `check_object` applies the
same bounds when writing, so a document tiers wrote is never refused when read back.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 100
"""Deepest nesting of arrays and objects (the document itself is level 1)."""
MAX_INT_DIGITS = 4300
"""Longest int literal (CPython's default ``sys.get_int_max_str_digits``)."""

_INT_LIMIT = 10**MAX_INT_DIGITS
# String literals (brackets inside them do not nest), and what is neither "[]{}". The closing
# quote is optional: an unterminated string matches to the end at once, instead of failing
# after a scan to the end from every quote in it (quadratic time on '"\\' * n).
_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def load_object(raw: bytes | bytearray | memoryview) -> dict[str, Any]:
    """The JSON object in `raw` (UTF-8); `ValueError` for invalid UTF-8 or JSON, a value that
    is not an object, nesting deeper than `MAX_DEPTH`, or an int longer than `MAX_INT_DIGITS`."""
    text = bytes(raw).decode("utf-8", "surrogatepass")  # UnicodeDecodeError is a ValueError
    if not _shallow(text):
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        doc = json.loads(text, parse_int=_bounded_int)
    except RecursionError:  # (a caller already deep in its stack): damage all the same
        raise ValueError("JSON nested too deeply for the stack") from None
    if not isinstance(doc, dict):
        raise ValueError(f"JSON {type(doc).__name__} where an object belongs")
    return doc


def check_object(doc: Any) -> None:
    """`ValueError` unless `load_object` would read `doc` (a dict of JSON values) back."""
    if not isinstance(doc, dict):
        raise ValueError(f"a JSON object is needed, not {type(doc).__qualname__!r}")
    pending: list[tuple[Any, int]] = [(doc, 1)]
    while pending:  # iterative: the document may be deeper than the stack allows
        value, depth = pending.pop()
        if isinstance(value, (dict, list, tuple)):
            if depth > MAX_DEPTH:
                raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
            items = value.values() if isinstance(value, dict) else value
            pending.extend((item, depth + 1) for item in items)
        elif type(value) is int and not -_INT_LIMIT < value < _INT_LIMIT:
            raise ValueError(f"an int longer than {MAX_INT_DIGITS} digits")


def _shallow(text: str) -> bool:
    """Whether no bracket outside a string literal is nested deeper than `MAX_DEPTH`."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return True  # the common case
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) <= MAX_DEPTH  # C loops


def _bounded_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an int longer than {MAX_INT_DIGITS} digits")
    return int(literal)
