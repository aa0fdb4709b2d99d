"""What a configured segment node does, shared by ``segment_node`` and its managed variant.

:class:`SegmentRuntime` is built from a node and its :class:`SegmentParams` (loading the
checkpoint and embedding the vocabulary: "configure"); :meth:`~SegmentRuntime.activate` creates
the subscriptions, publishers and timer, :meth:`~SegmentRuntime.deactivate` destroys them. The
labelling, queue, vocabulary versions, legend latch, statistics and cameras live in plain
modules of :mod:`relkd_core.infer` (``online``, ``pipeline``, ``cameras``); this one moves
messages. Threads: the executor thread runs the callbacks, which only read and queue; the main
thread runs the model (:func:`relkd_core.infer.online.serve`): torch's OpenMP pool runs several
times slower when started from another thread (340 instead of 55 ms per 34k-point scan).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from relkd_core.errors import CalibrationError, DataError, RelkdError
from relkd_core.infer import LABELED_POINT_DTYPE
from relkd_core.infer.cameras import OverlayCamera, overlay_topic
from relkd_core.infer.cloud_cdr import point_cloud_cdr
from relkd_core.infer.online import OnlineLabeling, ScanJob
from relkd_core.infer.runtime import LabeledScan
from relkd_ros.conversions import (
    CloudPublisher,
    diagnostic_array,
    image_message,
    legend_markers,
    qos_profile,
    stamp_ns,
)
from relkd_ros.environment import DDS_PROFILE
from relkd_ros.params import SegmentParams
from relkd_ros.transforms import transform_source

try:  # rclpy >= Iron
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # pragma: no cover - Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

__all__ = ['SegmentRuntime']

_THROTTLE_S = 5.0


class SegmentRuntime:
    """Labeler, queue and ROS entities of one configured node (see the module doc)."""

    def __init__(self, node: Any, params: SegmentParams) -> None:
        self.node, self.params = node, params
        torch.set_num_threads(params.threads())
        # Scans are read as the checkpoint records its training scans were read, except where a
        # parameter is set (SegmentParams.scan_input_overrides); each override is logged.
        self.online = OnlineLabeling.start(params.checkpoint, params.labeling_request(),
                                           device=params.device, queue_size=params.queue_size,
                                           precision=params.precision)
        for note in self.online.notes:
            node.get_logger().info(note)
        node.get_logger().info(f'student ready: warm-up scan labelled in '
                               f'{self.online.warm_up_s:.1f} s')
        self.queue = self.online.queue
        self._entities: list[tuple[Callable[[Any], Any], Any]] = []
        self._cameras: list[OverlayCamera] = []
        self._busy = threading.Lock()  # held while a scan is labelled and published
        self._transforms: Any = None
        self.active = False
        # The first serialization builds the message tables (about 60 ms): not on a scan.
        point_cloud_cdr(np.zeros(0, LABELED_POINT_DTYPE), 0, '')

    # --- entities ---------------------------------------------------------------------------

    def _publisher(self, msg_type: Any, topic: str, qos: Any) -> Any:
        publisher = self.node.create_publisher(msg_type, topic, qos)
        self._entities.append((self.node.destroy_publisher, publisher))
        return publisher

    def _subscription(self, msg_type: Any, topic: str, callback: Any, qos: Any, **kw: Any
                      ) -> None:
        subscription = self.node.create_subscription(msg_type, topic, callback, qos, **kw)
        self._entities.append((self.node.destroy_subscription, subscription))

    def activate(self) -> None:
        """Create publishers, subscriptions and the diagnostics timer."""
        from visualization_msgs.msg import MarkerArray

        params = self.params
        in_qos = qos_profile(params.input_reliability, params.input_depth)
        out_qos = qos_profile(params.output_reliability, params.output_depth)
        self._labeled_pub = CloudPublisher(self._publisher(PointCloud2, params.labeled_topic,
                                                           out_qos))
        self._legend_pub = self._publisher(MarkerArray, params.legend_topic,
                                           qos_profile('reliable', 1, latched=True))
        self.online.legend.reset()
        self._transforms = transform_source(
            self.node, params.transforms(), params.fixed_frame, self.drop,
            needs_tf=bool(params.image_topics) and not params.static_transforms)
        for image_topic, info_topic in zip(params.image_topics, params.camera_info_topics,
                                           strict=True):
            camera = OverlayCamera(image_topic, self._publisher(
                Image, overlay_topic(image_topic, params.overlay_suffix), out_qos))
            image_type = CompressedImage if image_topic.endswith('/compressed') else Image
            self._subscription(image_type, image_topic,
                               lambda msg, c=camera: c.add_image(stamp_ns(msg.header.stamp),
                                                                 msg), in_qos)
            self._subscription(CameraInfo, info_topic,
                               lambda msg, c=camera: self._on_info(c, msg), in_qos)
            self._cameras.append(camera)
        self._diagnostics_pub = None
        try:
            from diagnostic_msgs.msg import DiagnosticArray
        except ImportError:  # pragma: no cover - the wheel ros-diagnostic-msgs or any ROS
            self.node.get_logger().warning('diagnostic_msgs is not installed: no /diagnostics')
        else:
            if params.diagnostics_period_s > 0:
                self._diagnostics_pub = self._publisher(DiagnosticArray, '/diagnostics', 10)
                timer = self.node.create_timer(params.diagnostics_period_s,
                                               self._publish_diagnostics)
                self._entities.append((self.node.destroy_timer, timer))
        # Subscribed last: a scan never arrives before its publishers exist.
        self._subscription(PointCloud2, params.points_topic, self._on_cloud, in_qos,
                           event_callbacks=SubscriptionEventCallbacks(
                               incompatible_qos=self._on_incompatible_qos))
        self.active = True
        names = self.online.core.vocabulary.current().names
        self.node.get_logger().info(
            f'labelling {self.node.resolve_topic_name(params.points_topic)} → '
            f'{self.node.resolve_topic_name(params.labeled_topic)} with '
            f'{len(names)} entries ({", ".join(names)}) on {params.device} in '
            f'{params.precision}, '
            f'{torch.get_num_threads()} torch thread(s), transforms from '
            f'the {self._transforms.description}')

    def deactivate(self) -> None:
        """Destroy what :meth:`activate` created (after the scan in hand) and drop the queue."""
        with self._busy:
            self.active = False
            self.queue.clear()
            for destroy, entity in reversed(self._entities):
                destroy(entity)
            self._entities.clear()
            self._cameras.clear()
            if self._transforms is not None:
                self._transforms.close()
                self._transforms = None

    # --- parameters ---------------------------------------------------------------------------

    def prepare(self, params: SegmentParams) -> Callable[[], None]:
        """Check that ``params`` can be applied and return the function applying them; raises
        RelkdError (nothing changed) when they cannot. Writes nothing: the returned function
        swaps settings and vocabulary in the labelling core."""
        swap = self.online.prepare(params.labeling_request())

        def apply() -> None:
            self.params = params
            for line in swap():
                self.node.get_logger().info(line)
        return apply

    # --- callbacks (executor thread): validate and queue ---------------------------------------

    def drop(self, what: str, err: Exception) -> None:
        self.online.dropped(what, err)
        self.node.get_logger().warning(f'dropped a malformed {what}: {err}',
                                       throttle_duration_sec=_THROTTLE_S)

    def _on_incompatible_qos(self, info: Any) -> None:
        # A lidar driver publishing best-effort never matches a reliable subscription: say
        # which parameter fixes it, not only which policy differs.
        self.node.get_logger().warning(
            f'a publisher on {self.params.points_topic} offers QoS incompatible with '
            f'input_reliability={self.params.input_reliability!r} (policy '
            f'{getattr(info, "last_policy_kind", "?")}); for a best-effort driver set '
            'input_reliability:=best_effort (and load config/' + DDS_PROFILE + ' in the driver '
            'for clouds over about 1 MB)', throttle_duration_sec=_THROTTLE_S)

    def _on_cloud(self, msg: Any) -> None:
        try:
            self.online.receive(msg)
        except DataError as err:
            self.drop('PointCloud2', err)

    def _on_info(self, camera: OverlayCamera, msg: Any) -> None:
        try:
            camera.set_info(msg)
        except (RelkdError, ValueError) as err:
            self.drop('CameraInfo', err)

    # --- labelling (main thread) --------------------------------------------------------------

    def process(self, job: ScanJob) -> None:
        """Label one queued scan and publish its cloud, legend and overlays."""
        with self._busy:
            if not self.active:
                return
            try:
                labeled, legend_due = self.online.label(job)
                self._publish(job, labeled, legend_due)
            except DataError as err:
                self.drop('PointCloud2', err)
            except Exception as err:  # a bug or a device error: reported, never fatal
                self.online.statistics.error(f'{type(err).__name__}: {err}')
                self.node.get_logger().error(f'labelling failed: {type(err).__name__}: {err}',
                                             throttle_duration_sec=_THROTTLE_S)

    def _publish(self, job: ScanJob, labeled: LabeledScan, legend_due: bool) -> None:
        vocabulary = labeled.vocabulary
        # The legend first, for the very vocabulary version this cloud's labels index.
        if self.params.publish_legend and legend_due:
            self._legend_pub.publish(legend_markers(job.header, vocabulary.names,
                                                    vocabulary.colors))
        self._labeled_pub.publish(job.header, labeled.points, job.scan.height)
        self.online.done(job)
        if self.params.publish_overlay:
            for camera in self._cameras:
                self._overlay(camera, job, labeled.result.labels, vocabulary.colors)

    def _overlay(self, camera: OverlayCamera, job: ScanJob, labels: NDArray[np.uint16],
                 colors: NDArray[np.uint8]) -> None:
        try:
            overlay = camera.draw(job.scan.points[:, :3], labels, colors, job.header.frame_id,
                                  stamp_ns(job.header.stamp), int(self.params.sync_slop_s * 1e9),
                                  self._transforms.lookup, self.params.overlay_point_radius_px)
        except (CalibrationError, DataError) as err:
            self.online.statistics.error(f'overlay {camera.image_topic}: {err}', 'overlay_failures')
            self.node.get_logger().warning(f'no overlay for {camera.image_topic}: {err}',
                                           throttle_duration_sec=_THROTTLE_S)
            return
        if overlay is not None:
            camera.publisher.publish(image_message(overlay.header, overlay.rgb))
            self.online.statistics.count('overlays_published')

    # --- diagnostics --------------------------------------------------------------------------

    def diagnostics(self) -> dict[str, str]:
        """The key/values /diagnostics reports (rates over the last period)."""
        return self.online.diagnostics()

    def _publish_diagnostics(self) -> None:
        if self._diagnostics_pub is not None:
            self._diagnostics_pub.publish(diagnostic_array(
                self.diagnostics(), f'{self.node.get_name()}: labeling', self.params.device,
                self.node.get_clock().now().to_msg()))
