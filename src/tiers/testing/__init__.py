"""Test helpers for stores: the `StoreTests` conformance suite and a `FakeClock`.

Requires pytest. Usage: subclass `StoreTests` and implement ``make_store(tmp_path)``.
"""

from .._public import publish
from ._clock import FakeClock
from ._store_tests import StoreTests

__all__ = ["FakeClock", "StoreTests"]

publish(__name__, globals(), __all__)
del publish
