"""Camera ↔ lidar transforms for the node: tf2 when a ROS install has it, else a small buffer.

:func:`transform_source` returns an object with ``lookup(target, source, t_ns, source_t_ns)``
giving the 4×4 ``T_target_source``. With ``tf2_ros`` importable (every ROS install) it is a
``tf2_ros.Buffer`` fed by a ``TransformListener`` (``/tf`` and ``/tf_static``, moving sensors
included); the ``static_transforms`` parameter is added to it as static edges. Without tf2_ros
(the PyPI wheels) :class:`relkd_core.data.tf.TfBuffer` is fed from ``/tf_static`` and ``/tf``
when ``tf2_msgs`` exists, and from ``static_transforms`` otherwise. Both raise
CalibrationError when a transform is missing.

With ``fixed_frame`` set (e.g. ``odom``), the camera pose is taken at the image stamp and the
lidar pose at the scan stamp, chained through the fixed frame: the ego motion between the two
instants is compensated, as tf2's advanced lookup does.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from relkd_core.data.tf import TfBuffer, transform_from_msg
from relkd_core.errors import CalibrationError

__all__ = ['Tf2Transforms', 'TfBufferTransforms', 'TransformSource', 'transform_source']


class TransformSource(Protocol):
    """Where the node gets ``T_target_source`` from (see the module doc)."""

    description: str

    def lookup(self, target: str, source: str, t_ns: int, source_t_ns: int) -> NDArray[np.float64]:
        ...

    def close(self) -> None: ...


class Tf2Transforms:
    """``tf2_ros.Buffer`` + ``TransformListener`` on ``node``; ``buffer`` may be given (tests)."""

    description = 'tf2_ros buffer (/tf and /tf_static)'

    def __init__(self, node: Any, static: list[tuple[str, str, NDArray[np.float64]]],
                 fixed_frame: str = '', buffer: Any = None) -> None:
        import tf2_ros

        self._exceptions: tuple[type[BaseException], ...] = (tf2_ros.TransformException,)
        self.buffer = buffer if buffer is not None else tf2_ros.Buffer()
        self._listener = None if buffer is not None else tf2_ros.TransformListener(
            self.buffer, node)
        self.fixed_frame = fixed_frame
        for parent, child, T_parent_child in static:
            self.buffer.set_transform_static(_transform_stamped(parent, child, T_parent_child),
                                             'static_transforms parameter')

    def lookup(self, target: str, source: str, t_ns: int, source_t_ns: int) -> NDArray[np.float64]:
        from rclpy.time import Time

        try:
            if self.fixed_frame:
                stamped = self.buffer.lookup_transform_full(
                    target, Time(nanoseconds=t_ns), source, Time(nanoseconds=source_t_ns),
                    self.fixed_frame)
            else:
                stamped = self.buffer.lookup_transform(target, source,
                                                       Time(nanoseconds=source_t_ns))
        except self._exceptions as err:
            raise CalibrationError(f'tf2: no transform {source!r} → {target!r}: {err}') from err
        return transform_from_msg(stamped.transform)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.unregister()


class TfBufferTransforms:
    """:class:`TfBuffer` fed by ``/tf_static`` and ``/tf`` subscriptions (where ``tf2_msgs``
    exists) and the ``static_transforms`` parameter."""

    description = 'built-in tf buffer'

    def __init__(self, node: Any, static: list[tuple[str, str, NDArray[np.float64]]],
                 fixed_frame: str = '', on_error: Any = None) -> None:
        self.buffer = TfBuffer()
        self.fixed_frame = fixed_frame
        for parent, child, T_parent_child in static:
            self.buffer.add(parent, child, T_parent_child)
        self._node = node
        self._subscriptions: list[Any] = []
        message = _tf_message_type()
        self.available = message is not None
        if self.available:
            from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

            latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            for topic, qos, static_edges in (('/tf_static', latched, True), ('/tf', 100, False)):
                self._subscriptions.append(node.create_subscription(
                    message, topic, lambda msg, s=static_edges: self._add(msg, s, on_error), qos))

    def _add(self, msg: Any, static: bool, on_error: Any) -> None:
        try:
            self.buffer.add_message(msg, static=static)
        except (CalibrationError, ValueError) as err:
            if on_error is not None:
                on_error('TFMessage', err)

    def lookup(self, target: str, source: str, t_ns: int, source_t_ns: int) -> NDArray[np.float64]:
        if self.fixed_frame:
            return self.buffer.lookup(target, source, t_ns, source_t_ns, self.fixed_frame)
        return self.buffer.lookup(target, source, source_t_ns)

    def close(self) -> None:
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        self._subscriptions.clear()


def _tf_message_type() -> Any:
    try:  # every ROS install has tf2_msgs; the PyPI wheels do not
        from tf2_msgs.msg import TFMessage
    except ImportError:
        return None
    return TFMessage


def tf2_available() -> bool:
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        return False
    return True


def transform_source(node: Any, static: list[tuple[str, str, NDArray[np.float64]]],
                     fixed_frame: str = '', on_error: Any = None, *, needs_tf: bool = False
                     ) -> TransformSource:
    """tf2 when importable, else the built-in buffer (see the module doc). ``needs_tf``: the
    node has cameras but no static extrinsics, so it warns when /tf cannot be read at all."""
    if tf2_available():
        return Tf2Transforms(node, static, fixed_frame)
    source = TfBufferTransforms(node, static, fixed_frame, on_error)
    if needs_tf and not getattr(source, 'available', True):
        node.get_logger().warning(
            'neither tf2_ros nor tf2_msgs is installed: /tf is not read; give camera '
            'extrinsics with the static_transforms parameter')
    return source


def _transform_stamped(parent: str, child: str, T_parent_child: NDArray[np.float64]) -> Any:
    from geometry_msgs.msg import TransformStamped

    from relkd_core.geometry.se3 import matrix_to_quaternion

    stamped = TransformStamped()
    stamped.header.frame_id, stamped.child_frame_id = parent, child
    t = stamped.transform.translation
    t.x, t.y, t.z = (float(v) for v in T_parent_child[:3, 3])
    q = stamped.transform.rotation
    q.x, q.y, q.z, q.w = (float(v) for v in matrix_to_quaternion(T_parent_child[:3, :3]))
    return stamped
