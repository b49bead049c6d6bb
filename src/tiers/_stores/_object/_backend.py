"""Opening obstore stores from URLs, and running requests against any obspec store.

A store is called through its methods (obspec's protocols, which obstore's stores implement):
``get``/``get_async`` (a result with ``buffer``/``buffer_async`` and ``meta``), ``put``/
``put_async`` (with ``mode``), ``delete``/``delete_async`` and ``list``/``list_async`` (with
``offset``). Every error becomes a `StoreError` here, except the ones a request answers with
(not found: None; exists / precondition failed: False; not modified: `UNCHANGED`).
Over obstore's local store, listings are walked here and links never followed (`_local`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..._plans import run, run_async
from ...errors import ConfigError, MissingDependencyError, StoreError, StorePermissionError
from .._protocol import UNCHANGED, Unchanged
from . import _local
from ._requests import CHANGED, Changed, Delete, Found, Get, List, Listing, Page, Put

REMOTE_SCHEMES = frozenset({"s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss"})
SCHEMES = REMOTE_SCHEMES | {"file", "memory"}
METHODS = ("get", "put", "delete", "list")
CLIENT_KEYS = frozenset({
    "allow_http", "allow_invalid_certificates", "connect_timeout", "default_content_type",
    "http1_only", "http2_keep_alive_interval", "http2_keep_alive_timeout",
    "http2_keep_alive_while_idle", "http2_only", "pool_idle_timeout", "pool_max_idle_per_host",
    "proxy_url", "proxy_ca_certificate", "proxy_excludes", "timeout", "user_agent",
})  # fmt: skip
_INSTALL = 'ObjectStore needs obstore: pip install "tiers[s3]"'


def import_obstore() -> Any:
    try:
        import obstore.store
    except ImportError as exc:
        raise MissingDependencyError(_INSTALL) from exc
    return obstore.store


def split_url(url: str) -> tuple[str, dict[str, Any]]:
    """(the URL without its query, the query's options); `ConfigError` if unusable."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ConfigError(f"{url!r} is not a valid object store URL: {exc}") from exc
    if parts.scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        raise ConfigError(f"{url!r} is not an object store URL (one of {known})")
    if parts.scheme in REMOTE_SCHEMES and not parts.netloc:
        raise ConfigError(f"{url!r} names no bucket or container")
    options: dict[str, Any] = {}
    for name, value in query:
        if name in options:
            raise ConfigError(f"option {name!r} is given twice in {url!r}")
        options[name] = value
    return url.partition("#")[0].partition("?")[0], options


_ENV_PREFIXES = {
    "s3": "AWS_", "s3a": "AWS_", "gs": "GOOGLE_", "az": "AZURE_", "adl": "AZURE_",
    "azure": "AZURE_", "abfs": "AZURE_", "abfss": "AZURE_",
}  # fmt: skip
_DEADLINES = frozenset({"timeout", "connect_timeout"})  # the store's `timeout` decides these


def client_options_from_env(scheme: str) -> dict[str, str]:
    """The HTTP client options the environment sets for `scheme` (``AWS_ALLOW_HTTP=true``
    …), which obstore would read itself were no `client_options` passed: passing ours (for
    the deadline) replaces them, so they are read here and passed along."""
    prefix = _ENV_PREFIXES.get(scheme)
    if prefix is None:
        return {}
    found = {}
    for variable, value in os.environ.items():
        name = variable[len(prefix) :].lower() if variable.startswith(prefix) else ""
        if name in CLIENT_KEYS and name not in _DEADLINES:
            found[name] = value
    return found


def open_url(url: str, options: Mapping[str, Any], timeout: float) -> Any:
    """An obstore store for `url` with `options`, bounded by `timeout`, no retries. Client
    options: the deadline's, then the environment's, then those given."""
    stores = import_obstore()
    kwargs = dict(options)
    scheme = urlsplit(url).scheme
    if scheme in REMOTE_SCHEMES:
        client = {name: kwargs.pop(name) for name in CLIENT_KEYS & kwargs.keys()}
        limit = f"{max(1, round(timeout * 1000))}ms"
        client = {"timeout": limit, "connect_timeout": limit, **client_options_from_env(scheme),
                  **client}  # fmt: skip
        client.update(kwargs.pop("client_options", None) or {})
        kwargs["client_options"] = client
        kwargs.setdefault(
            "retry_config", {"max_retries": 0, "retry_timeout": timedelta(seconds=timeout)}
        )
    elif scheme == "file":
        kwargs.setdefault("mkdir", True)
    try:
        return stores.from_url(url, **kwargs)
    except Exception as exc:
        raise ConfigError(f"cannot open {url!r} with these options: {summary(exc)}") from exc


def check_store(store: object) -> None:
    """`TypeError` unless `store` has obspec's methods (sync and async)."""
    names = [n for m in METHODS for n in (m, m + "_async")]
    missing = [n for n in names if not callable(getattr(store, n, None))]
    if missing:
        kind = type(store).__qualname__
        raise TypeError(
            f"ObjectStore takes a URL or an obspec store, not {kind!r} (it has no {missing[0]})"
        )


def is_local(store: object) -> bool:
    """obstore's LocalStore, which has no conditional update (no e_tag puts)."""
    try:
        stores = import_obstore()
    except MissingDependencyError:
        return False
    return isinstance(store, stores.LocalStore)


# -- errors ----------------------------------------------------------------------------------


def _named(exc: BaseException, *names: str) -> bool:
    return any(cls.__name__ in names for cls in type(exc).__mro__)


def not_found(exc: BaseException) -> bool:
    return _named(exc, "NotFoundError", "FileNotFoundError") and "NoSuchBucket" not in str(exc)


def conflict(exc: BaseException) -> bool:
    """The object exists (create-only put) or changed (e_tag put), or another conditional
    write of it is under way (S3's 409 ConditionalRequestConflict)."""
    if _named(exc, "AlreadyExistsError", "FileExistsError", "PreconditionError"):
        return True
    text = str(exc)
    return "ConditionalRequestConflict" in text or "409 Conflict" in text


def summary(exc: BaseException) -> str:
    """The first line of an error's message, shortened."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def translated(exc: Exception, where: str, action: str) -> StoreError:
    if "NoSuchBucket" in str(exc):
        return StoreError(f"{where}: the bucket does not exist")
    if _named(exc, "NotSupportedError", "NotImplementedError"):
        return StoreError(f"{where} does not support what is needed to {action}")
    return StoreError(f"{where}: cannot {action}: {summary(exc)}")


# -- requests --------------------------------------------------------------------------------


def _action(request: Get | Put | Delete | List | Page) -> str:
    if isinstance(request, Get):
        return f"read {request.path!r:.120}"
    if isinstance(request, Put):
        return f"write {request.path!r:.120}"
    if isinstance(request, Delete):
        return f"delete {request.paths[0]!r:.120}"
    if isinstance(request, Page):
        return f"list {request.listing.folder!r:.120}"
    return f"list {request.folder!r:.120}"


def _get_options(
    length: int | None, unless: str | None, if_match: str | None = None, head: bool = False
) -> dict[str, Any] | None:
    """Get options for the first `length` bytes (a range past the end is cut to the object),
    for no bytes if the object's e_tag is still `unless` (a version that is an e_tag), for an
    object whose e_tag is `if_match` only, and for its metadata only (`head`)."""
    options: dict[str, Any] = {}
    if length is not None and not head:
        options["range"] = (0, length)
    if unless is not None and is_e_tag(unless):
        options["if_none_match"] = unless
    if if_match is not None:
        options["if_match"] = if_match
    if head:
        options["head"] = True
    return options or None


def _precondition_failed(exc: BaseException) -> bool:
    return _named(exc, "PreconditionError") or "412" in str(exc)


_OTHER = "~"
"""How versions that are not e_tags start (an e_tag is quoted: ``"…"`` or ``W/"…"``)."""


def version_of(meta: Any) -> str | None:
    """A token that changes whenever the object is rewritten: its e_tag (all of obstore's
    stores give one), else its version id, else its last-modified time and size."""
    e_tag = meta.get("e_tag")
    if e_tag:
        return str(e_tag)
    version = meta.get("version")
    if version:
        return f"{_OTHER}version:{version}"
    modified = meta.get("last_modified")
    return None if modified is None else f"{_OTHER}modified:{modified}:size:{meta.get('size')}"


def is_e_tag(version: str) -> bool:
    """Whether `version` can go to the store as If-None-Match (else: compared after a HEAD)."""
    return not version.startswith(_OTHER)


def _not_modified(exc: BaseException) -> bool:
    return _named(exc, "NotModifiedError")


def _bad_range(exc: Exception) -> bool:
    """Whether a ranged read failed for its range (an empty object has no byte 0)."""
    return "range" in str(exc).lower()


def _found(data: bytes, meta: Any) -> Found:
    size = meta.get("size")
    whole = len(data) if size is None else int(size)
    return Found(data, meta.get("e_tag"), whole, version_of(meta), _modified(meta))


def _modified(meta: Any) -> float | None:
    """The last-modified time of `meta` as epoch seconds (None if not given)."""
    modified = meta.get("last_modified")
    try:
        return None if modified is None else float(modified.timestamp())
    except (AttributeError, TypeError, ValueError, OverflowError):
        return None


def _written_version(result: Any) -> str | bool:
    """What a successful put answers: the new object's e_tag where the store says it, else
    True (both true: callers of conditional puts test the answer)."""
    e_tag = result.get("e_tag") if isinstance(result, dict) else None
    return e_tag if isinstance(e_tag, str) and e_tag else True


def _other(request: Get, meta: Any) -> bool:
    """Whether a read conditional on `request.if_match` got another object."""
    return request.if_match is not None and meta.get("e_tag") != request.if_match


def _put_options(request: Put) -> dict[str, Any]:
    return {} if request.mode is None else {"mode": request.mode}


def _keep(start: str, chunk: Any, into: list[tuple[str, int]], ordered: bool) -> bool:
    """Add the objects of `chunk` under `start` to `into`; False when an ordered listing
    has gone past them (nothing more to find)."""
    for meta in chunk:
        path = meta["path"]
        if path.startswith(start):
            into.append((path, int(meta["size"])))
        elif ordered and path > start:
            return False
    return True


def is_ordered(store: object) -> bool:
    """Whether listings come in path order (obstore's stores but the local one)."""
    try:
        stores = import_obstore()
    except MissingDependencyError:
        return False
    kinds = (stores.S3Store, stores.GCSStore, stores.AzureStore, stores.MemoryStore)
    return isinstance(store, kinds)


@dataclass(frozen=True, slots=True)
class _Call:
    """A call of `method` on the store, or on a result it returned (``<method>_async``,
    awaited, when the request runs async; a listing is iterated, not awaited)."""

    target: Any
    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Next:
    """The next chunk of a listing (None at its end)."""

    listing: Any


@dataclass(frozen=True, slots=True)
class _Walk:
    """The next chunk of a walk of a local directory (`_local.chunks`; None at its end)."""

    chunks: Iterator[list[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class _Unlink:
    """Remove local files obstore cannot (`_local.remove`)."""

    root: Any
    paths: tuple[str, ...]


_Step = _Call | _Next | _Walk | _Unlink


def _perform(step: _Step) -> Any:
    if isinstance(step, _Unlink):
        return _local.remove(step.root, step.paths)
    if isinstance(step, _Walk):
        return next(step.chunks, None)
    if isinstance(step, _Next):
        return next(step.listing, None)
    called = getattr(step.target, step.method)(*step.args, **step.kwargs)
    return iter(called) if step.method == "list" else called


async def _perform_async(step: _Step) -> Any:
    if isinstance(step, _Unlink):
        return await asyncio.to_thread(_local.remove, step.root, step.paths)
    if isinstance(step, _Walk):
        return await asyncio.to_thread(next, step.chunks, None)
    if isinstance(step, _Next):
        return await anext(step.listing, None)
    called = getattr(step.target, step.method + "_async")(*step.args, **step.kwargs)
    return aiter(called) if step.method == "list" else await called


class Backend:
    """Runs one request at a time against `store`, translating errors (`where` names it).
    Each kind of request is a plan (`tiers._plans`) of calls on the store, run blocking by
    `call` and awaited by `call_async`."""

    __slots__ = ("ordered", "root", "store", "where")

    def __init__(self, store: Any, where: str) -> None:
        self.store = store
        self.where = where
        self.ordered = is_ordered(store)
        self.root = getattr(store, "prefix", None) if is_local(store) else None
        """A local store's directory: its listings walk it, and its requests keep away
        from links planted in it (`_local`, `_unlinked`)."""

    def call(self, request: Get | Put | Delete | List | Page) -> Any:
        try:
            return run(self._plan(request), _perform)
        except StoreError:
            raise
        except Exception as exc:
            raise translated(exc, self.where, _action(request)) from exc

    async def call_async(self, request: Get | Put | Delete | List | Page) -> Any:
        try:
            return await run_async(self._plan(request), _perform_async)
        except StoreError:
            raise
        except Exception as exc:
            raise translated(exc, self.where, _action(request)) from exc

    def _plan(self, request: Get | Put | Delete | List | Page) -> Generator[_Step, Any, Any]:
        if self.root is not None and not isinstance(request, (List, Page)):
            kept = self._unlinked(request, self.root)
            if kept is None:
                return None
            request = kept
        if isinstance(request, Get):
            if request.head or request.if_match is not None:
                return (yield from self._get_checked(request))
            return (yield from self._get(request.path, request.length, request.unless))
        if isinstance(request, Put):
            return (yield from self._put(request))
        if isinstance(request, Delete):
            return (yield from self._delete(request.paths))
        if isinstance(request, Page):
            return (yield from self._page(request.listing))
        return (yield from self._list(request))

    def _unlinked(self, request: Get | Put | Delete, root: Any) -> Get | Put | Delete | None:
        """On a local store, `request` kept from going through a link: a read through one
        finds nothing (None: no request), a delete leaves the paths whose folders are links
        (a link itself is removed, not its target), and a write through one raises."""
        if isinstance(request, Delete):
            parents = (path.rpartition("/")[0] for path in request.paths)
            kept = tuple(p for p, up in zip(request.paths, parents, strict=True)
                         if not up or _local.link_on(root, up) is None)  # fmt: skip
            return Delete(kept)
        if isinstance(request, Put):
            parent = request.path.rpartition("/")[0]
            if parent and _local.link_on(root, parent) is not None:
                raise StorePermissionError(
                    f"{self.where}: will not write {request.path!r:.120} through a link"
                )
            return request
        return None if _local.link_on(root, request.path) is not None else request

    def _get(
        self, path: str, length: int | None = None, unless: str | None = None
    ) -> Generator[_Step, Any, Found | Unchanged | None]:
        try:
            if unless is not None and not is_e_tag(unless):
                head = yield _Call(self.store, "get", (path,), {"options": {"head": True}})
                if version_of(head.meta) == unless:
                    return UNCHANGED
            options = _get_options(length, unless)
            result = yield _Call(self.store, "get", (path,), {"options": options})
            meta = result.meta
            if unless is not None and version_of(meta) == unless:
                return UNCHANGED  # a store that ignores If-None-Match: the body stays unread
            data = bytes((yield _Call(result, "buffer")))
        except Exception as exc:
            if unless is not None and _not_modified(exc):
                return UNCHANGED
            if not_found(exc):
                return None
            if length is not None and _bad_range(exc):  # an empty object: read it whole
                return (yield from self._get(path, None, unless))
            raise
        return _found(data, meta)

    def _get_checked(self, request: Get) -> Generator[_Step, Any, Found | Changed | None]:
        """A HEAD, or a read conditional on `if_match` (`CHANGED` if the object has another
        e_tag, also from a store that ignores If-Match)."""
        options = _get_options(request.length, None, request.if_match, request.head)
        try:
            result = yield _Call(self.store, "get", (request.path,), {"options": options})
            meta = result.meta
            if _other(request, meta):
                return CHANGED
            data = b"" if request.head else bytes((yield _Call(result, "buffer")))
        except Exception as exc:
            if request.if_match is not None and _precondition_failed(exc):
                return CHANGED
            if not_found(exc):
                return None
            raise
        return _found(data, meta)

    def _put(self, request: Put) -> Generator[_Step, Any, str | bool]:
        try:
            result = yield _Call(
                self.store, "put", (request.path, request.data), _put_options(request)
            )
        except Exception as exc:
            if request.mode is not None and conflict(exc):
                return False
            raise
        return _written_version(result)

    def _delete(self, paths: tuple[str, ...]) -> Generator[_Step, Any, None]:
        if not paths:
            return
        if self.root is not None and any(_local.is_temp(path) for path in paths):
            yield _Unlink(self.root, tuple(path for path in paths if _local.is_temp(path)))
            paths = tuple(path for path in paths if not _local.is_temp(path))
            if not paths:
                return
        try:
            yield _Call(self.store, "delete", (list(paths),))
        except Exception as exc:  # some stores fail a batch on a missing path: one by one
            if not not_found(exc):
                raise
            for path in paths:
                try:
                    yield _Call(self.store, "delete", (path,))
                except Exception as one:
                    if not not_found(one):
                        raise

    def _list(self, request: List) -> Generator[_Step, Any, list[tuple[str, int]]]:
        found: list[tuple[str, int]] = []
        if self.root is not None:  # its objects, without following links
            chunks = _Walk(_local.chunks(self.root, request.folder))
            while (chunk := (yield chunks)) is not None:
                objects = [o for o in chunk if o["size"] >= 0 and not _local.is_temp(o["path"])]
                _keep(request.start, objects, found, ordered=False)
            return found
        options = {"offset": request.offset, "chunk_size": 1000}
        listing = yield _Call(self.store, "list", (request.folder,), options)
        while (chunk := (yield _Next(listing))) is not None:
            if not _keep(request.start, chunk, found, self.ordered):
                break
        return found

    def _page(self, listing: Listing) -> Generator[_Step, Any, list[tuple[str, int]]]:
        found: list[tuple[str, int]] = []
        if listing.done:
            return found
        if listing.handle is None and self.root is not None:
            listing.handle = _Walk(_local.chunks(self.root, listing.folder))
        elif listing.handle is None:
            options = {"offset": listing.offset, "chunk_size": 1000}
            listing.handle = _Next((yield _Call(self.store, "list", (listing.folder,), options)))
        chunk = yield listing.handle
        if chunk is None or not _keep(listing.start, chunk, found, self.ordered):
            listing.done = True
        return found
