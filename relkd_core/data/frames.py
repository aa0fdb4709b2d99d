"""From a ROS 2 bag to frames: one lidar scan plus the camera images paired with it.

Reading happens in two passes. :class:`BagSource` first indexes the bag (header stamps of every
scan and image, read straight from the serialized bytes, the whole tf tree and each camera's
``CameraInfo``) and plans the pairing: each scan takes, per camera, the image nearest in header
stamp within the preset's tolerance. :meth:`BagSource.read` then reads only the messages a
group of planned frames needs, so any slice of a bag can be prepared on its own (shards,
workers, resumed runs).

A damaged bag never loses what is readable: an unreadable tail ends the index early (the
reason is kept in :attr:`BagSource.problems`), and a frame whose messages cannot be decoded is
dropped with its reason.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.data.bag import (
    bag_topics,
    deserialize,
    header_stamp_ns,
    open_bags,
    read_raw,
)
from relkd_core.data.image import image_to_array, to_rgb
from relkd_core.data.pointcloud import pointcloud_to_array
from relkd_core.data.preset import CameraPreset, TopicPreset
from relkd_core.data.scan import read_scan
from relkd_core.data.tf import TfBuffer
from relkd_core.errors import BagError, CalibrationError, DataError, RelkdError
from relkd_core.geometry.camera import CameraModel
from relkd_core.types import CameraFrame, Frame, LidarScan

__all__ = ['BagSource', 'CameraPlan', 'FrameResult', 'MessageRef', 'PlannedFrame',
           'UnreadableBagError']

log = logging.getLogger(__name__)


class UnreadableBagError(BagError):
    """A bag that cannot be opened at all (corrupt database, not a bag)."""


@dataclass(frozen=True)
class MessageRef:
    """Where a message sits in its bag: topic, record time (for seeking) and header stamp."""

    topic: str
    record_ns: int
    stamp_ns: int


@dataclass(frozen=True)
class CameraPlan:
    """The image (and ground-truth images) chosen for one camera of one scan."""

    camera: int
    image: MessageRef
    semantic: MessageRef | None = None
    instance: MessageRef | None = None

    def refs(self) -> list[MessageRef]:
        return [r for r in (self.image, self.semantic, self.instance) if r is not None]


@dataclass(frozen=True)
class PlannedFrame:
    """A scan of bag ``source`` (its ``index``-th) and the images planned for it."""

    source: int
    index: int
    scan: MessageRef
    cameras: tuple[CameraPlan, ...]

    def refs(self) -> list[MessageRef]:
        return [self.scan, *(r for c in self.cameras for r in c.refs())]


@dataclass(frozen=True)
class FrameResult:
    """What reading one planned frame gave: the frame, or why it was dropped; ``notes``
    lists per-camera problems (the frame is kept without those cameras)."""

    plan: PlannedFrame
    frame: Frame | None
    reason: str | None = None
    notes: tuple[str, ...] = ()
    nan_points: int = 0


@dataclass
class _Index:
    scans: list[MessageRef] = field(default_factory=list)
    images: dict[str, list[MessageRef]] = field(default_factory=dict)


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class BagSource:
    """One bag, indexed and calibrated against a topic preset.

    Raises :class:`BagError` when a topic of the preset is missing from the bag (naming the
    preset key and listing the bag's topics) or a camera has no ``CameraInfo``, and
    :class:`CalibrationError` when tf has no path between the lidar and a camera.
    The object pickles without its open reader, so it can be sent to worker processes.
    """

    def __init__(self, path: str | os.PathLike[str], preset: TopicPreset, source: int = 0
                 ) -> None:
        self.path = Path(path)
        self.preset = preset
        self.source = source
        self.problems: list[str] = []
        self.tf = TfBuffer()
        self.models: dict[str, CameraModel] = {}
        self.camera_frames: dict[str, str] = {}
        self.lidar_frame = ''
        self._reader: Any = None
        self._index = _Index()
        try:
            reader = self._open()
        except BagError as err:
            raise UnreadableBagError(str(err)) from err
        self.topics = self._resolve_topics(bag_topics(reader))
        self._build_index(reader)
        self._check_calibration()

    # -- pickling: workers reopen the bag themselves ------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state['_reader'] = None
        return state

    def _open(self) -> Any:
        if self._reader is None:
            self._reader = open_bags([self.path], self.preset.distro)
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- topics ------------------------------------------------------------------------
    def _resolve_topics(self, available: dict[str, str]) -> dict[str, str]:
        """Preset topic → bag topic. An image topic missing from the bag falls back to its
        image_transport sibling ``<topic>/compressed``; tf topics are optional."""
        resolved: dict[str, str] = {}
        optional = {self.preset.tf_topic, self.preset.tf_static_topic}
        for topic, key in self.preset.topics().items():
            if topic in available:
                resolved[topic] = topic
            elif key.endswith('.image_topic') and f'{topic}/compressed' in available:
                resolved[topic] = f'{topic}/compressed'
            elif topic not in optional:
                truncated_at = getattr(self._reader, 'truncated_at', None)
                if truncated_at is not None:  # the topic may well be in the part that is lost
                    raise UnreadableBagError(
                        f'bag {self.path} is damaged: its MCAP file ends without its footer '
                        f'(truncated at byte {truncated_at} of {self._reader.size_bytes}) and '
                        f'what is left has no message on {topic!r} (preset key {key})')
                listing = '\n  '.join(f'{t} ({m})' for t, m in sorted(available.items()))
                raise BagError(
                    f'bag {self.path} has no topic {topic!r} (preset {self.preset.name!r} key '
                    f'{key}); change that key to one of the bag\'s topics:\n  {listing}')
        return resolved

    def _camera_topics(self, camera: CameraPreset) -> dict[str, str]:
        """Role → bag topic for one camera."""
        roles = {'image': camera.image_topic, 'semantic': camera.semantic_topic,
                 'instance': camera.instance_topic}
        return {role: self.topics[t] for role, t in roles.items() if t}

    # -- index pass ----------------------------------------------------------------------
    def _build_index(self, reader: Any) -> None:
        preset = self.preset
        lidar_topic = self.topics[preset.lidar.topic]
        info_topics = {self.topics[c.info_topic]: c for c in preset.cameras}
        stamped = {lidar_topic}
        for camera in preset.cameras:
            stamped.update(self._camera_topics(camera).values())
        tf_topics = {t for t in (preset.tf_topic, preset.tf_static_topic) if t in self.topics}
        wanted = sorted(stamped | set(info_topics) | tf_topics)
        infos: dict[str, Any] = {}
        first_scan: tuple[bytes, str] | None = None
        count = 0
        try:
            for topic, record_ns, msgtype, raw in read_raw(reader, wanted):
                count += 1
                if topic in stamped:
                    ref = MessageRef(topic, record_ns, header_stamp_ns(reader, raw, msgtype))
                    if topic == lidar_topic:
                        self._index.scans.append(ref)
                        if first_scan is None:
                            first_scan = (bytes(raw), msgtype)
                    else:
                        self._index.images.setdefault(topic, []).append(ref)
                elif topic in info_topics:
                    name = info_topics[topic].name
                    if name not in infos:
                        infos[name] = deserialize(reader, raw, msgtype)
                else:
                    self.tf.add_message(deserialize(reader, raw, msgtype),
                                        static=topic == preset.tf_static_topic)
        except RelkdError:
            raise
        except Exception as err:  # a damaged bag: keep what was read before the damage
            self.problems.append(f'{self.path}: unreadable after {count} messages '
                                 f'({type(err).__name__}: {err})')
            log.warning('%s', self.problems[-1])
        truncated_at = getattr(reader, 'truncated_at', None)
        if truncated_at is not None:
            expected = getattr(reader, 'expected_counts', {}).get(lidar_topic)
            of = f' of {expected}' if expected is not None else ''
            self.problems.append(
                f'{self.path}: MCAP file ends without its footer (truncated at byte '
                f'{truncated_at} of {reader.size_bytes}); read {len(self._index.scans)}{of} '
                'scans written before the damage')
            log.warning('%s', self.problems[-1])
        for refs in self._index.images.values():
            refs.sort(key=lambda r: r.stamp_ns)
        if first_scan is None:
            return
        scan = deserialize(reader, *first_scan)
        self.lidar_frame = (preset.lidar.frame_id or scan.header.frame_id).lstrip('/')
        _check_fields(pointcloud_to_array(scan), preset)
        for camera in preset.cameras:
            info = infos.get(camera.name)
            if info is None:
                raise BagError(f'bag {self.path} has no CameraInfo on {camera.info_topic!r} '
                               f'for camera {camera.name!r}: intrinsics are needed to project '
                               'points (or remove the camera from the preset)')
            self.models[camera.name] = CameraModel.from_camera_info(info, camera.intrinsics)
            self.camera_frames[camera.name] = (camera.frame_id or info.header.frame_id
                                               ).lstrip('/')

    def _check_calibration(self) -> None:
        """Fail early when tf cannot link the lidar to a camera at all."""
        if not self._index.scans:
            return
        t_scan = self._index.scans[0].stamp_ns
        for camera in self.preset.cameras:
            images = self._index.images.get(self._camera_topics(camera)['image'], [])
            t_cam = images[0].stamp_ns if images else t_scan
            try:
                self._transform(camera.name, t_cam, t_scan)
            except CalibrationError as err:
                raise CalibrationError(
                    f'bag {self.path}: cannot place camera {camera.name!r} (frame '
                    f'{self.camera_frames[camera.name]!r}) relative to the lidar (frame '
                    f'{self.lidar_frame!r}): {err}') from err

    def _transform(self, camera: str, t_cam_ns: int, t_scan_ns: int) -> NDArray[np.float64]:
        fixed = self.preset.fixed_frame
        if fixed is None:
            return self.tf.lookup(self.camera_frames[camera], self.lidar_frame, t_cam_ns)
        return self.tf.lookup(self.camera_frames[camera], self.lidar_frame, t_cam_ns,
                              t_scan_ns, fixed=fixed)

    # -- planning ------------------------------------------------------------------------
    @property
    def num_scans(self) -> int:
        return len(self._index.scans)

    def plan(self) -> tuple[list[PlannedFrame], dict[str, int]]:
        """Pair every scan with the nearest image of each camera within ``max_dt_ns``.

        Returns the planned frames and, per camera, how many scans found no image within
        the tolerance.
        """
        unpaired = {c.name: 0 for c in self.preset.cameras}
        columns = []
        for i, camera in enumerate(self.preset.cameras):
            topics = self._camera_topics(camera)
            images = self._index.images.get(topics['image'], [])
            stamps = [r.stamp_ns for r in images]
            extras = {role: {r.stamp_ns: r for r in self._index.images.get(topic, [])}
                      for role, topic in topics.items() if role != 'image'}
            columns.append((i, camera.name, images, stamps, extras))
        frames = []
        for index, scan in enumerate(self._index.scans):
            plans = []
            for i, name, images, stamps, extras in columns:
                nearest = _nearest(stamps, scan.stamp_ns)
                if nearest is None or abs(stamps[nearest] - scan.stamp_ns) > \
                        self.preset.max_dt_ns:
                    unpaired[name] += 1
                    continue
                image = images[nearest]
                plans.append(CameraPlan(i, image, extras.get('semantic', {}).get(image.stamp_ns),
                                        extras.get('instance', {}).get(image.stamp_ns)))
            frames.append(PlannedFrame(self.source, index, scan, tuple(plans)))
        return frames, unpaired

    # -- reading -------------------------------------------------------------------------
    def read(self, frames: Sequence[PlannedFrame]) -> Iterator[FrameResult]:
        """Read planned frames of this bag (in any order), one :class:`FrameResult` each."""
        if not frames:
            return
        reader = self._open()
        refs = [r for f in frames for r in f.refs()]
        wanted = {(r.topic, r.record_ns, r.stamp_ns) for r in refs}
        topics = sorted({r.topic for r in refs})
        start = min(r.record_ns for r in refs)
        stop = max(r.record_ns for r in refs) + 1
        raw: dict[tuple[str, int, int], tuple[bytes, str]] = {}
        failure = None
        try:
            for topic, record_ns, msgtype, data in read_raw(reader, topics, start, stop):
                key = (topic, record_ns, header_stamp_ns(reader, data, msgtype))
                if key in wanted:
                    raw[key] = (bytes(data), msgtype)
        except Exception as err:  # damaged region: frames whose messages were read survive
            failure = f'unreadable bag region ({type(err).__name__}: {err})'
        for plan in frames:
            yield self._assemble(reader, plan, raw, failure)

    def _assemble(self, reader: Any, plan: PlannedFrame,
                  raw: dict[tuple[str, int, int], tuple[bytes, str]], failure: str | None
                  ) -> FrameResult:
        def message(ref: MessageRef) -> Any:
            key = (ref.topic, ref.record_ns, ref.stamp_ns)
            if key not in raw:
                raise DataError(failure or f'message on {ref.topic} at {ref.record_ns} ns '
                                'is missing from the bag')
            return deserialize(reader, *raw[key])

        try:
            scan, nan_points = self._scan(message(plan.scan), plan.scan.stamp_ns)
        except Exception as err:  # untrusted bytes: any decoding failure drops the frame
            return FrameResult(plan, None, f'unreadable scan: {_describe(err)}')
        if scan.num_points == 0:
            reason = 'only NaN points' if nan_points else 'empty cloud'
            return FrameResult(plan, None, reason, nan_points=nan_points)
        cameras, notes = [], []
        for camera_plan in plan.cameras:
            preset = self.preset.cameras[camera_plan.camera]
            try:
                cameras.append(self._camera(preset, camera_plan, message, scan.t_ns))
            except Exception as err:  # the frame keeps its other cameras
                notes.append(f'{preset.name}: {_describe(err)}')
        frame = Frame(scan=scan, cameras=tuple(cameras), source=plan.source, index=plan.index)
        return FrameResult(plan, frame, None, tuple(notes), nan_points)

    def _scan(self, msg: Any, t_ns: int) -> tuple[LidarScan, int]:
        """The valid points of a cloud (see ScanInput) and the number of non-finite ones."""
        lidar = self.preset.lidar
        # The preset's ScanInput drops non-finite points (nan_policy 'drop', what checkpoints
        # record); the range limits leave more points not valid, and only valid ones are kept.
        read = read_scan(msg, lidar.scan_input, allow_empty=True)
        _check_fields(read.fields, self.preset)
        keep = read.valid
        labels = None
        if lidar.label_field is not None:
            labels = read.fields[lidar.label_field][keep].astype(np.uint16)
        scan = LidarScan(points=np.ascontiguousarray(read.points[keep]), t_ns=t_ns,
                         frame_id=self.lidar_frame, labels=labels)
        return scan, read.nonfinite

    def _camera(self, preset: CameraPreset, plan: CameraPlan, message: Any, t_scan_ns: int
                ) -> CameraFrame:
        model = self.models[preset.name]
        rgb = to_rgb(message(plan.image))
        if rgb.shape[:2] != (model.height_px, model.width_px):
            raise DataError(f'image is {rgb.shape[1]}x{rgb.shape[0]} but its CameraInfo says '
                            f'{model.width_px}x{model.height_px}')
        semantic = instance = None
        if plan.semantic is not None:
            semantic = image_to_array(message(plan.semantic)).astype(np.uint16)
        if plan.instance is not None:
            instance = image_to_array(message(plan.instance)).astype(np.uint32)
        T = self._transform(preset.name, plan.image.stamp_ns, t_scan_ns)
        return CameraFrame(name=preset.name, t_ns=plan.image.stamp_ns, rgb=rgb, model=model,
                           T_cam_lidar=T, semantic=semantic, instance=instance)


def _check_fields(points: NDArray[np.void], preset: TopicPreset) -> None:
    names = points.dtype.names or ()
    lidar = preset.lidar
    for key, name in (('x', 'x'), ('y', 'y'), ('z', 'z'),
                      ('intensity_field', lidar.intensity_field),
                      ('label_field', lidar.label_field)):
        if name is not None and name not in names:
            where = f' (preset {preset.name!r} key lidar.{key})' if key.endswith('field') else ''
            raise BagError(f'the cloud on {lidar.topic} has no field {name!r}{where}; '
                           f'its fields are {list(names)}')


def _nearest(stamps: list[int], t_ns: int) -> int | None:
    if not stamps:
        return None
    i = bisect.bisect_left(stamps, t_ns)
    if i == 0:
        return 0
    if i == len(stamps):
        return len(stamps) - 1
    return i if stamps[i] - t_ns < t_ns - stamps[i - 1] else i - 1


def _describe(err: Exception) -> str:
    return str(err) if isinstance(err, RelkdError) else f'{type(err).__name__}: {err}'
