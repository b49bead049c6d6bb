"""The results table, as aligned text for the terminal and as Markdown."""

from __future__ import annotations

from collections.abc import Sequence

from ._harness import Row

HEADERS = (
    "comparison", "tiers side", "ops/s", "baseline", "ops/s", "ratio", "target", "result",
    "spread", "other load",
)  # fmt: skip
NUMERIC = {2, 4, 5, 8, 9}  # right-aligned columns


def _ops(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _ratio(row: Row) -> str:
    return f"{row.ratio:.2f}x {row.meaning}"


def cells(row: Row) -> tuple[str, ...]:
    return (
        row.comparison,
        row.subject,
        _ops(row.subject_ops),
        row.baseline,
        _ops(row.baseline_ops),
        _ratio(row),
        row.target or "-",
        row.verdict,
        f"{row.spread:.0%}",
        f"{row.other_load:.2f}",
    )


def text_table(rows: Sequence[Row]) -> str:
    table = [HEADERS, *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    lines = []
    for n, line in enumerate(table):
        parts = [
            c.rjust(w) if i in NUMERIC and n else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  note ({r.comparison}): {r.note}" for r in rows if r.note]
    return "\n".join(lines + sorted(set(notes)))


def markdown_table(rows: Sequence[Row]) -> str:
    lines = [
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join("---:" if i in NUMERIC else "---" for i in range(len(HEADERS))) + "|",
    ]
    for row in rows:
        c = list(cells(row))
        if row.verdict != "info":
            c[7] = f"**{c[7]}**"
        lines.append("| " + " | ".join(c) + " |")
    notes = sorted({f"- {r.comparison}: {r.note}" for r in rows if r.note})
    return "\n".join(lines + (["", *notes] if notes else []))


def markdown(rows: Sequence[Row], machine: str, versions: str, command: str) -> str:
    return (
        f"Command: `{command}`\n\n"
        f"Machine: {machine}\n\n"
        f"Versions: {versions}\n\n"
        f"{markdown_table(rows)}\n"
    )
