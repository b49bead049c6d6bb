"""What a redis-py error may say outside the store: its kind, never the command's arguments.

redis-py quotes the failed command in some errors — "Command # 1 (SET key <record bytes>
PX 100) of pipeline caused error: ...", a cluster's "Command: (...)" — and a server may echo
a command's first arguments ("unknown command 'X', with args beginning with: ..."): a cached
value would reach every log and traceback that shows the error. So before a `StoreError` is
raised from one, every redis-py exception in its chain has its text replaced (in place, so
its class stays for ``isinstance`` checks on ``__cause__``) by a fixed description of its
kind: the server's error code when it is one we know, never text that came with it.
"""

from __future__ import annotations

import builtins
from typing import Any

from . import _clients

_CODES = {
    "ERR": "the server refused the command",
    "WRONGTYPE": "a key holds the wrong kind of value",
    "OOM": "used memory is over 'maxmemory' and the server refuses writes",
    "READONLY": "a read only replica refuses writes",
    "NOPERM": "the user lacks a permission (ACL)",
    "NOAUTH": "authentication required",
    "WRONGPASS": "authentication failed",
    "LOADING": "the server is loading its data set",
    "BUSY": "the server is busy running a script",
    "MISCONF": "the server cannot persist its data and refuses writes",
    "NOREPLICAS": "not enough replicas",
    "EXECABORT": "the transaction was discarded",
    "NOSCRIPT": "no such script",
    "MASTERDOWN": "the primary is down",
    "CLUSTERDOWN": "the cluster is down",
    "TRYAGAIN": "a slot is being migrated",
    "CROSSSLOT": "keys in different slots",
    "MOVED": "a slot moved",
    "ASK": "a slot is moving",
    "UNBLOCKED": "the call was unblocked",
}

_BY_CLASS = (  # redis-py maps these codes to classes and drops the code from the text
    ("OutOfMemoryError", "OOM"),
    ("ReadOnlyError", "READONLY"),
    ("NoPermissionError", "NOPERM"),
    ("ExecAbortError", "EXECABORT"),
    ("NoScriptError", "NOSCRIPT"),
    ("BusyLoadingError", "LOADING"),
    ("MasterDownError", "MASTERDOWN"),
    ("ClusterDownError", "CLUSTERDOWN"),
    ("TryAgainError", "TRYAGAIN"),
    ("MovedError", "MOVED"),
    ("AskError", "ASK"),
    ("ClusterCrossSlotError", "CROSSSLOT"),
)

_MAX_CHAIN = 8


def describe(exc: BaseException) -> str:
    """`exc`'s kind, as safe to show: "ReadOnlyError (READONLY: a read only replica ...)"."""
    name = type(exc).__name__
    detail = _detail(exc)
    return f"{name} ({detail})" if detail else name


def _detail(exc: BaseException) -> str:
    redis = _clients.redis_module()
    errors = redis.exceptions
    for class_name, code in _BY_CLASS:
        if isinstance(exc, getattr(errors, class_name)):
            return f"{code}: {_CODES[code]}"
    if isinstance(exc, (errors.AuthenticationError, errors.AuthorizationError)):
        return "authentication or authorization failed"
    if isinstance(exc, errors.ResponseError):
        text = str(exc).rpartition("caused error: ")[2]
        code = text.split(" ", 1)[0]
        if code in _CODES:
            return f"{code}: {_CODES[code]}"
        return "the server refused the command"
    if isinstance(exc, (errors.TimeoutError, builtins.TimeoutError)):
        return "no reply in time"
    if isinstance(exc, (errors.ConnectionError, OSError)):
        return _socket_text(exc) or "the connection failed"
    return ""


def _socket_text(exc: BaseException) -> str:
    """A connection error's own text ("Error 111 connecting to host:port. Connection
    refused."): made from the socket's error, never a command's; "" if it looks otherwise."""
    text = str(exc)
    if "Command" in text or "caused error" in text or len(text) > 300:
        return ""
    return text


def scrub(exc: BaseException) -> str:
    """Replace the text of every redis-py error in `exc`'s chain (cause and context) by its
    description; `exc`'s description."""
    redis = _clients.redis_module()
    ours = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException)
    described = describe(exc)
    seen: set[int] = set()
    current: BaseException | None = exc
    for _ in range(_MAX_CHAIN):
        if current is None or id(current) in seen:
            break
        seen.add(id(current))
        if isinstance(current, ours):
            _replace(current, _detail(current) or type(current).__name__)
        current = current.__cause__ or current.__context__
    return described


def _replace(exc: BaseException, text: str) -> None:
    exc.args = (text,)
    found: Any = getattr(exc, "message", None)
    if isinstance(found, (str, bytes)):
        exc.message = text  # type: ignore[attr-defined]
