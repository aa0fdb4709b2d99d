"""PointCloud2/Image ↔ NumPy conversions and their validation (rclpy messages, no DDS)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip('sensor_msgs.msg')

from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from relkd_core.errors import DataError
from relkd_core.infer import LABELED_POINT_DTYPE
from relkd_ros.conversions import (
    cloud_bytes,
    cloud_message,
    cloud_to_scan,
    image_message,
    image_to_rgb,
    legend_markers,
    pointfields,
    stamp_ns,
)

_CODES = {'i1': 1, 'u1': 2, 'i2': 3, 'u2': 4, 'i4': 5, 'u4': 6, 'f4': 7, 'f8': 8}


def _cloud(points: np.ndarray, *, height: int = 1, row_pad: int = 0) -> PointCloud2:
    """A PointCloud2 holding ``points`` exactly as laid out in memory (any order, padding)."""
    dtype = points.dtype
    msg = PointCloud2()
    msg.header = Header(frame_id='lidar')
    msg.height, msg.width = height, len(points) // height
    msg.fields = [PointField(name=n, offset=dtype.fields[n][1], count=1,
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
def test_cloud_to_scan_reads_any_field_layout(layout: str) -> None:
    points = _points(LAYOUTS[layout])
    scan = cloud_to_scan(_cloud(points), intensity_scale=0.5)
    assert scan.points.dtype == np.float32 and (scan.height, scan.width) == (1, 12)
    np.testing.assert_array_equal(scan.points, _expected(points, 0.5))


def test_cloud_to_scan_reads_organised_clouds_with_padded_rows() -> None:
    points = _points(LAYOUTS['ouster_like'], count=12)
    scan = cloud_to_scan(_cloud(points, height=3, row_pad=8))
    assert (scan.height, scan.width) == (3, 4)
    np.testing.assert_array_equal(scan.points, _expected(points))


def test_cloud_to_scan_uses_the_named_intensity_field() -> None:
    dtype = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('i', '<f4')])
    points = _points(dtype)
    points['i'] = np.arange(12)
    scan = cloud_to_scan(_cloud(points), intensity_field='i')
    np.testing.assert_array_equal(scan.points[:, 3], np.arange(12, dtype=np.float32))


def test_cloud_to_scan_keeps_nan_points_when_some_are_finite() -> None:
    points = _points(LAYOUTS['xyzi_f4'])
    points['x'][:5] = np.nan
    scan = cloud_to_scan(_cloud(points))
    assert np.isnan(scan.points[:5, 0]).all() and np.isfinite(scan.points[5:]).all()


def _broken(change: str) -> PointCloud2:
    msg = _cloud(_points(LAYOUTS['xyzi_f4']))
    if change == 'point_step_small':
        msg.point_step = 8
    elif change == 'point_step_zero':
        msg.point_step = 0
    elif change == 'truncated':
        msg.data = bytes(msg.data)[:100]
    elif change == 'no_z':
        msg.fields = [f for f in msg.fields if f.name != 'z']
    elif change == 'repeated':
        msg.fields = [*msg.fields, PointField(name='x', offset=0, datatype=7, count=1)]
    elif change == 'bad_datatype':
        msg.fields[1].datatype = 9
    elif change == 'empty':
        msg.width, msg.data = 0, b''
    elif change == 'all_nan':
        points = _points(LAYOUTS['xyzi_f4'])
        points['y'] = np.nan
        msg = _cloud(points)
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
def test_cloud_to_scan_rejects_malformed_clouds(change: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        cloud_to_scan(_broken(change))


def test_cloud_message_round_trips_labeled_points() -> None:
    points = np.zeros(6, LABELED_POINT_DTYPE)
    points['x'] = np.arange(6)
    points['label'] = [0, 1, 2, 0xFFFF, 1, 0]
    points['rgb'] = 0x123456
    header = Header(frame_id='lidar_top')
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = cloud_message(header, points, height=2, width=3)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (2, 3, 28, 84)
    assert [(f.name, f.offset, f.datatype) for f in msg.fields] == pointfields(points.dtype)
    assert [f.datatype for f in msg.fields] == [7, 7, 7, 7, 4, 7, 6]
    assert msg.header.frame_id == 'lidar_top' and stamp_ns(msg.header.stamp) == 12 * 10**9 + 345
    back = np.frombuffer(msg.data, LABELED_POINT_DTYPE)
    assert back.tobytes() == points.tobytes()


def test_cloud_bytes_deserialize_to_cloud_message() -> None:
    from rclpy.serialization import deserialize_message, serialize_message

    points = np.zeros(1001, LABELED_POINT_DTYPE)
    points['x'] = np.random.default_rng(0).normal(size=1001)
    points['label'] = np.arange(1001) % 7
    header = Header(frame_id='velodyne')
    header.stamp.sec, header.stamp.nanosec = 1_700_000_000, 999_999_999
    for height in (1, 7):
        expected = cloud_message(header, points, height, 1001 // height)
        raw = cloud_bytes(header, points, height)
        # Same length as rclpy's own serialization (only CDR padding bytes may differ).
        assert len(raw) == len(serialize_message(expected))
        assert deserialize_message(raw, PointCloud2) == expected


def test_cloud_message_rejects_a_wrong_shape() -> None:
    with pytest.raises(DataError, match='2x2 does not hold 6 points'):
        cloud_message(Header(), np.zeros(6, LABELED_POINT_DTYPE), height=2, width=2)


def test_image_message_round_trips_rgb() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    msg = image_message(Header(frame_id='cam'), rgb)
    assert (msg.encoding, msg.step, msg.header.frame_id) == ('rgb8', 15, 'cam')
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_image_to_rgb_reads_bgr8() -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (3, 4, 3), dtype=np.uint8)
    msg = image_message(Header(), rgb[..., ::-1].copy())
    msg.encoding = 'bgr8'
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


@pytest.mark.parametrize(('encoding', 'data', 'match'), [
    ('yuv422', b'\0' * 60, "unsupported image encoding 'yuv422'"),
    ('rgb8', b'\0' * 10, 'image data too short for 5x4 rgb8'),
])
def test_image_to_rgb_rejects_bad_images(encoding: str, data: bytes, match: str) -> None:
    msg = Image(height=4, width=5, encoding=encoding, step=15, data=data)
    with pytest.raises(DataError, match=match):
        image_to_rgb(msg)


def test_image_to_rgb_rejects_broken_jpeg() -> None:
    msg = CompressedImage(format='jpeg', data=b'\xff\xd8garbage')
    with pytest.raises(DataError, match="cannot decode CompressedImage \\(format 'jpeg'\\)"):
        image_to_rgb(msg)


def test_legend_markers_list_entries_in_their_colours() -> None:
    colors = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    legend = legend_markers(Header(frame_id='lidar'), ['car', 'road'], colors)
    clear, *texts = legend.markers
    assert clear.action == clear.DELETEALL
    assert [m.text for m in texts] == ['0: car', '1: road']
    assert [(m.color.r, m.color.b) for m in texts] == [(1.0, 0.0), (0.0, 1.0)]
    assert texts[0].pose.position.z > texts[1].pose.position.z
