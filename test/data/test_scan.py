"""Tests for relkd_core.data.scan: the bounded PointCloud2 → scan parser."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from relkd_core.data.pointcloud import pointcloud_to_array
from relkd_core.data.scan import MAX_FIELDS, cloud_to_scan
from relkd_core.errors import DataError


def _cloud(names: list[str], num_points: int = 2) -> Any:
    """A duck-typed PointCloud2 of float32 fields ``names``, every value 1.0."""
    fields = [SimpleNamespace(name=name, offset=4 * i, datatype=7, count=1)
              for i, name in enumerate(names)]
    step = 4 * len(names)
    data = np.ones(num_points * len(names), dtype='<f4').view(np.uint8)
    return SimpleNamespace(height=1, width=num_points, point_step=step, row_step=step * num_points,
                           fields=fields, is_bigendian=False, data=data)


def test_scan_reads_a_cloud_at_the_field_cap() -> None:
    names = ['x', 'y', 'z', 'intensity', *(f'extra_{i}' for i in range(MAX_FIELDS - 4))]
    scan = cloud_to_scan(_cloud(names))
    np.testing.assert_array_equal(scan.points, np.ones((2, 4), dtype=np.float32))


@pytest.mark.parametrize('parse', [cloud_to_scan, pointcloud_to_array],
                         ids=['cloud_to_scan', 'pointcloud_to_array'])
def test_scan_refuses_more_fields_than_the_cap(parse: Any) -> None:
    names = ['x', 'y', 'z', *(f'extra_{i}' for i in range(MAX_FIELDS - 2))]
    with pytest.raises(DataError, match=rf'^PointCloud2 declares {MAX_FIELDS + 1} fields, more '
                                        rf'than {MAX_FIELDS}$'):
        parse(_cloud(names))


@pytest.mark.parametrize('parse', [cloud_to_scan, pointcloud_to_array],
                         ids=['cloud_to_scan', 'pointcloud_to_array'])
def test_scan_names_every_repeated_field_once(parse: Any) -> None:
    with pytest.raises(DataError, match=r"^PointCloud2 repeats field\(s\) \['x', 'y'\]$"):
        parse(_cloud(['x', 'y', 'z', 'x', 'y', 'x']))


def test_scan_crafted_cloud_of_40k_fields_is_refused_at_once() -> None:
    # 40,000 fields (about 1 MB on the wire) froze the node for 48.7 s when duplicates were
    # searched in quadratic time. The bound is generous (the refusal takes well under 1 ms):
    # it only catches a return of the quadratic search, which takes seconds.
    names = ['x', 'y', 'z', *(f'f{i % 20_000}' for i in range(40_000 - 3))]
    cloud = _cloud(names, num_points=1)
    started = time.perf_counter()
    with pytest.raises(DataError, match='declares 40000 fields, more than 64'):
        cloud_to_scan(cloud)
    assert time.perf_counter() - started < 0.5
