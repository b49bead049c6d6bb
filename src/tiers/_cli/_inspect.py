"""``tiers stats``, ``ls``, ``show`` and ``get``: look inside a store without changing it."""

from __future__ import annotations

import argparse
import heapq
import json
import os
import pprint
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._codec._envelope import Rejected
from .._stores._protocol import SupportsInfo, SupportsUsage, implements
from ._entries import (
    LS_COLUMNS,
    NAMESPACE_HELP,
    NO_READS,
    TABLE_COLUMNS,
    Decoder,
    header_facts,
    is_private,
    prefix_of,
    readable,
    row,
    scan,
    serializer_of,
)
from ._errors import NOTHING, USAGE, CLIError
from ._filters import Filter, Sort, parse_filter, parse_sort
from ._output import Column, Output, iso
from ._stores import opened

STATS_FIELDS = [
    Column("store"),
    Column("entries", "count"),
    Column("bytes", "bytes"),
    Column("max_size", "bytes", "max size"),
    Column("used", "ratio", "of max size"),
    Column("expired_present", "count", "expired, present"),
    Column("oldest", "time", "oldest created"),
    Column("newest", "time", "newest created"),
    Column("namespaces", "count"),
    Column("serializers", "json", "by serializer"),
    Column("hits", "count"),
    Column("misses", "count"),
    Column("hit_ratio", "ratio", "hit ratio"),
    Column("sets", "count"),
    Column("deletes", "count"),
    Column("errors", "count"),
    Column("counting_since", "time", "counting since"),
    Column("evictions", "count"),
    Column("expirations", "count"),
    Column("rejected", "count"),
]
"""``tiers stats``'s fields, one row each (JSON: one object per store with these names)."""


def register(commands: Any, common: Any) -> None:
    stats = commands.add_parser(
        "stats",
        parents=[common.store, common.output],
        help="entries, bytes, ages, serializers and hit counters of each store",
        description=(
            "Walk each store's entries (record heads only) and print what they hold, with the "
            "counters it keeps across processes: hits, misses, sets, evictions, errors."
        ),
    )
    stats.add_argument("stores", nargs="+", metavar="STORE")
    stats.add_argument(
        "--reset", action="store_true", help="zero the store's persistent counters afterwards"
    )
    stats.set_defaults(run=run_stats)

    ls = commands.add_parser(
        "ls",
        parents=[common.store, common.output],
        help="one row per entry: key, size, created, last access, expires, tags",
        description="List the entries of one namespace, streamed (bounded memory).",
        epilog=(
            "Filters: size, age, idle (since last read), expires (time left), key; "
            "e.g. --filter 'size>1MB' --filter 'age>7d' --filter 'expires<1h' --filter 'key~2024'."
        ),
    )
    ls.add_argument("store", metavar="STORE")
    ls.add_argument("--namespace", default="", help=NAMESPACE_HELP)
    ls.add_argument("--prefix", default="", help="only keys starting with this")
    ls.add_argument("--tag", help="only entries with this tag")
    ls.add_argument("--filter", action="append", default=[], metavar="EXPR", dest="filters")
    ls.add_argument(
        "--sort", metavar="FIELD[:asc|:desc]", help="size, created, accessed, expires or key"
    )
    ls.add_argument("--limit", type=_positive, metavar="N", help="at most N rows")
    ls.add_argument("-q", "--quiet", action="store_true", help="keys only, one per line")
    ls.set_defaults(run=run_ls)

    show = commands.add_parser(
        "show",
        parents=[common.store, common.output],
        help="everything known about one entry, memoize provenance included",
    )
    show.add_argument("store", metavar="STORE")
    show.add_argument("key", metavar="KEY")
    show.add_argument("--namespace", default="", help=NAMESPACE_HELP)
    show.set_defaults(run=run_show)

    get = commands.add_parser(
        "get",
        parents=[common.store],
        help="an entry's value: raw bytes, JSON, or repr (only once its signature verifies)",
    )
    get.add_argument("store", metavar="STORE")
    get.add_argument("key", metavar="KEY")
    get.add_argument("--namespace", default="", help=NAMESPACE_HELP)
    get.add_argument("-o", "--output", metavar="FILE", help="write the value to FILE")
    get.set_defaults(run=run_get)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


# -- stats ---------------------------------------------------------------------------------


def run_stats(args: argparse.Namespace, out: Output) -> int:
    found = [_stats_of(spec, out, reset=args.reset) for spec in args.stores]
    if out.form == "json":
        times = [c.name for c in STATS_FIELDS if c.kind == "time"]
        shown = [{k: iso(v) if k in times else v for k, v in s.items()} for s in found]
        out.json({"command": "stats", "stores": shown})
    elif out.form == "csv":
        out.rows(STATS_FIELDS, found)
    else:
        _stats_table(out, found)
    return 0


def stats_of(store: Any, advance: Any = None) -> dict[str, Any]:
    """``tiers stats`` of one open store (a walk of its record heads)."""
    counters = store.stats()
    now = store.clock.time()
    nbytes = stale = 0
    oldest = newest = None
    spaces: set[str] = set()
    serializers: dict[str, dict[str, int]] = {}
    names: dict[bytes, dict[str, int]] = {}  # header -> its serializer's tally (few headers)
    step = 0
    for key, entry in store.scan():
        size = entry.size
        nbytes += size
        expires = entry.expires_at
        if expires is not None and expires <= now:
            stale += 1
        created = entry.created_at
        if oldest is None or created < oldest:
            oldest = created
        if newest is None or created > newest:
            newest = created
        if key[:1] == ":":  # the default namespace, most keys: a set add of "" is cheap
            spaces.add("")
        elif len(spaces) < 10_000:
            spaces.add(key.partition(":")[0])
        tally = names.get(entry.header)
        if tally is None:
            name = serializer_of(entry.header, entry.value)
            tally = serializers.setdefault(name, {"entries": 0, "bytes": 0})
            if len(names) < 1024:
                names[entry.header] = tally
        tally["entries"] += 1
        tally["bytes"] += size
        step += 1
        if step == 4096 and advance is not None:
            advance(step)
            step = 0
    if advance is not None:
        advance(step)
    entries = sum(t["entries"] for t in serializers.values()) - stale
    max_size = getattr(store, "max_size", None)
    usage = store.usage() if implements(store, SupportsUsage) else None
    lookups = (usage.hits + usage.misses) if usage is not None else 0
    return {
        "store": repr(store),
        "entries": entries,
        "bytes": nbytes,
        "max_size": max_size,
        "used": nbytes / max_size if max_size else None,
        "expired_present": stale,
        "oldest": oldest,
        "newest": newest,
        "namespaces": len(spaces),
        "serializers": serializers,
        "hits": usage.hits if usage is not None else None,
        "misses": usage.misses if usage is not None else None,
        "hit_ratio": usage.hits / lookups if usage is not None and lookups else None,
        "sets": usage.sets if usage is not None else None,
        "deletes": usage.deletes if usage is not None else None,
        "errors": usage.errors if usage is not None else None,
        "counting_since": usage.since if usage is not None else None,
        "evictions": counters.evictions,
        "expirations": counters.expirations,
        "rejected": counters.rejected,
    }


def _stats_of(spec: str, out: Output, *, reset: bool) -> dict[str, Any]:
    with opened(spec) as store:
        if reset and not implements(store, SupportsUsage):
            raise CLIError(f"{spec}: this store keeps no counters to reset", USAGE)
        total = store.stats().items
        with out.progress(f"stats {spec}", total or None) as advance:
            found = stats_of(store, advance)
        if reset:
            store.reset_usage()
            out.note(f"{spec}: counters reset")
        return found


def _stats_table(out: Output, found: list[dict[str, Any]]) -> None:
    columns = [Column("field")] + [Column(f"s{i}", "text", "") for i in range(len(found))]
    rows = []
    for field in STATS_FIELDS:
        cells: dict[str, Any] = {"field": field.title}
        for i, stats in enumerate(found):
            value = stats[field.name]
            if field.name == "serializers":
                value = (
                    ", ".join(
                        f"{name} {tally['entries']:,}" for name, tally in sorted(value.items())
                    )
                    or "-"
                )
            cells[f"s{i}"] = value if field.name == "store" else _cell(out, field, value)
        rows.append(cells)
    out.rows(columns, rows, header=len(found) > 1)


def _cell(out: Output, field: Column, value: Any) -> str:
    if value is None and field.kind in ("count", "ratio", "bytes"):
        return "unknown" if field.name != "max_size" else "none"
    if isinstance(value, str):
        return value
    return out.show(field, value)


# -- ls ------------------------------------------------------------------------------------


def run_ls(args: argparse.Namespace, out: Output) -> int:
    filters = [parse_filter(f) for f in args.filters]
    order = parse_sort(args.sort) if args.sort else None
    with opened(args.store) as store:
        _check_fields(store, filters, order)
        now = store.clock.time()
        rows = _listing(store, args, filters, order, now, out)
        if args.quiet:
            count = 0
            for count, r in enumerate(rows, 1):  # noqa: B007 (count is used after)
                out.stdout.write(r["key"] + "\n")
        else:
            document = {"command": "ls", "store": repr(store), "namespace": args.namespace}
            columns = TABLE_COLUMNS if out.form == "table" else LS_COLUMNS
            count = out.rows(columns, rows, document=document, field="entries")
    narrowed = bool(filters or args.tag or args.prefix)
    if count == 0 and narrowed:
        out.note("tiers: nothing matched")
        return NOTHING
    return 0


def _check_fields(store: Any, filters: list[Filter], order: Sort | None) -> None:
    """A store that records no reads cannot filter or sort by them: say so, not guess."""
    wants = any(f.field == "idle" for f in filters) or (order and order.field == "accessed")
    if wants and not getattr(store, "records_access", False):
        raise CLIError(f"{store!r}: {NO_READS}, so 'idle' and 'accessed' are unknown there")


def _listing(
    store: Any,
    args: argparse.Namespace,
    filters: list[Filter],
    order: Sort | None,
    now: float,
    out: Output,
) -> Iterator[dict[str, Any]]:
    rows = (row(k, e) for k, e in scan(store, args.namespace, args.prefix, args.tag))
    if filters:
        rows = (r for r in rows if all(f.test(r, now) for f in filters))
    if order is None:
        yield from _limited(rows, args.limit)
        return
    total = store.stats().items
    with out.progress(f"ls {args.store}", total or None) as advance:
        counted = _counting(rows, advance)
        if args.limit is not None:
            pick = heapq.nlargest if order.descending else heapq.nsmallest
            chosen = pick(args.limit, counted, key=order.key)
        else:
            chosen = sorted(counted, key=order.key, reverse=order.descending)
    yield from chosen


def _limited(rows: Iterator[dict[str, Any]], limit: int | None) -> Iterator[dict[str, Any]]:
    for i, r in enumerate(rows):
        if limit is not None and i >= limit:
            return
        yield r


def _counting(rows: Iterator[dict[str, Any]], advance: Any) -> Iterator[dict[str, Any]]:
    for r in rows:
        advance(1)
        yield r


# -- show ----------------------------------------------------------------------------------


SHOW_FIELDS = [
    Column("key"),
    Column("stored_key", "text", "stored key"),
    Column("name"),
    Column("size", "bytes"),
    Column("created", "time"),
    Column("expires", "expiry"),
    Column("ttl", "seconds", "expires in"),
    Column("tags", "list"),
    Column("serializer"),
    Column("signed", "json"),
    Column("plain", "json"),
    Column("compression", "json"),
    Column("version", "text", "store version"),
    Column("meta", "json", "meta (provenance)"),
]


def run_show(args: argparse.Namespace, out: Output) -> int:
    with opened(args.store) as store:
        stored = prefix_of(args.namespace) + args.key
        entry = store.info(stored) if implements(store, SupportsInfo) else store.get(stored)
        if entry is None:
            raise CLIError(f"no entry {args.key!r} in {args.store}", NOTHING)
        now = store.clock.time()
    facts = header_facts(entry.header) if entry.header else {"serializer": "object"}
    document = {
        "key": args.key,
        "stored_key": stored,
        "name": readable(args.key, entry.meta),
        "size": entry.size,
        "created": entry.created_at,
        "expires": entry.expires_at,
        "ttl": None if entry.expires_at is None else entry.expires_at - now,
        "tags": list(entry.tags),
        "serializer": facts.get("serializer"),
        "signed": facts.get("signed"),
        "plain": facts.get("plain"),
        "compression": facts.get("compression"),
        "version": entry.version,
        "meta": dict(entry.meta) if entry.meta else None,
    }
    if out.form == "json":
        out.json({"command": "show", **_times(document)})
    elif out.form == "table" and document["meta"]:
        meta = document.pop("meta")
        out.record(document, SHOW_FIELDS)
        out.line("meta (provenance):")
        out.line(_indent(json.dumps(meta, indent=2, default=repr)))
    else:
        out.record(document, SHOW_FIELDS)
    return 0


def _times(document: dict[str, Any]) -> dict[str, Any]:
    return {k: iso(v) if k in ("created", "expires") else v for k, v in document.items()}


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


# -- get -----------------------------------------------------------------------------------


def run_get(args: argparse.Namespace, out: Output) -> int:
    with opened(args.store) as store:
        stored = prefix_of(args.namespace) + args.key
        entry = store.get(stored)
        if entry is None:
            raise CLIError(f"no entry {args.key!r} in {args.store}", NOTHING)
        decoder = Decoder(args.secret)
        try:
            value = decoder.decode(stored, entry, private=is_private(store))
        except Rejected as exc:
            raise CLIError(
                f"entry {args.key!r} cannot be read: {exc}; if it was written with another "
                "secret, pass --secret or set TIERS_SECRET as the writers did"
            ) from None
    serializer = serializer_of(entry.header, entry.value).removesuffix("+plain")
    data = _rendered(value, serializer)
    if args.output:
        _write_file(Path(args.output), data)
        out.note(f"wrote {len(data):,} bytes to {args.output}")
        return 0
    stream = getattr(out.stdout, "buffer", None)
    if stream is None:
        out.stdout.write(data.decode("utf-8", "replace"))
    else:
        out.stdout.flush()
        stream.write(data)
        stream.flush()
    return 0


def _rendered(value: Any, serializer: str) -> bytes:
    """Bytes as they are; JSON-able values of json/msgpack as pretty JSON; else repr."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode() + (b"" if value.endswith("\n") else b"\n")
    if serializer in ("json", "msgpack"):
        return (json.dumps(value, indent=2, ensure_ascii=False, default=repr) + "\n").encode()
    return (pprint.pformat(value, width=100, compact=True, sort_dicts=False) + "\n").encode()


def _write_file(path: Path, data: bytes) -> None:
    """Write atomically: a temp file beside it, then rename (never a half-written FILE)."""
    if path.is_dir():
        raise CLIError(f"-o {path}: is a directory; give a file name", USAGE)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
