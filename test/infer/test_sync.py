"""Nearest-stamp pairing of camera images with scans."""

from __future__ import annotations

import pytest

from relkd_core.infer.sync import StampBuffer


def test_stamp_buffer_returns_the_nearest_item_within_slop() -> None:
    buffer: StampBuffer[str] = StampBuffer(capacity=3)
    for stamp, item in ((100, 'a'), (200, 'b'), (300, 'c')):
        buffer.add(stamp, item)
    assert buffer.nearest(240, slop_ns=50) == (200, 'b')
    assert buffer.nearest(260, slop_ns=50) == (300, 'c')
    assert buffer.nearest(250, slop_ns=50) == (200, 'b')
    assert buffer.nearest(500, slop_ns=50) is None


def test_stamp_buffer_forgets_the_oldest_and_replaces_equal_stamps() -> None:
    buffer: StampBuffer[str] = StampBuffer(capacity=2)
    buffer.add(300, 'c')
    buffer.add(100, 'a')
    buffer.add(200, 'b')
    buffer.add(200, 'B')
    assert len(buffer) == 2
    assert buffer.nearest(100, slop_ns=10) is None
    assert buffer.nearest(200, slop_ns=0) == (200, 'B')


def test_stamp_buffer_needs_capacity() -> None:
    with pytest.raises(ValueError, match='capacity must be at least 1, got 0'):
        StampBuffer(0)
