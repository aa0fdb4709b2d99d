"""Messages ↔ NumPy for the node: PointCloud2 in (any layout, validated), labeled clouds, images
and legends out.

Reading is duck-typed (rclpy and rosbags messages alike) and lives in
:mod:`relkd_core.data.scan`, shared with ``relkd-label``; it raises
:class:`~relkd_core.errors.DataError` naming what is wrong with a message, so the node can log and
drop it. Building messages needs the ROS message packages, imported on first use so that the
reading half can be tested and reused without them.
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.data.scan import (
    MAX_CLOUD_BYTES,
    POINTFIELD_DATATYPES,
    Scan,
    ScanInput,
    pointfields,
    read_scan,
    stamp_ns,
)
from relkd_core.errors import DataError
from relkd_core.infer.cameras import image_to_rgb
from relkd_core.infer.cloud_cdr import point_cloud_cdr
from relkd_core.infer.legend import LEGEND_NAMESPACE, legend_entries

__all__ = [
    'MAX_CLOUD_BYTES',
    'POINTFIELD_DATATYPES',
    'CloudPublisher',
    'Scan',
    'ScanInput',
    'cloud_bytes',
    'cloud_message',
    'diagnostic_array',
    'image_message',
    'image_to_rgb',
    'legend_markers',
    'pointfields',
    'qos_profile',
    'read_scan',
    'stamp_ns',
]


def _byte_array(values: NDArray[Any]) -> array.array[int]:
    data: array.array[int] = array.array('B')
    data.frombytes(np.ascontiguousarray(values).view(np.uint8).reshape(-1).data)
    return data


def cloud_bytes(header: Any, points: NDArray[np.void], height: int = 1) -> bytes:
    """The serialized (CDR) form of :func:`cloud_message`, for ``Publisher.publish(bytes)``:
    about 1 ms for 34k labeled points, where rclpy's own conversion of the ``uint8[]`` field
    takes tens of milliseconds."""
    return point_cloud_cdr(points, stamp_ns(header.stamp), header.frame_id, height=height,
                           is_dense=False)


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
                   namespace: str = LEGEND_NAMESPACE, line_height_m: float = 1.0) -> Any:
    """A ``visualization_msgs/MarkerArray`` legend (:mod:`relkd_core.infer.legend`): a DELETEALL
    marker, then one text marker per vocabulary entry, in its colour."""
    from visualization_msgs.msg import Marker, MarkerArray

    clear = Marker()
    clear.header = header
    clear.ns = namespace
    clear.action = Marker.DELETEALL
    markers = [clear]
    for entry in legend_entries(names, colors, line_height_m=line_height_m):
        marker = Marker()
        marker.header = header
        marker.ns = namespace
        marker.id = entry.marker_id
        marker.type = Marker.TEXT_VIEW_FACING
        marker.action = Marker.ADD
        marker.pose.position.z = entry.z_m
        marker.pose.orientation.w = 1.0
        marker.scale.z = entry.text_height_m
        marker.color.r, marker.color.g, marker.color.b, marker.color.a = entry.rgba
        marker.text = entry.text
        markers.append(marker)
    array_msg = MarkerArray()
    array_msg.markers = markers
    return array_msg


def diagnostic_array(report: dict[str, str], name: str, hardware_id: str, stamp: Any) -> Any:
    """A ``diagnostic_msgs/DiagnosticArray`` of one status: the runtime's ``report`` as its
    key/values, WARN when malformed messages were dropped, a one-line summary of rate and
    latency."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    dropped = int(report['dropped_malformed'])
    status = DiagnosticStatus(
        name=name, hardware_id=hardware_id,
        level=DiagnosticStatus.WARN if dropped else DiagnosticStatus.OK,
        message=(f'{report["output_rate_hz"]} Hz, p95 {report["latency_ms_p95"]} ms, '
                 f'{dropped} malformed dropped'))
    status.values = [KeyValue(key=key, value=value) for key, value in report.items()]
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array


class CloudPublisher:
    """Publishes labeled clouds on an rclpy ``publisher``, pre-serialized (:func:`cloud_bytes`)
    where rclpy takes bytes: its own conversion of a large ``uint8[]`` field costs tens of ms
    per cloud (measured 50 ms for 0.8 MB), more than half the budget of a scan."""

    def __init__(self, publisher: Any) -> None:
        self.publisher = publisher
        self._raw = True

    def publish(self, header: Any, points: NDArray[np.void], height: int = 1) -> None:
        if self._raw:
            try:
                self.publisher.publish(cloud_bytes(header, points, height))
                return
            except TypeError:  # an rclpy whose publish() takes messages only
                self._raw = False
        self.publisher.publish(cloud_message(header, points, height, len(points) // height))


def qos_profile(reliability: str, depth: int, latched: bool = False) -> Any:
    """A KEEP_LAST ``depth`` QoS profile, ``reliability`` 'reliable' or 'best_effort';
    ``latched``: transient-local (late subscribers get the last messages)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
