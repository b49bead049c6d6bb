"""Deterministic, type-distinct content hashing of cache keys (``hash_key``).

Every value is fed to one streaming ``xxh3_128`` hasher as a type tag followed by a fixed-size
or length-prefixed payload, so the encoding is prefix-free (``("ab", "c")`` and ``("a", "bc")``
cannot collide by framing). Numbers are packed little-endian, text is UTF-8, and nothing depends
on ``hash()``, ``id()``, ``repr()`` or pickle, so a key hashes the same in every process,
platform and run. Dicts and sets hash each item to a 16-byte digest and feed the sorted digests,
so order does not matter. The stream starts with the scheme version (``HASH_SCHEME``).

Choices where the contract left room:

* ``-0.0`` and ``0.0`` differ (a function can tell them apart); all float NaNs are equal.
  NumPy arrays hash their raw bytes, so NaN payloads inside arrays are not canonicalized.
* ``set`` and ``frozenset`` differ, like ``list`` and ``tuple``: distinct types never alias.
* ``bytes`` and ``bytearray`` differ; a ``memoryview`` hashes like ``bytes`` of its C-order
  content (a zero-copy way to pass bytes; its format and shape are ignored).
* ``Decimal`` hashes its exact ``as_tuple()``: ``Decimal("1.0")`` and ``Decimal("1.00")``
  differ, as do ``0`` and ``-0`` (``str()`` tells them apart; ``normalize()`` would also round
  to the context precision and alias distinct values).
* datetime/date/time hash their ``isoformat()``: naive and aware differ, the same instant at two
  UTC offsets differs, and two tzinfos with the same offset at that moment are equal.
* Paths hash by flavour (POSIX or Windows) and ``str(path)``: ``Path("a") == PurePosixPath("a")``.
* Enum members hash by class and name; ``Flag`` members by class and integer value (composite
  flags have no stable name across Python versions).
* A NumPy scalar differs from the 0-d array holding it. C- and Fortran-ordered arrays with equal
  content are equal; byte order is canonicalized to little-endian; structured arrays hash field
  by field (padding is ignored). ``ndarray`` subclasses other than ``memmap`` are refused.
* pandas objects hash names, index, columns (in order), dtypes and values, but not the index
  class (``RangeIndex(2)`` equals ``Index([0, 1])``).
* A subclass of a supported builtin or stdlib type (without ``__cache_key__``) hashes as its
  base value tagged with the subclass's qualified name; a named tuple hashes by class, field
  names and values. Both differ from the plain base value.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
import sys
from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from math import isnan
from pathlib import PosixPath, PurePath, PurePosixPath, PureWindowsPath, WindowsPath
from typing import Any
from uuid import UUID

import xxhash

__all__ = ["HASH_SCHEME", "hash_key"]

HASH_SCHEME = "v1"

_Hasher = xxhash.xxh3_128
_Encoder = Callable[[Any, _Hasher, set[int]], None]

_START = _Hasher(b"tiers-hash-" + HASH_SCHEME.encode())  # copied for each call
_tag_len = struct.Struct("<cQ").pack
_tag_i64 = struct.Struct("<cq").pack
_tag_f64 = struct.Struct("<cd").pack
_f64 = struct.Struct("<d").pack
_NAN = bytes.fromhex("000000000000f87f")  # the canonical quiet NaN, little-endian
_I64_MIN, _I64_END = -(2**63), 2**63
_BIG_ENDIAN = sys.byteorder == "big"


def hash_key(obj: object) -> str:
    """Return a stable 128-bit hash of ``obj`` as 32 lowercase hex characters.

    Supported: None, bool, int, float, complex, str, bytes, bytearray, memoryview, tuple, list,
    dict, set, frozenset, dataclass instances, named tuples, Enum members, pathlib paths,
    datetime/date/time/timedelta, Decimal, UUID, NumPy arrays and scalars, pandas DataFrame,
    Series, Index, extension arrays and scalars, pydantic models, and any object with a
    ``__cache_key__()`` method (hashed as its class plus the returned value). Anything else,
    and any container that contains itself, raises ``TypeError``.
    """
    h: _Hasher = _START.copy()
    _encode(obj, h, set())
    return h.hexdigest()


def _encode(obj: Any, h: _Hasher, seen: set[int]) -> None:
    enc = _EXACT.get(type(obj))
    if enc is not None:
        enc(obj, h, seen)
    else:
        _encode_other(obj, h, seen)


def _enter(obj: object, seen: set[int]) -> None:
    """Mark a container as being hashed; meeting it again means it contains itself."""
    if id(obj) in seen:
        raise TypeError(f"cannot hash a self-referential {type(obj).__name__}")
    seen.add(id(obj))


def _enc_class(tag: bytes, cls: type, h: _Hasher) -> None:
    h.update(tag)
    _enc_str(f"{cls.__module__}.{cls.__qualname__}", h, set())


# --- builtin and stdlib value types --------------------------------------------------------


def _enc_int(obj: int, h: _Hasher, seen: set[int]) -> None:
    if _I64_MIN <= obj < _I64_END:
        h.update(_tag_i64(b"i", obj))
    else:
        data = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
        h.update(_tag_len(b"I", len(data)))
        h.update(data)


def _enc_float(obj: float, h: _Hasher, seen: set[int]) -> None:
    h.update(b"f" + _NAN if isnan(obj) else _tag_f64(b"f", obj))


def _enc_complex(obj: complex, h: _Hasher, seen: set[int]) -> None:
    parts = [_NAN if isnan(x) else _f64(x) for x in (obj.real, obj.imag)]
    h.update(b"c" + b"".join(parts))


def _enc_str(obj: str, h: _Hasher, seen: set[int]) -> None:
    data = obj.encode("utf-8", "surrogatepass")
    h.update(_tag_len(b"s", len(data)))
    h.update(data)


def _enc_bytes(obj: bytes | bytearray, h: _Hasher, seen: set[int]) -> None:
    h.update(_tag_len(b"y" if type(obj) is bytes else b"Y", len(obj)))
    h.update(obj)


def _enc_memoryview(obj: memoryview, h: _Hasher, seen: set[int]) -> None:
    h.update(_tag_len(b"y", obj.nbytes))
    h.update(obj if obj.c_contiguous else obj.tobytes())


def _enc_tuple(obj: tuple[Any, ...], h: _Hasher, seen: set[int]) -> None:
    # A tuple can only be part of a cycle through a mutable object, which is tracked.
    h.update(_tag_len(b"t", len(obj)))
    for item in obj:
        _encode(item, h, seen)


def _enc_list(obj: list[Any], h: _Hasher, seen: set[int]) -> None:
    _enter(obj, seen)
    h.update(_tag_len(b"l", len(obj)))
    for item in obj:
        _encode(item, h, seen)
    seen.discard(id(obj))


def _enc_unordered(
    tag: bytes, rows: Iterable[Any], pairs: bool, h: _Hasher, seen: set[int]
) -> None:
    """Feed the sorted digests of the items (or key/value pairs), so order does not matter."""
    digests = []
    for row in rows:
        sub = _Hasher()
        if pairs:
            _encode(row[0], sub, seen)
            _encode(row[1], sub, seen)
        else:
            _encode(row, sub, seen)
        digests.append(sub.digest())
    digests.sort()
    h.update(_tag_len(tag, len(digests)))
    h.update(b"".join(digests))


def _enc_dict(obj: dict[Any, Any], h: _Hasher, seen: set[int]) -> None:
    _enter(obj, seen)
    _enc_unordered(b"d", obj.items(), True, h, seen)
    seen.discard(id(obj))


def _enc_set(obj: set[Any] | frozenset[Any], h: _Hasher, seen: set[int]) -> None:
    _enc_unordered(b"S" if isinstance(obj, set) else b"Z", obj, False, h, seen)


def _enc_datetime(obj: datetime | date | time, h: _Hasher, seen: set[int]) -> None:
    h.update(b"W" if isinstance(obj, datetime) else b"Q" if isinstance(obj, date) else b"H")
    _enc_str(obj.isoformat(), h, seen)


def _enc_timedelta(obj: timedelta, h: _Hasher, seen: set[int]) -> None:
    h.update(b"J" + struct.pack("<qqq", obj.days, obj.seconds, obj.microseconds))


def _enc_decimal(obj: Decimal, h: _Hasher, seen: set[int]) -> None:
    sign, digits, exponent = obj.as_tuple()  # exponent is "n", "N" or "F" for NaN/sNaN/inf
    h.update(b"M")
    _enc_tuple((sign, "".join(map(str, digits)), exponent), h, seen)


def _enc_path(obj: PurePath, h: _Hasher, seen: set[int]) -> None:
    h.update(b"Pw" if isinstance(obj, PureWindowsPath) else b"Pp")
    _enc_str(str(obj), h, seen)


_EXACT: dict[type, _Encoder] = {
    type(None): lambda obj, h, seen: h.update(b"N"),
    bool: lambda obj, h, seen: h.update(b"T" if obj else b"F"),
    int: _enc_int,
    float: _enc_float,
    complex: _enc_complex,
    str: _enc_str,
    bytes: _enc_bytes,
    bytearray: _enc_bytes,
    memoryview: _enc_memoryview,
    tuple: _enc_tuple,
    list: _enc_list,
    dict: _enc_dict,
    set: _enc_set,
    frozenset: _enc_set,
    datetime: _enc_datetime,
    date: _enc_datetime,
    time: _enc_datetime,
    timedelta: _enc_timedelta,
    Decimal: _enc_decimal,
    UUID: lambda obj, h, seen: h.update(b"U" + obj.bytes),
    PurePath: _enc_path,
    PurePosixPath: _enc_path,
    PureWindowsPath: _enc_path,
    PosixPath: _enc_path,
    WindowsPath: _enc_path,
}

# Conversions of a builtin subclass instance to a plain base value that bypass overridden
# methods; the stdlib value types in _BASES are encoded as they are.
_TO_BASE: dict[type, Callable[[Any], Any]] = {
    str: str.__str__,
    int: int.__index__,
    float: float.__float__,
    complex: lambda c: complex(c.real, c.imag),
    bytes: lambda b: bytes.__getnewargs__(b)[0],
    bytearray: bytearray.copy,
    tuple: tuple,
    list: list.copy,
    dict: dict.copy,
    set: set.copy,
    frozenset: frozenset.copy,
}
_BASES = (*_TO_BASE, datetime, date, time, timedelta, Decimal, UUID, PurePath)  # derived first


# --- everything that is not an exact builtin type ------------------------------------------


def _encode_other(obj: Any, h: _Hasher, seen: set[int]) -> None:
    cls = type(obj)
    if getattr(cls, "__cache_key__", None) is not None:
        _enter(obj, seen)
        _enc_class(b"K", cls, h)
        _encode(obj.__cache_key__(), h, seen)
        seen.discard(id(obj))
    elif isinstance(obj, enum.Enum):
        _enc_class(b"E", cls, h)
        _encode(obj.value if isinstance(obj, enum.Flag) else obj.name, h, seen)
    elif getattr(cls, "__dataclass_fields__", None) is not None:
        _enter(obj, seen)
        fields = dataclasses.fields(obj)
        _enc_class(_tag_len(b"D", len(fields)), cls, h)
        for field in fields:
            _enc_str(field.name, h, seen)
            _encode(getattr(obj, field.name), h, seen)
        seen.discard(id(obj))
    elif isinstance(obj, tuple) and hasattr(cls, "_fields"):  # named tuple
        _enc_class(b"n", cls, h)
        _enc_tuple(tuple(cls._fields), h, seen)
        _enc_tuple(tuple(obj), h, seen)
    elif not (_encode_numpy(obj, h, seen) or _encode_pandas(obj, h, seen)):
        _encode_model_or_subclass(obj, h, seen)


def _encode_model_or_subclass(obj: Any, h: _Hasher, seen: set[int]) -> None:
    cls = type(obj)
    for name in ("pydantic", "pydantic.v1"):
        pydantic = sys.modules.get(name)
        if pydantic is not None and isinstance(obj, pydantic.BaseModel):
            dump = getattr(obj, "model_dump", None)
            data = dump(mode="python") if dump is not None else obj.dict()
            _enc_class(b"B", cls, h)
            _encode(data, h, seen)
            return
    for base in _BASES:
        if isinstance(obj, base):
            _enter(obj, seen)
            _enc_class(b"X", cls, h)
            to_base = _TO_BASE.get(base)
            _EXACT[base](obj if to_base is None else to_base(obj), h, seen)
            seen.discard(id(obj))
            return
    raise TypeError(
        f"hash_key cannot hash an object of type '{cls.__module__}.{cls.__qualname__}'; "
        "give it a __cache_key__() method or pass a supported type"
    )


# --- optional libraries: consulted only when already imported ------------------------------


def _encode_numpy(obj: Any, h: _Hasher, seen: set[int]) -> bool:
    np = sys.modules.get("numpy")
    if np is None:
        return False
    if isinstance(obj, np.generic):
        h.update(b"g")
        _enc_ndarray(np.asarray(obj), h, seen)
        return True
    if type(obj) is np.ndarray or isinstance(obj, np.memmap):
        _enc_ndarray(obj, h, seen)
        return True
    return False


def _enc_ndarray(arr: Any, h: _Hasher, seen: set[int]) -> None:
    np = sys.modules["numpy"]
    dtype = arr.dtype
    if dtype.names is not None:  # structured: field by field, so padding bytes never count
        _enter(arr, seen)
        h.update(b"R")
        _enc_tuple(arr.shape, h, seen)
        _enc_tuple(dtype.names, h, seen)
        for name in dtype.names:
            _enc_ndarray(arr[name], h, seen)
        seen.discard(id(arr))
    elif dtype.hasobject or dtype.kind == "T":  # buffers hold pointers: hash element-wise
        _enter(arr, seen)
        h.update(b"O")
        _enc_str(str(dtype), h, seen)
        _enc_tuple(arr.shape, h, seen)
        for item in arr.ravel().tolist():
            _encode(item, h, seen)
        seen.discard(id(arr))
    else:
        if dtype.byteorder == ">" or (_BIG_ENDIAN and dtype.byteorder == "="):
            arr = arr.astype(dtype.newbyteorder("<"))
        shape = arr.shape
        arr = np.ascontiguousarray(arr)  # no copy when already C-contiguous
        h.update(b"A")
        _enc_str(arr.dtype.str, h, seen)
        _enc_tuple(shape, h, seen)
        h.update(arr.reshape(-1).view(np.uint8))


def _encode_pandas(obj: Any, h: _Hasher, seen: set[int]) -> bool:
    pd = sys.modules.get("pandas")
    if pd is None:
        return False
    if obj is pd.NaT:
        h.update(b"pN")
    elif obj is pd.NA:
        h.update(b"pA")
    elif isinstance(obj, (pd.Timestamp, pd.Timedelta)):
        h.update(b"pT" if isinstance(obj, pd.Timestamp) else b"pD")
        _enc_str(obj.isoformat(), h, seen)
    elif isinstance(obj, pd.DataFrame):
        h.update(b"pF")
        _enc_pd_index(obj.index, h, seen)
        _enc_pd_index(obj.columns, h, seen)
        for i in range(obj.shape[1]):
            _enc_pd_values(obj.iloc[:, i], h, seen)
    elif isinstance(obj, pd.Series):
        h.update(b"pS")
        _encode(obj.name, h, seen)
        _enc_pd_index(obj.index, h, seen)
        _enc_pd_values(obj, h, seen)
    elif isinstance(obj, pd.Index):
        _enc_pd_index(obj, h, seen)
    elif isinstance(obj, pd.api.extensions.ExtensionArray):
        _enc_pd_values(obj, h, seen)
    else:
        return False
    return True


def _enc_pd_index(index: Any, h: _Hasher, seen: set[int]) -> None:
    h.update(b"p" + _tag_len(b"I", index.nlevels))
    _enc_tuple(tuple(index.names), h, seen)
    for level in range(index.nlevels):  # one array per level (several for a MultiIndex)
        _enc_pd_values(index.get_level_values(level), h, seen)


def _enc_pd_values(values: Any, h: _Hasher, seen: set[int]) -> None:
    """Hash the values of a Series, an Index or an extension array, with their dtype."""
    np, pd = sys.modules["numpy"], sys.modules["pandas"]
    dtype = values.dtype
    if isinstance(dtype, np.dtype):
        _enc_ndarray(np.asarray(values), h, seen)
    elif isinstance(dtype, pd.CategoricalDtype):
        cat = values.array if isinstance(values, (pd.Series, pd.Index)) else values
        h.update(b"pC" + (b"T" if dtype.ordered else b"F"))
        _enc_pd_index(cat.categories, h, seen)
        _enc_ndarray(cat.codes, h, seen)
    else:  # other extension dtypes (nullable, string, tz-aware, ...): element-wise
        h.update(b"pE")
        _enc_str(str(dtype), h, seen)
        _enc_ndarray(np.asarray(values, dtype=object), h, seen)
