"""The public face: `tiers.__all__` and `tiers.errors.__all__` are exactly what is exported."""

from __future__ import annotations

import inspect
import types

import tiers
import tiers.errors

# The names `tiers` exports: its whole public API (errors live in `tiers.errors`, the store
# suite in `tiers.testing`). A name added or dropped is a change of the public API: here too.
PUBLIC = {
    "Cache", "memoize", "hash_key", "MISSING", "EntryInfo", "Explanation", "Stats", "MemoryStore",
    "DiskStore",
    "FolderStore", "RedisStore", "ObjectStore", "NullStore", "CachingReadableStore",
    "default_cache", "__version__",
}  # fmt: skip


def test_all_lists_exactly_the_public_names() -> None:
    assert len(tiers.__all__) == len(set(tiers.__all__)), "a name is listed twice"
    assert set(tiers.__all__) == PUBLIC


def test_every_listed_name_exists() -> None:
    for name in tiers.__all__:
        assert getattr(tiers, name, None) is not None, name


def test_every_public_attribute_is_listed() -> None:
    public = {
        name
        for name in dir(tiers)
        if not name.startswith("_") and not isinstance(getattr(tiers, name), types.ModuleType)
    }
    assert public <= set(tiers.__all__), (
        f"exported but not in __all__: {public - set(tiers.__all__)}"
    )


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from tiers import *", namespace)  # noqa: S102
    assert set(namespace) - {"__builtins__"} == set(tiers.__all__)


def test_public_classes_present_themselves_as_tiers_members() -> None:
    for name in (
        "Cache", "MemoryStore", "DiskStore", "FolderStore", "RedisStore", "ObjectStore",
        "NullStore", "EntryInfo", "Explanation", "Stats", "CachingReadableStore",
    ):  # fmt: skip
        cls = getattr(tiers, name)
        assert cls.__module__ == "tiers", name  # prints as tiers.Cache, not tiers._cache...
        assert cls.__doc__, f"{name} has no docstring"


def test_version_is_a_string() -> None:
    assert isinstance(tiers.__version__, str) and tiers.__version__[0].isdigit()


def _error_classes() -> dict[str, type[BaseException]]:
    return {
        name: obj
        for name, obj in vars(tiers.errors).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == tiers.errors.__name__
    }


def test_errors_all_matches_its_classes() -> None:
    assert len(tiers.errors.__all__) == len(set(tiers.errors.__all__))
    assert set(tiers.errors.__all__) == set(_error_classes())


def test_every_error_derives_from_tiers_error() -> None:
    for name, cls in _error_classes().items():
        assert issubclass(cls, tiers.errors.TiersError), name
    assert issubclass(tiers.errors.TiersError, Exception)


def test_errors_inherit_the_builtins_their_meaning_matches() -> None:
    e = tiers.errors
    assert issubclass(e.ConfigError, ValueError)
    assert issubclass(e.SerializationError, TypeError)
    assert issubclass(e.MissingDependencyError, ImportError)
    assert issubclass(e.StoreFullError, OSError) and issubclass(e.StoreFullError, e.StoreError)
    assert issubclass(e.StorePermissionError, PermissionError)
    assert issubclass(e.TierUnavailableError, e.StoreError)


def test_the_error_tree_in_the_docstring_names_every_error() -> None:
    doc = tiers.errors.__doc__ or ""
    for name in tiers.errors.__all__:
        assert name in doc, f"{name} is missing from the tree in tiers/errors.py"


def test_missing_is_a_falsy_singleton() -> None:
    assert repr(tiers.MISSING) == "MISSING"
    assert not tiers.MISSING
    assert tiers.MISSING is type(tiers.MISSING)["MISSING"]
