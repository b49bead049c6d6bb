"""Public names print as the module users import them from, and still pickle."""

from __future__ import annotations

import pickle

import pytest

import tiers
import tiers.protocol
import tiers.testing


@pytest.mark.parametrize(
    ("module", "names"),
    [(tiers, tiers.__all__), (tiers.protocol, tiers.protocol.__all__),
     (tiers.testing, tiers.testing.__all__)],
)  # fmt: skip
def test_public_classes_and_functions_name_their_public_module(
    module: object, names: list[str]
) -> None:
    for name in names:
        obj = getattr(module, name)
        if callable(obj) and getattr(obj, "__module__", "").startswith("tiers"):
            assert obj.__module__ == module.__name__, name  # type: ignore[attr-defined]


def test_a_cache_class_prints_as_tiers_cache() -> None:
    assert repr(tiers.Cache) == "<class 'tiers.Cache'>"
    assert repr(tiers.MemoryStore) == "<class 'tiers.MemoryStore'>"


def test_public_objects_still_pickle() -> None:
    stats = tiers.Cache(tiers.MemoryStore()).stats()
    assert pickle.loads(pickle.dumps(stats)) == stats
    assert pickle.loads(pickle.dumps(tiers.hash_key)) is tiers.hash_key
    store = pickle.loads(pickle.dumps(tiers.MemoryStore(max_items=3)))
    assert isinstance(store, tiers.MemoryStore)
