"""How commands print: tables (rich on a terminal, plain aligned text in a pipe), JSON, CSV,
and progress bars on stderr (only on a terminal).

A command describes its rows with `Column` objects and hands them to `Output.rows`, which
streams them: JSON as one document written element by element, CSV line by line, tables in
batches. Values in a row are raw (ints for bytes, epoch floats for times, None for unknown);
each column's `kind` says how to show them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any

FORMATS = ("table", "json", "csv")
BATCH = 1000
"""Rows per printed table: a table is laid out from the rows it holds, so a stream of a
million rows prints as batches of this many, never held all at once."""


@dataclass(frozen=True)
class Column:
    """One column: its JSON/CSV field `name`, its table `header`, and the `kind` of value:
    ``text``, ``count``, ``bytes``, ``time`` (epoch seconds; None: unknown), ``expiry``
    (epoch seconds; None: never), ``age`` (seconds),
    ``seconds`` (a duration), ``ratio`` (0..1), ``list`` (of str), ``json`` (any)."""

    name: str
    kind: str = "text"
    header: str | None = None

    @property
    def title(self) -> str:
        return self.header if self.header is not None else self.name.replace("_", " ")

    @property
    def right(self) -> bool:
        return self.kind in ("count", "bytes", "age", "seconds", "ratio")


class Output:
    """Where a command's output goes and in which form."""

    def __init__(
        self,
        form: str = "table",
        *,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
        progress: bool | None = None,
    ) -> None:
        self.form = form
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self.terminal = _isatty(self.stdout)
        self.show_progress = _isatty(self.stderr) if progress is None else progress
        self._console: Any = None

    # -- data ---------------------------------------------------------------------------

    def rows(
        self,
        columns: list[Column],
        rows: Iterable[Mapping[str, Any]],
        *,
        document: Mapping[str, Any] | None = None,
        field: str = "rows",
        tail: Callable[[], Mapping[str, Any]] | None = None,
        header: bool = True,
    ) -> int:
        """Print `rows`; return how many. JSON: ``{**document, field: [rows...], **tail()}``
        streamed (`tail` is asked once the rows are written: totals). The table shows values
        humanised on a terminal and plainly in a pipe."""
        if self.form == "json":
            return self._json_rows(columns, rows, dict(document or {}), field, tail)
        if self.form == "csv":
            return self._csv_rows(columns, rows)
        count = 0
        batch: list[Mapping[str, Any]] = []
        for row in rows:
            batch.append(row)
            count += 1
            if len(batch) == BATCH:
                self._table(columns, batch, header=header and count == BATCH)
                batch = []
        if batch:
            self._table(columns, batch, header=header and count <= BATCH)
        return count

    def record(self, document: Mapping[str, Any], fields: list[Column] | None = None) -> None:
        """One object: JSON as is; CSV as ``field,value`` lines; a table as two columns."""
        if self.form == "json":
            self._write(json.dumps(_jsonable(document), indent=2) + "\n")
            return
        kinds = {c.name: c for c in fields or []}
        pairs = [
            {"field": kinds[k].title if k in kinds else k, "value": v, "_kind": kinds.get(k)}
            for k, v in document.items()
        ]
        if self.form == "csv":
            writer = csv.writer(self.stdout, lineterminator="\n")
            writer.writerow(["field", "value"])
            for pair in pairs:
                column = pair["_kind"] or Column(pair["field"], "json")
                writer.writerow([pair["field"], _plain(column, pair["value"])])
            return
        shown = [
            {"field": p["field"], "value": self.show(p["_kind"] or Column("", "json"), p["value"])}
            for p in pairs
        ]
        self._table([Column("field"), Column("value")], shown, header=False)

    def json(self, document: Any) -> None:
        self._write(json.dumps(_jsonable(document), indent=2) + "\n")

    def line(self, text: str = "") -> None:
        """A line of prose for people: on stdout for tables; on stderr for JSON and CSV, so
        that their stdout stays parseable."""
        if self.form == "table":
            self._write(text + "\n")
        else:
            self.note(text)

    def note(self, text: str) -> None:
        """A line on stderr."""
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def show(self, column: Column, value: Any) -> str:
        """A value as a table cell: humanised on a terminal, plain in a pipe (where an
        unknown value is ``-`` and no expiry ``never``, so that every cell is one word)."""
        if self.terminal:
            return _human(column, value)
        if value is None:
            return "never" if column.kind == "expiry" else "-"
        return _plain(column, value) or "-"

    # -- progress -------------------------------------------------------------------------

    @contextlib.contextmanager
    def progress(self, what: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        """A progress bar on stderr while the block runs (a no-op off a terminal); yields
        ``advance(n)``."""
        if not self.show_progress:
            yield _ignore
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(file=self.stderr, force_terminal=True)
        parts: list[Any] = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
        parts += [MofNCompleteColumn(), TimeElapsedColumn()]
        if total is not None:
            parts.append(TimeRemainingColumn())
        with Progress(*parts, console=console, transient=True) as bar:
            task = bar.add_task(what, total=total)
            last = [0.0, 0]

            def advance(n: int = 1) -> None:
                last[1] += n
                now = time.monotonic()
                if now - last[0] >= 0.05:
                    bar.update(task, advance=last[1])
                    last[0], last[1] = now, 0

            yield advance
            bar.update(task, advance=last[1])

    # -- internals ------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        self.stdout.write(text)

    def _json_rows(
        self,
        columns: list[Column],
        rows: Iterable[Mapping[str, Any]],
        document: dict[str, Any],
        field: str,
        tail: Callable[[], Mapping[str, Any]] | None = None,
    ) -> int:
        head = json.dumps(_jsonable(document), indent=None)
        self._write(head[:-1] + (", " if document else "") + json.dumps(field) + ": [")
        count = 0
        for row in rows:
            data = {c.name: _json_value(c, row.get(c.name)) for c in columns}
            self._write(("," if count else "") + "\n  " + json.dumps(data))
            count += 1
        end = json.dumps(_jsonable(dict(tail()))) if tail is not None else "{}"
        self._write(("\n" if count else "") + "]" + (", " + end[1:] if end != "{}" else "}") + "\n")
        return count

    def _csv_rows(self, columns: list[Column], rows: Iterable[Mapping[str, Any]]) -> int:
        writer = csv.writer(self.stdout, lineterminator="\n")
        writer.writerow([c.name for c in columns])
        count = 0
        for row in rows:
            writer.writerow([_plain(c, row.get(c.name)) for c in columns])
            count += 1
        return count

    def _table(
        self, columns: list[Column], rows: Sequence[Mapping[str, Any]], *, header: bool
    ) -> None:
        cells = [[self.show(c, row.get(c.name)) for c in columns] for row in rows]
        if self.terminal:
            self._rich_table(columns, cells, header=header)
            return
        widths = [len(c.title) if header else 0 for c in columns]
        for line in cells:
            widths = [max(w, len(cell)) for w, cell in zip(widths, line, strict=True)]
        out = io.StringIO()
        if header:
            out.write(_align(columns, [c.title for c in columns], widths) + "\n")
        for line in cells:
            out.write(_align(columns, line, widths) + "\n")
        self._write(out.getvalue())

    def _rich_table(self, columns: list[Column], cells: list[list[str]], *, header: bool) -> None:
        from rich import box
        from rich.console import Console
        from rich.table import Table

        if self._console is None:
            self._console = Console(file=self.stdout, highlight=False)
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, show_header=header)
        for column in columns:
            table.add_column(
                column.title, justify="right" if column.right else "left", overflow="fold"
            )
        for line in cells:
            table.add_row(*line)
        self._console.print(table)


def _ignore(n: int = 1) -> None:
    return None


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _align(columns: list[Column], cells: list[str], widths: list[int]) -> str:
    parts = [
        cell.rjust(width) if column.right else cell.ljust(width)
        for column, cell, width in zip(columns, cells, widths, strict=True)
    ]
    return "  ".join(parts).rstrip()


# -- values ------------------------------------------------------------------------------


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC (milliseconds), None stays None."""
    if epoch is None or not math.isfinite(epoch):
        return None
    stamp = datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def human_size(n: int | float) -> str:
    """``1.5 MB`` (powers of 1000, as sizes are given)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def human_seconds(seconds: float) -> str:
    """A duration people read at a glance: ``280 ns``, ``4.8 µs``, ``850 µs``, ``12.3 ms``,
    ``4.2 s``, ``3 min``, ``5 h``, ``12 d``."""
    s = abs(seconds)
    sign = "-" if seconds < 0 else ""
    if s < 1e-6:
        return f"{sign}{s * 1e9:.0f} ns"
    if s < 1e-5:
        return f"{sign}{s * 1e6:.1f} µs"
    if s < 1e-3:
        return f"{sign}{s * 1e6:.0f} µs"
    if s < 1:
        return f"{sign}{s * 1e3:.1f} ms"
    if s < 60:
        return f"{sign}{s:.1f} s"
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= scale:
            return f"{sign}{s / scale:.0f} {unit}"
    return f"{sign}{s:.0f} s"  # pragma: no cover


def _human(column: Column, value: Any) -> str:
    if value is None:
        if column.kind == "expiry":
            return "never"
        return "unknown" if column.kind in ("time", "age") else "-"
    kind = column.kind
    if kind == "bytes":
        return human_size(value)
    if kind == "count":
        return f"{value:,}"
    if kind in ("time", "expiry"):
        if not math.isfinite(value):
            return "never"
        return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    if kind in ("age", "seconds"):
        return human_seconds(value)
    if kind == "ratio":
        return f"{value:.1%}"
    if kind == "list":
        return ",".join(value) if value else "-"
    if kind == "json":
        return value if isinstance(value, str) else json.dumps(_jsonable(value))
    return str(value)


def _plain(column: Column, value: Any) -> str:
    if value is None:
        return ""
    kind = column.kind
    if kind in ("time", "expiry"):
        return iso(value) or ""
    if kind in ("age", "seconds", "ratio"):
        return f"{value:.6g}"
    if kind == "list":
        return ",".join(value)
    if kind == "json":
        return value if isinstance(value, str) else json.dumps(_jsonable(value))
    return str(value)


def _json_value(column: Column, value: Any) -> Any:
    if column.kind in ("time", "expiry"):
        return iso(value)
    return _jsonable(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.hex()
    return repr(value)
