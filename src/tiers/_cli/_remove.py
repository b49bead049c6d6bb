"""``tiers rm``, ``evict``, ``expire``, ``prune`` and ``clear``: the commands that remove.

Each takes ``--dry-run`` (print what would go and the bytes it would free; remove nothing),
prints one row per entry (key, size, whether it was removed) and ends with the totals: in
JSON ``{"command", "dry_run", "entries": [...], "removed": N, "bytes": B}``; in a table, a
last line ``removed N entries, freed B`` (``would remove`` with ``--dry-run``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .._stores._protocol import SupportsExpire, SupportsInfo, SupportsTags, implements
from ._entries import NAMESPACE_HELP, NO_READS, expired, prefix_of, scan, shown
from ._errors import NOTHING, USAGE, CLIError
from ._filters import parse_bytes, parse_duration
from ._output import Column, Output, human_size
from ._stores import opened

REMOVED_COLUMNS = [Column("key"), Column("size", "bytes"), Column("removed", "json")]


def register(commands: Any, common: Any) -> None:
    parents = [common.store, common.output, common.destructive]
    rm = commands.add_parser(
        "rm", parents=parents, help="delete keys given as arguments, or one per line on stdin (-)"
    )
    rm.add_argument("store", metavar="STORE")
    rm.add_argument("keys", nargs="+", metavar="KEY", help="keys, or - to read them from stdin")
    rm.add_argument("--namespace", default="", help=NAMESPACE_HELP)
    rm.set_defaults(run=run_rm)

    evict = commands.add_parser("evict", parents=parents, help="remove every entry with a tag")
    evict.add_argument("store", metavar="STORE")
    evict.add_argument("--tag", required=True, help="the tag whose entries go")
    evict.add_argument("--namespace", default="", help=NAMESPACE_HELP)
    evict.add_argument("--prefix", default="", help="only keys starting with this")
    evict.set_defaults(run=run_evict)

    expire = commands.add_parser(
        "expire", parents=parents, help="remove the entries whose expiry has passed"
    )
    expire.add_argument("store", metavar="STORE")
    expire.set_defaults(run=run_expire)

    prune = commands.add_parser(
        "prune",
        parents=parents,
        help="remove by age, by last access, or least recently used first down to a size",
        description=(
            "Remove entries created more than --older-than ago, or not read for --unused-for, "
            "then, with --max-size, the least recently used (oldest created where the store "
            "does not record reads) until the store fits. Expired entries go first."
        ),
    )
    prune.add_argument("store", metavar="STORE")
    prune.add_argument("--older-than", metavar="AGE", help="e.g. 30d")
    prune.add_argument("--unused-for", metavar="AGE", help="e.g. 14d (stores that record reads)")
    prune.add_argument("--max-size", metavar="SIZE", help="e.g. 10GB")
    prune.set_defaults(run=run_prune)

    clear = commands.add_parser(
        "clear",
        parents=parents,
        help="remove every entry (asks on a terminal; --yes otherwise)",
    )
    clear.add_argument("store", metavar="STORE")
    clear.add_argument("--namespace", help="only this namespace's entries (default: all)")
    clear.add_argument("-y", "--yes", action="store_true", help="do not ask")
    clear.set_defaults(run=run_clear)


@dataclass
class Tally:
    """What a removal did (or would do)."""

    dry_run: bool
    removed: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)

    def add(self, size: int) -> None:
        self.removed += 1
        self.bytes += size

    def totals(self) -> dict[str, Any]:
        return {"removed": self.removed, "bytes": self.bytes}

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        noun = "entry" if self.removed == 1 else "entries"
        free = "would free" if self.dry_run else "freed"
        return f"{verb} {self.removed:,} {noun}, {free} {human_size(self.bytes)}"


def _report(
    out: Output, command: str, rows: Iterable[dict[str, Any]], tally: Tally, store: Any
) -> None:
    document = {"command": command, "store": repr(store), "dry_run": tally.dry_run}
    out.rows(REMOVED_COLUMNS, rows, document=document, field="entries", tail=tally.totals)
    if out.form == "table":
        out.line(tally.summary())
    else:
        out.note(tally.summary())


# -- rm ------------------------------------------------------------------------------------


def run_rm(args: argparse.Namespace, out: Output) -> int:
    tally = Tally(args.dry_run)
    with opened(args.store) as store:
        head = prefix_of(args.namespace)

        def rows() -> Iterator[dict[str, Any]]:
            for key in _keys(args.keys):
                stored = head + key
                entry = store.info(stored) if implements(store, SupportsInfo) else store.get(stored)
                if entry is None:
                    tally.missing.append(key)
                    continue
                if not args.dry_run and not store.delete(stored):
                    tally.missing.append(key)
                    continue
                tally.add(entry.size)
                yield {"key": key, "size": entry.size, "removed": not args.dry_run}

        _report(out, "rm", rows(), tally, store)
    if tally.missing:
        shown = ", ".join(repr(k) for k in tally.missing[:3])
        more = f" and {len(tally.missing) - 3:,} more" if len(tally.missing) > 3 else ""
        out.note(f"tiers: no entry {shown}{more}")
    return NOTHING if tally.removed == 0 else 0


def _keys(given: list[str]) -> Iterator[str]:
    for key in given:
        if key != "-":
            yield key
            continue
        if sys.stdin.isatty():
            raise CLIError("rm -: give the keys on stdin, e.g. tiers ls S -q | tiers rm S -", USAGE)
        for line in sys.stdin:
            read = line.rstrip("\n").rstrip("\r")
            if read:
                yield read


# -- evict, expire -------------------------------------------------------------------------


def run_evict(args: argparse.Namespace, out: Output) -> int:
    tally = Tally(args.dry_run)
    with opened(args.store) as store:
        if not implements(store, SupportsTags):
            raise CLIError(f"{args.store}: this store keeps no tags")
        now = store.clock.time()
        found = [
            (k, e.size) for k, e in scan(store, args.namespace, args.prefix, args.tag)
            if not expired(e, now)
        ]  # fmt: skip
        if not args.dry_run:
            store.evict(args.tag, prefix_of(args.namespace) + args.prefix)
        rows = []
        for key, size in found:
            tally.add(size)
            rows.append({"key": key, "size": size, "removed": not args.dry_run})
        _report(out, "evict", rows, tally, store)
    return NOTHING if tally.removed == 0 else 0


def run_expire(args: argparse.Namespace, out: Output) -> int:
    tally = Tally(args.dry_run)
    with opened(args.store) as store:
        if not implements(store, SupportsExpire):
            raise CLIError(f"{args.store}: this store removes expired entries on its own")
        now = store.clock.time()
        found = [(k, e.size) for k, e in store.scan() if expired(e, now)]
        if not args.dry_run:
            store.expire()
        rows = []
        for key, size in found:
            tally.add(size)
            rows.append({"key": shown(key), "size": size, "removed": not args.dry_run})
        _report(out, "expire", rows, tally, store)
    return 0


# -- prune ---------------------------------------------------------------------------------


def run_prune(args: argparse.Namespace, out: Output) -> int:
    older = parse_duration(args.older_than, "--older-than") if args.older_than else None
    unused = parse_duration(args.unused_for, "--unused-for") if args.unused_for else None
    limit = parse_bytes(args.max_size, "--max-size") if args.max_size else None
    if older is None and unused is None and limit is None:
        raise CLIError("prune needs --older-than, --unused-for or --max-size", USAGE)
    tally = Tally(args.dry_run)
    with opened(args.store) as store:
        if unused is not None and not getattr(store, "records_access", False):
            raise CLIError(f"{args.store}: {NO_READS}, so --unused-for cannot be known")
        doomed = _prune_plan(store, out, args.store, older, unused, limit)
        if limit is not None and not getattr(store, "records_access", False):
            out.note("tiers: this store does not record reads: the oldest created go first")

        def rows() -> Iterator[dict[str, Any]]:
            for stored, size in doomed:
                if not args.dry_run and not store.delete(stored):
                    continue
                tally.add(size)
                yield {"key": shown(stored), "size": size, "removed": not args.dry_run}

        _report(out, "prune", rows(), tally, store)
    return 0


def _prune_plan(
    store: Any,
    out: Output,
    spec: str,
    older: float | None,
    unused: float | None,
    limit: int | None,
) -> list[tuple[str, int]]:
    """The (stored key, size) to remove, in the order they go."""
    now = store.clock.time()
    doomed: list[tuple[str, int]] = []
    kept: list[tuple[float, str, int]] = []  # (last use, key, size): for --max-size
    kept_bytes = 0
    with out.progress(f"prune {spec}", store.stats().items or None) as advance:
        for stored, entry in store.scan():
            advance(1)
            used = entry.accessed_at if entry.accessed_at is not None else entry.created_at
            if (
                expired(entry, now)
                or (older is not None and now - entry.created_at > older)
                or (unused is not None and now - used > unused)
            ):
                doomed.append((stored, entry.size))
            elif limit is not None:
                kept.append((used, stored, entry.size))
                kept_bytes += entry.size
    if limit is not None and kept_bytes > limit:
        kept.sort()
        for _used, stored, size in kept:
            if kept_bytes <= limit:
                break
            doomed.append((stored, size))
            kept_bytes -= size
    return doomed


# -- clear ---------------------------------------------------------------------------------


def run_clear(args: argparse.Namespace, out: Output) -> int:
    tally = Tally(args.dry_run)
    prefix = "" if args.namespace is None else prefix_of(args.namespace)
    with opened(args.store) as store:
        if not args.dry_run:
            _confirm(args, store, prefix)

        def rows() -> Iterator[dict[str, Any]]:
            """Each entry as the walk finds it, then the store cleared (streamed: a million
            entries are never held)."""
            with out.progress(f"clear {args.store}", store.stats().items or None) as advance:
                for stored, entry in store.scan(prefix):
                    advance(1)
                    tally.add(entry.size)
                    yield {"key": shown(stored), "size": entry.size, "removed": not args.dry_run}
            if not args.dry_run:
                store.clear(prefix)

        _report(out, "clear", rows(), tally, store)
    return 0


def _confirm(args: argparse.Namespace, store: Any, prefix: str) -> None:
    if args.yes:
        return
    if prefix:
        what = f"every entry of namespace {args.namespace!r} in {args.store}"
    else:
        counters = store.stats()
        what = f"{counters.items:,} entries ({human_size(counters.bytes)}) of {args.store}"
    if not sys.stdin.isatty():
        raise CLIError(f"clear would remove {what}: add --yes to confirm", USAGE)
    sys.stderr.write(f"Remove {what}? [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise CLIError("clear cancelled; nothing removed")
