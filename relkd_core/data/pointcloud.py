"""``sensor_msgs/PointCloud2`` → NumPy, duck-typed: works on rosbags and rclpy messages alike
(``msg.data`` is a NumPy array in one and an ``array.array`` in the other)."""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from relkd_core.errors import DataError

#: sensor_msgs/PointField datatype constant → numpy type code (little endian spelled without
#: order): the one datatype table; sizes and the reverse map are derived from it.
POINTFIELD_TYPES: Final[dict[int, str]] = {
    1: 'i1', 2: 'u1', 3: 'i2', 4: 'u2', 5: 'i4', 6: 'u4', 7: 'f4', 8: 'f8'}
#: Fields one cloud may declare. Real lidars send fewer than 20; the cap keeps one crafted
#: message (40,000 fields fit in 1 MB) from costing more than a normal one.
MAX_FIELDS: Final = 64


def field_names(msg: Any) -> list[str]:
    """The names of a PointCloud2's fields, checked before anything else is read: at most
    :data:`MAX_FIELDS` of them, none repeated (linear time). Raises DataError."""
    count = len(msg.fields)
    if count > MAX_FIELDS:
        raise DataError(f'PointCloud2 declares {count} fields, more than {MAX_FIELDS}')
    names = [str(f.name) for f in msg.fields]
    seen: set[str] = set()
    repeated: set[str] = set()
    for name in names:
        if name in seen:
            repeated.add(name)
        seen.add(name)
    if repeated:
        raise DataError(f'PointCloud2 repeats field(s) {sorted(repeated)}')
    return names


def pointcloud_dtype(msg: Any) -> np.dtype[np.void]:
    """The structured dtype of a PointCloud2's points (padding kept via ``itemsize``)."""
    field_names(msg)
    order = '>' if msg.is_bigendian else '<'
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if f.datatype not in POINTFIELD_TYPES:
            raise DataError(f'PointCloud2 field {f.name!r} has unknown datatype {f.datatype}')
        names.append(f.name)
        base = order + POINTFIELD_TYPES[f.datatype]
        formats.append(base if f.count <= 1 else (base, (f.count,)))
        offsets.append(f.offset)
    try:
        return np.dtype({'names': names, 'formats': formats, 'offsets': offsets,
                         'itemsize': msg.point_step})
    except ValueError as err:
        raise DataError(f'PointCloud2 fields do not fit point_step {msg.point_step}: {err}'
                        ) from err


def pointcloud_to_array(msg: Any) -> NDArray[np.void]:
    """All points of a PointCloud2 as a flat structured array (native byte order)."""
    dtype = pointcloud_dtype(msg)
    count = int(msg.width) * int(msg.height)
    row_bytes = int(msg.width) * msg.point_step
    padded = msg.height > 1 and msg.row_step != row_bytes
    buffer = memoryview(msg.data).cast('B')
    if padded and msg.row_step < row_bytes:
        raise DataError(f'PointCloud2 row_step {msg.row_step} is smaller than width '
                        f'{msg.width} × point_step {msg.point_step}')
    if padded and len(buffer) < msg.height * msg.row_step:
        raise DataError(f'PointCloud2 data holds {len(buffer)} bytes, expected '
                        f'{msg.height} rows × row_step {msg.row_step} bytes')
    if len(buffer) < count * msg.point_step:
        raise DataError(f'PointCloud2 data holds {len(buffer)} bytes, expected '
                        f'{count} points × {msg.point_step} bytes')
    # The points' bytes are copied as bytes: numpy copies a structured array field by field,
    # 20× slower on a 2 MB cloud. Only a big-endian cloud is then converted field by field.
    if padded:
        rows = np.frombuffer(buffer, np.uint8, count=msg.height * msg.row_step)
        data = np.ascontiguousarray(rows.reshape(msg.height, msg.row_step)[:, :row_bytes])
    else:
        data = np.frombuffer(buffer, np.uint8, count=count * msg.point_step).copy()
    points = data.reshape(-1).view(dtype)
    native = dtype.newbyteorder('=')
    return points if native == dtype else points.astype(native)


def xyz_of(points: NDArray[np.void]) -> NDArray[np.float32]:
    """N×3 float32 coordinates (metres) of a structured point array."""
    names = points.dtype.names or ()
    missing = [n for n in ('x', 'y', 'z') if n not in names]
    if missing:
        raise DataError(f'point cloud lacks field(s) {missing}; it has {list(names)}')
    return np.stack([points['x'], points['y'], points['z']], axis=1).astype(np.float32)
