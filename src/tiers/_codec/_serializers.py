"""Serializers: turn values into bytes and back. Each has a stable `name` stored per entry."""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError, MissingDependencyError, SerializationError


@runtime_checkable
class Serializer(Protocol):
    """A custom serializer: ``dumps``/``loads`` and a stable ``name`` (1-64 ASCII chars).

    Set ``signed = False`` on serializers that cannot run code while loading (like JSON);
    every other serializer's entries are authenticated with the cache's HMAC before loading.
    """

    name: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class PickleSerializer:
    """pickle protocol 5; its entries are always HMAC-signed (loading pickle can run code)."""

    name = "pickle"
    signed = True

    def dumps(self, value: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=5)
        except Exception as exc:
            raise SerializationError(
                f"cannot pickle a value of type {type(value).__qualname__!r}: {exc}"
            ) from exc

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


class JsonSerializer:
    """UTF-8 JSON of dicts, lists, strings, numbers, booleans and None."""

    name = "json"
    signed = False

    def dumps(self, value: Any) -> bytes:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=True)
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"cannot encode a value as JSON: {exc}") from exc
        return text.encode("utf-8", "surrogatepass")

    def loads(self, data: bytes) -> Any:
        return json.loads(bytes(data).decode("utf-8", "surrogatepass"))


class MsgpackSerializer:
    """MessagePack (needs the ``msgpack`` package: ``pip install tiers[msgpack]``)."""

    name = "msgpack"
    signed = False

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError as exc:
            raise MissingDependencyError(
                'serializer="msgpack" needs the msgpack package: pip install "tiers[msgpack]"'
            ) from exc
        self._msgpack = msgpack

    def dumps(self, value: Any) -> bytes:
        try:
            out: bytes = self._msgpack.packb(value, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(f"cannot encode a value as msgpack: {exc}") from exc
        return out

    def loads(self, data: bytes) -> Any:
        return self._msgpack.unpackb(data, raw=False, strict_map_key=False)


class RawSerializer:
    """Bytes stored as they are (bytes, bytearray or memoryview in; bytes out)."""

    name = "raw"
    signed = False

    def dumps(self, value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        raise SerializationError(
            f'serializer="raw" stores bytes only, not {type(value).__qualname__!r}'
        )

    def loads(self, data: bytes) -> Any:
        return bytes(data) if not isinstance(data, bytes) else data


_BUILTIN: dict[str, type[Serializer]] = {
    "pickle": PickleSerializer,
    "json": JsonSerializer,
    "msgpack": MsgpackSerializer,
    "raw": RawSerializer,
}


def resolve_serializer(spec: object) -> Serializer:
    """A builtin serializer by name, or a custom object with dumps/loads/name."""
    if isinstance(spec, str):
        factory = _BUILTIN.get(spec)
        if factory is None:
            names = ", ".join(repr(n) for n in _BUILTIN)
            raise ConfigError(f"unknown serializer {spec!r}; use one of {names} or an object")
        made: Serializer = factory()
        return made
    if isinstance(spec, Serializer):
        name = spec.name
        if not isinstance(name, str) or not 1 <= len(name) <= 64 or not name.isascii():
            raise ConfigError(f"a serializer's name must be 1-64 ASCII characters, not {name!r}")
        return spec
    raise ConfigError(
        f"serializer must be a name or an object with dumps, loads and name, "
        f"not {type(spec).__qualname__!r}"
    )


def is_signed(serializer: Serializer) -> bool:
    """Whether entries of this serializer must carry a valid HMAC to be loaded."""
    return bool(getattr(serializer, "signed", True))
