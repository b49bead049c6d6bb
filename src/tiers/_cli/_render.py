"""Rich output of ``tiers demo`` (imported only once rich is known to be installed)."""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import tiers

from .._types import TierStats
from ._demo import KEY, LIMIT, DemoResult


def make_console() -> Console:
    """A console on stdout (colour only on terminals, as rich decides)."""
    return Console(highlight=False)


def header(console: Console, path: Path, *, temporary: bool, keep: bool) -> None:
    """What the demo builds, and where."""
    if not temporary:
        where = "--dir: kept"
    elif keep:
        where = "temporary, kept at the end (--keep)"
    else:
        where = "temporary, removed at the end; --keep keeps it"
    console.print(f"[bold]tiers {tiers.__version__} demo[/]: memory over disk, no server")
    console.print(
        '  cache = tiers.Cache(tiers.MemoryStore(max_size="64MB"), tiers.DiskStore(path))'
    )
    console.print(f"  path  = {escape(str(path))}  [dim]({where})[/]", soft_wrap=True)
    console.print(f"  key   = {KEY!r}")
    console.print(f"  value = cache.get_or_set(key, compute)  [dim]# the primes below {LIMIT:,}[/]")
    console.print()


def result(console: Console, r: DemoResult) -> None:
    """Timings, the proof from the new process, the entry's info and the stats table."""
    if r.removed_earlier:
        console.print("[dim]deleted the entry of an earlier run, to start cold[/]\n")
    console.print(_timings(r))
    stored = r.first_seconds - r.compute_seconds
    console.print()
    console.print(
        f"first call: {_duration(r.compute_seconds)} computing"
        f" + {_duration(stored)} looking up and storing in both tiers"
    )
    console.print(
        f"new process: {_duration(r.child.wall_seconds)} in all"
        " (start Python, import tiers, open the store, read)"
    )
    console.print(_child_line(r), soft_wrap=True)
    console.print(f"value: {r.count:,} primes, largest {r.largest:,}, hash_key {r.checksum[:16]}")
    if r.info is not None:
        console.print(f"info(key): {_info(r.info)}")
    console.print()
    console.print(_stats(r))
    console.print(
        "[dim]hits, misses, sets: each process's own calls; items, bytes: tier contents[/]"
    )
    console.print()


def footer(console: Console, path: Path, *, removed: bool) -> None:
    """Where the data is now."""
    if removed:
        console.print(
            f"removed {escape(str(path))} (--keep or --dir PATH keeps the data)", soft_wrap=True
        )
    else:
        console.print(f"the data stays in {escape(str(path))}", soft_wrap=True)


def _timings(r: DemoResult) -> Table:
    table = _table()
    table.add_column("call")
    table.add_column("answered by")
    table.add_column("time", justify="right")
    table.add_column("speed-up", justify="right")
    base = r.first_seconds
    rows = [
        ("1st get_or_set", "factory (miss)", base),
        ("2nd get_or_set", _tier(r.memory_answered, r.stats.tiers), r.memory_seconds),
        ("in a new process", _tier(r.child.answered, r.child.tiers), r.child.seconds),
    ]
    for call, answered, seconds in rows:
        table.add_row(call, answered, _duration(seconds), _speedup(base, seconds))
    return table


def _stats(r: DemoResult) -> Table:
    table = _table()
    for name in ("process", "tier", "hits", "misses", "sets", "items", "bytes"):
        table.add_column(name, justify="left" if name in ("process", "tier") else "right")
    for process, per_tier in (("this", r.stats.tiers), ("new", r.child.tiers)):
        for index, t in enumerate(per_tier):
            table.add_row(
                process if index == 0 else "", f"{index} {_kind(t)}", str(t.hits),
                str(t.misses), str(t.sets), str(t.items), _size(t.bytes),
            )  # fmt: skip
    return table


def _table() -> Table:
    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)


def _child_line(r: DemoResult) -> str:
    c = r.child
    factory = "RECOMPUTED" if c.computed else "not recomputed"
    same = "hash_key matches" if c.checksum == r.checksum else "hash_key DIFFERS"
    return f"new process: served from {_tier(c.answered, c.tiers, paren=True)}, {factory}, {same}"


def _info(info: tiers.EntryInfo) -> str:
    created = info.created_at.strftime("%H:%M:%S UTC")
    expires = "no expiry" if info.expires_at is None else f"expires in {info.ttl:.0f} s"
    kind = info.store.split("(", 1)[0]
    return f"tier {info.tier} ({kind}), size {_size(info.size)}, created {created}, {expires}"


def _tier(index: int | None, per_tier: tuple[TierStats, ...], *, paren: bool = False) -> str:
    if index is None or not 0 <= index < len(per_tier):
        return "no single tier"
    kind = _kind(per_tier[index])
    return f"tier {index} ({kind})" if paren else f"tier {index} {kind}"


def _kind(t: TierStats) -> str:
    return t.store.split("(", 1)[0]


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


def _speedup(base: float, seconds: float) -> str:
    return f"{base / seconds:,.0f}x" if seconds > 0 else "-"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
