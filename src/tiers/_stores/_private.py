"""Whether a store directory is private: nobody but this user (and root) can change it.

A cache keeps values that need no pickle unsigned on a private store (its checksum verifies
them: docs/decisions/0013-plain-values-on-private-stores.md), so a store says it is private
only when that holds. The DiskStore always is: every file it reads a value from must be a
regular file of this user with one link (`_disk/_io.is_ours`), which no other user can create
or write. A FolderStore reads the files it finds by path, so it is private when its directory
is: `only_owner_writes` of its root, checked when asked (a cache asks once, when it opens).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def only_owner_writes(root: Path) -> bool:
    """Whether no other user can put anything under `root` (a resolved path): `root` is a
    directory of this user that no one else may write, and every directory above it belongs
    to this user or to root and either no one else may write it or it is sticky (as /tmp is:
    others cannot rename or remove what is not theirs there). ACLs are not read; False on a
    system without user ids, or if something cannot be checked."""
    if not hasattr(os, "geteuid"):
        return False
    uid = os.geteuid()
    try:
        info = os.lstat(root)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o022:
            return False
        for parent in root.parents:
            info = os.lstat(parent)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (uid, 0):
                return False
            if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
                return False
    except OSError:
        return False
    return True
