"""``sensor_msgs/PointCloud2`` ↔ lidar scans: the one scan reader, :func:`read_scan`, which
applies a :class:`ScanInput` (how the lidar is read: intensity field and scale, range limits,
what becomes of non-finite points), and the PointField layout of structured arrays.

Duck-typed on messages (rclpy and rosbags alike), so preparation, the live node and the offline
bag labeler read a cloud the same way. Errors are :class:`~relkd_core.errors.DataError` naming
what is wrong with the message, so a caller can log and drop it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from relkd_core.data.pointcloud import (
    MAX_FIELDS,
    POINTFIELD_TYPES,
    field_names,
    pointcloud_to_array,
)
from relkd_core.errors import ConfigError, DataError

__all__ = ['MAX_CLOUD_BYTES', 'MAX_FIELDS', 'NAN_POLICIES', 'POINTFIELD_DATATYPES', 'Scan',
           'ScanInput', 'finite_rows', 'override_scan_input', 'point_ranges', 'pointfields',
           'read_scan', 'stamp_ns']

#: numpy dtype (native order) → sensor_msgs/PointField datatype constant (from POINTFIELD_TYPES).
POINTFIELD_DATATYPES: Final[dict[np.dtype[Any], int]] = {
    np.dtype(code): datatype for datatype, code in POINTFIELD_TYPES.items()}
_SIZES = {datatype: np.dtype(code).itemsize for datatype, code in POINTFIELD_TYPES.items()}
#: Bytes of one cloud above which a message is refused without reading it (2 GiB).
MAX_CLOUD_BYTES: Final = 2**31
#: Values of :attr:`ScanInput.nan_policy`.
NAN_POLICIES: Final = ('drop', 'keep')


@dataclass(frozen=True, kw_only=True)
class ScanInput:
    """How lidar clouds are read into (N, 4) ``x, y, z, intensity`` scans.

    Intensity is the field ``intensity_field`` times ``intensity_scale`` (a cloud without that
    field reads intensity 0). A point is *valid* when its four values are finite and its
    Euclidean distance from the sensor lies in [``min_range_m``, ``max_range_m``]; preparation
    keeps only valid points, labelling labels only them (the others get no label).

    ``nan_policy`` says what becomes of a point with a non-finite x, y, z or intensity:
    ``'drop'`` leaves it out of the scan (an organised cloud then reads as one row), as
    training always did; ``'keep'`` keeps it in place, not valid, so an organised cloud keeps
    its rows and columns (labelling gives it no label).
    """

    intensity_field: str = 'intensity'
    intensity_scale: float = 1.0
    min_range_m: float = 0.0
    max_range_m: float = math.inf
    nan_policy: str = 'drop'

    def __post_init__(self) -> None:
        if self.nan_policy not in NAN_POLICIES:
            raise ConfigError(f'nan_policy: expected one of {list(NAN_POLICIES)}, got '
                              f'{self.nan_policy!r}')


def override_scan_input(recorded: ScanInput | None, overrides: Mapping[str, tuple[Any, str]],
                        *, recorded_by: str = 'the checkpoint') -> tuple[ScanInput, list[str]]:
    """The ScanInput to read with: ``recorded`` (None: nothing recorded, ``ScanInput()``) with
    each of ``overrides`` put in, and one line per setting that changes it, for the log.

    ``overrides`` maps ScanInput field names to ``(value, origin)`` (origin names the flag or
    parameter, e.g. ``'--intensity-scale'``); a value of None is not set and overrides nothing.
    """
    base = recorded or ScanInput()
    changes = {key: value for key, (value, _) in overrides.items() if value is not None}
    result = dataclasses.replace(base, **changes)
    notes = []
    if recorded is None:
        notes.append(f'{recorded_by} does not record how its training scans were read; reading '
                     f'with {_describe(result)}')
    for key, (value, origin) in overrides.items():
        if value is not None and recorded is not None and value != getattr(recorded, key):
            notes.append(f'{key} {value!r} ({origin}) overrides {recorded_by}\'s '
                         f'{getattr(recorded, key)!r}')
    return result, notes


def _describe(scan_input: ScanInput) -> str:
    return (f'intensity {scan_input.intensity_field!r} × {scan_input.intensity_scale:g}, range '
            f'{scan_input.min_range_m:g}–{scan_input.max_range_m:g} m, non-finite points '
            f'{"dropped" if scan_input.nan_policy == "drop" else "kept"}')


@dataclass(frozen=True)
class Scan:
    """A validated cloud: ``points`` (N, 4) float32 ``x, y, z, intensity`` in the cloud's frame
    (row-major; N = height × width, or fewer when non-finite points were dropped), ``valid``
    (N,) bool (see :class:`ScanInput`), ``height``/``width`` (height > 1: organised), ``fields``,
    the (N,) structured array of every field of those points (native order), and
    ``nonfinite``, how many points of the cloud had a non-finite value (dropped or kept, as
    the ScanInput's ``nan_policy`` says)."""

    points: NDArray[np.float32]
    height: int
    width: int
    valid: NDArray[np.bool_] = dataclasses.field(repr=False)
    fields: NDArray[np.void] = dataclasses.field(repr=False)
    nonfinite: int = 0


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


def read_scan(msg: Any, scan_input: ScanInput | None = None, *, allow_empty: bool = False
              ) -> Scan:
    """Validate a ``sensor_msgs/PointCloud2`` and read its points as a :class:`Scan` the way
    ``scan_input`` says.

    Any field layout works: x, y and z of any numeric datatype, extra fields, padding, big
    endian, organised (height > 1, rows padded to ``row_step``) or not; a multi-count intensity
    field gives its first element. Raises DataError for a malformed cloud (bad sizes or offsets,
    unknown datatypes, missing or repeated fields, more than :data:`MAX_FIELDS` fields,
    truncated data) and, unless ``allow_empty``, for an empty one or one without a single finite
    point. The checks cost time linear in the message's declared layout.
    """
    if not (allow_empty and int(msg.height) * int(msg.width) == 0):
        _check_layout(msg)
    points = pointcloud_to_array(msg)
    scan_input = scan_input or ScanInput()
    scan = np.zeros((len(points), 4), dtype=np.float32)
    for column, name in enumerate(('x', 'y', 'z')):
        scan[:, column] = points[name]
    names = points.dtype.names or ()
    if scan_input.intensity_field in names:
        values = points[scan_input.intensity_field]
        if values.ndim > 1:
            values = values[:, 0]
        scan[:, 3] = values.astype(np.float32) * np.float32(scan_input.intensity_scale)
    finite_xyz = finite_rows(scan[:, :3])
    if not allow_empty and not finite_xyz.any():
        raise DataError(f'PointCloud2 has no finite point among its {len(scan)} points')
    finite = finite_xyz & np.isfinite(scan[:, 3])
    nonfinite = len(scan) - int(np.count_nonzero(finite))
    height, width = int(msg.height), int(msg.width)
    if nonfinite and scan_input.nan_policy == 'drop':
        scan, points = scan[finite], points[finite]
        finite = np.ones(len(scan), dtype=bool)
        height, width = 1, len(scan)
    distance = point_ranges(scan)
    valid = finite & (distance >= scan_input.min_range_m) & (distance <= scan_input.max_range_m)
    return Scan(scan, height, width, valid, points, nonfinite)


def finite_rows(values: NDArray[np.floating[Any]]) -> NDArray[np.bool_]:
    """(N,) whether every column of the (N, C) ``values`` is finite.

    Column by column: numpy's ``isfinite(values).all(axis=1)`` reduces along the short axis
    and costs several times more on a scan.
    """
    finite = np.isfinite(values[:, 0])
    for column in range(1, values.shape[1]):
        finite &= np.isfinite(values[:, column])
    return finite


def point_ranges(points: NDArray[np.floating[Any]]) -> NDArray[np.floating[Any]]:
    """(N,) distance from the sensor of the (N, >=3) ``points`` (x, y, z first), NaN for a
    non-finite point; the same values as ``np.linalg.norm(points[:, :3], axis=1)``, faster."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    with np.errstate(invalid='ignore', over='ignore'):
        return np.sqrt(x * x + y * y + z * z)


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
