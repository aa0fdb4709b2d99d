"""Approximate time sync for the node's overlays, without message_filters (not pip-installable).

The lidar drives the node: each scan is paired, per camera, with the buffered image whose
header stamp is nearest to the scan's, if within a slop. Camera infos rarely change, so the
latest one is kept. Pure Python: no ROS import.
"""

from __future__ import annotations

import bisect
import threading
from typing import Generic, TypeVar

__all__ = ['StampBuffer']

T = TypeVar('T')


class StampBuffer(Generic[T]):
    """The last ``capacity`` items by stamp (int nanoseconds), safe across threads.

    Adding an item with a stamp already present replaces it; when full, the oldest stamp goes.
    """

    def __init__(self, capacity: int = 10) -> None:
        if capacity < 1:
            raise ValueError(f'capacity must be at least 1, got {capacity}')
        self.capacity = capacity
        self._stamps: list[int] = []
        self._items: list[T] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._stamps)

    def add(self, stamp_ns: int, item: T) -> None:
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp_ns)
            if i < len(self._stamps) and self._stamps[i] == stamp_ns:
                self._items[i] = item
                return
            self._stamps.insert(i, stamp_ns)
            self._items.insert(i, item)
            if len(self._stamps) > self.capacity:
                del self._stamps[0], self._items[0]

    def nearest(self, stamp_ns: int, slop_ns: int) -> tuple[int, T] | None:
        """``(stamp, item)`` nearest to ``stamp_ns`` if at most ``slop_ns`` away, else None
        (ties go to the earlier stamp)."""
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp_ns)
            best: tuple[int, T] | None = None
            for j in (i - 1, i):
                if 0 <= j < len(self._stamps):
                    gap = abs(self._stamps[j] - stamp_ns)
                    if gap <= slop_ns and (best is None or gap < abs(best[0] - stamp_ns)):
                        best = (self._stamps[j], self._items[j])
            return best
