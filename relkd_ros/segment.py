"""What a configured segment node does, shared by ``segment_node`` and its managed variant.

:class:`SegmentRuntime` is built from a node and its :class:`SegmentParams` (this loads the
checkpoint and embeds the vocabulary: the "configure" step); :meth:`~SegmentRuntime.activate`
creates the subscriptions, publishers and timer, :meth:`~SegmentRuntime.deactivate` destroys
them. The labelling itself, the queue, the vocabulary versions, the legend latch and the
statistics live in :mod:`relkd_core.infer.runtime`; this module only moves messages.

Threads: an executor thread runs the callbacks, which only validate and queue (cheap); the
main thread runs the model (:func:`serve`) on the newest queued scan: torch's OpenMP pool runs
several times slower when its parallel regions start from a thread other than the main one
(measured: 340 ms instead of 55 ms per 34k-point scan with 2 threads).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from relkd_core.data.bag import point_cloud_cdr
from relkd_core.data.scan import override_scan_input
from relkd_core.errors import CalibrationError, ConfigError, DataError, RelkdError
from relkd_core.geometry.camera import CameraModel
from relkd_core.infer import LABELED_POINT_DTYPE, Labeler
from relkd_core.infer.labeler import stored_vocabulary
from relkd_core.infer.overlay import draw_overlay
from relkd_core.infer.runtime import (
    LabeledScan,
    LegendLatch,
    RuntimeStatistics,
    ScanQueue,
    VocabularySlot,
    label_scan,
)
from relkd_core.teachers.vocabulary import Vocabulary, load_vocabulary
from relkd_ros.conversions import (
    Scan,
    cloud_bytes,
    cloud_message,
    image_message,
    image_to_rgb,
    legend_markers,
    read_scan,
    stamp_ns,
)
from relkd_ros.params import SegmentParams
from relkd_ros.sync import StampBuffer
from relkd_ros.transforms import transform_source

try:  # rclpy >= Iron
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # pragma: no cover - Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

__all__ = ['DDS_PROFILE', 'SegmentRuntime', 'overlay_topic', 'serve', 'vocabulary_of']

#: Fast DDS profile shipped in config/ (large shared-memory segments for big clouds).
DDS_PROFILE = 'fastdds_large_messages.xml'
_THROTTLE_S = 5.0
_IMAGE_BUFFER = 5


def _qos(reliability: str, depth: int, latched: bool = False) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def overlay_topic(image_topic: str, suffix: str) -> str:
    """``/cam/image_raw/compressed`` → ``/cam/image_raw/<suffix>``."""
    base = image_topic[: -len('/compressed')] if image_topic.endswith('/compressed') else (
        image_topic)
    return f'{base.rstrip("/")}/{suffix}'


def vocabulary_of(params: SegmentParams, labeler: Labeler | None = None) -> Vocabulary | None:
    """The vocabulary the parameters ask for; without one, the checkpoint's own (from
    ``labeler``) or None."""
    if params.vocabulary:
        try:
            return Vocabulary.from_names(params.vocabulary)
        except RelkdError as err:
            raise ConfigError(f'vocabulary: {err}') from err
    if params.vocabulary_file:
        return load_vocabulary(params.vocabulary_file)
    if labeler is not None:
        return stored_vocabulary(labeler.checkpoint) or Vocabulary.default()
    return None


@dataclass(frozen=True)
class _Job:
    header: Any
    scan: Scan
    received_ns: int


@dataclass
class _Camera:
    image_topic: str
    images: StampBuffer[Any]
    publisher: Any
    info: Any = None
    model: CameraModel | None = None


class SegmentRuntime:
    """Labeler, queue and ROS entities of one configured node (see the module doc)."""

    def __init__(self, node: Any, params: SegmentParams) -> None:
        self.node, self.params = node, params
        torch.set_num_threads(params.threads())
        self.labeler = Labeler(params.checkpoint, vocabulary_of(params), params.device)
        # Scans are read as the checkpoint records its training scans were read, except where
        # a parameter is set (see SegmentParams.scan_input_overrides); each override is logged.
        self.scan_input, self._scan_notes = override_scan_input(
            self.labeler.checkpoint.scan_input, params.scan_input_overrides())
        for note in self._scan_notes:
            node.get_logger().info(note)
        self.labeler.configure(score_threshold=params.score_threshold,
                               min_range_m=self.scan_input.min_range_m,
                               max_range_m=self.scan_input.max_range_m,
                               max_points=params.max_points)
        self.vocabulary = VocabularySlot(self.labeler.embedding, self.labeler.taxonomy)
        self.queue: ScanQueue[_Job] = ScanQueue(params.queue_size)
        self.statistics = RuntimeStatistics()
        self.legend = LegendLatch()
        self._entities: list[tuple[Callable[[Any], Any], Any]] = []
        self._cameras: list[_Camera] = []
        self._busy = threading.Lock()  # held while a scan is labelled and published
        self._transforms: Any = None
        self._raw_publish = True
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
        in_qos = _qos(params.input_reliability, params.input_depth)
        out_qos = _qos(params.output_reliability, params.output_depth)
        self._labeled_pub = self._publisher(PointCloud2, params.labeled_topic, out_qos)
        self._legend_pub = self._publisher(MarkerArray, params.legend_topic,
                                           _qos('reliable', 1, latched=True))
        self.legend.reset()
        self._transforms = transform_source(self.node, params.transforms(), params.fixed_frame,
                                            self.drop)
        if params.image_topics and not getattr(self._transforms, 'available', True) and not (
                params.static_transforms):
            self.node.get_logger().warning(
                'neither tf2_ros nor tf2_msgs is installed: /tf is not read; give camera '
                'extrinsics with the static_transforms parameter')
        for image_topic, info_topic in zip(params.image_topics, params.camera_info_topics,
                                           strict=True):
            camera = _Camera(image_topic, StampBuffer(_IMAGE_BUFFER), self._publisher(
                Image, overlay_topic(image_topic, params.overlay_suffix), out_qos))
            image_type = CompressedImage if image_topic.endswith('/compressed') else Image
            self._subscription(image_type, image_topic,
                               lambda msg, c=camera: c.images.add(stamp_ns(msg.header.stamp),
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
        self.node.get_logger().info(
            f'labelling {self.node.resolve_topic_name(params.points_topic)} → '
            f'{self.node.resolve_topic_name(params.labeled_topic)} with '
            f'{len(self.labeler.vocabulary)} entries ({", ".join(self.labeler.vocabulary.names)})'
            f' on {params.device}, {torch.get_num_threads()} torch thread(s), transforms from '
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
        RelkdError (nothing changed) when they cannot."""
        vocabulary_changed = (params.vocabulary, params.vocabulary_file) != (
            self.params.vocabulary, self.params.vocabulary_file)
        embedding = (self.labeler.embed(vocabulary_of(params, self.labeler))  # type: ignore[arg-type]
                     if vocabulary_changed else None)
        scan_input, notes = override_scan_input(self.labeler.checkpoint.scan_input,
                                                params.scan_input_overrides())
        limits = dict(score_threshold=params.score_threshold,
                      min_range_m=scan_input.min_range_m, max_range_m=scan_input.max_range_m,
                      max_points=params.max_points)
        self.labeler.configure(**limits)  # validates; the same values are set again below

        def apply() -> None:
            self.labeler.configure(**limits)
            self.params, self.scan_input = params, scan_input
            if notes != self._scan_notes:
                self._scan_notes = notes
                for note in notes or [f'reading scans as the checkpoint records: {scan_input}']:
                    self.node.get_logger().info(note)
            if embedding is not None:
                version = self.vocabulary.swap(embedding)
                self.node.get_logger().info(
                    f'vocabulary {version.version} is now {list(version.names)}')
        return apply

    # --- callbacks (executor thread): validate and queue ---------------------------------------

    def drop(self, what: str, err: Exception) -> None:
        self.statistics.error(f'{what}: {err}', 'dropped_malformed')
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
        received_ns = time.monotonic_ns()
        self.statistics.count('received')
        try:
            scan = read_scan(msg, self.scan_input)
        except (DataError, ValueError, TypeError, OverflowError) as err:
            self.drop('PointCloud2', err)
            return
        dropped = self.queue.put(_Job(msg.header, scan, received_ns))
        if dropped:
            self.statistics.count('dropped_stale', dropped)

    def _on_info(self, camera: _Camera, msg: Any) -> None:
        if camera.info is not None and _same_info(camera.info, msg):
            return
        try:
            camera.model = CameraModel.from_camera_info(msg)
            camera.info = msg
        except (RelkdError, ValueError) as err:
            self.drop('CameraInfo', err)

    # --- labelling (main thread) --------------------------------------------------------------

    def process(self, job: _Job) -> None:
        """Label one queued scan and publish its cloud, legend and overlays."""
        with self._busy:
            if not self.active:
                return
            try:
                labeled = label_scan(self.labeler, job.scan.points, self.vocabulary)
                self._publish(job, labeled)
            except DataError as err:
                self.drop('PointCloud2', err)
            except Exception as err:  # a bug or a device error: reported, never fatal
                self.statistics.error(f'{type(err).__name__}: {err}')
                self.node.get_logger().error(f'labelling failed: {type(err).__name__}: {err}',
                                             throttle_duration_sec=_THROTTLE_S)

    def _publish(self, job: _Job, labeled: LabeledScan) -> None:
        vocabulary = labeled.vocabulary
        # The legend first, for the very vocabulary version this cloud's labels index.
        if self.params.publish_legend and self.legend.claim(vocabulary.version,
                                                            job.header.frame_id):
            self._legend_pub.publish(legend_markers(job.header, vocabulary.names,
                                                    vocabulary.colors))
        self._publish_cloud(job, labeled.points)
        self.statistics.processed((time.monotonic_ns() - job.received_ns) / 1e6)
        if self.params.publish_overlay:
            for camera in self._cameras:
                self._overlay(camera, job, labeled.result.labels, vocabulary.colors)

    def _publish_cloud(self, job: _Job, points: NDArray[np.void]) -> None:
        # Pre-serialized bytes: rclpy's conversion of a large uint8[] field costs tens of ms
        # per cloud (measured 50 ms for 0.8 MB), more than half the budget of a scan.
        if self._raw_publish:
            try:
                self._labeled_pub.publish(cloud_bytes(job.header, points, job.scan.height))
                return
            except TypeError:  # an rclpy whose publish() takes messages only
                self._raw_publish = False
        self._labeled_pub.publish(cloud_message(job.header, points, job.scan.height,
                                                job.scan.width))

    def _overlay(self, camera: _Camera, job: _Job, labels: NDArray[np.uint16],
                 colors: NDArray[np.uint8]) -> None:
        t_ns = stamp_ns(job.header.stamp)
        match = camera.images.nearest(t_ns, int(self.params.sync_slop_s * 1e9))
        if match is None or camera.model is None:
            return
        image_t_ns, image = match
        frame = (camera.info.header.frame_id or image.header.frame_id).lstrip('/')
        try:
            T_cam_lidar = self._transforms.lookup(frame, job.header.frame_id, image_t_ns, t_ns)
            drawn = draw_overlay(image_to_rgb(image), job.scan.points[:, :3], labels, colors,
                                 T_cam_lidar, camera.model,
                                 radius_px=self.params.overlay_point_radius_px)
        except (CalibrationError, DataError) as err:
            self.statistics.error(f'overlay {camera.image_topic}: {err}', 'overlay_failures')
            self.node.get_logger().warning(f'no overlay for {camera.image_topic}: {err}',
                                           throttle_duration_sec=_THROTTLE_S)
            return
        camera.publisher.publish(image_message(image.header, drawn))
        self.statistics.count('overlays_published')

    # --- diagnostics --------------------------------------------------------------------------

    def diagnostics(self) -> dict[str, str]:
        """The key/values /diagnostics reports (rates over the last period)."""
        report = self.statistics.report()
        report['queue_length'] = str(len(self.queue))
        report['vocabulary'] = ', '.join(self.vocabulary.current().names)
        return report

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        if self._diagnostics_pub is None:
            return
        report = self.diagnostics()
        dropped = int(report['dropped_malformed'])
        status = DiagnosticStatus(
            name=f'{self.node.get_name()}: labeling', hardware_id=self.params.device,
            level=DiagnosticStatus.WARN if dropped else DiagnosticStatus.OK,
            message=(f'{report["output_rate_hz"]} Hz, p95 {report["latency_ms_p95"]} ms, '
                     f'{dropped} malformed dropped'))
        status.values = [KeyValue(key=key, value=value) for key, value in report.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.node.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)


def serve(runtime_of: Callable[[], SegmentRuntime | None], keep_running: Callable[[], bool]
          ) -> None:
    """Label queued scans of whatever runtime ``runtime_of()`` gives (the main thread's loop)
    until ``keep_running()`` turns false."""
    while keep_running():
        runtime = runtime_of()
        if runtime is None:
            time.sleep(0.05)
            continue
        job = runtime.queue.get(
            0.1, lambda current=runtime: keep_running() and runtime_of() is current)
        if job is not None:
            runtime.process(job)


def _same_info(a: Any, b: Any) -> bool:
    return (a.width, a.height, a.distortion_model, a.header.frame_id) == (
        b.width, b.height, b.distortion_model, b.header.frame_id) and all(
        np.array_equal(np.asarray(getattr(a, k)), np.asarray(getattr(b, k)))
        for k in ('k', 'd', 'r', 'p'))
