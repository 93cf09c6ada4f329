"""Redis fixture for the cache tests."""

from tests.support.redis_server import RedisServer, redis_server

__all__ = ["RedisServer", "redis_server"]
