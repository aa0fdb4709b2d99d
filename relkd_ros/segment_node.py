"""``segment_node``: labels every lidar point with an open vocabulary, live.

Subscribes a ``sensor_msgs/PointCloud2`` (``points``), optionally camera images and infos, and
``/tf_static``; publishes, with the input header, a labeled cloud (x, y, z, intensity, label,
score, rgb), an overlay image per synced camera, a legend ``MarkerArray`` and
``/diagnostics``. Parameters: :mod:`relkd_ros.params`.

Threads: an executor thread runs the callbacks, which only validate and queue (cheap); the
main thread runs the model on the newest queued scan (torch is several times slower when its
parallel regions start from another thread). A full queue drops its oldest scan, so the
node never lags behind the sensor by more than ``queue_size`` scans. A malformed message is
logged (throttled), counted and dropped; bad configuration is fatal at start-up only.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from numpy.typing import NDArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from relkd_core.data.bag import point_cloud_cdr
from relkd_core.data.tf import TfBuffer
from relkd_core.errors import CalibrationError, ConfigError, DataError, RelkdError
from relkd_core.geometry.camera import CameraModel
from relkd_core.infer import (
    LABELED_POINT_DTYPE,
    Labeler,
    VocabularyEmbedding,
    entry_colors,
    labeled_points,
)
from relkd_core.infer.overlay import draw_overlay
from relkd_core.teachers.vocabulary import Vocabulary, load_vocabulary
from relkd_ros.conversions import (
    Scan,
    cloud_bytes,
    cloud_message,
    cloud_to_scan,
    image_message,
    image_to_rgb,
    legend_markers,
    stamp_ns,
)
from relkd_ros.params import (
    SegmentParams,
    default_value,
    parameter_descriptor,
    parameter_names,
    params_from_values,
)
from relkd_ros.sync import StampBuffer

try:  # the PyPI wheel ros-diagnostic-msgs, or any ROS install
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
except ImportError:  # pragma: no cover - depends on the environment
    DiagnosticArray = None
try:  # rclpy >= Iron
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # pragma: no cover - Humble
    from rclpy.qos_event import SubscriptionEventCallbacks
try:  # every ROS install has tf2_msgs; the PyPI wheels do not
    from tf2_msgs.msg import TFMessage
except ImportError:  # pragma: no cover - depends on the environment
    TFMessage = None

__all__ = ['SegmentNode', 'main']

NODE_NAME = 'relkd_segment'
#: Fast DDS profile shipped in config/ (see the docstring of :func:`use_shipped_dds_profile`).
DDS_PROFILE = 'fastdds_large_messages.xml'
_THROTTLE_S = 5.0
_LATENCY_WINDOW = 200
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


def vocabulary_of(params: SegmentParams) -> Vocabulary | None:
    """The vocabulary the parameters ask for (None: the checkpoint's own)."""
    if params.vocabulary:
        try:
            return Vocabulary.from_names(params.vocabulary)
        except RelkdError as err:
            raise ConfigError(f'vocabulary: {err}') from err
    if params.vocabulary_file:
        return load_vocabulary(params.vocabulary_file)
    return None


@dataclass
class _Counters:
    """What /diagnostics reports; updated under the node's lock."""

    received: int = 0
    processed: int = 0
    dropped_stale: int = 0
    dropped_malformed: int = 0
    dropped_images: int = 0
    overlays: int = 0
    overlay_failures: int = 0
    last_error: str = ''
    latencies_ms: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=_LATENCY_WINDOW))


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


class SegmentNode(Node):
    """The node (see the module docstring). Raises RelkdError for bad parameters or an
    unusable checkpoint."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name in parameter_names():
            self.declare_parameter(name, default_value(name), parameter_descriptor(name))
        self.params = params_from_values(self._parameter_values())
        if not Path(self.params.checkpoint).is_file():
            raise ConfigError(f'checkpoint: no such file {self.params.checkpoint!r}')
        params = self.params
        self.labeler = Labeler(params.checkpoint, vocabulary_of(params), params.device,
                               score_threshold=params.score_threshold,
                               min_range_m=params.min_range_m, max_range_m=params.max_range_m,
                               max_points=params.max_points)
        self._vocabulary = self._state(self.labeler.embed(self.labeler.vocabulary))
        self._legend_due = True
        self._legend_frame = ''
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque[_Job] = collections.deque()
        self._counters = _Counters()
        self._window_start = (time.monotonic(), 0, 0)
        self._tf = TfBuffer()
        for parent, child, T_parent_child in params.transforms():
            self._tf.add(parent, child, T_parent_child)
        self._stop = False
        self._raw_publish = True
        # The first serialization builds the message tables (about 60 ms): not on a scan.
        point_cloud_cdr(np.zeros(0, LABELED_POINT_DTYPE), 0, '')

        in_qos = _qos(params.input_reliability, params.input_depth)
        out_qos = _qos(params.output_reliability, params.output_depth)
        self._labeled_pub = self.create_publisher(PointCloud2, params.labeled_topic, out_qos)
        self._legend_pub = self.create_publisher(
            _marker_array_type(), params.legend_topic,
            _qos('reliable', 1, latched=True))
        self.create_subscription(
            PointCloud2, params.points_topic, self._on_cloud, in_qos,
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos))
        if TFMessage is not None:
            self.create_subscription(TFMessage, '/tf_static', self._on_tf_static,
                                     _qos('reliable', 100, latched=True))
        elif params.image_topics and not params.static_transforms:
            self.get_logger().warning('tf2_msgs is not installed: /tf_static is not read; give '
                                      'camera extrinsics with the static_transforms parameter')
        self._cameras: list[_Camera] = []
        for image_topic, info_topic in zip(params.image_topics, params.camera_info_topics,
                                           strict=True):
            camera = _Camera(image_topic, StampBuffer(_IMAGE_BUFFER), self.create_publisher(
                Image, overlay_topic(image_topic, params.overlay_suffix), out_qos))
            compressed = image_topic.endswith('/compressed')
            self.create_subscription(
                CompressedImage if compressed else Image, image_topic,
                lambda msg, c=camera: self._on_image(c, msg), in_qos)
            self.create_subscription(CameraInfo, info_topic,
                                     lambda msg, c=camera: self._on_info(c, msg), in_qos)
            self._cameras.append(camera)
        self._diagnostics_pub = None
        if DiagnosticArray is None:
            self.get_logger().warning('diagnostic_msgs is not installed: no /diagnostics')
        elif params.diagnostics_period_s > 0:
            self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
            self.create_timer(params.diagnostics_period_s, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.get_logger().info(
            f'labelling {params.points_topic} with {len(self.labeler.vocabulary)} entries '
            f'({", ".join(self.labeler.vocabulary.names)}) on {params.device}')

    # --- parameters ---------------------------------------------------------------------------

    def _parameter_values(self) -> dict[str, Any]:
        return {name: self.get_parameter(name).value for name in parameter_names()}

    @staticmethod
    def _state(embedding: VocabularyEmbedding) -> tuple[VocabularyEmbedding, NDArray[np.uint8]]:
        return embedding, entry_colors(embedding.vocabulary)

    def _on_set_parameters(self, changed: list[Any]) -> SetParametersResult:
        values = self._parameter_values()
        values.update({p.name: p.value for p in changed})
        try:
            params = params_from_values(values)
            vocabulary_changed = (params.vocabulary, params.vocabulary_file) != (
                self.params.vocabulary, self.params.vocabulary_file)
            state = None
            if vocabulary_changed:
                vocabulary = vocabulary_of(params)
                stored = self.labeler.checkpoint.vocabulary
                if vocabulary is None and stored:
                    vocabulary = Vocabulary(
                        names=tuple(stored['names']),
                        prompts=tuple(tuple(p) for p in stored['prompts']),
                        labels=tuple(stored['labels']))
                state = self._state(self.labeler.embed(vocabulary or Vocabulary.default()))
            self.labeler.configure(score_threshold=params.score_threshold,
                                   min_range_m=params.min_range_m,
                                   max_range_m=params.max_range_m,
                                   max_points=params.max_points)
        except RelkdError as err:
            return SetParametersResult(successful=False, reason=str(err))
        # Applied here rather than in a post-set callback, which Humble lacks; everything that
        # can fail has been done above.
        self.params = params
        if state is not None:
            self._vocabulary = state
            self._legend_due = True
            self.get_logger().info(f'vocabulary is now {list(state[0].vocabulary.names)}')
        return SetParametersResult(successful=True)

    # --- callbacks (executor thread): validate and queue ---------------------------------------

    def _drop(self, what: str, err: Exception) -> None:
        with self._lock:
            self._counters.dropped_malformed += 1
            self._counters.last_error = f'{what}: {err}'
        self.get_logger().warning(f'dropped a malformed {what}: {err}',
                                  throttle_duration_sec=_THROTTLE_S)

    def _on_incompatible_qos(self, info: Any) -> None:
        # A lidar driver publishing best-effort never matches a reliable subscription: say
        # which parameter fixes it, not only which policy differs.
        self.get_logger().warning(
            f'a publisher on {self.params.points_topic} offers QoS incompatible with '
            f'input_reliability={self.params.input_reliability!r} (policy '
            f'{getattr(info, "last_policy_kind", "?")}); for a best-effort driver set '
            'input_reliability:=best_effort (and load config/' + DDS_PROFILE + ' in the driver '
            'for clouds over about 1 MB)', throttle_duration_sec=_THROTTLE_S)

    def _on_cloud(self, msg: Any) -> None:
        received_ns = time.monotonic_ns()
        with self._lock:
            self._counters.received += 1
        params = self.params
        try:
            scan = cloud_to_scan(msg, intensity_field=params.intensity_field,
                                 intensity_scale=params.intensity_scale)
        except (DataError, ValueError, TypeError, OverflowError) as err:
            self._drop('PointCloud2', err)
            return
        with self._wake:
            while len(self._queue) >= params.queue_size:
                self._queue.popleft()
                self._counters.dropped_stale += 1
            self._queue.append(_Job(msg.header, scan, received_ns))
            self._wake.notify()

    def _on_image(self, camera: _Camera, msg: Any) -> None:
        camera.images.add(stamp_ns(msg.header.stamp), msg)

    def _on_info(self, camera: _Camera, msg: Any) -> None:
        if camera.info is not None and _same_info(camera.info, msg):
            return
        try:
            camera.model = CameraModel.from_camera_info(msg)
            camera.info = msg
        except (RelkdError, ValueError) as err:
            self._drop('CameraInfo', err)

    def _on_tf_static(self, msg: Any) -> None:
        try:
            self._tf.add_message(msg, static=True)
        except (RelkdError, ValueError) as err:
            self._drop('TFMessage', err)

    # --- worker thread ------------------------------------------------------------------------

    def run_labeling(self) -> None:
        """Label queued scans until :meth:`stop` or until the ROS context shuts down.

        Call it from the main thread while an executor spins the node in another: torch's
        OpenMP pool runs several times slower when its parallel regions start from a thread
        other than the main one (measured: 340 ms instead of 55 ms per 34k-point scan with 2
        threads).
        """
        while True:
            with self._wake:
                while not self._queue and not self._stop:
                    if not self.context.ok():
                        return
                    self._wake.wait(timeout=0.1)
                if self._stop:
                    return
                job = self._queue.popleft()
            try:
                self._process(job)
            except DataError as err:
                self._drop('PointCloud2', err)
            except Exception as err:
                with self._lock:
                    self._counters.last_error = f'{type(err).__name__}: {err}'
                self.get_logger().error(f'labelling failed: {type(err).__name__}: {err}',
                                        throttle_duration_sec=_THROTTLE_S)

    def _process(self, job: _Job) -> None:
        embedding, colors = self._vocabulary
        result = self.labeler.label(job.scan.points, embedding=embedding)
        points = labeled_points(job.scan.points, result, colors)
        self._publish_cloud(job, points)
        latency_ms = (time.monotonic_ns() - job.received_ns) / 1e6
        with self._lock:
            self._counters.processed += 1
            self._counters.latencies_ms.append(latency_ms)
        if self.params.publish_legend and (self._legend_due
                                           or job.header.frame_id != self._legend_frame):
            self._legend_due = False
            self._legend_frame = job.header.frame_id
            self._legend_pub.publish(legend_markers(job.header, embedding.vocabulary.names,
                                                    colors))
        if self.params.publish_overlay:
            for camera in self._cameras:
                self._overlay(camera, job, result.labels, colors)

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
        image = match[1]
        frame = (camera.info.header.frame_id or image.header.frame_id).lstrip('/')
        try:
            T_cam_lidar = self._tf.lookup(frame, job.header.frame_id, t_ns)
            rgb = image_to_rgb(image)
            drawn = draw_overlay(rgb, job.scan.points[:, :3], labels, colors, T_cam_lidar,
                                 camera.model, radius_px=self.params.overlay_point_radius_px)
        except (CalibrationError, DataError) as err:
            with self._lock:
                self._counters.overlay_failures += 1
                self._counters.last_error = f'overlay {camera.image_topic}: {err}'
            self.get_logger().warning(f'no overlay for {camera.image_topic}: {err}',
                                      throttle_duration_sec=_THROTTLE_S)
            return
        camera.publisher.publish(image_message(image.header, drawn))
        with self._lock:
            self._counters.overlays += 1

    # --- diagnostics --------------------------------------------------------------------------

    def diagnostics(self) -> dict[str, str]:
        """The key/values /diagnostics reports (rates over the last period)."""
        now = time.monotonic()
        with self._lock:
            c = self._counters
            latencies = np.asarray(c.latencies_ms, dtype=np.float64)
            start, received, processed = self._window_start
            self._window_start = (now, c.received, c.processed)
            values = {
                'received': c.received, 'processed': c.processed,
                'dropped_stale': c.dropped_stale, 'dropped_malformed': c.dropped_malformed,
                'overlays_published': c.overlays, 'overlay_failures': c.overlay_failures,
                'queue_length': len(self._queue),
            }
            last_error = c.last_error
        elapsed = max(now - start, 1e-9)
        report = {key: str(value) for key, value in values.items()}
        report['input_rate_hz'] = f'{(values["received"] - received) / elapsed:.2f}'
        report['output_rate_hz'] = f'{(values["processed"] - processed) / elapsed:.2f}'
        for name, q in (('p50', 50), ('p95', 95), ('max', 100)):
            report[f'latency_ms_{name}'] = (f'{np.percentile(latencies, q):.1f}'
                                            if len(latencies) else 'nan')
        report['vocabulary'] = ', '.join(self._vocabulary[0].vocabulary.names)
        report['last_error'] = last_error
        return report

    def _publish_diagnostics(self) -> None:
        if self._diagnostics_pub is None:
            return
        report = self.diagnostics()
        status = DiagnosticStatus()
        status.name = f'{self.get_name()}: labeling'
        status.hardware_id = self.params.device
        dropped = int(report['dropped_malformed'])
        status.level = DiagnosticStatus.WARN if dropped else DiagnosticStatus.OK
        status.message = (f'{report["output_rate_hz"]} Hz, p95 {report["latency_ms_p95"]} ms, '
                          f'{dropped} malformed dropped')
        status.values = [KeyValue(key=key, value=value) for key, value in report.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        self._diagnostics_pub.publish(array)

    def stop(self) -> None:
        """Make :meth:`run_labeling` return (after the scan in hand, if any)."""
        with self._wake:
            self._stop = True
            self._wake.notify_all()

    def destroy_node(self) -> None:
        self.stop()
        super().destroy_node()


def _marker_array_type() -> Any:
    from visualization_msgs.msg import MarkerArray

    return MarkerArray


def _same_info(a: Any, b: Any) -> bool:
    return (a.width, a.height, a.distortion_model, a.header.frame_id) == (
        b.width, b.height, b.distortion_model, b.header.frame_id) and all(
        np.array_equal(np.asarray(getattr(a, k)), np.asarray(getattr(b, k)))
        for k in ('k', 'd', 'r', 'p'))


def use_shipped_dds_profile() -> str | None:
    """Point Fast DDS at the profile shipped in ``config/`` (larger shared-memory segments, so
    100k+-point clouds go through shared memory instead of fragmented UDP) unless the user
    already chose one. Returns the profile used, or None. Only affects this process."""
    if os.environ.get('FASTRTPS_DEFAULT_PROFILES_FILE') or os.environ.get(
            'FASTDDS_DEFAULT_PROFILES_FILE') or os.environ.get('RELKD_NO_DDS_PROFILE'):
        return None
    path = shipped_config(DDS_PROFILE)
    if path is None:
        return None
    # Fast DDS 2 (Humble, Jazzy) reads FASTRTPS_*; Fast DDS 3 (Kilted on) FASTDDS_*.
    old = os.environ.get('ROS_DISTRO', '') in ('humble', 'iron', 'jazzy')
    os.environ['FASTRTPS_DEFAULT_PROFILES_FILE' if old else 'FASTDDS_DEFAULT_PROFILES_FILE'] = str(
        path)
    return str(path)


def shipped_config(name: str) -> Path | None:
    """A file of ``config/``: from the source tree, the colcon share folder, or the pip data
    files under ``sys.prefix``."""
    candidates = [Path(__file__).resolve().parents[1] / 'config' / name]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory('relkd_ros')) / 'config' / name)
    except (ImportError, LookupError, ValueError, OSError):
        pass
    candidates.append(Path(sys.prefix) / 'share' / 'relkd_ros' / 'config' / name)
    return next((path for path in candidates if path.is_file()), None)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``segment_node`` / ``relkd-segment`` (ROS arguments: ``--ros-args ...``)."""
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    use_shipped_dds_profile()
    rclpy.init(args=args)
    node = None
    executor = SingleThreadedExecutor()
    try:
        node = SegmentNode()
        executor.add_node(node)
        # Callbacks (cheap: validate and queue) run on a background thread; the model runs
        # on the main thread (see SegmentNode.run_labeling).
        spinner = threading.Thread(target=_spin, args=(executor, node), name='relkd-executor',
                                   daemon=True)
        spinner.start()
        node.run_labeling()
    except RelkdError as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(f'cannot start: {err}')
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop()
        executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _spin(executor: Any, node: SegmentNode) -> None:
    from rclpy.executors import ExternalShutdownException

    try:
        executor.spin()
    except (ExternalShutdownException, KeyboardInterrupt):
        pass
    finally:
        node.stop()


if __name__ == '__main__':
    sys.exit(main())
