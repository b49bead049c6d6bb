"""The store protocol, for writing a store of your own (check it with `tiers.testing`).

A store implements `Store` (the core, sync and ``_async``); optional capabilities are separate
protocols the cache detects at run time: `SupportsInfo`, `SupportsTouch`, `SupportsExpire`,
`SupportsTags`, `SupportsKeys`, `SupportsPop`, `SupportsMany`, `SupportsLocks`,
`SupportsEpoch`.
"""

from ._clock import Clock
from ._stores._protocol import (
    Entry,
    Store,
    StoreCounters,
    SupportsEpoch,
    SupportsExpire,
    SupportsInfo,
    SupportsKeys,
    SupportsLocks,
    SupportsMany,
    SupportsPop,
    SupportsTags,
    SupportsTouch,
)

__all__ = [
    "Clock",
    "Entry",
    "Store",
    "StoreCounters",
    "SupportsEpoch",
    "SupportsExpire",
    "SupportsInfo",
    "SupportsKeys",
    "SupportsLocks",
    "SupportsMany",
    "SupportsPop",
    "SupportsTags",
    "SupportsTouch",
]
