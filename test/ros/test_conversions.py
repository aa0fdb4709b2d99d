"""PointCloud2/Image ↔ NumPy conversions and their validation (rclpy messages, no DDS)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip('sensor_msgs.msg')

from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from relkd_core.errors import DataError
from relkd_core.infer import LABELED_POINT_DTYPE
from relkd_ros.conversions import (
    cloud_bytes,
    cloud_message,
    image_message,
    image_to_rgb,
    legend_markers,
    pointfields,
    stamp_ns,
)


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
