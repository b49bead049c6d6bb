"""Public names print and pickle as the module users import them from (``tiers.Cache``, not
``tiers._cache._cache.Cache``), as httpx does for its own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def publish(module: str, namespace: Mapping[str, object], names: Iterable[str]) -> None:
    """Give each class and function of `names` defined in a private module of tiers the
    public `module`."""
    for name in names:
        obj = namespace[name]
        defined_in = getattr(obj, "__module__", None) or ""
        if callable(obj) and defined_in.startswith("tiers.") and "._" in defined_in:
            obj.__module__ = module
