"""Caching of deterministic results: in-process LRU by default, Redis for a team."""

from mimiverse.cache.base import Cache, CacheStats, build_cache
from mimiverse.cache.keys import cache_key, is_deterministic
from mimiverse.cache.typeahead import TypeaheadIndex

__all__ = ["Cache", "CacheStats", "TypeaheadIndex", "build_cache", "cache_key", "is_deterministic"]
