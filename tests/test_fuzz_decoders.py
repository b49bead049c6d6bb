"""Every decoder of bytes from outside the process (the registry of tests/_fuzz_cases.py),
on every run: each truncation and single-bit flip of a representative valid input, planted
hostile inputs, the inputs atheris found (tests/fuzz/regressions/), FolderStore's reads of
damaged metadata.json, and a few seconds of each atheris target.

The rule: the result is the original value, or the decoder's documented damage exception (a
miss through the store), never another exception, never a different value, never unbounded
time or memory. Known issues of decoders outside the files these tests' author owns are
reported as xfail with the fix (see each case's `known`).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from tests._fuzz_cases import (
    CASES,
    CASES_BY_NAME,
    TARGETS,
    Case,
    Mutation,
    Unavailable,
    fuzz_one,
    hostile_documents,
    mutations,
    outcome,
)
from tiers import FolderStore
from tiers._stores import Entry
from tiers._stores._folder._naming import entry_dir

FUZZ = Path(__file__).parent / "fuzz"
REGRESSIONS = FUZZ / "regressions"


def _prepared(case: Case) -> tuple[bytes, object]:
    try:
        return case.valid(), case.expected()
    except Unavailable as exc:
        pytest.skip(str(exc))


def _known(case: Case, reasons: set[str]) -> None:
    if reasons:
        pytest.xfail("known, outside this suite's files: " + " | ".join(sorted(reasons)))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_the_valid_input_decodes_and_re_encodes(case: Case) -> None:
    valid, expected = _prepared(case)
    assert len(valid) <= 1024, "keep inputs small: every bit of them is flipped on every run"
    decoded, result = outcome(case, valid)  # well-formed, and re-encodes to the same
    assert decoded and result == expected


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_every_truncation_and_bit_flip_is_the_value_or_damage(case: Case) -> None:
    valid, expected = _prepared(case)
    failures: list[str] = []
    known: set[str] = set()
    tally = {"original": 0, "damage": 0, "other": 0}
    for mutation in mutations(valid):
        try:
            decoded, result = outcome(case, mutation.apply(valid))
            if not decoded:
                tally["damage"] += 1
            elif not case.acceptable(result, expected, valid, mutation):
                failures.append(f"{mutation}: {result!r}, not {expected!r}")
            else:
                tally["original" if result == expected else "other"] += 1
        except Exception as exc:
            reason = case.known_reason(exc)
            if reason is None:
                failures.append(f"{mutation}: {type(exc).__name__}: {exc}"[:300])
            else:
                known.add(reason)
    assert not failures, f"{len(failures)} bad results, first: " + "\n".join(failures[:10])
    total = sum(tally.values())
    assert total + len(known) > 0
    if case.damage:  # a decoder with damage to detect detected some
        assert tally["damage"] > 0, tally
    _known(case, known)


def _hostile_inputs(case: Case) -> list[tuple[str, bytes]]:
    inputs = list(case.hostile())
    if case.embed is not None:
        inputs += [(f"document: {label}", case.embed(doc)) for label, doc in hostile_documents()]
    return inputs


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.embed or c.hostile()], ids=lambda case: case.name
)
def test_planted_hostile_inputs_are_damage_within_bounds(case: Case) -> None:
    """Deep nesting, huge numbers and strings, bombs, forged sizes: damage (or a well-formed
    value), in bounded time and memory: at most 80 bytes per input byte, plus 1 MiB."""
    _prepared(case)
    failures: list[str] = []
    known: set[str] = set()
    for label, data in _hostile_inputs(case):
        tracemalloc.start()
        started = time.perf_counter()
        try:
            outcome(case, data)
        except Exception as exc:
            reason = case.known_reason(exc)
            if reason is None:
                failures.append(f"{label}: {type(exc).__name__}: {exc}"[:300])
            else:
                known.add(reason)
        finally:
            elapsed = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        if elapsed > 2.0:
            failures.append(f"{label}: took {elapsed:.1f} s")
        if peak > 80 * len(data) + 2**20:
            failures.append(f"{label}: allocated {peak:,} bytes for {len(data):,}")
    assert not failures, "\n".join(failures)
    _known(case, known)


def test_long_ints_are_bounded_even_with_pythons_digit_limit_off() -> None:
    """int('7' * 10**6) takes quadratic time when sys.set_int_max_str_digits(0): the
    documents tiers reads bound int literals themselves."""
    if not hasattr(sys, "set_int_max_str_digits"):
        pytest.skip("this Python has no int digit limit to turn off")
    saved = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        for name in ("folder-metadata", "wire-record"):
            case = CASES_BY_NAME[name]
            assert case.embed is not None
            data = case.embed(b'{"n":' + b"7" * 1_000_000 + b"}")
            started = time.perf_counter()
            assert outcome(case, data) == (False, None)
            assert time.perf_counter() - started < 1.0
    finally:
        sys.set_int_max_str_digits(saved)


# -- regressions found by atheris ------------------------------------------------------------


def _regressions() -> list[tuple[str, Path]]:
    if not REGRESSIONS.is_dir():
        return []
    return [
        (folder.name, path)
        for folder in sorted(REGRESSIONS.iterdir())
        if folder.is_dir()
        for path in sorted(folder.iterdir())
    ]


def test_every_regression_names_a_case() -> None:
    assert _regressions(), "the regressions found by atheris are committed"
    assert {name for name, _path in _regressions()} <= set(CASES_BY_NAME)


@pytest.mark.parametrize(
    ("name", "path"), _regressions(), ids=[f"{n}/{p.name}" for n, p in _regressions()]
)
def test_a_regression_input_is_damage_or_its_value(name: str, path: Path) -> None:
    case = CASES_BY_NAME[name]
    _prepared(case)
    try:
        outcome(case, path.read_bytes())
    except Exception as exc:
        reason = case.known_reason(exc)
        if reason is None:
            raise
        _known(case, {reason})
    fuzz_one(case, path.read_bytes())  # and what atheris checks (authenticated values)


# -- the same damage through a real FolderStore ----------------------------------------------


def test_damaged_metadata_json_is_a_counted_miss_and_removed(tmp_path: Path) -> None:
    """Every truncation of an entry's metadata.json, and a flip of one bit in each of its
    bytes (the decoder test above flips all eight): the store returns the entry unchanged,
    or misses, removes the folder and counts it as rejected."""
    store = FolderStore(tmp_path / "store")
    entry = Entry(b'{"v": 1}', b"\x01\x00\x00\x04json", 1_700_000_000.5, None, ("t",),
                  {"m": [1, 2]})  # fmt: skip
    store.set("k", entry)
    folder = store.directory / entry_dir("k")
    valid = (folder / "metadata.json").read_bytes()
    mutants = [Mutation("truncate", n) for n in range(len(valid))]
    mutants += [Mutation("flip", at, at % 8) for at in range(len(valid))]
    misses = 0
    for mutation in mutants:
        (folder / "metadata.json").write_bytes(mutation.apply(valid))
        rejected = store.stats().rejected
        got = store.get("k")
        if got is None:
            misses += 1
            assert not folder.exists(), f"{mutation}: the damaged entry was not removed"
            assert store.stats().rejected == rejected + 1, f"{mutation}: not counted"
            store.set("k", entry)
        else:
            assert (bytes(got.value), got.header, got.created_at, got.expires_at, got.tags,
                    got.meta) == (entry.value, entry.header, entry.created_at, None,
                                  entry.tags, entry.meta), str(mutation)  # fmt: skip
    assert misses >= len(mutants) - 2  # all but dropping or flipping the final newline
    assert list(store.keys()) == ["k"]


# -- atheris ---------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="needs atheris")
def test_every_atheris_target_runs_a_few_seconds_without_a_crash(tmp_path: Path) -> None:
    """tests/fuzz/run.py: each target for 2 s, two at a time, in processes of their own."""
    targets = sorted(p.name[len("fuzz_") : -3] for p in FUZZ.glob("fuzz_*.py"))
    assert targets == sorted(TARGETS), "one tests/fuzz/fuzz_<target>.py per target"
    done = subprocess.run(
        [sys.executable, str(FUZZ / "run.py"), "--seconds", "2", "--jobs", "2",
         "--work", str(tmp_path)],
        capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert sorted(summary) == targets
    for target, result in summary.items():
        assert result["executions"] > 100, f"{target} hardly ran: {result}"
        assert result["crashes"] == []
