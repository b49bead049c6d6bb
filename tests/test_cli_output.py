"""The command line's pure parts: filters, sorting, durations and the three output forms."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from tiers._cli._errors import USAGE, CLIError
from tiers._cli._filters import parse_duration, parse_filter, parse_sort
from tiers._cli._output import BATCH, Column, Output

NOW = 1_800_000_000.0


def entry_row(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "key": "k", "size": 10, "created": NOW - 60, "accessed": None, "expires": None,
    }  # fmt: skip
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("30s", 30), ("15min", 900), ("15m", 900), ("12h", 43200), ("7d", 604800),
     ("2w", 1209600), ("1.5h", 5400), ("250ms", 0.25)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "7 days", "-1d", "1e3s"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(CLIError) as caught:
        parse_duration(text, "--older-than")
    assert caught.value.status == USAGE and "--older-than" in str(caught.value)


def test_filters_compare_sizes_ages_idle_time_expiry_and_keys() -> None:
    big = entry_row(size=2_000_000)
    assert parse_filter("size>1MB").test(big, NOW)
    assert not parse_filter("size>1MB").test(entry_row(), NOW)
    assert parse_filter("age>30s").test(entry_row(), NOW)
    assert not parse_filter("age>7d").test(entry_row(), NOW)
    assert not parse_filter("idle>1s").test(entry_row(), NOW)  # unknown never matches
    assert parse_filter("idle>1s").test(entry_row(accessed=NOW - 5), NOW)
    assert parse_filter("expires<1h").test(entry_row(expires=NOW + 60), NOW)
    assert not parse_filter("expires<1h").test(entry_row(), NOW)  # never expires
    assert parse_filter("key~port").test(entry_row(key="report:1"), NOW)
    assert parse_filter("key!=a").test(entry_row(key="b"), NOW)


@pytest.mark.parametrize("text", ["size", "colour>1", "size~1", "key>a", "age>soon", "size>big"])
def test_bad_filters_say_what_to_write(text: str) -> None:
    with pytest.raises(CLIError) as caught:
        parse_filter(text)
    assert caught.value.status == USAGE


def test_sorting_puts_unknowns_last_both_ways() -> None:
    rows = [entry_row(key=k, accessed=a) for k, a in (("a", None), ("b", 5.0), ("c", 9.0))]
    up = parse_sort("accessed")
    down = parse_sort("accessed:desc")
    assert [r["key"] for r in sorted(rows, key=up.key, reverse=up.descending)] == ["b", "c", "a"]
    assert [r["key"] for r in sorted(rows, key=down.key, reverse=down.descending)] == [
        "c", "b", "a",
    ]  # fmt: skip
    never = parse_sort("expires")
    timed = [entry_row(key="x", expires=None), entry_row(key="y", expires=NOW)]
    assert [r["key"] for r in sorted(timed, key=never.key)] == ["y", "x"]
    assert parse_sort("size").descending  # biggest first by default
    with pytest.raises(CLIError):
        parse_sort("size:sideways")


COLUMNS = [Column("key"), Column("size", "bytes"), Column("created", "time"),
           Column("tags", "list")]  # fmt: skip
ROWS = [
    {"key": "a", "size": 1500, "created": NOW, "tags": ["x", "y"]},
    {"key": "b", "size": 2, "created": None, "tags": []},
]


def render(form: str, rows: list[dict[str, object]] = ROWS) -> str:
    stdout = io.StringIO()
    out = Output(form, stdout=stdout, stderr=io.StringIO(), progress=False)
    count = out.rows(COLUMNS, rows, document={"command": "t"}, field="entries",
                     tail=lambda: {"total": len(rows)})  # fmt: skip
    assert count == len(rows)
    return stdout.getvalue()


def test_json_is_one_document_with_iso_times_and_totals() -> None:
    doc = json.loads(render("json"))
    assert doc["command"] == "t" and doc["total"] == 2
    assert doc["entries"][0] == {"key": "a", "size": 1500, "created": "2027-01-15T08:00:00.000Z",
                                 "tags": ["x", "y"]}  # fmt: skip
    assert doc["entries"][1]["created"] is None
    assert json.loads(render("json", []))["entries"] == []
    assert render("table", []) == ""  # nothing to show: no header either


def test_csv_has_a_header_and_plain_values() -> None:
    rows = list(csv.reader(io.StringIO(render("csv"))))
    assert rows[0] == ["key", "size", "created", "tags"]
    assert rows[1] == ["a", "1500", "2027-01-15T08:00:00.000Z", "x,y"]
    assert rows[2] == ["b", "2", "", ""]


def test_a_table_in_a_pipe_is_plain_aligned_text() -> None:
    lines = render("table").splitlines()
    assert lines[0].split() == ["key", "size", "created", "tags"]
    assert lines[1].split() == ["a", "1500", "2027-01-15T08:00:00.000Z", "x,y"]
    assert lines[2].split() == ["b", "2", "-", "-"]  # one word per cell
    assert "\x1b" not in "\n".join(lines)  # no colour codes
    assert len(lines[1]) == len(lines[1].rstrip())


def test_a_long_table_streams_in_batches_with_one_header() -> None:
    rows = [{"key": f"k{i}", "size": i, "created": NOW, "tags": []} for i in range(BATCH * 2 + 5)]
    lines = render("table", rows).splitlines()
    assert len(lines) == len(rows) + 1
    assert sum(1 for line in lines if line.startswith("key")) == 1


def test_infinite_and_odd_values_stay_valid_json() -> None:
    stdout = io.StringIO()
    Output("json", stdout=stdout).json({"a": math.inf, "b": b"\x01", "c": (1, 2)})
    assert json.loads(stdout.getvalue()) == {"a": None, "b": "01", "c": [1, 2]}
