"""A bounded cache of the most recently used things (memory-mapped volumes, loaded femurs)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["recently_used"]


def recently_used(cache: dict[Hashable, T], key: Hashable, capacity: int, load: Callable[[], T]) -> T:
    """``cache[key]``, from ``load()`` when absent. ``cache`` is a plain dict kept in order of use (the
    least recently used first) and at ``capacity`` entries at most: a new entry puts out the oldest."""
    if key in cache:
        cache[key] = cache.pop(key)  # now the most recently used
    else:
        while len(cache) >= max(1, capacity):
            cache.pop(next(iter(cache)))
        cache[key] = load()
    return cache[key]
