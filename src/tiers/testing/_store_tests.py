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
    closes the store afterwards. Tests of an optional capability skip unless the store is an
    instance of its protocol (`SupportsKeys`, `SupportsInfo`, `SupportsTouch`, `SupportsExpire`,
    `SupportsTags`, `SupportsPop`, `SupportsUpdate`, `SupportsLocks`, `SupportsFencedWrites`).
    Flags: `null` (the store keeps nothing), `supports_large_values`, `persistent` (documented
    where defined). A store with a ``max_size`` attribute is also checked to reject, and count,
    entries larger than it.

    So that a store is not only checked against itself, override two hooks that reach its
    medium (the files, the server, the bucket) without the store, and set ``bypass = True``:

    - ``stored(store, key) -> Entry | None``: the entry the medium holds under `key`;
      writes through the store are checked with it;
    - ``plant(store, key, entry)``: put an entry in the medium, tag index included; reads
      through the store are checked against it.

    Without them both fall back to the store's own ``get`` and ``set``.
    """
