"""Tests for ``tiers._hashing.hash_key``: determinism, type distinctness, framing, errors."""

from __future__ import annotations

import copy
import dataclasses
import enum
import json
import math
import os
import pickle
import random
import re
import struct
import subprocess
import sys
import time
import tracemalloc
import uuid
import warnings
from collections import OrderedDict, defaultdict, namedtuple
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiers._hashing import HASH_SCHEME, hash_key

SRC = Path(__file__).resolve().parents[1] / "src"
HEX32 = re.compile(r"[0-9a-f]{32}")


# --- helper types ----------------------------------------------------------------------------


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Shade(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    LOW = 1


class Perm(enum.Flag):
    R = 4
    W = 2


@dataclasses.dataclass
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Vector:
    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class Node:
    value: Any
    children: tuple[Any, ...] = ()


@dataclasses.dataclass
class Linked:
    next: Any = None


class Pair(NamedTuple):
    a: int
    b: int


Couple = namedtuple("Couple", ["a", "b"])


class MyStr(str):
    __slots__ = ()


class OtherStr(str):
    __slots__ = ()


class MyInt(int):
    pass


class MyList(list):  # type: ignore[type-arg]
    pass


class Keyed:
    def __init__(self, key: object) -> None:
        self.key = key

    def __cache_key__(self) -> object:
        return self.key


class OtherKeyed(Keyed):
    pass


class SelfKeyed:
    def __cache_key__(self) -> object:
        return self


@dataclasses.dataclass
class KeyedPoint:
    x: int
    note: str

    def __cache_key__(self) -> object:
        return self.x  # `note` is deliberately left out


class KeyedStr(str):
    __slots__ = ()

    def __cache_key__(self) -> object:
        return "constant"


class Opaque:
    pass


# --- basics ----------------------------------------------------------------------------------

SUPPORTED: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**200,
    -(2**200),
    1.5,
    float("nan"),
    -0.0,
    float("inf"),
    1 + 2j,
    "",
    "héllo",
    "\ud800",
    b"",
    b"\x00\xff",
    bytearray(b"ab"),
    memoryview(b"ab"),
    (),
    [],
    {},
    set(),
    frozenset(),
    (1, "a", [2.5, {"k": {3}}]),
    {"a": [1, 2], (1, 2): frozenset({"x"})},
    datetime(2020, 1, 2, 3, 4, 5),
    datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    date(2020, 1, 2),
    dtime(3, 4, 5),
    timedelta(days=-1, microseconds=5),
    Decimal("1.10"),
    Decimal("-Infinity"),
    Decimal("NaN"),
    uuid.UUID(int=12345),
    Path("a/b"),
    PurePosixPath("/x"),
    PureWindowsPath("C:/x"),
    Color.RED,
    Level.LOW,
    Perm.R | Perm.W,
    Point(1, 2),
    Node(1, (Node(2),)),
    Pair(1, 2),
    Couple(1, 2),
    MyStr("a"),
    MyInt(3),
    MyList([1]),
    OrderedDict(a=1),
    defaultdict(list, a=[1]),
    Keyed((1, "k")),
]


def test_scheme_version() -> None:
    assert HASH_SCHEME == "v1"


def _stable_id(value: object) -> str:
    """A test id that is the same in every process (pytest-xdist compares them): no address,
    no set order that depends on the hash seed."""
    if isinstance(value, memoryview):
        text = f"memoryview({value.tobytes()!r})"
    elif isinstance(value, (set, frozenset)):
        text = f"{type(value).__name__}({sorted(map(repr, value))})"
    else:
        text = repr(value)
    return text[:30]


@pytest.mark.parametrize("value", SUPPORTED, ids=lambda v: type(v).__name__)
def test_supported_values_hash_to_32_lowercase_hex(value: Any) -> None:
    digest = hash_key(value)
    assert HEX32.fullmatch(digest)
    assert hash_key(value) == digest


def test_all_supported_values_are_distinct() -> None:
    digests = [hash_key(v) for v in SUPPORTED]
    assert len(set(digests)) == len(digests)


# --- distinctness and framing ----------------------------------------------------------------

_utc = timezone.utc
_plus1 = timezone(timedelta(hours=1))
MUST_DIFFER: list[tuple[Any, Any]] = [
    (1, 1.0),
    (1, True),
    (1, "1"),
    (1, b"1"),
    (1.0, True),
    ("1", b"1"),
    (0, False),
    (0, 0.0),
    (0.0, -0.0),
    (None, "None"),
    (None, ()),
    (None, 0),
    ((), []),
    ([1], (1,)),
    (set(), frozenset()),
    ({1}, frozenset({1})),
    ({}, set()),
    ({1: 2}, {2: 1}),
    ({"a": 1}, [("a", 1)]),
    ({"a": 1}, {"a": 1.0}),
    ({"a": 1, "b": 2}, {"a": 2, "b": 1}),
    ({"k": [1]}, {"k": (1,)}),
    ([1, 2], [2, 1]),
    (("ab", "c"), ("a", "bc")),
    ((b"ab", b"c"), (b"a", b"bc")),
    (["a", ""], ["", "a"]),
    ([[1], 2], [1, [2]]),
    ((1, (2, 3)), ((1, 2), 3)),
    ([], [None]),
    ([[]], [[], []]),
    (("a",), "a"),
    ("a", b"a"),
    ("", b""),
    (b"a", bytearray(b"a")),
    (bytearray(b"a"), memoryview(b"a")),
    ("\ud800", "\ufffd"),
    (2**64, 2**64 + 1),
    (-1, 2**64 - 1),
    (2**63, -(2**63)),
    (255, -1),
    (1j, 1.0),
    (complex(1, 0), 1.0),
    (complex(0.0, 0.0), complex(-0.0, 0.0)),
    (Point(1, 2), (1, 2)),
    (Point(1, 2), Vector(1, 2)),
    (Point(1, 2), Point(2, 1)),
    (Point(1, 2), {"x": 1, "y": 2}),
    (Color.RED, 1),
    (Color.RED, "RED"),
    (Color.RED, Color.GREEN),
    (Color.RED, Shade.RED),
    (Level.LOW, 1),
    (Perm.R, Perm.R | Perm.W),
    (Pair(1, 2), (1, 2)),
    (Pair(1, 2), Couple(1, 2)),
    (MyStr("a"), "a"),
    (MyStr("a"), OtherStr("a")),
    (MyInt(1), 1),
    (MyList([1]), [1]),
    (OrderedDict(a=1), {"a": 1}),
    (Keyed(1), 1),
    (Keyed(1), OtherKeyed(1)),
    (Keyed(1), Keyed(2)),
    (Path("a"), "a"),
    (PurePosixPath("a"), PureWindowsPath("a")),
    (Path("a"), Path("a/b")),
    (uuid.UUID(int=1), uuid.UUID(int=1).bytes),
    (uuid.UUID(int=1), uuid.UUID(int=2)),
    (datetime(2020, 1, 1), datetime(2020, 1, 1, tzinfo=_utc)),
    (datetime(2020, 1, 1, 1, tzinfo=_plus1), datetime(2020, 1, 1, tzinfo=_utc)),
    (datetime(2020, 1, 1), date(2020, 1, 1)),
    (datetime(2020, 1, 1), "2020-01-01T00:00:00"),
    (dtime(1), timedelta(hours=1)),
    (timedelta(1), timedelta(1, 1)),
    (Decimal("1.0"), Decimal("1.00")),
    (Decimal("0"), Decimal("-0")),
    (Decimal(1), 1),
    (Decimal("NaN"), Decimal("sNaN")),
    (Decimal("Infinity"), Decimal("-Infinity")),
    (Decimal("1.0000000000000000000000000000001"), Decimal("1.0000000000000000000000000000002")),
]


@pytest.mark.parametrize(("a", "b"), MUST_DIFFER, ids=_stable_id)
def test_distinct_values_hash_differently(a: Any, b: Any) -> None:
    assert hash_key(a) != hash_key(b)


MUST_MATCH: list[tuple[Any, Any]] = [
    (float("nan"), -float("nan")),
    (float("nan"), struct.unpack("<d", bytes.fromhex("0100000000f0ff7f"))[0]),
    (float("nan"), math.inf - math.inf),
    ([float("nan")], [struct.unpack("<d", bytes.fromhex("ffffffffffffff7f"))[0]]),
    (complex(float("nan"), 1), complex(-float("nan"), 1)),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
    ({"x", "y", "z"}, {"z", "y", "x"}),
    (OrderedDict(a=1, b=2), OrderedDict(b=2, a=1)),
    (memoryview(b"abc"), b"abc"),
    (memoryview(b"abcdef")[::2], b"ace"),
    (Path("a/b"), PurePosixPath("a/b")),
    (
        datetime(2020, 1, 1, tzinfo=timezone(timedelta(hours=1), "CET")),
        datetime(2020, 1, 1, tzinfo=_plus1),
    ),
    (Decimal("1.5"), Decimal("15e-1")),
    (Perm.R | Perm.W, Perm.W | Perm.R),
    (Keyed([1, 2]), Keyed([1, 2])),
    (KeyedPoint(1, "a"), KeyedPoint(1, "b")),
    (KeyedStr("a"), KeyedStr("b")),
]


@pytest.mark.parametrize(("a", "b"), MUST_MATCH, ids=_stable_id)
def test_equivalent_values_hash_equal(a: Any, b: Any) -> None:
    assert hash_key(a) == hash_key(b)


def test_hash_depends_on_value_not_identity() -> None:
    a, b = [1, {"k": "v"}], [1, {"k": "v"}]
    assert a is not b
    assert hash_key(a) == hash_key(b)
    shared = [1]
    assert hash_key([shared, shared]) == hash_key([[1], [1]])
    before = hash_key(a)
    a[1]["k"] = "w"  # type: ignore[index]
    assert hash_key(a) != before


# --- properties ------------------------------------------------------------------------------

_text = st.text(st.characters() | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))
_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | _text
    | st.binary()
    | st.complex_numbers()
)
_hashables = st.recursive(
    _leaves, lambda c: st.tuples(c, c) | st.frozensets(c, max_size=3), max_leaves=6
)
_values = st.recursive(
    _leaves,
    lambda c: (
        st.lists(c, max_size=4)
        | st.lists(c, max_size=4).map(tuple)
        | st.dictionaries(_hashables, c, max_size=4)
        | st.sets(_hashables, max_size=4)
        | st.frozensets(_hashables, max_size=4)
    ),
    max_leaves=16,
)


def canon(v: Any) -> str:
    """An independent, type-aware canonical form: equal forms must mean equal hashes."""
    t = type(v)
    if t is float:
        return "nan" if math.isnan(v) else f"float({v.hex()})"
    if t is complex:
        return f"complex({canon(v.real)}, {canon(v.imag)})"
    if t in (list, tuple):
        return f"{t.__name__}({', '.join(map(canon, v))})"
    if t in (set, frozenset):
        return f"{t.__name__}({', '.join(sorted(map(canon, v)))})"
    if t is dict:
        return f"dict({', '.join(sorted(f'{canon(k)}: {canon(x)}' for k, x in v.items()))})"
    return f"{t.__name__}({v!r})"


@given(_values)
def test_copies_hash_equal(value: Any) -> None:
    digest = hash_key(value)
    assert hash_key(copy.deepcopy(value)) == digest
    assert hash_key(pickle.loads(pickle.dumps(value))) == digest


@given(_values, _values)
def test_hash_equality_matches_canonical_equality(a: Any, b: Any) -> None:
    assert (hash_key(a) == hash_key(b)) == (canon(a) == canon(b))


@given(st.dictionaries(_hashables, _values, max_size=8), st.randoms(use_true_random=False))
def test_dict_order_does_not_matter(d: dict[Any, Any], rnd: random.Random) -> None:
    items = list(d.items())
    rnd.shuffle(items)
    assert hash_key(dict(items)) == hash_key(d)
    assert hash_key({"outer": dict(items)}) == hash_key({"outer": d})


@given(st.sets(_hashables, max_size=8), st.randoms(use_true_random=False))
def test_set_order_does_not_matter(s: set[Any], rnd: random.Random) -> None:
    elements = list(s)
    rnd.shuffle(elements)
    grown: set[Any] = {object() for _ in range(50)}  # a bigger table iterates differently
    junk = set(grown)
    grown.update(elements)
    grown -= junk
    assert hash_key(set(elements)) == hash_key(s) == hash_key(grown)
    assert hash_key(frozenset(elements)) == hash_key(frozenset(s))


# --- determinism across processes and versions -------------------------------------------

CORPUS_SRC = """
import datetime, decimal, pathlib, uuid
corpus = [
    {"alpha": 1, "beta": [2, 3], "gamma": {"delta": None}},
    {"apple", "banana", "cherry", "durian", "elderberry"},
    frozenset({"x", "y", ("z", 1)}),
    {("k", 1): {"v"}, "s": frozenset({b"b1", b"b2"})},
    (1, "a", 2.5, b"raw", None, True, -(2**70), float("nan"), 1j),
    [decimal.Decimal("3.14"), uuid.UUID(int=7), pathlib.PurePosixPath("/a/b")],
    datetime.datetime(2021, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc),
]
"""
OPTIONAL_CORPUS_SRC = """
import numpy as np, pandas as pd
corpus += [
    np.arange(12, dtype="<f8").reshape(3, 4),
    np.array(["a", {"k": "v"}, None], dtype=object),
    pd.DataFrame({"name": ["ann", "bob"], "n": [1, 2], "c": pd.Categorical(["u", "v"])}),
    pd.Series({"p": 1.5, "q": 2.5}, name="s"),
]
"""


def _corpus_src() -> str:
    try:
        import numpy  # noqa: F401
        import pandas  # noqa: F401
    except ImportError:
        return CORPUS_SRC
    return CORPUS_SRC + OPTIONAL_CORPUS_SRC


def test_stable_across_processes_and_hash_seeds() -> None:
    src = _corpus_src()
    namespace: dict[str, Any] = {}
    exec(src, namespace)  # noqa: S102 - the same corpus source runs in every process
    expected = [hash_key(v) for v in namespace["corpus"]]
    script = (
        "import json\nfrom tiers._hashing import hash_key\n"
        + src
        + "print(json.dumps([hash('abc'), [hash_key(v) for v in corpus]]))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(SRC)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("0", "1", "12345", "random")
    ]
    str_hashes = set()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        str_hash, digests = json.loads(out)
        str_hashes.add(str_hash)
        assert digests == expected
    assert len(str_hashes) >= 3  # the seeds really changed hash(), so the test can fail


def test_optional_libraries_are_not_imported() -> None:
    # Load the module by path, so other package modules cannot affect what gets imported.
    path = SRC / "tiers" / "_hashing.py"
    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('probe', {str(path)!r})\n"
        "probe = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(probe)\n"
        "hash_key = probe.hash_key\n"
        "hash_key((1, 'a', {2: [3.0]}))\n"
        "try:\n    hash_key(object())\nexcept TypeError:\n    pass\n"
        "print(sorted({'numpy', 'pandas', 'pydantic'} & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.strip() == "[]"


GOLDEN: list[tuple[Any, str]] = [
    (None, "386a9f10a62ce5dd88773ee231fb0c16"),
    (True, "650bc30e41de1f5f79d8c8a68678cfe6"),
    (-1, "c8f02693a4c5111dc4ea577ee94f0881"),
    (2**100, "1bacb0270381cfc6c17b456b556b6a06"),
    (1.5, "2aa574dd1a3dea57a71303d7789e88b8"),
    (float("nan"), "3c8fcf8cac8d43cb46c75b3f24f6f6e0"),
    ("héllo", "aaab2fb1b534e5db7652395f651ecd2e"),
    (b"\x00\xff", "a10587dc6547c3d2d0a9182b9c02b1e6"),
    ((1, "a", 2.5), "c2951272a5c50dad89ca8929e600f2d5"),
    ([1, [2, 3]], "96362cff0a46aef72a025808e854dda3"),
    ({"b": 2, "a": 1}, "8328fbc03c3e7d92585f5bf5a8a5ecb4"),
    (frozenset({"x", "y"}), "b017b40dfa52206e54983d4382f2ff5d"),
    (Decimal("1.10"), "d18b861e072cf885d37f06bc5243133a"),
    (uuid.UUID(int=1), "b23c0d55ad03b2e4960a6fa8245bc281"),
    (datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "75b146acd87bef954c3591213c1f9234"),
    (PurePosixPath("/tmp/x"), "3211856e1a01f829dcb53505fdc1bd0c"),
]


def test_stream_starts_with_scheme_version_then_tagged_payload() -> None:
    import xxhash

    assert hash_key(None) == xxhash.xxh3_128(b"tiers-hash-v1N").hexdigest()
    framed = b"tiers-hash-v1" + b"s" + struct.pack("<Q", 2) + b"ab"
    assert hash_key("ab") == xxhash.xxh3_128(framed).hexdigest()


@pytest.mark.parametrize(("value", "digest"), GOLDEN, ids=_stable_id)
def test_golden_digests(value: Any, digest: str) -> None:
    assert hash_key(value) == digest


# --- stdlib rules ----------------------------------------------------------------------------


def test_dataclass_hashes_by_class_fields_and_values() -> None:
    assert hash_key(Point(1, 2)) == hash_key(Point(1, 2))
    assert hash_key(Node(1, (Node(2),))) == hash_key(Node(1, (Node(2),)))
    assert hash_key(Node(1, (Node(2),))) != hash_key(Node(1, (Node(3),)))


def test_enum_hashes_by_class_and_member() -> None:
    assert hash_key(Color.RED) == hash_key(Color(1)) == hash_key(Color["RED"])
    assert hash_key([Color.RED, Color.GREEN]) != hash_key([Color.GREEN, Color.RED])
    if sys.version_info >= (3, 11):

        class Mode(enum.StrEnum):
            A = "a"

        assert hash_key(Mode.A) != hash_key("a")


def test_enum_hashes_by_member_name_not_value() -> None:
    class Sentinel(enum.Enum):
        A = object()  # a value hash_key could not hash on its own

    assert hash_key(Sentinel.A) == hash_key(Sentinel["A"])
    hue1 = enum.Enum("Hue", {"RED": 1}, module="goldens", qualname="Hue")
    hue2 = enum.Enum("Hue", {"RED": 2}, module="goldens", qualname="Hue")
    assert hash_key(hue1.RED) == hash_key(hue2.RED) == "fb297a7800bc0c9d6323aa6cce37a7b1"


def test_cache_key_precedence_and_class_distinction() -> None:
    assert hash_key(Keyed({"a": [1]})) == hash_key(Keyed({"a": [1]}))
    assert hash_key(Keyed({"a": [1]})) != hash_key(Keyed({"a": [2]}))
    # __cache_key__ beats the dataclass and str-subclass rules
    assert hash_key(KeyedPoint(1, "a")) != hash_key(KeyedPoint(2, "a"))
    assert hash_key(KeyedStr("a")) != hash_key(MyStr("a"))


def test_builtin_subclasses_keep_base_content() -> None:
    assert hash_key(MyStr("a")) == hash_key(MyStr("a"))
    assert hash_key(MyStr("a")) != hash_key(MyStr("b"))
    assert hash_key(MyList([1, 2])) != hash_key(MyList([2, 1]))
    assert hash_key(defaultdict(list, a=[1])) != hash_key(defaultdict(list, a=[2]))


# --- errors ----------------------------------------------------------------------------------


def test_unsupported_object_raises_type_error_naming_the_type() -> None:
    with pytest.raises(TypeError, match=r"cannot hash an object of type '[\w.]*Opaque'") as info:
        hash_key(Opaque())
    assert "__cache_key__" in str(info.value)
    assert "0x" not in str(info.value)  # no address-based repr
    with pytest.raises(TypeError, match=r"'builtins\.object'"):
        hash_key(object())


@pytest.mark.parametrize(
    "value",
    [lambda: 1, [1, {"k": Opaque()}], {Opaque()}, (x for x in ()), Opaque, Keyed(Opaque()), ...],
    ids=["lambda", "nested", "in-set", "generator", "class", "in-cache-key", "ellipsis"],
)
def test_unsupported_values_raise_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="hash_key cannot hash an object of type"):
        hash_key(value)


def _self_list() -> Any:
    x: list[Any] = [1]
    x.append([x])
    return x


def _self_dict() -> Any:
    d: dict[str, Any] = {}
    d["me"] = (d,)
    return d


def _self_sublist() -> Any:
    x = MyList()
    x.append(x)
    return x


def _self_linked() -> Any:
    a = Linked()
    a.next = Linked(a)
    return a


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (_self_list, "list"),
        (_self_dict, "dict"),
        (_self_sublist, "MyList"),
        (_self_linked, "Linked"),
        (SelfKeyed, "SelfKeyed"),
    ],
)
def test_self_referential_values_raise_type_error(make: Any, kind: str) -> None:
    with pytest.raises(TypeError, match=f"cannot hash a self-referential {kind}"):
        hash_key(make())


# --- numpy -----------------------------------------------------------------------------------


def test_numpy_arrays() -> None:
    np = pytest.importorskip("numpy")
    a = np.arange(6, dtype=np.int64)
    assert hash_key(a) == hash_key(np.arange(6, dtype=np.int64))
    assert hash_key(a) != hash_key(a.astype(np.int32))
    assert hash_key(a) != hash_key(a.astype(np.float64))
    assert hash_key(a) != hash_key(a.tolist())
    shapes = {hash_key(a.reshape(s)) for s in [(6,), (2, 3), (3, 2), (1, 6)]}
    assert len(shapes) == 4
    c = np.arange(12.0).reshape(3, 4)
    f = np.asfortranarray(c)
    assert f.flags.f_contiguous
    assert not f.flags.c_contiguous
    assert hash_key(c) == hash_key(f)
    view = np.arange(40).reshape(5, 8)[::2, 1::3]
    assert not view.flags.c_contiguous
    assert hash_key(view) == hash_key(view.copy())
    assert hash_key(np.array([1, 2], ">i4")) == hash_key(np.array([1, 2], "<i4"))
    assert hash_key(np.array([1, 2], "M8[s]")) != hash_key(np.array([1, 2], "M8[ms]"))
    assert hash_key(np.array(["ab"], "U2")) != hash_key(np.array(["ab"], "U3"))
    assert hash_key(np.zeros(0)) != hash_key(np.zeros((0, 1)))
    c[0, 0] = 99.0
    assert hash_key(c) != hash_key(f)
    golden = np.arange(6, dtype="<i4").reshape(2, 3)
    assert hash_key(golden) == "bbf8a0b47a30ecbcf14b1a6a4a8ff95d"
    assert hash_key(np.float64(1.5)) == "704f79d00b6d6a273b7080f46fd25410"


def test_numpy_scalars_and_zero_d_arrays() -> None:
    np = pytest.importorskip("numpy")
    assert hash_key(np.float64(1.0)) == hash_key(np.float64(1.0))
    distinct = [np.float64(1), np.float32(1), np.int64(1), np.array(1.0), 1.0, 1, np.bool_(True)]
    assert len({hash_key(v) for v in distinct}) == len(distinct)
    assert hash_key(np.str_("a")) != hash_key("a")
    assert hash_key(np.datetime64("2020-01-01")) != hash_key(np.datetime64("2020-01-02"))


def test_numpy_object_structured_and_string_arrays() -> None:
    np = pytest.importorskip("numpy")
    o1 = np.array([1, "x", None, {"k": [1]}], dtype=object)
    o2 = np.array([1, "x", None, {"k": [1]}], dtype=object)
    assert hash_key(o1) == hash_key(o2)
    o2[3]["k"].append(2)
    assert hash_key(o1) != hash_key(o2)
    packed = np.zeros(2, dtype=[("a", "u1"), ("b", "<i8")])
    aligned = np.zeros(2, dtype=np.dtype([("a", "u1"), ("b", "<i8")], align=True))
    aligned.view(np.uint8)[1:8] = 7  # garbage in the padding bytes
    assert hash_key(aligned) == hash_key(packed)
    renamed = np.zeros(2, dtype=[("a", "u1"), ("c", "<i8")])
    assert hash_key(renamed) != hash_key(packed)
    if hasattr(np, "dtypes") and hasattr(np.dtypes, "StringDType"):
        s1 = np.array(["ab", "c"], dtype=np.dtypes.StringDType())
        s2 = np.array(["ab", "c"], dtype=np.dtypes.StringDType())
        assert hash_key(s1) == hash_key(s2) != hash_key(np.array(["ab", "cd"], dtype=s1.dtype))
    cyclic = np.empty(1, dtype=object)
    cyclic[0] = cyclic
    with pytest.raises(TypeError, match="self-referential ndarray"):
        hash_key(cyclic)


def test_numpy_memmap_and_subclasses(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    mm = np.memmap(tmp_path / "m.bin", dtype="<f4", mode="w+", shape=(4,))
    mm[:] = [1, 2, 3, 4]
    assert hash_key(mm) == hash_key(np.array([1, 2, 3, 4], dtype="<f4"))
    del mm
    with pytest.raises(TypeError, match="MaskedArray"):
        hash_key(np.ma.masked_array([1, 2], mask=[0, 1]))


def test_large_array_hashes_fast_without_copying() -> None:
    np = pytest.importorskip("numpy")
    arr = np.random.default_rng(0).random(1_000_000)  # 8 MB of float64
    big = arr.tobytes()
    hash_key(arr)
    tracemalloc.start()
    try:
        hash_key(arr)
        hash_key(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # no copy of the 8 MB buffer
    start = time.perf_counter()
    for _ in range(10):
        hash_key(arr)
    assert (time.perf_counter() - start) / 10 < 0.05  # memory speed is ~0.2 ms; 50 ms is lax
    before = hash_key(arr)
    arr[-1] += 1.0  # the whole buffer is hashed, up to the last byte
    assert hash_key(arr) != before


# --- pandas ----------------------------------------------------------------------------------


def _frame(pd: Any) -> Any:
    return pd.DataFrame(
        {"a": [1, 2, 3], "b": ["x", "y", None], "c": [0.5, float("nan"), 1.5]},
        index=pd.Index([10, 20, 30], name="id"),
    )


def test_pandas_dataframe() -> None:
    pd = pytest.importorskip("pandas")
    df = _frame(pd)
    assert hash_key(df) == hash_key(_frame(pd))
    variants = [
        df[["b", "a", "c"]],
        df.set_axis([11, 20, 30], axis=0),
        df.rename_axis("key"),
        df.rename(columns={"a": "A"}),
        df.astype({"a": "int32"}),
        df.astype({"a": "float64"}),
        df.assign(a=[1, 2, 4]),
        df.iloc[:2],
        df.reset_index(),
    ]
    digests = {hash_key(v) for v in [df, *variants]}
    assert len(digests) == len(variants) + 1
    assert hash_key(pd.DataFrame({"a": [1, 2]})) == hash_key(
        pd.DataFrame({"a": [1, 2]}, index=pd.Index([0, 1]))
    )


def test_pandas_series_index_and_scalars() -> None:
    pd = pytest.importorskip("pandas")
    s = pd.Series([1.0, 2.0], index=["p", "q"], name="s")
    assert hash_key(s) == hash_key(pd.Series([1.0, 2.0], index=["p", "q"], name="s"))
    assert hash_key(s) != hash_key(s.rename("t"))
    assert hash_key(s) != hash_key(s.to_numpy())
    assert hash_key(s) != hash_key(s.to_frame())
    assert hash_key(pd.RangeIndex(3)) == hash_key(pd.Index([0, 1, 2]))
    assert hash_key(pd.Index([0, 1, 2])) != hash_key(pd.Index([0, 1, 2], name="n"))
    mi = pd.MultiIndex.from_tuples([(1, "a"), (2, "b")], names=["n", "l"])
    assert hash_key(mi) == hash_key(
        pd.MultiIndex.from_tuples([(1, "a"), (2, "b")], names=["n", "l"])
    )
    assert hash_key(mi) != hash_key(
        pd.MultiIndex.from_tuples([(1, "a"), (2, "c")], names=["n", "l"])
    )
    nullable = pd.Series([1, None], dtype="Int64")
    assert hash_key(nullable) == hash_key(pd.Series([1, None], dtype="Int64"))
    assert hash_key(nullable) != hash_key(pd.Series([1, None], dtype="float64"))
    ts = pd.Timestamp("2020-01-01 00:00:00.000000001")
    assert hash_key(ts) != hash_key(pd.Timestamp("2020-01-01 00:00:00.000000002"))
    assert hash_key(ts) != hash_key(ts.to_pydatetime(warn=False))
    assert hash_key(pd.Timedelta(1, "ns")) != hash_key(pd.Timedelta(2, "ns"))
    assert len({hash_key(v) for v in [pd.NaT, pd.NA, None, float("nan")]}) == 4


def test_pandas_categorical() -> None:
    pd = pytest.importorskip("pandas")

    def cat(values: list[str], categories: list[str], ordered: bool = False) -> Any:
        return pd.Series(pd.Categorical(values, categories=categories, ordered=ordered))

    base = cat(["u", "v", "u"], ["u", "v"])
    assert hash_key(base) == hash_key(cat(["u", "v", "u"], ["u", "v"]))
    variants = [
        cat(["u", "v", "u"], ["v", "u"]),
        cat(["u", "v", "u"], ["u", "v"], ordered=True),
        cat(["u", "v", "v"], ["u", "v"]),
        cat(["u", "v", "u"], ["u", "v", "w"]),
        pd.Series(["u", "v", "u"]),
    ]
    assert len({hash_key(v) for v in [base, *variants]}) == len(variants) + 1
    assert hash_key(base.array) == hash_key(pd.Categorical(["u", "v", "u"]))


# --- pydantic --------------------------------------------------------------------------------


def test_pydantic_models() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Inner(pydantic.BaseModel):
        tags: list[str]

    class User(pydantic.BaseModel):
        name: str
        inner: Inner

    class Admin(pydantic.BaseModel):
        name: str
        inner: Inner

    u = User(name="ann", inner=Inner(tags=["a"]))
    assert hash_key(u) == hash_key(User(name="ann", inner=Inner(tags=["a"])))
    assert hash_key(u) != hash_key(User(name="ann", inner=Inner(tags=["b"])))
    assert hash_key(u) != hash_key(Admin(name="ann", inner=Inner(tags=["a"])))
    assert hash_key(u) != hash_key(u.model_dump())


def test_pydantic_v1_models() -> None:
    pytest.importorskip("pydantic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v1 = pytest.importorskip("pydantic.v1")

        class Item(v1.BaseModel):  # type: ignore[misc,name-defined]
            n: int

        a, b, c = Item(n=1), Item(n=1), Item(n=2)
    assert hash_key(a) == hash_key(b) != hash_key(c)
    assert hash_key(a) != hash_key({"n": 1})


@settings(max_examples=25)
@given(st.lists(st.integers(-(2**40), 2**40), max_size=20), st.sampled_from(["<i8", ">i8", "<f8"]))
def test_numpy_hash_matches_for_rebuilt_arrays(values: list[int], dtype: str) -> None:
    np = pytest.importorskip("numpy")
    arr = np.array(values, dtype=dtype)
    assert hash_key(arr) == hash_key(np.array(values, dtype=dtype).copy(order="F"))
    assert hash_key(arr) == hash_key(arr.astype(arr.dtype.newbyteorder("<")))
