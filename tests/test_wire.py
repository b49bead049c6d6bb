"""The portable record of `_stores/_wire.py`: round trips, partial reads, damage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiers._stores import Entry, _wire

TEXT = st.text(alphabet=st.characters(blacklist_characters="\0"), max_size=20)
ENTRIES = st.builds(
    Entry,
    value=st.binary(max_size=300),
    header=st.binary(max_size=40),
    created_at=st.floats(0, 4e9),
    expires_at=st.one_of(st.none(), st.floats(1, 1e15)),
    tags=st.lists(TEXT.filter(bool), max_size=3).map(tuple),
    meta=st.one_of(st.none(), st.dictionaries(TEXT, st.integers(), max_size=3)),
)


@given(ENTRIES, st.one_of(st.none(), st.text(max_size=50)))
def test_a_record_round_trips(entry: Entry, key: str | None) -> None:
    got, full_key = _wire.unpack(_wire.pack(entry, key))
    assert (bytes(got.value), got.header, got.created_at, got.expires_at) == (
        entry.value, entry.header, entry.created_at, entry.expires_at,
    )  # fmt: skip
    assert (got.tags, got.meta, full_key) == (entry.tags, entry.meta, key or None)
    assert got.size == len(entry.value) + len(entry.header)


@given(ENTRIES, st.text(max_size=50), st.integers(0, 400))
def test_the_head_of_a_record_gives_the_entry_without_its_value(
    entry: Entry, key: str, extra: int
) -> None:
    """From its first `head_length` bytes (or more) a record decodes all but the value."""
    record = _wire.pack(entry, key)
    need = _wire.head_length(record)
    whole, _ = _wire.unpack(record)
    got, full_key = _wire.unpack_head(record[: need + extra], len(record))
    assert got.value is None and full_key == (key or None)
    assert (got.header, got.created_at, got.expires_at, got.tags, got.meta, got.size) == (
        whole.header, whole.created_at, whole.expires_at, whole.tags, whole.meta, whole.size,
    )  # fmt: skip
    if need > _wire.FIXED.size:
        with pytest.raises(_wire.DamagedRecord):
            _wire.unpack_head(record[: need - 1], len(record))


@pytest.mark.parametrize("data", [b"", b"T1", b"XX" + bytes(40), bytes(34)])
def test_what_is_not_a_record_is_damaged(data: bytes) -> None:
    for decode in (_wire.unpack, _wire.head_length):
        with pytest.raises(_wire.DamagedRecord):
            decode(data)
