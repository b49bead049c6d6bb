"""The `faultfs` pytest fixture: a faultfs mounted for one test, always unmounted after.

Import it into a test module (``from tests._faultfs.fixture import faultfs``). Where FUSE,
mfusepy or libfuse3 is missing it skips with the reason, and fails instead under
``TIERS_REQUIRE_SERVERS=1`` (as tests/conftest.py does for missing servers).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .mount import FaultFSUnavailable, FaultMount


def unavailable(reason: str) -> None:
    """Skip (or, under TIERS_REQUIRE_SERVERS=1, fail) for a missing piece of the set-up."""
    if os.environ.get("TIERS_REQUIRE_SERVERS"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def faultfs(tmp_path: Path) -> Iterator[FaultMount]:
    """A faultfs mounted at ``tmp_path/faultfs/mnt`` (see tests/_faultfs/daemon.py)."""
    mount = FaultMount(tmp_path / "faultfs")
    try:
        mount.start()
    except FaultFSUnavailable as exc:
        unavailable(str(exc))
    try:
        yield mount
    finally:
        mount.stop()
