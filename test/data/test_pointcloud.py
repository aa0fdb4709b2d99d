"""Tests for relkd_core.data.pointcloud: PointCloud2 → structured NumPy arrays."""

from __future__ import annotations

import array
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from relkd_core.data.bag import MessageFactory, typestore
from relkd_core.data.pointcloud import pointcloud_dtype, pointcloud_to_array, xyz_of
from relkd_core.errors import DataError

# Explicit offsets and a trailing pad: 4 unnamed bytes the message must not declare.
POINT_DTYPE = np.dtype({
    'names': ['x', 'y', 'z', 'intensity', 'ring', 'label', 'instance', '_pad'],
    'formats': ['<f4', '<f4', '<f4', '<f4', '<u2', '<u2', '<u4', 'V4'],
    'offsets': [0, 4, 8, 12, 16, 18, 20, 24],
    'itemsize': 28,
})
DECLARED = ('x', 'y', 'z', 'intensity', 'ring', 'label', 'instance')
POINTCLOUD2 = 'sensor_msgs/msg/PointCloud2'


@pytest.fixture(scope='module')
def factory() -> MessageFactory:
    return MessageFactory(typestore('humble'))


def random_points(count: int, seed: int = 0) -> NDArray[np.void]:
    rng = np.random.default_rng(seed)
    points = np.zeros(count, POINT_DTYPE)
    for name in ('x', 'y', 'z'):
        points[name] = rng.uniform(-50.0, 50.0, count)
    points['intensity'] = rng.uniform(0.0, 1.0, count)
    points['ring'] = rng.integers(0, 64, count)
    points['label'] = rng.integers(0, 65535, count, endpoint=True)
    points['instance'] = rng.integers(0, 2**32 - 1, count, endpoint=True)
    points['_pad'] = b'\xde\xad\xbe\xef'
    return points


def assert_points_equal(actual: NDArray[np.void], expected: NDArray[np.void]) -> None:
    assert actual.dtype.names == DECLARED
    assert len(actual) == len(expected)
    for name in DECLARED:
        assert actual.dtype[name] == expected.dtype[name].newbyteorder('=')
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


def cloud_message(factory: MessageFactory, points: NDArray[np.void], **overrides: Any) -> Any:
    """A PointCloud2 built by ``factory``, with some attributes replaced (e.g. ``data``)."""
    msg = factory.point_cloud(points, 1_000, 'lidar')
    fields = {name: getattr(msg, name) for name in (
        'header', 'height', 'width', 'fields', 'is_bigendian', 'point_step', 'row_step', 'data',
        'is_dense')}
    fields.update(overrides)
    return factory.types[POINTCLOUD2](**fields)


def test_pointcloud_to_array_round_trip(factory: MessageFactory) -> None:
    points = random_points(50)
    assert_points_equal(pointcloud_to_array(factory.point_cloud(points, 0, 'lidar')), points)


def test_pointcloud_to_array_padding_not_declared(factory: MessageFactory) -> None:
    msg = factory.point_cloud(random_points(3), 0, 'lidar')
    assert [f.name for f in msg.fields] == list(DECLARED)
    assert [f.offset for f in msg.fields] == [0, 4, 8, 12, 16, 18, 20]
    assert [f.datatype for f in msg.fields] == [7, 7, 7, 7, 4, 4, 6]
    assert msg.point_step == 28
    assert pointcloud_dtype(msg).itemsize == 28


def test_pointcloud_to_array_cdr_round_trip(factory: MessageFactory) -> None:
    points = random_points(40, seed=1)
    store = factory.store
    msg = factory.point_cloud(points, 123_456_789_012, 'lidar')
    decoded: Any = store.deserialize_cdr(store.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)
    assert decoded.header.frame_id == 'lidar'
    assert (decoded.header.stamp.sec, decoded.header.stamp.nanosec) == (123, 456_789_012)
    assert_points_equal(pointcloud_to_array(decoded), points)


def test_pointcloud_to_array_big_endian(factory: MessageFactory) -> None:
    points = random_points(20, seed=2)
    swapped = points.astype(POINT_DTYPE.newbyteorder('>'))
    data = swapped.view(np.uint8).reshape(-1)
    assert not np.array_equal(data, points.view(np.uint8).reshape(-1))
    msg = cloud_message(factory, points, is_bigendian=True, data=data)
    result = pointcloud_to_array(msg)
    assert all(result.dtype[name].byteorder in ('=', '|') for name in DECLARED)
    assert_points_equal(result, points)


def test_pointcloud_to_array_organised_with_row_padding(factory: MessageFactory) -> None:
    height, width, row_pad = 3, 4, 12
    points = random_points(height * width, seed=3)
    row_step = width * POINT_DTYPE.itemsize + row_pad
    rows = np.full((height, row_step), 0xAB, dtype=np.uint8)
    rows[:, : width * POINT_DTYPE.itemsize] = points.view(np.uint8).reshape(height, -1)
    msg = cloud_message(factory, points, height=height, width=width, row_step=row_step,
                        data=rows.reshape(-1))
    assert_points_equal(pointcloud_to_array(msg), points)


def test_pointcloud_to_array_organised_without_padding(factory: MessageFactory) -> None:
    points = random_points(6, seed=4)
    msg = cloud_message(factory, points, height=2, width=3, row_step=3 * 28)
    assert_points_equal(pointcloud_to_array(msg), points)


def test_pointcloud_to_array_accepts_array_array(factory: MessageFactory) -> None:
    # rclpy hands PointCloud2.data over as array.array('B').
    points = random_points(10, seed=5)
    msg = cloud_message(factory, points)
    msg.data = array.array('B', points.tobytes())
    assert_points_equal(pointcloud_to_array(msg), points)


def test_pointcloud_to_array_accepts_bytes(factory: MessageFactory) -> None:
    points = random_points(4, seed=6)
    msg = cloud_message(factory, points)
    msg.data = points.tobytes()
    assert_points_equal(pointcloud_to_array(msg), points)


def test_pointcloud_to_array_empty_cloud(factory: MessageFactory) -> None:
    result = pointcloud_to_array(factory.point_cloud(random_points(0), 0, 'lidar'))
    assert len(result) == 0
    assert result.dtype.names == DECLARED


def test_pointcloud_to_array_owns_its_data(factory: MessageFactory) -> None:
    points = random_points(5, seed=7)
    msg = factory.point_cloud(points.copy(), 0, 'lidar')
    result = pointcloud_to_array(msg)
    msg.data[:] = 0
    assert_points_equal(result, points)


def test_pointcloud_to_array_multi_count_field(factory: MessageFactory) -> None:
    point_field = factory.types['sensor_msgs/msg/PointField']
    values = np.arange(12, dtype='<f4').reshape(4, 3)
    msg = factory.types[POINTCLOUD2](
        header=factory.header(0, 'lidar'), height=1, width=4,
        fields=[point_field(name='xyz', offset=0, datatype=7, count=3)], is_bigendian=False,
        point_step=12, row_step=48, data=values.view(np.uint8).reshape(-1), is_dense=True)
    np.testing.assert_array_equal(pointcloud_to_array(msg)['xyz'], values)


def _truncated(factory: MessageFactory) -> Any:
    points = random_points(10)
    return cloud_message(factory, points, data=points.view(np.uint8).reshape(-1)[:-1])


def _truncated_organised(factory: MessageFactory) -> Any:
    # 2 rows of 2 points with 8 pad bytes per row, last row cut short.
    points = random_points(4)
    return cloud_message(factory, points, height=2, width=2, row_step=64,
                         data=np.zeros(2 * 64 - 4, dtype=np.uint8))


def _row_step_too_small(factory: MessageFactory) -> Any:
    points = random_points(4)
    return cloud_message(factory, points, height=2, width=2, row_step=40,
                         data=np.zeros(2 * 64, dtype=np.uint8))


def _unknown_datatype(factory: MessageFactory) -> Any:
    msg = cloud_message(factory, random_points(2))
    msg.fields[3].datatype = 9
    return msg


def _field_beyond_point_step(factory: MessageFactory) -> Any:
    msg = cloud_message(factory, random_points(2))
    msg.fields[6].offset = 26  # 4-byte field starting 2 bytes before the 28-byte point ends
    return msg


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_truncated, r'holds 279 bytes, expected 10 points × 28 bytes'),
        (_truncated_organised, r'holds 124 bytes, expected 2 rows × row_step 64 bytes'),
        (_row_step_too_small, r'row_step 40 is smaller than width 2 × point_step 28'),
        (_unknown_datatype, r"field 'intensity' has unknown datatype 9"),
        (_field_beyond_point_step, r'fields do not fit point_step 28'),
    ],
    ids=['truncated', 'truncated-organised', 'row-step-too-small', 'unknown-datatype',
         'field-beyond-point-step'],
)
def test_pointcloud_to_array_rejects_bad_message(factory: MessageFactory, build: Any,
                                                 message: str) -> None:
    with pytest.raises(DataError, match=message):
        pointcloud_to_array(build(factory))


def test_xyz_of_values_and_dtype(factory: MessageFactory) -> None:
    points = random_points(8)
    xyz = xyz_of(pointcloud_to_array(factory.point_cloud(points, 0, 'lidar')))
    assert xyz.dtype == np.float32
    assert xyz.shape == (8, 3)
    np.testing.assert_array_equal(xyz, np.column_stack([points['x'], points['y'], points['z']]))


def test_xyz_of_casts_float64_to_float32() -> None:
    points = np.zeros(2, dtype=[('x', 'f8'), ('y', 'f8'), ('z', 'f8')])
    points['x'] = [1.5, -2.25]
    xyz = xyz_of(points)
    assert xyz.dtype == np.float32
    np.testing.assert_array_equal(xyz, [[1.5, 0.0, 0.0], [-2.25, 0.0, 0.0]])


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (('x', 'y', 'intensity'), r"lacks field\(s\) \['z'\]; it has \['x', 'y', 'intensity'\]"),
        (('intensity',), r"lacks field\(s\) \['x', 'y', 'z'\]; it has \['intensity'\]"),
        (('x', 'Y', 'z'), r"lacks field\(s\) \['y'\]"),
    ],
)
def test_xyz_of_missing_fields(names: tuple[str, ...], message: str) -> None:
    points = np.zeros(3, dtype=[(name, 'f4') for name in names])
    with pytest.raises(DataError, match=message):
        xyz_of(points)
