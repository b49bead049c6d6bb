"""Bad input: each mistake raises the right exception type with a one-line message naming the
offending thing, and nothing is written (the key stays absent, a previous value stays intact).
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests._tiers import store_of, stores_of, tiers_of
from tiers import MISSING, Cache, DiskStore, MemoryStore
from tiers.errors import ConfigError, SerializationError, TiersError


def check_message(exc: BaseException, fragment: str) -> None:
    message = str(exc)
    assert message, f"{type(exc).__name__} has an empty message"
    assert "\n" not in message, f"message spans lines: {message!r}"
    assert message == message.strip(), f"message has stray whitespace: {message!r}"
    assert fragment.lower() in message.lower(), f"{fragment!r} not named in {message!r}"


@dataclass
class Call:
    """One bad call of a cache method (tried sync and async)."""

    id: str
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    error: type[BaseException] = TypeError
    fragment: str = ""


NOT_CALLED: list[str] = []


def factory() -> str:
    NOT_CALLED.append("factory ran")
    return "computed"


class NoWeakref:
    __slots__ = ()


BAD_TTLS: list[tuple[str, Any, type[BaseException]]] = [
    ("negative", -1, ValueError),
    ("zero", 0, ValueError),
    ("zero float", 0.0, ValueError),
    ("nan", math.nan, ValueError),
    ("inf", math.inf, ValueError),
    ("-inf", -math.inf, ValueError),
    ("huge int", 10**400, ValueError),
    ("negative timedelta", timedelta(seconds=-1), ValueError),
    ("zero timedelta", timedelta(0), ValueError),
    ("bool", True, TypeError),
    ("str", "10", TypeError),
    ("list", [10], TypeError),
]
BAD_TAGS: list[tuple[str, Any, type[BaseException], str]] = [
    ("empty tag", [""], ValueError, "tag"),
    ("nul in tag", ["a\0b"], ValueError, "tag"),
    ("tag too long", ["x" * 300], ValueError, "tag"),
    ("int tag", [1], TypeError, "'int'"),
    ("bytes tag", [b"t"], TypeError, "'bytes'"),
    ("tags not iterable", 5, TypeError, "tags"),
    ("none in tags", ["ok", None], TypeError, "NoneType"),
]
BAD_META: list[tuple[str, Any, str]] = [
    ("object in meta", {"x": object()}, "meta"),
    ("meta str", "provenance", "meta"),
    ("meta list", [1, 2], "meta"),
    ("nan in meta", {"x": math.nan}, "meta"),
    ("set in meta", {"x": {1}}, "meta"),
]
BAD_LEASES: list[tuple[str, Any, type[BaseException]]] = [
    ("lease negative", -1, ValueError),
    ("lease zero", 0, ValueError),
    ("lease nan", math.nan, ValueError),
    ("lease bool", True, ValueError),
    ("lease str", "30", ValueError),
]

CALLS: list[Call] = [
    *(Call(f"set ttl {i}", "set", ("prev", "new"), {"ttl": v}, e, "ttl") for i, v, e in BAD_TTLS),
    *(Call(f"set {i}", "set", ("prev", "new"), {"tags": v}, e, f) for i, v, e, f in BAD_TAGS),
    *(Call(f"set {i}", "set", ("prev", "new"), {"meta": v}, TypeError, f) for i, v, f in BAD_META),
    Call("bind int", "set", ("prev", "new"), {"bind": 1}, TypeError, "'int'"),
    Call("bind str", "set", ("prev", "new"), {"bind": "owner"}, TypeError, "bind"),
    Call("bind slots", "set", ("prev", "new"), {"bind": NoWeakref()}, TypeError, "NoWeakref"),
    Call("pickle a lock", "set", ("prev", threading.Lock()), {}, SerializationError, "lock"),
    Call("key object", "set", (object(), 1), {}, TypeError, "object"),
    Call("key unhashable type", "get", (object(),), {}, TypeError, "object"),
    Call("pop key object", "pop", (object(),), {}, TypeError, "object"),
    Call("has key object", "has", (object(),), {}, TypeError, "object"),
    Call("delete key object", "delete", (object(),), {}, TypeError, "object"),
    Call("info key object", "info", (object(),), {}, TypeError, "object"),
    *(Call(f"touch ttl {i}", "touch", ("prev",), {"ttl": v}, e, "ttl") for i, v, e in BAD_TTLS),
    Call("touch without ttl", "touch", ("prev",), {}, TypeError, "ttl"),
    Call("evict empty", "evict", ("",), {}, ValueError, "tag"),
    Call("evict int", "evict", (1,), {}, TypeError, "'int'"),
    Call("evict none", "evict", (None,), {}, TypeError, "NoneType"),
    Call("keys empty tag", "keys", (), {"tag": ""}, ValueError, "tag"),
    Call("keys int prefix", "keys", (), {"prefix": 1}, TypeError, "prefix"),
    Call("add key object", "add", ("v",), {"key": object()}, TypeError, "object"),
    Call("add lock", "add", (threading.Lock(),), {}, TypeError, "lock"),
    Call("add ttl", "add", ("v",), {"key": "k", "ttl": -5}, ValueError, "ttl"),
    Call("factory int", "get_or_set", ("k", 1), {}, TypeError, "factory"),
    Call("factory none", "get_or_set", ("k", None), {}, TypeError, "factory"),
    Call("factory str", "get_or_set", ("k", "factory"), {}, TypeError, "'str'"),
    *(
        Call(f"get_or_set {i}", "get_or_set", ("k", factory), {"lease": v}, e, "lease")
        for i, v, e in BAD_LEASES
    ),
    *(
        Call(f"get_or_set ttl {i}", "get_or_set", ("k", factory), {"ttl": v}, e, "ttl")
        for i, v, e in BAD_TTLS
    ),
    *(
        Call(f"get_or_set {i}", "get_or_set", ("k", factory), {"tags": v}, e, f)
        for i, v, e, f in BAD_TAGS
    ),
    *(
        Call(f"get_or_set {i}", "get_or_set", ("k", factory), {"meta": v}, TypeError, f)
        for i, v, f in BAD_META
    ),
    Call("getfile int value", "getfile", ("int",), {}, TypeError, "'int'"),
    Call("getfile list value", "getfile", ("list",), {}, TypeError, "'list'"),
    Call("getfile missing", "getfile", ("k",), {}, KeyError, "k"),
    Call("getfile suffix int", "getfile", ("bytes",), {"suffix": 1}, TypeError, "suffix"),
    Call("getfile delete str", "getfile", ("bytes",), {"delete": "yes"}, TypeError, "delete"),
    Call("getfile directory int", "getfile", ("bytes",), {"directory": 3}, TypeError, "directory"),
    Call(
        "getfile no directory",
        "getfile",
        ("bytes",),
        {"directory": "/nonexistent/dir"},
        FileNotFoundError,
        "/nonexistent/dir",
    ),
]


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    c = Cache(MemoryStore(), DiskStore(tmp_path / "store"))
    c.set("prev", "old")
    c.set("int", 12)
    c.set("list", [1])
    c.set("bytes", b"b")
    NOT_CALLED.clear()
    yield c
    c.close()


def invoke(cache: Cache, call: Call, mode: str, out: Path) -> Any:
    kwargs = dict(call.kwargs)
    if call.method == "getfile":
        kwargs.setdefault("directory", out)
        if mode == "sync":
            with cache.getfile(*call.args, **kwargs):
                return None

        async def enter() -> None:
            async with cache.getfile_async(*call.args, **kwargs):
                pass

        return asyncio.run(enter())
    if call.method == "keys":
        if mode == "sync":
            return cache.keys(*call.args, **kwargs)  # must raise before any iteration
        return cache.keys_async(*call.args, **kwargs)
    if mode == "sync":
        return getattr(cache, call.method)(*call.args, **kwargs)
    return asyncio.run(getattr(cache, call.method + "_async")(*call.args, **kwargs))


def assert_nothing_written(cache: Cache, out: Path) -> None:
    for tier in tiers_of(cache):
        assert tier.store.get(":k") is None, f"{tier.name} holds the key"
        entry = tier.store.get(":prev")
        assert entry is not None, f"{tier.name} lost the previous value"
    assert cache.get("prev") == "old"
    assert store_of(cache).get(":prev").value == "old"
    assert sorted(cache.keys()) == ["bytes", "int", "list", "prev"]
    assert list(out.iterdir()) == [], "getfile left a file behind"
    assert NOT_CALLED == [], "the factory ran despite bad arguments"


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("call", CALLS, ids=[c.id for c in CALLS])
def test_a_bad_call_raises_one_clear_error_and_writes_nothing(
    cache: Cache, call: Call, mode: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(call.error) as caught:
        invoke(cache, call, mode, out)
    if call.error is KeyError:
        assert caught.value.args == (call.args[0],)
    else:
        check_message(caught.value, call.fragment)
    assert_nothing_written(cache, out)


@pytest.mark.parametrize(
    ("serializer", "value", "fragment"),
    [
        ("json", {1, 2}, "set"),
        ("json", object(), "object"),
        ("json", b"bytes", "bytes"),
        ("raw", "a str", "'str'"),
        ("raw", 12, "'int'"),
        ("msgpack", {1, 2}, "set"),
        ("pickle", threading.Lock(), "lock"),
        ("pickle", lambda: 1, "lambda"),
    ],
)
def test_an_unserialisable_value_is_refused_before_any_tier_is_written(
    tmp_path: Path, serializer: str, value: Any, fragment: str
) -> None:
    cache = Cache(MemoryStore(), DiskStore(tmp_path / "s"), serializer=serializer)
    previous = b"old" if serializer in ("raw", "pickle") else "old"
    cache.set("k", previous)
    with pytest.raises(SerializationError) as caught:
        cache.set("k", value)
    check_message(caught.value, fragment)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, TiersError)
    assert [store.get(":k") is not None for store in stores_of(cache)] == [True, True]
    assert store_of(cache).get(":k").value == previous  # memory was not written either
    assert cache.get("k") == previous
    with pytest.raises(SerializationError):
        cache.get_or_set("j", lambda: value)
    assert cache.get("j", MISSING) is MISSING
    with pytest.raises(SerializationError):
        asyncio.run(cache.set_async("k", value))
    assert cache.get("k") == previous


class BadName:
    name = "sérialiseur"

    def dumps(self, value: Any) -> bytes:
        return b""

    def loads(self, data: bytes) -> Any:
        return None


class NoName:
    def dumps(self, value: Any) -> bytes:
        return b""

    def loads(self, data: bytes) -> Any:
        return None


SHORT = "short"  # a test secret, too short on purpose


def d(tmp: Path) -> str:
    return str(tmp / "d")


CONSTRUCTORS: list[tuple[str, Callable[[Path], Any], type[BaseException], str]] = [
    ("unknown scheme", lambda t: Cache("bogus://x"), ConfigError, "bogus"),
    ("redis db", lambda t: Cache("redis://localhost:6379/zero"), ConfigError, "database"),
    ("redis option", lambda t: Cache("redis://localhost:6379/0?prefx=a"), ConfigError, "prefx"),
    ("s3 without bucket", lambda t: Cache("s3://"), ConfigError, "bucket"),
    ("s3 option", lambda t: Cache("s3://b/p?bogus=1"), ConfigError, "bogus"),
    ("unknown memory option", lambda t: Cache("memory://?max_itemz=3"), ConfigError, "max_itemz"),
    ("unknown disk option", lambda t: Cache(f"disk://{d(t)}?size=1GB"), ConfigError, "size"),
    ("bad durable", lambda t: Cache(f"disk://{d(t)}?durable=maybe"), ConfigError, "durable"),
    ("bad max_size", lambda t: Cache(f"disk://{d(t)}?max_size=lots"), ConfigError, "lots"),
    ("bad max_items", lambda t: Cache("memory://?max_items=abc"), ConfigError, "max_items"),
    ("negative max_items", lambda t: Cache("memory://?max_items=-1"), ConfigError, "max_items"),
    (
        "repeated option",
        lambda t: Cache("memory://?max_items=1&max_items=2"),
        ConfigError,
        "twice",
    ),
    ("memory host", lambda t: Cache("memory://host"), ConfigError, "memory://"),
    ("disk without path", lambda t: Cache("disk://"), ConfigError, "path"),
    ("empty path", lambda t: Cache(""), ConfigError, "empty"),
    ("bytes tier", lambda t: Cache(b"/tmp/x"), TypeError, "'bytes'"),
    ("int tier", lambda t: Cache(42), TypeError, "'int'"),
    ("store class", lambda t: Cache(MemoryStore), TypeError, "MemoryStore"),
    ("bad tier after a good one", lambda t: Cache(d(t), "bogus://"), ConfigError, "bogus"),
    (
        "bad disk url after a good one",
        lambda t: Cache(d(t), f"disk://{t}/e?max_size=x"),
        ConfigError,
        "max_size",
    ),
    ("unknown serializer", lambda t: Cache(d(t), serializer="yaml"), ConfigError, "yaml"),
    ("serializer object", lambda t: Cache(d(t), serializer=object()), ConfigError, "object"),
    (
        "serializer without name",
        lambda t: Cache(d(t), serializer=NoName()),
        ConfigError,
        "NoName",
    ),
    (
        "serializer non-ascii name",
        lambda t: Cache(d(t), serializer=BadName()),
        ConfigError,
        "sérialiseur",
    ),
    ("bad compress", lambda t: Cache(d(t), compress="gzip"), ConfigError, "gzip"),
    ("compress int", lambda t: Cache(d(t), compress=1), ConfigError, "compress"),
    ("namespace colon", lambda t: Cache(d(t), namespace="a:b"), ConfigError, "a:b"),
    ("namespace int", lambda t: Cache(d(t), namespace=1), TypeError, "namespace"),
    ("on_tier_error", lambda t: Cache(d(t), on_tier_error="ignore"), ConfigError, "ignore"),
    (
        "on_tier_error none",
        lambda t: Cache(d(t), on_tier_error=None),
        ConfigError,
        "on_tier_error",
    ),
    ("lease zero", lambda t: Cache(d(t), lease=0), ConfigError, "lease"),
    ("lease negative", lambda t: Cache(d(t), lease=-1), ConfigError, "lease"),
    ("lease bool", lambda t: Cache(d(t), lease=True), ConfigError, "lease"),
    ("lease str", lambda t: Cache(d(t), lease="30"), ConfigError, "lease"),
    ("ttl negative", lambda t: Cache(d(t), ttl=-1), ValueError, "ttl"),
    ("ttl nan", lambda t: Cache(d(t), ttl=math.nan), ValueError, "ttl"),
    ("ttl str", lambda t: Cache(d(t), ttl="60"), TypeError, "ttl"),
    ("ttl bool", lambda t: Cache(d(t), ttl=True), TypeError, "ttl"),
    ("short secret", lambda t: Cache(d(t), secret=SHORT), ConfigError, "16"),
    ("secret int", lambda t: Cache(d(t), secret=12345678901234567890), ConfigError, "secret"),
]


@pytest.mark.parametrize(
    ("make", "error", "fragment"),
    [c[1:] for c in CONSTRUCTORS],
    ids=[c[0] for c in CONSTRUCTORS],
)
def test_a_bad_cache_configuration_raises_one_clear_error_and_creates_nothing(
    tmp_path: Path, make: Callable[[Path], Any], error: type[BaseException], fragment: str
) -> None:
    with pytest.raises(error) as caught:
        make(tmp_path)
    check_message(caught.value, fragment)
    assert not (tmp_path / "d").exists(), "a store directory was created for a refused cache"
    assert not (tmp_path / "e").exists()


def test_config_errors_can_be_caught_as_value_errors() -> None:
    with pytest.raises(ValueError, match="bogus"):
        Cache("bogus://")
    assert issubclass(ConfigError, TiersError)
    assert issubclass(SerializationError, TypeError) and issubclass(SerializationError, TiersError)


def test_a_numpy_like_real_ttl_is_accepted(tmp_path: Path) -> None:
    from fractions import Fraction

    cache = Cache(MemoryStore())
    cache.set("k", 1, ttl=Fraction(3, 2))
    info = cache.info("k")
    assert info is not None and info.ttl is not None and 0 < info.ttl <= 1.5


@pytest.mark.parametrize(
    ("module", "make", "extra"),
    [
        ("redis", "tiers.RedisStore()", "tiers[redis]"),
        ("redis", "tiers.Cache('redis://h:6379/0')", "tiers[redis]"),
        ("obstore", "tiers.ObjectStore('s3://bucket')", "tiers[s3]"),
        ("obstore", "tiers.Cache('s3://bucket/cache')", "tiers[s3]"),
    ],
)
def test_a_missing_extra_is_named(module: str, make: str, extra: str) -> None:
    """Without the client library, making the store says which extra to install."""
    code = (
        f"import sys; sys.modules[{module!r}] = None; import tiers, tiers.errors\n"
        f"try:\n    {make}\nexcept tiers.errors.MissingDependencyError as exc:\n"
        "    print(exc)\nelse:\n    print('no error')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f'pip install "{extra}"' in done.stdout, done.stdout + done.stderr


def test_import_needs_no_extra() -> None:
    """``import tiers`` works without redis, obstore, distributed, msgpack or rich."""
    blocked = ("redis", "obstore", "distributed", "msgpack", "rich", "zstandard", "lz4")
    code = f"import sys; sys.modules.update(dict.fromkeys({blocked!r})); import tiers; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "ok", done.stderr
