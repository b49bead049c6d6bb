"""The requests a store operation makes, as values: operations are generators that yield
them and get the replies back, so one piece of logic runs sync and async (`_store`)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Found:
    """An object read: its bytes (all, or the first ones asked for), e_tag, whole size and
    version (`_backend.version_of`: the e_tag where the store gives one)."""

    data: bytes
    e_tag: str | None
    size: int
    version: str | None = None
    modified: float | None = None
    """The object's last-modified time (epoch seconds, the server's clock), if given."""


class Changed(Enum):
    """The type of `CHANGED`: a read conditional on an e_tag found another object."""

    CHANGED = "changed"


CHANGED = Changed.CHANGED


@dataclass(frozen=True, slots=True)
class Get:
    """Read an object (only its first `length` bytes if given); reply: `Found`, or None if
    there is none. With `unless` (a version), reply `UNCHANGED` instead, without its bytes,
    if the object still has that version. With `if_match` (an e_tag), reply `CHANGED` if the
    object has another e_tag now. `head`: no bytes (``data`` is empty), only what is known of
    the object."""

    path: str
    length: int | None = None
    unless: str | None = None
    if_match: str | None = None
    head: bool = False


@dataclass(frozen=True, slots=True)
class Put:
    """Write an object; `mode` as obstore's (None, "create" or {"e_tag": ...}).
    Reply: True, or False if the condition failed (the object exists / changed)."""

    path: str
    data: bytes
    mode: Any = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete objects (missing ones are no error); reply: None."""

    paths: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class List:
    """List objects under the folder `folder`, after `offset`, whose path starts with
    `start`; reply: a list of (path, size)."""

    folder: str
    start: str
    offset: str | None = None


@dataclass(slots=True, eq=False)
class Listing:
    """A listing read a page at a time (`Page`): the objects under the folder `folder`,
    after `offset`, whose path starts with `start`. The backend keeps its place in
    `handle`; `done` once it has given the last page."""

    folder: str
    start: str
    offset: str | None = None
    handle: Any = field(default=None, repr=False)
    done: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    """The next page of `listing` (up to 1000 objects, the store's chunk); reply: a list of
    (path, size), empty once the listing is done (and possibly before: a page of objects
    outside `start`)."""

    listing: Listing


@dataclass(frozen=True, slots=True)
class Many:
    """Run requests concurrently; reply: the list of their replies, in order."""

    requests: tuple[Get | Put | Delete, ...]


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait `seconds` before trying again (an update that lost a race); reply: None."""

    seconds: float


Request = Get | Put | Delete | List | Page | Many | Pause
Plan = Generator[Request, Any, T]
"""An operation: yields requests, receives their replies, returns its result."""
