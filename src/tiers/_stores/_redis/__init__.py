"""RedisStore: entries in Redis or a Redis Cluster (see docs/redis.md)."""

from ._store import RedisStore

__all__ = ["RedisStore"]
