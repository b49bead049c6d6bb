"""`ObjectStore.scan`: every entry present, with its record head and no value, a page at a time.

Each page is one plan (`Walk.page`), run as one store call: the next page of a listing (up to
1000 objects) of the entries under the key prefix — or, for a tag, of the tag's markers (the
index every tagged write keeps: `_plans`) — then a ranged read of each record's first bytes,
16 at a time (`_plans.read_heads`: a second ranged read for the few whose metadata runs past
`HEAD_BYTES`), never a body past them. Object storage does not know when an object was read:
`Entry.accessed_at` is None. Memory holds one page. Objects that are no entry's (other
names, links on a local store), damaged records and records under another key's name are
skipped (`verify` reports them).
"""

from __future__ import annotations

from dataclasses import replace

from .._protocol import Entry
from .._server_time import ServerTime
from ._paths import Layout, is_name
from ._plans import decode, read_heads
from ._requests import Listing, Page, Plan

Found = list[tuple[str, Entry]]


class Walk:
    """One scan's place: `page` gives the next page's entries until `done`."""

    def __init__(self, layout: Layout, prefix: str, tag: str | None) -> None:
        self.layout = layout
        self.prefix = prefix
        self.tag = tag
        offset, self.start, _exact = layout.scan_offset(prefix)
        self.folder: str | None = None
        if tag is None:
            self.listing = Listing(layout.entries(), self.start, offset)
        else:  # the markers of the entries under the prefix: <tag folder>/<entry name>
            self.folder = folder = layout.tag_folder(tag)
            cut = len(layout.entries())
            self.listing = Listing(
                folder, folder + self.start[cut:], None if offset is None else folder + offset[cut:]
            )
        self.done = False

    def page(self, clock: ServerTime) -> Plan[Found]:
        listed = yield Page(self.listing)
        self.done = self.listing.done
        paths = [path for path, size in listed if size >= 0]  # (not a link: `_local`)
        if self.folder is not None:
            paths = [self.layout.entry_of_marker(self.folder, marker) for marker in paths]
        cut = len(self.layout.entries()) + 1
        paths = [path for path in paths if is_name(path[cut:])]
        if not paths:
            return []
        founds = yield from read_heads(paths)
        found: Found = []
        for path, record in zip(paths, founds, strict=True):
            decoded = None if record is None else decode(record)
            if decoded is None:
                continue
            entry, key = decoded
            if self.layout.entry(key) != path or not key.startswith(self.prefix):
                continue
            if self.tag is not None and self.tag not in entry.tags:
                continue  # a stale marker
            expires_at = clock.to_local(entry.expires_at)
            found.append((key, replace(entry, value=None, expires_at=expires_at)))
        return found
