"""Messages ↔ NumPy for the node: PointCloud2 in (any layout, validated), labeled clouds, images
and legends out.

Reading is duck-typed (rclpy and rosbags messages alike) and raises
:class:`~relkd_core.errors.DataError` naming what is wrong with a message, so the node can log and
drop it. Building messages needs the ROS message packages, imported on first use so that the
reading half can be tested and reused without them.
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.data.image import to_rgb
from relkd_core.data.pointcloud import pointcloud_to_array
from relkd_core.errors import DataError

__all__ = [
    'POINTFIELD_DATATYPES',
    'Scan',
    'cloud_message',
    'cloud_to_scan',
    'image_message',
    'image_to_rgb',
    'legend_markers',
    'pointfields',
    'stamp_ns',
]

#: numpy dtype (native order) → sensor_msgs/PointField datatype constant.
POINTFIELD_DATATYPES: dict[np.dtype[Any], int] = {
    np.dtype('int8'): 1, np.dtype('uint8'): 2, np.dtype('int16'): 3, np.dtype('uint16'): 4,
    np.dtype('int32'): 5, np.dtype('uint32'): 6, np.dtype('float32'): 7, np.dtype('float64'): 8,
}
_SIZES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 8: 8}
#: Bytes of one cloud above which a message is refused without reading it (2 GiB).
MAX_CLOUD_BYTES = 2**31


@dataclass(frozen=True)
class Scan:
    """A validated cloud: ``points`` (N, 4) float32 ``x, y, z, intensity`` in the cloud's frame
    (N = height × width, row-major, non-finite points kept) and the cloud's ``height``/``width``
    (height > 1: organised)."""

    points: NDArray[np.float32]
    height: int
    width: int


def stamp_ns(stamp: Any) -> int:
    """int64 nanoseconds of a ``builtin_interfaces/Time``."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _check_layout(msg: Any) -> None:
    """Structural checks done before touching the data, each naming the broken field."""
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if height < 0 or width < 0 or point_step < 0 or row_step < 0:
        raise DataError(f'PointCloud2 has a negative size: height {height}, width {width}, '
                        f'point_step {point_step}, row_step {row_step}')
    if height * width == 0:
        raise DataError(f'PointCloud2 is empty ({height}x{width} points)')
    if point_step == 0:
        raise DataError('PointCloud2 point_step is 0')
    names = [str(f.name) for f in msg.fields]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f'PointCloud2 repeats field(s) {repeated}')
    missing = [n for n in ('x', 'y', 'z') if n not in names]
    if missing:
        raise DataError(f'PointCloud2 lacks field(s) {missing}; it has {names}')
    for field in msg.fields:
        size = _SIZES.get(int(field.datatype))
        if size is None:
            raise DataError(f'PointCloud2 field {field.name!r} has unknown datatype '
                            f'{field.datatype}; expected 1..8 (sensor_msgs/PointField)')
        count = max(int(field.count), 1)
        if field.name in ('x', 'y', 'z') and int(field.count) > 1:
            raise DataError(f'PointCloud2 field {field.name!r} has count {field.count}, '
                            'expected 1')
        if int(field.offset) < 0 or int(field.offset) + size * count > point_step:
            raise DataError(f'PointCloud2 field {field.name!r} (offset {field.offset}, '
                            f'{size * count} bytes) does not fit point_step {point_step}')
    if height > 1 and row_step < width * point_step:
        raise DataError(f'PointCloud2 row_step {row_step} is smaller than width {width} × '
                        f'point_step {point_step}')
    expected = height * row_step if height > 1 else width * point_step
    if expected > MAX_CLOUD_BYTES:
        raise DataError(f'PointCloud2 declares {expected} bytes, more than {MAX_CLOUD_BYTES}')
    available = len(memoryview(msg.data).cast('B'))
    if available < expected:
        raise DataError(f'PointCloud2 data is truncated: {available} bytes for {height}x{width} '
                        f'points of {point_step} bytes (row_step {row_step}), expected {expected}')


def cloud_to_scan(msg: Any, *, intensity_field: str = 'intensity',
                  intensity_scale: float = 1.0) -> Scan:
    """Validate a ``sensor_msgs/PointCloud2`` and read its points as a :class:`Scan`.

    Any field layout works: x, y and z of any numeric datatype, extra fields, padding, big
    endian, organised (height > 1, rows padded to ``row_step``) or not. Intensity comes from
    ``intensity_field`` times ``intensity_scale``; a cloud without that field gets intensity 0.
    Raises DataError for a malformed cloud (bad sizes or offsets, unknown datatypes, missing or
    repeated fields, truncated data) and for one without a single finite point.
    """
    _check_layout(msg)
    points = pointcloud_to_array(msg)
    scan = np.zeros((len(points), 4), dtype=np.float32)
    for column, name in enumerate(('x', 'y', 'z')):
        scan[:, column] = points[name]
    names = points.dtype.names or ()
    if intensity_field in names:
        values = points[intensity_field]
        if values.ndim > 1:
            values = values[:, 0]
        scan[:, 3] = values.astype(np.float32) * np.float32(intensity_scale)
    if not np.isfinite(scan[:, :3]).all(axis=1).any():
        raise DataError(f'PointCloud2 has no finite point among its {len(scan)} points')
    return Scan(scan, int(msg.height), int(msg.width))


def pointfields(dtype: np.dtype[np.void]) -> list[tuple[str, int, int]]:
    """``(name, offset, datatype)`` of each field of a structured dtype, for PointField."""
    fields = []
    for name in dtype.names or ():
        sub, offset = dtype.fields[name][:2]  # type: ignore[index]
        try:
            datatype = POINTFIELD_DATATYPES[sub.newbyteorder('=')]
        except KeyError:
            raise DataError(f'field {name!r} has dtype {sub}, which PointField cannot hold'
                            ) from None
        fields.append((name, int(offset), datatype))
    return fields


def _byte_array(values: NDArray[Any]) -> array.array[int]:
    data: array.array[int] = array.array('B')
    data.frombytes(np.ascontiguousarray(values).view(np.uint8).reshape(-1).data)
    return data


def cloud_message(header: Any, points: NDArray[np.void], height: int = 1,
                  width: int | None = None) -> Any:
    """An rclpy ``sensor_msgs/PointCloud2`` of a little-endian structured array (``height`` ×
    ``width`` = len(points); organised when height > 1), with ``header`` as given."""
    from sensor_msgs.msg import PointCloud2, PointField

    width = len(points) if width is None else width
    if height * width != len(points):
        raise DataError(f'cloud_message: {height}x{width} does not hold {len(points)} points')
    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = int(height), int(width)
    msg.fields = [PointField(name=name, offset=offset, datatype=datatype, count=1)
                  for name, offset, datatype in pointfields(points.dtype)]
    msg.is_bigendian = False
    msg.point_step = points.dtype.itemsize
    msg.row_step = points.dtype.itemsize * int(width)
    msg.data = _byte_array(points)
    msg.is_dense = False
    return msg


def image_to_rgb(msg: Any) -> NDArray[np.uint8]:
    """H×W×3 RGB uint8 of an ``Image`` (rgb8, bgr8, rgba8, bgra8, mono8) or ``CompressedImage``
    (JPEG, PNG); DataError for another encoding or broken data."""
    try:
        return to_rgb(msg)
    except (ValueError, TypeError) as err:
        raise DataError(f'cannot read image: {err}') from err


def image_message(header: Any, rgb: NDArray[np.uint8]) -> Any:
    """An rclpy ``sensor_msgs/Image`` (rgb8) of an H×W×3 uint8 array."""
    from sensor_msgs.msg import Image

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DataError(f'image_message: expected H×W×3 uint8, got {rgb.shape} {rgb.dtype}')
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = 'rgb8'
    msg.is_bigendian = 0
    msg.step = 3 * int(rgb.shape[1])
    msg.data = _byte_array(rgb)
    return msg


def legend_markers(header: Any, names: Sequence[str], colors: NDArray[np.uint8], *,
                   namespace: str = 'relkd_legend', line_height_m: float = 1.0) -> Any:
    """A ``visualization_msgs/MarkerArray`` legend: a DELETEALL marker, then one text marker per
    vocabulary entry, in its colour, stacked upwards from the frame origin."""
    from visualization_msgs.msg import Marker, MarkerArray

    clear = Marker()
    clear.header = header
    clear.ns = namespace
    clear.action = Marker.DELETEALL
    markers = [clear]
    for i, (name, rgb) in enumerate(zip(names, colors, strict=True)):
        marker = Marker()
        marker.header = header
        marker.ns = namespace
        marker.id = i
        marker.type = Marker.TEXT_VIEW_FACING
        marker.action = Marker.ADD
        marker.pose.position.z = float((len(names) - i) * line_height_m)
        marker.pose.orientation.w = 1.0
        marker.scale.z = float(0.8 * line_height_m)
        marker.color.r, marker.color.g, marker.color.b = (float(c) / 255.0 for c in rgb)
        marker.color.a = 1.0
        marker.text = f'{i}: {name}'
        markers.append(marker)
    array_msg = MarkerArray()
    array_msg.markers = markers
    return array_msg
