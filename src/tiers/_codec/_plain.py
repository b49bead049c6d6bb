"""Plain values: a code-free encoding for values that need no pickle (envelope flag `PLAIN`).

A plain entry is what a signed serializer (pickle) writes to a *private* tier for a value of
one of these exact types (subclasses are pickled, so that their type comes back):

    kind  type                 body                                  descriptor (in the header)
    0     bytes                the bytes                             -
    1     bytearray            the bytes                             -
    2     str                  UTF-8 (lone surrogates kept)          -
    3     int                  two's complement, little-endian       -
    4     float                IEEE 754 binary64, little-endian      -
    5     bool                 one byte, 0 or 1                      -
    6     None                 nothing                               -
    7     numpy.ndarray        the elements, C order (F order for    order (0 C, 1 F), dtype
          (numeric dtype)      an F-contiguous array)                string, ndim, each dimension

Arrays are those of a numeric dtype (`_ARRAY_KINDS`: booleans, integers, floats, complex
numbers, datetimes and timedeltas) without fields or sub-arrays, in any byte order and shape;
anything else is pickled. The descriptor lives in the header, so the body of bytes and arrays
is the value's own buffer: written and read without a copy (an array read back is copied
once, so that it is writable, as an unpickled one is).

Decoding never runs code chosen by the entry: it dispatches on the kind byte, checks every
length against the body, parses a dtype only from a string of the form ``<f8`` whose kind is
numeric, and builds the array with `numpy.frombuffer` (never `numpy.load`). Anything that does
not fit is a `ValueError`. Whether a plain entry may be used at all is the envelope's rule:
only from a private tier (`_envelope`).
"""

from __future__ import annotations

import re
import struct
import sys
from typing import Any

Body = bytes | bytearray | memoryview

BYTES, BYTEARRAY, STR, INT, FLOAT, BOOL, NONE, NDARRAY = range(8)
_KINDS = {bytes: BYTES, bytearray: BYTEARRAY, str: STR, int: INT, float: FLOAT, bool: BOOL,
          type(None): NONE}  # fmt: skip
_FLOAT = struct.Struct("<d")
_ARRAY_KINDS = frozenset("biufcmM")
_DTYPE = re.compile(rb"[<>|][biufcmM][0-9]{1,2}(\[[0-9]{0,12}[A-Za-z]{1,2}\])?\Z")
_MAX_DIMS = 64  # (numpy's own limit)
_C, _F = 0, 1


def encode(value: Any) -> tuple[bytes, Body] | None:
    """(kind and descriptor, body) of `value`, or None if it needs pickle."""
    kind = _KINDS.get(type(value))
    if kind is None:
        numpy = sys.modules.get("numpy")  # (no ndarray exists until numpy is imported)
        if numpy is not None and type(value) is numpy.ndarray:
            return _encode_array(numpy, value)
        return None
    if kind <= BYTEARRAY:
        return _KIND_BYTES[kind], value
    if kind == STR:
        return _KIND_BYTES[STR], value.encode("utf-8", "surrogatepass")
    if kind == INT:
        return _KIND_BYTES[INT], value.to_bytes(
            (value.bit_length() + 8) // 8, "little", signed=True
        )
    if kind == FLOAT:
        return _KIND_BYTES[FLOAT], _FLOAT.pack(value)
    if kind == BOOL:
        return _KIND_BYTES[BOOL], b"\x01" if value else b"\x00"
    return _KIND_BYTES[NONE], b""


_KIND_BYTES = tuple(bytes((kind,)) for kind in range(8))


def _encode_array(numpy: Any, array: Any) -> tuple[bytes, Body] | None:
    dtype = array.dtype
    if dtype.kind not in _ARRAY_KINDS or dtype.hasobject or dtype.fields is not None:
        return None
    if dtype.subdtype is not None or array.ndim > _MAX_DIMS:
        return None
    name = dtype.str.encode("ascii")
    if not _DTYPE.match(name):
        return None
    order = _C
    if array.flags.c_contiguous:
        flat = array
    elif array.flags.f_contiguous:
        order, flat = _F, array.T  # (C-contiguous: the same bytes)
    else:
        flat = numpy.ascontiguousarray(array)
    shape = b"".join(int(n).to_bytes(8, "little") for n in array.shape)
    head = bytes((NDARRAY, order, len(name))) + name + bytes((array.ndim,)) + shape
    return head, memoryview(flat.reshape(-1).view(numpy.uint8))


def decode(descriptor: bytes | memoryview, body: Body) -> Any:
    """The value of a plain entry; `ValueError` if the descriptor and body do not make one."""
    if not descriptor:
        raise ValueError("plain entry without a kind")
    kind = descriptor[0]
    if kind == NDARRAY:
        return _decode_array(bytes(descriptor[1:]), body)
    if len(descriptor) != 1 or kind >= NDARRAY:
        raise ValueError(f"plain entry of an unknown kind ({bytes(descriptor[:8])!r})")
    return _DECODERS[kind](body)


def _bytes(body: Body) -> bytes:
    return body if type(body) is bytes else bytes(body)


def _float(body: Body) -> float:
    if memoryview(body).nbytes != _FLOAT.size:
        raise ValueError("plain float is not 8 bytes")
    number: float = _FLOAT.unpack(body)[0]
    return number


def _bool(body: Body) -> bool:
    if body not in (b"\x00", b"\x01"):
        raise ValueError("plain bool is neither 0 nor 1")
    return body == b"\x01"


def _none(body: Body) -> None:
    if memoryview(body).nbytes:
        raise ValueError("plain None has a body")


_DECODERS: tuple[Any, ...] = (
    _bytes,  # BYTES
    bytearray,  # BYTEARRAY
    lambda body: str(body, "utf-8", "surrogatepass"),  # STR (UnicodeDecodeError: a ValueError)
    lambda body: int.from_bytes(body, "little", signed=True),  # INT
    _float,
    _bool,
    _none,
)


def _decode_array(descriptor: bytes, body: Body) -> Any:
    if len(descriptor) < 2:
        raise ValueError("plain array descriptor is truncated")
    order, n = descriptor[0], descriptor[1]
    name = descriptor[2 : 2 + n]
    if order not in (_C, _F) or len(name) != n or not _DTYPE.match(name):
        raise ValueError("plain array has a bad order or dtype")
    rest = descriptor[2 + n :]
    if not rest or len(rest) != 1 + 8 * rest[0] or rest[0] > _MAX_DIMS:
        raise ValueError("plain array shape is damaged")
    shape = tuple(int.from_bytes(rest[i : i + 8], "little") for i in range(1, len(rest), 8))
    try:
        import numpy
    except ImportError as exc:
        raise ValueError("a plain array needs numpy to be read") from exc
    try:
        dtype = numpy.dtype(name.decode("ascii"))  # (a checked string: never an object dtype)
    except TypeError as exc:  # ("<i9": the form of a dtype, not one)
        raise ValueError("plain array dtype is not one numpy knows") from exc
    if dtype.kind not in _ARRAY_KINDS or dtype.hasobject or dtype.str != name.decode("ascii"):
        raise ValueError("plain array dtype is not a numeric one")
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != memoryview(body).nbytes:
        raise ValueError("plain array body does not match its shape")
    flat = numpy.frombuffer(body, dtype=dtype, count=count)
    if order == _F:
        return flat.reshape(shape[::-1]).T.copy(order="F")
    return flat.reshape(shape).copy()
