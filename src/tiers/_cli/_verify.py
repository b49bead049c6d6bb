"""``tiers verify``: read every entry of a store and report what is wrong with it.

Two passes. The store's own `verify` checks every stored byte against its checksums and its
files against its index (bit flips, truncation, missing value files, orphans, temp files of
writes that never finished). Then every entry that passed is decoded as a `Cache` would:
its signature checked (``signature``: it does not verify with this secret although written
with it) and its value loaded (``undecodable``). Entries this process cannot judge are
counted, not called damage: ``foreign`` (signed with another secret: pass ``--secret``),
``unknown-format`` (written by a later tiers), ``unknown-serializer``, ``unimportable`` (a
pickle of a class this Python cannot import). ``--fix`` removes what is damaged and sweeps
orphans and temp files, so that a second run finds nothing.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterator
from typing import Any

from .._codec._envelope import FOREIGN_KEY, FORMAT_UNKNOWN, SERIALIZER, TAMPERED, Rejected
from .._stores._protocol import Damage, SupportsScan, SupportsVerify, implements
from ._entries import Decoder, expired, is_private, shown
from ._errors import DAMAGED, CLIError
from ._output import Column, Output, human_size
from ._stores import opened

COLUMNS = [
    Column("problem"),
    Column("key"),
    Column("location"),
    Column("size", "bytes"),
    Column("detail"),
    Column("fixed", "json"),
]
NOT_DAMAGE = ("leftover", "foreign", "unknown-format", "unknown-serializer", "unimportable")
"""Not damage: the store's lazy bookkeeping (``leftover``: swept by the store's own fix), and
what this process cannot judge (never removed)."""


def register(commands: Any, common: Any) -> None:
    verify = commands.add_parser(
        "verify",
        parents=[common.store, common.output],
        help="check every entry (checksums, signatures, files vs index); --fix repairs",
        description=(
            "Read every entry: checksums, signatures, whether it decodes, index against "
            "files, orphans and temp leftovers. Exit status 3 when damage was found "
            "(without --fix)."
        ),
    )
    verify.add_argument("store", metavar="STORE")
    verify.add_argument(
        "--fix", action="store_true", help="remove damaged entries, orphans and temp files"
    )
    verify.add_argument(
        "--dry-run",
        action="store_true",
        help="with --fix: report what would be removed, remove nothing",
    )
    verify.set_defaults(run=run_verify)


def run_verify(args: argparse.Namespace, out: Output) -> int:
    fix = args.fix and not args.dry_run
    counts: Counter[str] = Counter()
    state = {"checked": 0, "damaged": 0, "fixed": 0, "bytes": 0}
    with opened(args.store) as store:
        if not implements(store, SupportsVerify) or not implements(store, SupportsScan):
            raise CLIError(f"{args.store}: this store cannot be verified (no verify or scan)")

        def rows() -> Iterator[dict[str, Any]]:
            for damage in _damages(store, Decoder(args.secret), fix, out, args.store, state):
                counts[damage.problem] += 1
                if damage.problem not in NOT_DAMAGE:
                    state["damaged"] += 1
                    state["bytes"] += damage.size
                    state["fixed"] += damage.fixed
                yield {
                    "problem": damage.problem, "key": shown(damage.key),
                    "location": damage.location, "size": damage.size, "detail": damage.detail,
                    "fixed": damage.fixed,
                }  # fmt: skip

        def tail() -> dict[str, Any]:
            return {**state, "counts": dict(counts)}

        document = {"command": "verify", "store": repr(store), "fix": fix}
        out.rows(COLUMNS, rows(), document=document, field="problems", tail=tail)
    summary = _summary(state, counts, fix, args.fix and args.dry_run)
    if out.form == "table":
        out.line(summary)
    else:
        out.note(summary)
    if state["damaged"] > state["fixed"]:
        return DAMAGED
    return 0


def _damages(
    store: Any, decoder: Decoder, fix: bool, out: Output, spec: str, state: dict[str, int]
) -> Iterator[Damage]:
    """The store's own findings, then each entry decoded."""
    bad: set[str] = set()
    with out.progress(f"verify {spec}: stored bytes") as advance:
        for damage in store.verify(fix=fix):
            advance(1)
            if damage.key is not None:
                bad.add(damage.key)
            yield damage
    private = is_private(store)
    now = store.clock.time()
    with out.progress(f"verify {spec}: entries", store.stats().items or None) as advance:
        for key, head in store.scan():
            advance(1)
            if key in bad or expired(head, now):
                continue
            state["checked"] += 1
            entry = store.get(key)
            if entry is None:
                continue  # removed or expired since the scan
            problem = _judge(decoder, key, entry, private)
            if problem is None:
                continue
            kind, detail = problem
            fixed = False
            if fix and kind not in NOT_DAMAGE:
                fixed = bool(store.delete(key))
            yield Damage(kind, key, key, head.size, detail, fixed)


def _judge(decoder: Decoder, key: str, entry: Any, private: bool) -> tuple[str, str] | None:
    try:
        decoder.decode(key, entry, private=private)
    except Rejected as exc:
        if exc.reason == FOREIGN_KEY:
            return "foreign", "signed with another secret: pass --secret to check it"
        if exc.reason == FORMAT_UNKNOWN:
            return "unknown-format", str(exc)
        if exc.reason == SERIALIZER or "unknown here" in str(exc):
            return "unknown-serializer", str(exc)
        if exc.reason == TAMPERED:
            return "signature", str(exc)
        if isinstance(exc.__cause__, (ImportError, AttributeError)):
            return "unimportable", f"cannot load here: {exc.__cause__}"
        return "undecodable", str(exc)
    return None


def _summary(state: dict[str, int], counts: Counter[str], fix: bool, dry: bool) -> str:
    checked = f"checked {state['checked']:,} entries"
    if not counts:
        return f"{checked}: no damage"
    parts = ", ".join(f"{n:,} {problem}" for problem, n in sorted(counts.items()))
    damaged = state["damaged"]
    line = f"{checked}: {damaged:,} damaged ({human_size(state['bytes'])}) — {parts}"
    if fix:
        line += f"; fixed {state['fixed']:,}"
    elif dry:
        line += "; --dry-run: nothing removed"
    elif damaged:
        line += "; run with --fix to remove the damage"
    return line
