"""Tests for relkd_core.data.scan: the one PointCloud2 → scan reader, built on duck-typed
messages (no ROS)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from relkd_core.data.bag import MessageFactory, typestore
from relkd_core.data.pointcloud import pointcloud_to_array
from relkd_core.data.scan import (
    MAX_FIELDS,
    ScanInput,
    finite_rows,
    override_scan_input,
    point_ranges,
    read_scan,
)
from relkd_core.errors import DataError

FACTORY = MessageFactory(typestore())


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
    scan = read_scan(_cloud(names))
    np.testing.assert_array_equal(scan.points, np.ones((2, 4), dtype=np.float32))


@pytest.mark.parametrize('parse', [read_scan, pointcloud_to_array],
                         ids=['read_scan', 'pointcloud_to_array'])
def test_scan_refuses_more_fields_than_the_cap(parse: Any) -> None:
    names = ['x', 'y', 'z', *(f'extra_{i}' for i in range(MAX_FIELDS - 2))]
    with pytest.raises(DataError, match=rf'^PointCloud2 declares {MAX_FIELDS + 1} fields, more '
                                        rf'than {MAX_FIELDS}$'):
        parse(_cloud(names))


@pytest.mark.parametrize('parse', [read_scan, pointcloud_to_array],
                         ids=['read_scan', 'pointcloud_to_array'])
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
        read_scan(cloud)
    assert time.perf_counter() - started < 0.5


_CODES = {'i1': 1, 'u1': 2, 'i2': 3, 'u2': 4, 'i4': 5, 'u4': 6, 'f4': 7, 'f8': 8}


def _layout_cloud(points: np.ndarray, *, height: int = 1, row_pad: int = 0) -> Any:
    """A duck-typed PointCloud2 holding ``points`` exactly as laid out in memory (any order,
    padding)."""
    dtype = points.dtype
    msg = SimpleNamespace(header=SimpleNamespace(frame_id='lidar'))
    msg.height, msg.width = height, len(points) // height
    msg.fields = [SimpleNamespace(name=n, offset=dtype.fields[n][1], count=1,
                                  datatype=_CODES[dtype.fields[n][0].str[1:]])
                  for n in dtype.names if not n.startswith('_')]
    msg.is_bigendian = dtype.fields['x'][0].str[0] == '>'
    msg.point_step = dtype.itemsize
    msg.row_step = dtype.itemsize * msg.width + row_pad
    rows = points.view(np.uint8).reshape(height, -1)
    padded = np.concatenate([rows, np.full((height, row_pad), 0xAB, np.uint8)], axis=1)
    msg.data = padded.reshape(-1).tobytes()
    return msg


def _points(dtype: Any, count: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = np.zeros(count, dtype=dtype)
    for name in ('x', 'y', 'z'):
        points[name] = rng.uniform(-50, 50, count)
    if 'intensity' in points.dtype.names:
        points['intensity'] = rng.integers(0, 255, count)
    return points


def _expected(points: np.ndarray, scale: float = 1.0) -> np.ndarray:
    columns = [points[n].astype(np.float32) for n in ('x', 'y', 'z')]
    intensity = (points['intensity'].astype(np.float32) * np.float32(scale)
                 if 'intensity' in points.dtype.names else np.zeros(len(points), np.float32))
    return np.stack([*columns, intensity], axis=1)


LAYOUTS = {
    'xyzi_f4': np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('intensity', '<f4')]),
    'ouster_like': np.dtype({'names': ['x', 'y', 'z', 'intensity', 'ring'],
                             'formats': ['<f4', '<f4', '<f4', '<u2', '<u2'],
                             'offsets': [0, 4, 8, 16, 20], 'itemsize': 32}),
    'reordered_f8': np.dtype({'names': ['intensity', 'z', 'x', 'y'],
                              'formats': ['u1', '<f8', '<f8', '<f8'],
                              'offsets': [0, 8, 16, 24], 'itemsize': 40}),
    'big_endian': np.dtype([('x', '>f4'), ('y', '>f4'), ('z', '>f4'), ('intensity', '>f4')]),
    'xyz_only': np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4')]),
}


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_read_scan_reads_any_field_layout(layout: str) -> None:
    points = _points(LAYOUTS[layout])
    scan = read_scan(_layout_cloud(points), ScanInput(intensity_scale=0.5))
    assert scan.points.dtype == np.float32 and (scan.height, scan.width) == (1, 12)
    np.testing.assert_array_equal(scan.points, _expected(points, 0.5))


def test_read_scan_reads_organised_clouds_with_padded_rows() -> None:
    points = _points(LAYOUTS['ouster_like'], count=12)
    scan = read_scan(_layout_cloud(points, height=3, row_pad=8))
    assert (scan.height, scan.width) == (3, 4)
    np.testing.assert_array_equal(scan.points, _expected(points))


def test_read_scan_uses_the_named_intensity_field() -> None:
    dtype = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('i', '<f4')])
    points = _points(dtype)
    points['i'] = np.arange(12)
    scan = read_scan(_layout_cloud(points), ScanInput(intensity_field='i'))
    np.testing.assert_array_equal(scan.points[:, 3], np.arange(12, dtype=np.float32))


def test_read_scan_keeps_nan_points_in_place_with_nan_policy_keep() -> None:
    points = _points(LAYOUTS['xyzi_f4'])
    points['x'][:5] = np.nan
    scan = read_scan(_layout_cloud(points, height=3), ScanInput(nan_policy='keep'))
    assert np.isnan(scan.points[:5, 0]).all() and np.isfinite(scan.points[5:]).all()
    assert (scan.height, scan.width, scan.nonfinite) == (3, 4, 5)
    np.testing.assert_array_equal(scan.valid, np.arange(12) >= 5)


def test_read_scan_drops_nan_points_by_default() -> None:
    points = _points(LAYOUTS['xyzi_f4'])
    points['x'][:5] = np.nan
    points['intensity'][7] = np.inf
    scan = read_scan(_layout_cloud(points, height=3))
    kept = [5, 6, 8, 9, 10, 11]
    np.testing.assert_array_equal(scan.points[:, 1], points['y'][kept])
    np.testing.assert_array_equal(scan.fields['y'], points['y'][kept])
    assert (scan.height, scan.width, scan.nonfinite) == (1, 6, 6) and scan.valid.all()


def _broken(change: str) -> Any:
    msg = _layout_cloud(_points(LAYOUTS['xyzi_f4']))
    if change == 'point_step_small':
        msg.point_step = 8
    elif change == 'point_step_zero':
        msg.point_step = 0
    elif change == 'truncated':
        msg.data = bytes(msg.data)[:100]
    elif change == 'no_z':
        msg.fields = [f for f in msg.fields if f.name != 'z']
    elif change == 'repeated':
        msg.fields = [*msg.fields, SimpleNamespace(name='x', offset=0, datatype=7, count=1)]
    elif change == 'bad_datatype':
        msg.fields[1].datatype = 9
    elif change == 'empty':
        msg.width, msg.data = 0, b''
    elif change == 'all_nan':
        points = _points(LAYOUTS['xyzi_f4'])
        points['y'] = np.nan
        msg = _layout_cloud(points)
    elif change == 'row_step_small':
        msg.height, msg.width, msg.row_step = 3, 4, 8
    elif change == 'offset_outside':
        msg.fields[2].offset = 14
    elif change == 'count_x':
        msg.fields[0].count = 2
    return msg


@pytest.mark.parametrize(('change', 'match'), [
    ('point_step_small', r"field 'z' \(offset 8, 4 bytes\) does not fit point_step 8"),
    ('point_step_zero', 'point_step is 0'),
    ('truncated', 'data is truncated: 100 bytes for 1x12 points of 16 bytes'),
    ('no_z', r"lacks field\(s\) \['z'\]"),
    ('repeated', r"repeats field\(s\) \['x'\]"),
    ('bad_datatype', "field 'y' has unknown datatype 9"),
    ('empty', r'is empty \(1x0 points\)'),
    ('all_nan', 'no finite point among its 12 points'),
    ('row_step_small', 'row_step 8 is smaller than width 4'),
    ('offset_outside', r"field 'z' \(offset 14, 4 bytes\) does not fit"),
    ('count_x', "field 'x' has count 2, expected 1"),
])
def test_read_scan_rejects_malformed_clouds(change: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        read_scan(_broken(change))


def test_read_scan_marks_non_finite_and_out_of_range_points_invalid() -> None:
    points = np.zeros(5, LAYOUTS['xyzi_f4'])
    points['x'] = [0.5, 2.0, 10.0, 200.0, 3.0]
    points['intensity'] = [1, 1, 1, 1, np.nan]
    scan = read_scan(_layout_cloud(points), ScanInput(min_range_m=1.0, max_range_m=120.0))
    np.testing.assert_array_equal(scan.valid, [False, True, True, False])  # the NaN one dropped
    keep = ScanInput(min_range_m=1.0, max_range_m=120.0, nan_policy='keep')
    np.testing.assert_array_equal(read_scan(_layout_cloud(points), keep).valid,
                                  [False, True, True, False, False])
    np.testing.assert_array_equal(read_scan(_layout_cloud(points), ScanInput(
        nan_policy='keep')).valid, [True, True, True, True, False])


def test_read_scan_allow_empty_returns_empty_and_nan_clouds() -> None:
    empty = _broken('empty')
    assert read_scan(empty, allow_empty=True).points.shape == (0, 4)
    scan = read_scan(_broken('all_nan'), ScanInput(nan_policy='keep'), allow_empty=True)
    assert len(scan.points) == 12 and not scan.valid.any() and scan.nonfinite == 12
    dropped = read_scan(_broken('all_nan'), allow_empty=True)
    assert dropped.points.shape == (0, 4) and dropped.nonfinite == 12


def test_read_scan_keeps_every_field_for_the_caller() -> None:
    points = _points(LAYOUTS['ouster_like'])
    points['ring'] = np.arange(12)
    scan = read_scan(_layout_cloud(points))
    np.testing.assert_array_equal(scan.fields['ring'], np.arange(12))


def test_override_scan_input_keeps_the_recorded_settings_unless_set() -> None:
    recorded = ScanInput(intensity_field='i', intensity_scale=0.5, min_range_m=1.0,
                         max_range_m=80.0)
    unset = {'intensity_field': (None, '--intensity-field'), 'max_range_m': (None, 'p')}
    assert override_scan_input(recorded, unset) == (recorded, [])
    same = {'intensity_scale': (0.5, '--intensity-scale')}
    assert override_scan_input(recorded, same) == (recorded, [])


def test_override_scan_input_logs_each_override() -> None:
    recorded = ScanInput(intensity_scale=0.5)
    result, notes = override_scan_input(recorded, {'intensity_scale': (1.0, 'parameter x'),
                                                   'max_range_m': (50.0, 'parameter y')})
    assert result == ScanInput(intensity_scale=1.0, max_range_m=50.0)
    assert notes == ["intensity_scale 1.0 (parameter x) overrides the checkpoint's 0.5",
                     "max_range_m 50.0 (parameter y) overrides the checkpoint's inf"]


def test_override_scan_input_says_when_nothing_is_recorded() -> None:
    result, notes = override_scan_input(None, {'intensity_scale': (2.0, 'flag')})
    assert result == ScanInput(intensity_scale=2.0)
    assert notes == ["the checkpoint does not record how its training scans were read; reading "
                     "with intensity 'intensity' × 2, range 0–inf m, non-finite points "
                     "dropped"]


def _factory_cloud(height: int) -> tuple[Any, np.ndarray]:
    """A rosbags PointCloud2 built by the bag writer's MessageFactory (no ROS): x, y, z,
    intensity (uint8, as many drivers publish it) and ring, ``height`` rows of 4."""
    dtype = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('intensity', 'u1'),
                      ('_pad', 'V1'), ('ring', '<u2')])
    points = np.zeros(4 * height, dtype)
    points['x'] = np.arange(4 * height, dtype=np.float32) + 1.0
    points['y'] = -2.0
    points['intensity'] = np.arange(4 * height) * 10
    points['ring'] = np.repeat(np.arange(height), 4)
    return FACTORY.point_cloud(points, 7, 'lidar', height=height, is_dense=False), points


def test_read_scan_of_a_message_factory_cloud_scales_and_limits() -> None:
    msg, points = _factory_cloud(height=2)
    scan = read_scan(msg, ScanInput(intensity_scale=0.5, min_range_m=3.0, max_range_m=7.0))
    assert (scan.height, scan.width, scan.nonfinite) == (2, 4, 0)
    np.testing.assert_array_equal(scan.points[:, 0], points['x'])
    np.testing.assert_array_equal(scan.points[:, 3], points['intensity'] * 0.5)
    distance = np.hypot(points['x'], 2.0)
    np.testing.assert_array_equal(scan.valid, (distance >= 3.0) & (distance <= 7.0))
    np.testing.assert_array_equal(scan.fields['ring'], [0, 0, 0, 0, 1, 1, 1, 1])


def test_read_scan_of_a_message_factory_cloud_drops_or_keeps_nan_points() -> None:
    msg, points = _factory_cloud(height=2)
    data = np.frombuffer(bytes(msg.data), points.dtype).copy()
    data['z'][[1, 6]] = np.nan
    msg.data = data.view(np.uint8)
    dropped = read_scan(msg)
    assert (dropped.height, dropped.width, dropped.nonfinite) == (1, 6, 2)
    np.testing.assert_array_equal(dropped.fields['ring'], [0, 0, 0, 1, 1, 1])
    kept = read_scan(msg, ScanInput(nan_policy='keep'))
    assert (kept.height, kept.width, kept.nonfinite) == (2, 4, 2)
    np.testing.assert_array_equal(kept.valid, [True, False, True, True, True, True, False, True])
    np.testing.assert_array_equal(kept.points[kept.valid], dropped.points)


def test_finite_rows_and_point_ranges_equal_numpys_row_reductions() -> None:
    # The column-wise forms the scan readers use give numpy's own answers, bit for bit,
    # including NaN, infinities and a square that overflows float32.
    rng = np.random.default_rng(0)
    points = (rng.normal(size=(5000, 4)) * 40).astype(np.float32)
    points[::97, 1] = np.nan
    points[::101, 3] = np.inf
    points[5, :2] = 3e38
    with np.errstate(over='ignore', invalid='ignore'):
        expected_ranges = np.linalg.norm(points[:, :3], axis=1)
    ranges = point_ranges(points)
    assert ranges.dtype == np.float32
    assert np.array_equal(ranges, expected_ranges, equal_nan=True)
    assert np.isinf(ranges[5]) and np.isnan(ranges[97])
    finite = finite_rows(points)
    assert np.array_equal(finite, np.isfinite(points).all(axis=1))
    assert not finite[0] and not finite[101] and finite[1]
