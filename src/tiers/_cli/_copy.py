"""``tiers copy SRC DST``: copy entries with their expiry, tags and meta.

Entries are copied as stored (their signature stays valid: it covers the key, which does not
change), except a plain entry (the unsigned form a private DiskStore or FolderStore keeps for
bytes, text and numbers) going to a store that is not private, which is signed on the way
(it would be refused there otherwise). Re-running copies only what the destination lacks or
holds an older version of (by creation time). Remote stores are copied with 16 requests in
flight.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .._codec._envelope import Rejected
from .._stores._protocol import Entry, SupportsInfo, implements
from ._entries import Decoder, expired, is_private, prefix_of, shown
from ._errors import USAGE, CLIError
from ._output import Column, Output, human_size
from ._stores import opened

COLUMNS = [Column("key"), Column("size", "bytes"), Column("action")]
IN_FLIGHT = 16
LOCAL = ("DiskStore", "FolderStore")


def register(commands: Any, common: Any) -> None:
    copy = commands.add_parser(
        "copy",
        parents=[common.store, common.output],
        help="copy entries (expiry, tags, meta) from one store to another; re-runs copy only "
        "what is missing or newer",
    )
    copy.add_argument("source", metavar="SRC")
    copy.add_argument("destination", metavar="DST")
    copy.add_argument("--namespace", help="only this namespace (default: every namespace)")
    copy.add_argument("--prefix", default="", help="only keys starting with this")
    copy.add_argument("--tag", help="only entries with this tag")
    copy.set_defaults(run=run_copy)


def run_copy(args: argparse.Namespace, out: Output) -> int:
    if args.source == args.destination:
        raise CLIError("SRC and DST are the same store", USAGE)
    namespace = args.namespace if args.namespace is not None or args.prefix else None
    prefix = ("" if namespace is None else prefix_of(namespace)) + args.prefix
    totals = {"copied": 0, "bytes": 0, "up_to_date": 0, "gone": 0}
    with opened(args.source) as source, opened(args.destination, create=True) as target:
        copier = _Copier(source, target, Decoder(args.secret))
        workers = 1 if _local(source) and _local(target) else IN_FLIGHT

        def rows() -> Iterator[dict[str, Any]]:
            total = source.stats().items or None
            with out.progress(f"copy {args.source}", total) as advance:
                for key, size, action in _run(copier, source.scan(prefix, args.tag), workers):
                    advance(1)
                    if action == "copied":
                        totals["copied"] += 1
                        totals["bytes"] += size
                    else:
                        totals[action.replace(" ", "_")] += 1
                    yield {"key": shown(key), "size": size, "action": action}

        document = {"command": "copy", "source": repr(source), "destination": repr(target)}
        out.rows(COLUMNS, rows(), document=document, field="entries", tail=lambda: totals)
    line = (
        f"copied {totals['copied']:,} entries ({human_size(totals['bytes'])}); "
        f"{totals['up_to_date']:,} already up to date"
    )
    if out.form == "table":
        out.line(line)
    else:
        out.note(line)
    return 0


def _local(store: Any) -> bool:
    return type(store).__name__ in LOCAL


def _run(
    copier: _Copier, heads: Iterator[tuple[str, Entry]], workers: int
) -> Iterator[tuple[str, int, str]]:
    """(key, size, action) per entry, with up to `workers` copies in flight."""
    if workers == 1:
        for key, head in heads:
            yield key, head.size, copier.copy(key, head)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="tiers-copy") as pool:
        window: list[tuple[str, int, Future[str]]] = []
        for key, head in heads:
            window.append((key, head.size, pool.submit(copier.copy, key, head)))
            if len(window) >= workers * 4:
                key0, size0, done = window.pop(0)
                yield key0, size0, done.result()
        for key, size, future in window:
            yield key, size, future.result()


class _Copier:
    """Copies one entry at a time (thread-safe: the stores are)."""

    def __init__(self, source: Any, target: Any, decoder: Decoder) -> None:
        self.source = source
        self.target = target
        self.decoder = decoder
        self.private_source = is_private(source)
        self.private_target = is_private(target)
        self.has_info = implements(target, SupportsInfo)

    def copy(self, key: str, head: Entry) -> str:
        """``copied``, ``up to date`` (the target's is as new) or ``gone`` (expired or
        removed from the source since the scan)."""
        if expired(head, self.source.clock.time()):
            return "gone"
        there = self.target.info(key) if self.has_info else self.target.get(key)
        if there is not None and there.created_at >= head.created_at:
            return "up to date"
        entry = self.source.get(key)
        if entry is None:
            return "gone"
        entry = self._signed_if_needed(key, entry)
        entry.value = bytes(entry.value) if isinstance(entry.value, memoryview) else entry.value
        if not self.target.set(key, entry):
            raise CLIError(f"{key!r}: the destination refused it (larger than its max_size?)")
        return "copied"

    def _signed_if_needed(self, key: str, entry: Entry) -> Entry:
        header = entry.header
        plain = len(header) > 1 and bool(header[1] & 16)
        if not plain or self.private_target:
            return entry
        try:
            value = self.decoder.decode(key, entry, private=self.private_source)
        except Rejected as exc:
            raise CLIError(f"{key!r}: cannot be copied: {exc}") from None
        name = header[4 : 4 + header[3]].decode("ascii")
        new_header, body = self.decoder.codec(name).encode(key, value)
        return Entry(
            bytes(body) if isinstance(body, memoryview) else body, new_header,
            entry.created_at, entry.expires_at, entry.tags, entry.meta, len(body),
        )  # fmt: skip
