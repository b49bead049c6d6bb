"""What the read-only tests share: root detection and a read-only bind mount (EROFS, which
root cannot write through either, unlike permission bits)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@contextlib.contextmanager
def read_only_view(source: Path, view: Path) -> Iterator[Path]:
    """`source` seen read-only at `view` (a read-only bind mount), unmounted on exit."""
    view.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        yield view
    finally:
        if subprocess.run(["umount", str(view)], check=False).returncode:
            subprocess.run(["umount", "-l", str(view)], check=True)  # (busy: detach it)
