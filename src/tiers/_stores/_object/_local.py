"""Listing obstore's local store (``file://``) without following links, for scans and verify.

obstore's own listing follows symbolic links to directories, so a link planted under the
store's root would make a walk read — and a fix delete — files anywhere else. `chunks`
walks the directory itself instead (``os.walk`` without following links) and gives every
link, and anything that is not a regular file (a FIFO would block a read for ever), with
size `NOT_FILE`: listed, never read or entered. Deleting such a path removes the link
itself (obstore unlinks it), never what it points to.

obstore writes a local object to ``<path>#<n>`` and renames it: a write cut short leaves
that file (`is_temp`), which its listing hides and its delete refuses; `remove` unlinks it.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NOT_FILE = -1
"""The size given to a link or anything else that is not a regular file."""
CHUNK = 1000
_TEMP = re.compile(r".*#[0-9]+")


def chunks(root: Path, folder: str) -> Iterator[list[dict[str, Any]]]:
    """Lists of up to `CHUNK` objects (obstore's ``{"path", "size"}``) under `folder` of the
    store rooted at `root`; nothing if the folder is missing, the folder itself if it (or a
    directory on the way to it) is a link."""
    found: list[dict[str, Any]] = []
    on_way = link_on(root, folder)
    if on_way is not None:
        yield [{"path": on_way, "size": NOT_FILE}]
        return
    for directory, dirs, files in os.walk(root / folder, followlinks=False):
        for name in sorted(dirs + files):
            full = os.path.join(directory, name)
            try:
                info = os.lstat(full)
            except OSError:
                continue  # gone meanwhile
            if stat.S_ISDIR(info.st_mode):
                continue  # walked into by os.walk
            size = info.st_size if stat.S_ISREG(info.st_mode) else NOT_FILE
            found.append({"path": _relative(root, full), "size": size})
            if len(found) == CHUNK:
                yield found
                found = []
        dirs.sort()
    if found:
        yield found


def link_on(root: Path, relative: str) -> str | None:
    """The first link on the way from `root` to `relative` (a path under it, itself
    included), or None."""
    path = root
    for part in relative.split("/"):
        path = path / part
        if path.is_symlink():
            return _relative(root, str(path))
        if not path.is_dir():
            return None
    return None


def _relative(root: Path, full: str) -> str:
    return Path(os.path.relpath(full, root)).as_posix()


def is_temp(path: str) -> bool:
    """Whether `path` is the temporary file of an unfinished local write."""
    return bool(_TEMP.fullmatch(path))


def remove(root: Path, paths: tuple[str, ...]) -> None:
    """Unlink the files at `paths` (relative to `root`; missing ones are no error), never
    through a linked directory."""
    for path in paths:
        parent = path.rpartition("/")[0]
        if parent and link_on(root, parent) is not None:
            continue
        try:
            os.unlink(root / path)
        except FileNotFoundError:
            continue
