"""The store protocol, for writing a store of your own (check it with `tiers.testing`).

A store implements `Store` (the core, sync and ``_async``). Optional capabilities are separate
protocols, each found when a cache opens (a store has one when it has all its methods):
`SupportsInfo`, `SupportsTouch`, `SupportsExpire`, `SupportsTags`, `SupportsKeys`,
`SupportsPop`, `SupportsUpdate` (read-modify-write, for counters), `SupportsMany`,
`SupportsLocks`, `SupportsFencedWrites`, `SupportsRevalidate` (which answers `UNCHANGED`),
`SupportsEpoch`; and the walks the ``tiers`` command runs:
`SupportsScan`, `SupportsUsage` (`Usage`) and `SupportsVerify` (`Damage`). Each says what the
cache does without it.
"""

from ._clock import Clock
from ._public import publish
from ._stores._protocol import (
    DAMAGE_KINDS,
    UNCHANGED,
    Damage,
    Entry,
    Store,
    StoreCounters,
    SupportsEpoch,
    SupportsExpire,
    SupportsFencedWrites,
    SupportsInfo,
    SupportsKeys,
    SupportsLocks,
    SupportsMany,
    SupportsPop,
    SupportsRevalidate,
    SupportsScan,
    SupportsTags,
    SupportsTouch,
    SupportsUpdate,
    SupportsUsage,
    SupportsVerify,
    Unchanged,
    Usage,
)

__all__ = [
    "DAMAGE_KINDS",
    "UNCHANGED",
    "Clock",
    "Damage",
    "Entry",
    "Store",
    "StoreCounters",
    "SupportsEpoch",
    "SupportsExpire",
    "SupportsFencedWrites",
    "SupportsInfo",
    "SupportsKeys",
    "SupportsLocks",
    "SupportsMany",
    "SupportsPop",
    "SupportsRevalidate",
    "SupportsScan",
    "SupportsTags",
    "SupportsTouch",
    "SupportsUpdate",
    "SupportsUsage",
    "SupportsVerify",
    "Unchanged",
    "Usage",
]

publish(__name__, globals(), __all__)
del publish
