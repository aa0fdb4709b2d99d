"""``sensor_msgs/PointCloud2`` ↔ lidar scans: the validated (N, 4) xyzi view of any cloud, and the
PointField layout of structured arrays.

Duck-typed on messages (rclpy and rosbags alike), so the live node and the offline bag labeler
read a cloud the same way. Errors are :class:`~relkd_core.errors.DataError` naming what is
wrong with the message, so a caller can log and drop it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from relkd_core.data.pointcloud import MAX_FIELDS, field_names, pointcloud_to_array
from relkd_core.errors import DataError

__all__ = ['MAX_CLOUD_BYTES', 'MAX_FIELDS', 'POINTFIELD_DATATYPES', 'Scan', 'cloud_to_scan',
           'pointfields', 'stamp_ns']

#: numpy dtype (native order) → sensor_msgs/PointField datatype constant.
POINTFIELD_DATATYPES: Final[dict[np.dtype[Any], int]] = {
    np.dtype('int8'): 1, np.dtype('uint8'): 2, np.dtype('int16'): 3, np.dtype('uint16'): 4,
    np.dtype('int32'): 5, np.dtype('uint32'): 6, np.dtype('float32'): 7, np.dtype('float64'): 8,
}
_SIZES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 8: 8}
#: Bytes of one cloud above which a message is refused without reading it (2 GiB).
MAX_CLOUD_BYTES: Final = 2**31


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
    names = field_names(msg)
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
    repeated fields, more than :data:`MAX_FIELDS` fields, truncated data) and for one without a
    single finite point. The checks cost time linear in the message's declared layout.
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
    """``(name, offset, datatype)`` of each field of a structured dtype, for PointField.
    Fields whose name starts with ``_`` are padding and are left out."""
    fields = []
    for name in dtype.names or ():
        if name.startswith('_'):
            continue
        sub, offset = dtype.fields[name][:2]  # type: ignore[index]
        try:
            datatype = POINTFIELD_DATATYPES[sub.newbyteorder('=')]
        except KeyError:
            raise DataError(f'field {name!r} has dtype {sub}, which PointField cannot hold'
                            ) from None
        fields.append((name, int(offset), datatype))
    return fields
