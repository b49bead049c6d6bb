"""`StoreTests`: the conformance suite every store passes, reusable by third parties."""

from __future__ import annotations

from ._capabilities import CapabilityTests
from ._core import CoreTests
from ._robustness import RobustnessTests


class StoreTests(CoreTests, CapabilityTests, RobustnessTests):
    """Subclass it in a test module and implement `make_store`::

        class TestMyStore(StoreTests):
            def make_store(self, tmp_path: Path) -> Store:
                return MyStore(tmp_path / "store")

    The `store` fixture installs a `FakeClock` (the `clock` fixture) on ``store.clock`` and
    closes the store afterwards. Tests of an optional capability (keys, count, info, touch,
    expire, evict, pop, locks) skip when the store lacks it. Flags: `null` (the store keeps
    nothing), `supports_large_values`, `persistent` (documented where defined). A store with a
    ``max_size`` attribute is also checked to reject, and count, entries larger than it.
    """
