"""Where a RedisStore connects, and the redis-py clients it builds for that.

A `Target` is plain configuration (picklable, no sockets): from a URL or read off an injected
client. Clients are built from it lazily, with per-call deadlines and no retries.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..._rules import positive_seconds
from ...errors import ConfigError, MissingDependencyError
from ._deadline import connection_classes

_SCHEMES = {
    "redis": (False, "tcp"),
    "rediss": (False, "ssl"),
    "unix": (False, "unix"),
    "redis+cluster": (True, "tcp"),
    "rediss+cluster": (True, "ssl"),
    "redis+sentinel": (False, "tcp"),
}
_NAMES = "redis://, rediss://, unix://, redis+cluster://, rediss+cluster:// or redis+sentinel://"
_OURS = ("socket_timeout", "socket_connect_timeout", "retry", "lib_name", "lib_version")
_NOT_FOR_CLUSTERS = ("host", "port", "db", "path", "connection_class")


def redis_module() -> Any:
    """The ``redis`` package, or `MissingDependencyError` saying how to install it."""
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.cluster
        import redis.asyncio.sentinel
        import redis.cluster
        import redis.sentinel
    except ImportError as exc:
        raise MissingDependencyError(
            'RedisStore needs the redis package: pip install "tiers[redis]"'
        ) from exc
    return redis


@dataclass(frozen=True)
class Target:
    """A server or cluster to connect to: `kind` is "tcp", "ssl" or "unix". With `service`,
    the primary Sentinels (`nodes`) name for it."""

    cluster: bool
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""

    @property
    def where(self) -> str:
        """host:port (or the socket path, or the cluster's nodes) for messages."""
        nodes = ", ".join(f"{host}:{port}" for host, port in self.nodes)
        if self.service:
            return f"{self.service!r} via Sentinel {nodes}"
        if self.cluster:
            return nodes
        if self.kind == "unix":
            return str(self.options.get("path"))
        return f"{self.options.get('host', 'localhost')}:{self.options.get('port', 6379)}"


def check_timeout(timeout: object) -> float:
    """`timeout` (a number, or a numeric string from a URL) as a positive, finite number of
    seconds, or `ConfigError`."""
    return positive_seconds("Redis timeout", timeout, text=True)


def redacted(url: str) -> str:
    """`url` without its password, for messages."""
    head, at, tail = url.rpartition("@")
    if not at or "://" not in head:
        return url
    scheme, _, user = head.partition("://")
    if "/" in user or ":" not in user:
        return url
    return f"{scheme}://{user.partition(':')[0]}:***@{tail}"


def parse_url(url: str) -> tuple[Target, str | None, float | None]:
    """(target, prefix, timeout) of a Redis URL; `ConfigError` naming what is wrong."""
    shown = redacted(url)
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ConfigError(f"{shown!r} is not a valid Redis URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigError(f"{shown!r} is not a Redis URL: use {_NAMES}")
    cluster, kind = _SCHEMES[scheme]
    ours = {name: value for name, value in query if name in ("prefix", "timeout")}
    rest = [(name, value) for name, value in query if name not in ("prefix", "timeout")]
    query_rest = "?" + urlencode(rest) if rest else ""
    timeout = None if "timeout" not in ours else check_timeout(ours["timeout"])
    if scheme == "redis+sentinel":
        return _sentinel_target(shown, parts, query_rest), ours.get("prefix"), timeout
    base = f"{scheme.split('+')[0]}://{parts.netloc}{parts.path}{query_rest}"
    options = _url_options(shown, base, kind, cluster)
    nodes: tuple[tuple[str, int], ...] = ()
    if cluster:
        nodes = ((options.pop("host", "localhost"), int(options.pop("port", 6379))),)
    return Target(cluster, kind, _portable(options, cluster=cluster), nodes), \
        ours.get("prefix"), timeout  # fmt: skip


def _sentinel_target(url: str, parts: Any, query: str) -> Target:
    """``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``: the
    Sentinels to ask, the service (master name) they watch; the credentials are the
    primary's."""
    userinfo, at, hosts = parts.netloc.rpartition("@")
    nodes = []
    for item in hosts.split(","):
        host, colon, port = item.rpartition(":")
        if not (colon and host and port.isdigit()):
            raise ConfigError(f"{url!r}: name each Sentinel as host:port, comma-separated")
        nodes.append((host.strip("[]"), int(port)))
    names = [name for name in parts.path.split("/") if name]
    if not 1 <= len(names) <= 2:
        raise ConfigError(f"{url!r}: name the service: redis+sentinel://host:port/service[/db]")
    db = names[1] if len(names) == 2 else "0"
    base = f"redis://{userinfo}{at}{nodes[0][0]}:{nodes[0][1]}/{db}{query}"
    options = _url_options(url, base, "tcp", cluster=False)
    options.pop("host", None)
    options.pop("port", None)
    return Target(False, "tcp", _portable(options, cluster=False), tuple(nodes), names[0])


def _url_options(url: str, base: str, kind: str, cluster: bool) -> dict[str, Any]:
    """redis-py's connection options for `base`, checked now (not at first use)."""
    redis = redis_module()
    parts = urlsplit(base)
    if kind != "unix":
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ConfigError(f"{url!r}: the database must be a number, not {db!r}")
        if cluster and db not in ("", "0"):
            raise ConfigError(f"{url!r}: a Redis Cluster has only database 0")
        if not parts.hostname:
            raise ConfigError(f"{url!r} names no host")
    elif not parts.path:
        raise ConfigError(f"{url!r} names no socket path")
    try:
        options: dict[str, Any] = redis.connection.parse_url(base)
    except ValueError as exc:
        raise ConfigError(f"{url!r} is not a valid Redis URL: {exc}") from None
    options.pop("connection_class", None)
    _check_options(url, kind, options)
    return options


def _check_options(url: str, kind: str, options: dict[str, Any]) -> None:
    """Unknown or ill-typed options raise `ConfigError` now: make an unconnected connection."""
    redis = redis_module()
    cls = _sync_connection_class(redis, kind)
    try:
        cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{url!r} has an option redis-py does not take: {exc}") from None


def from_client(client: object) -> Target:
    """The target of an injected redis-py client (sync or asyncio, single or cluster)."""
    redis = redis_module()
    if isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)):
        manager = client.nodes_manager
        nodes = tuple((n.host, int(n.port)) for n in manager.startup_nodes.values())
        options = dict(getattr(manager, "connection_kwargs", None) or client.connection_kwargs)
        kind = "ssl" if options.get("ssl") or _is_ssl(options.get("connection_class")) else "tcp"
        return Target(True, kind, _portable(options, cluster=True), nodes)
    if isinstance(client, (redis.Redis, redis.asyncio.Redis)):
        pool = client.connection_pool
        options = dict(pool.connection_kwargs)
        if options.get("decode_responses"):
            raise ConfigError("RedisStore needs a client with decode_responses=False")
        service = getattr(pool, "service_name", None)
        if service is not None:  # Sentinel(...).master_for(service)
            sentinels = tuple(_address(s.connection_pool) for s in pool.sentinel_manager.sentinels)
            portable = _portable(options, cluster=False)
            portable.pop("host", None)
            portable.pop("port", None)
            return Target(False, "tcp", portable, sentinels, str(service))
        name = pool.connection_class.__name__
        kind = "unix" if "Unix" in name else "ssl" if "SSL" in name else "tcp"
        return Target(False, kind, _portable(options, cluster=False))
    raise TypeError(
        "RedisStore takes a URL or a redis.Redis, redis.asyncio.Redis or RedisCluster client, "
        f"not {type(client).__qualname__!r}"
    )


def _address(pool: Any) -> tuple[str, int]:
    options = pool.connection_kwargs
    return str(options.get("host", "localhost")), int(options.get("port", 26379))


def _is_ssl(cls: object) -> bool:
    return isinstance(cls, type) and "SSL" in cls.__name__


def _portable(options: dict[str, Any], *, cluster: bool) -> dict[str, Any]:
    """The options that are plain values (picklable), minus the ones the store sets."""
    dropped = set(_OURS) | (set(_NOT_FOR_CLUSTERS) if cluster else {"connection_class"})
    return {
        name: value
        for name, value in options.items()
        if name not in dropped and (value is None or isinstance(value, (str, int, float, bool)))
    }


def _sync_connection_class(redis: Any, kind: str) -> Any:
    return {
        "tcp": redis.Connection,
        "ssl": redis.SSLConnection,
        "unix": redis.UnixDomainSocketConnection,
    }[kind]


def _bounded(redis: Any, timeout: float, *, asynchronous: bool) -> dict[str, Any]:
    """Timeouts, and no retries: a command whose connection broke may have run (its reply
    lost), and sent again a pop, a delete or a lock release would answer for the second run
    — "nothing there" — not the first. A pooled connection the server closed (a restart)
    is noticed by the pool before use, so it costs no call."""
    retry_cls = redis.asyncio.retry.Retry if asynchronous else redis.retry.Retry
    retry = retry_cls(redis.backoff.NoBackoff(), 0, (redis.exceptions.ConnectionError,))
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": retry,
    }


def build_sync(target: Target, timeout: float) -> Any:
    """A ``redis.Redis`` (or ``RedisCluster``) for `target` whose connections keep the
    per-call deadline (`_deadline`); the cluster one connects now."""
    redis = redis_module()
    options = {
        **target.options,
        **_bounded(redis, timeout, asynchronous=False),
    }
    if target.service:
        return _sentinel_sync(redis, target, timeout, options)
    cls = connection_classes(redis)[target.kind]
    if target.cluster:
        nodes = [redis.cluster.ClusterNode(host, port) for host, port in target.nodes]
        options["ssl"] = target.kind == "ssl"  # rediss+cluster: TLS to every node
        return redis.cluster.RedisCluster(startup_nodes=nodes, connection_class=cls, **options)
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=cls, **options))


def build_async(target: Target, timeout: float) -> Any:
    """A ``redis.asyncio`` client for `target` (connects on first use) whose connections keep
    the per-call deadline; a cluster's cannot (it makes its own), so calls on one also run
    under a timer."""
    redis = redis_module()
    options = {
        **target.options,
        **_bounded(redis, timeout, asynchronous=True),
    }
    classes = connection_classes(redis)
    if target.service:
        manager = redis.asyncio.sentinel.Sentinel(target.nodes, sentinel_kwargs=_asking(timeout))
        cls = classes["async sentinel"]
        return manager.master_for(target.service, connection_class=cls, **options)
    if target.cluster:
        cluster = redis.asyncio.cluster
        nodes = [cluster.ClusterNode(host, port) for host, port in target.nodes]
        options["ssl"] = target.kind == "ssl"
        return cluster.RedisCluster(startup_nodes=nodes, **options)
    pool = redis.asyncio.ConnectionPool(connection_class=classes[f"async {target.kind}"], **options)
    return redis.asyncio.Redis(connection_pool=pool)


def _asking(timeout: float) -> dict[str, Any]:
    """Options of the connections to the Sentinels themselves (asked where the primary is)."""
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout}


def _sentinel_sync(redis: Any, target: Target, timeout: float, options: dict[str, Any]) -> Any:
    """A ``redis.Redis`` whose pool asks the Sentinels for the primary at each connect (and
    drops its connections when the primary changes); the deadline covers that connect too."""
    manager = redis.sentinel.Sentinel(target.nodes, sentinel_kwargs=_asking(timeout))
    cls = connection_classes(redis)["sentinel"]
    return manager.master_for(target.service, connection_class=cls, **options)


class Subscribers:
    """The connections a `Watch` subscribes on, made one at a time (each unconnected): to the
    server, to the primary the Sentinels name at each connect, or to a node of a cluster — any
    node hears every PUBLISH — the next one after a failure.

    Plain redis-py connections, not the deadline ones: the listener waits on its socket with
    its own timeouts. RESP2 (a subscribed connection then answers PING in band), and no
    health checks or retries of redis-py's: the listener does its own.
    """

    def __init__(self, target: Target, timeout: float, read_timeout: float) -> None:
        redis = redis_module()
        self._redis = redis
        self._target = target
        self._timeout = timeout
        self._options = {
            **target.options,
            "socket_timeout": read_timeout,
            "socket_connect_timeout": timeout,
            "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 0),
            "health_check_interval": 0,
            "protocol": 2,
        }
        self._options.pop("ssl", None)
        self._helper: Any = None  # the Sentinel-managed client, or the cluster client
        self._turn = 0

    def make(self) -> Any:
        redis, target = self._redis, self._target
        if target.service:
            if self._helper is None:
                asking = _asking(self._timeout)
                manager = redis.sentinel.Sentinel(target.nodes, sentinel_kwargs=asking)
                self._helper = manager.master_for(target.service, **self._options)
            return self._helper.connection_pool.make_connection()
        cls = _sync_connection_class(redis, target.kind)
        if not target.cluster:
            return cls(**self._options)
        if self._helper is None:
            nodes = [redis.cluster.ClusterNode(host, port) for host, port in target.nodes]
            ssl = target.kind == "ssl"
            self._helper = redis.cluster.RedisCluster(startup_nodes=nodes, ssl=ssl, **self._options)
        nodes = self._helper.get_nodes()
        if self._turn and self._turn % len(nodes) == 0:  # every node failed once: ask again
            self._helper.nodes_manager.initialize()
            nodes = self._helper.get_nodes()
        node = nodes[self._turn % len(nodes)]
        return cls(host=node.host, port=node.port, **self._options)

    def failed(self) -> None:
        """The last connection failed: on a cluster, try the next node."""
        self._turn += 1

    def close(self) -> None:
        helper, self._helper = self._helper, None
        manager = getattr(getattr(helper, "connection_pool", None), "sentinel_manager", None)
        for client in [helper, *getattr(manager, "sentinels", ())]:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
