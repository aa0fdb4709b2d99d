"""Label a recorded bag offline: what ``segment_node`` would publish, written into a copy.

:func:`label_bag` copies every message of a ROS 2 bag unchanged (raw bytes, record times,
connection types, definitions and offered QoS, types unknown to the typestore included) into a
new bag, and adds for each lidar scan the labeled cloud the node would publish for it (same
header, same point layout, same labels) plus the legend, written once per lidar frame. Record
times of the added messages are those of their scan. The new bag appears atomically: built
beside the destination and renamed into place only when complete.

A scan the node would drop (malformed cloud, too many points) gets no labeled cloud; it is
counted in the report and logged, and the copy goes on.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.data.bag import (
    BagWriter,
    MessageFactory,
    Storage,
    bag_storage,
    bag_topics,
    open_bags,
    raw_messages,
)
from relkd_core.data.scan import cloud_to_scan, stamp_ns
from relkd_core.errors import BagError, DataError
from relkd_core.infer.labeled import LABELED_TOPIC, labeled_points
from relkd_core.infer.labeler import Labeler
from relkd_core.infer.legend import LEGEND_NAMESPACE, LEGEND_TOPIC, legend_entries
from relkd_core.infer.palette import entry_colors

__all__ = ['LabelBagReport', 'label_bag', 'legend_message', 'lidar_topic_of']

_LOG = logging.getLogger(__name__)
POINTCLOUD2 = 'sensor_msgs/msg/PointCloud2'
MARKER_ARRAY = 'visualization_msgs/msg/MarkerArray'


@dataclass
class LabelBagReport:
    """What :func:`label_bag` wrote: ``copied`` input messages, ``scans`` read on the lidar
    topic and ``labeled`` of them (the rest ``dropped``, counted by reason), ``points``
    labelled in all, ``legends`` written, and the wall time."""

    path: str
    storage: Storage
    lidar_topic: str
    labeled_topic: str
    legend_topic: str
    copied: int = 0
    scans: int = 0
    labeled: int = 0
    points: int = 0
    legends: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def lidar_topic_of(topics: dict[str, str], requested: str | None) -> str:
    """The lidar topic to label among a bag's ``topics`` (name → type): ``requested``, or the
    only PointCloud2 topic when None. Raises BagError listing the topics otherwise."""
    clouds = sorted(t for t, msgtype in topics.items() if msgtype == POINTCLOUD2)
    listing = ', '.join(f'{t} ({msgtype})' for t, msgtype in sorted(topics.items()))
    if requested is None:
        if len(clouds) == 1:
            return clouds[0]
        raise BagError(f'the bag has {len(clouds)} PointCloud2 topics ({", ".join(clouds)}); '
                       f'name the lidar topic. Topics: {listing}')
    if requested not in topics:
        raise BagError(f'lidar topic {requested} is not in the bag; its topics: {listing}')
    if topics[requested] != POINTCLOUD2:
        raise BagError(f'lidar topic {requested} carries {topics[requested]}, not {POINTCLOUD2}; '
                       f'PointCloud2 topics: {", ".join(clouds) or "none"}')
    return requested


def legend_message(factory: MessageFactory, names: tuple[str, ...], colors: NDArray[np.uint8],
                   t_ns: int, frame_id: str) -> Any:
    """The legend ``visualization_msgs/MarkerArray`` (rosbags message) that the node publishes
    for vocabulary ``names`` and their colours, stamped ``t_ns`` in ``frame_id``."""
    marker_type: Any = factory.types['visualization_msgs/msg/Marker']

    def marker(**values: Any) -> Any:
        return factory.message('visualization_msgs/msg/Marker',
                               header=factory.header(t_ns, frame_id), ns=LEGEND_NAMESPACE,
                               **values)

    markers = [marker(action=marker_type.DELETEALL)]
    for entry in legend_entries(names, colors):
        red, green, blue, alpha = entry.rgba
        markers.append(marker(
            id=entry.marker_id, type=marker_type.TEXT_VIEW_FACING, action=marker_type.ADD,
            pose=factory.message(
                'geometry_msgs/msg/Pose',
                position=factory.message('geometry_msgs/msg/Point', z=entry.z_m),
                orientation=factory.message('geometry_msgs/msg/Quaternion', w=1.0)),
            scale=factory.message('geometry_msgs/msg/Vector3', z=entry.text_height_m),
            color=factory.message('std_msgs/msg/ColorRGBA', r=red, g=green, b=blue, a=alpha),
            text=entry.text))
    return factory.message(MARKER_ARRAY, markers=markers)


def _bag_topic(name: str) -> str:
    return name if name.startswith('/') else f'/{name}'


def _check_destination(src: Path, dst: Path, overwrite: bool) -> None:
    source, target = src.resolve(), dst.resolve()
    if target == source or target in source.parents:
        raise BagError(f'the output {dst} would replace the input bag {src}; choose another path')
    if dst.exists() and not overwrite:
        raise BagError(f'{dst} already exists; choose a new path or allow overwriting')


def label_bag(src: str | os.PathLike[str], dst: str | os.PathLike[str], labeler: Labeler, *,
              lidar_topic: str | None = None, intensity_field: str = 'intensity',
              intensity_scale: float = 1.0, labeled_topic: str = LABELED_TOPIC,
              legend_topic: str = LEGEND_TOPIC, storage: Storage | None = None,
              distro: str = 'humble', overwrite: bool = False,
              on_start: Callable[[int], None] | None = None,
              progress: Callable[[int], None] | None = None) -> LabelBagReport:
    """Write ``dst``: the ROS 2 bag ``src`` plus the node's outputs for each scan.

    ``lidar_topic``: the PointCloud2 topic to label (None: the bag's only one); its clouds are
    read as the node reads them (``intensity_field`` × ``intensity_scale``) and labelled by
    ``labeler``. Outputs go on ``labeled_topic`` and ``legend_topic`` (relative names get a
    leading ``/``, as in the node's root namespace); the legend is offered transient-local.
    ``storage``: 'mcap' or 'sqlite3' (None: the input's, else MCAP); ``distro`` picks the
    typestore of the new messages. With ``overwrite`` an existing ``dst`` is replaced, only
    once the new bag is complete. ``on_start(total_messages)`` and ``progress(messages)``
    report progress.

    Raises BagError for an unreadable, ROS 1 or already labelled bag, a missing or non-cloud
    lidar topic, or an unusable destination.
    """
    started = time.perf_counter()
    src, dst = Path(src), Path(dst)
    labeled_topic, legend_topic = _bag_topic(labeled_topic), _bag_topic(legend_topic)
    _check_destination(src, dst, overwrite)
    with open_bags([src], distro) as reader:
        if not getattr(reader, 'is2', True):
            raise BagError(f'{src} is a ROS 1 bag; convert it first '
                           '(rosbags-convert --src BAG --dst FOLDER)')
        topics = bag_topics(reader)
        lidar = lidar_topic_of(topics, lidar_topic)
        taken = sorted({labeled_topic, legend_topic} & set(topics))
        if taken:
            raise BagError(f'{src} already has topic(s) {taken} (labelled before?); choose '
                           'other output topics')
        if labeled_topic == legend_topic:
            raise BagError(f'the labeled cloud and the legend need two topics, got '
                           f'{labeled_topic} for both')
        out_storage: Storage = storage or bag_storage(src) or 'mcap'
        report = LabelBagReport(str(dst), out_storage, lidar, labeled_topic, legend_topic)
        if on_start is not None:
            on_start(int(getattr(reader, 'message_count', 0) or 0))
        if not dst.exists():
            _write(reader, dst, report, labeler, intensity_field, intensity_scale, distro,
                   progress)
        else:
            # The new bag is built under a hidden folder beside dst, keeping its final name
            # (rosbags names the storage file after the bag folder), and swapped in when done.
            holder = dst.with_name(f'.{dst.name}.{os.getpid()}.new')
            holder.mkdir()
            try:
                _write(reader, holder / dst.name, report, labeler, intensity_field,
                       intensity_scale, distro, progress)
                if dst.is_dir():
                    shutil.rmtree(dst)
                else:
                    dst.unlink()
                os.rename(holder / dst.name, dst)
            finally:
                shutil.rmtree(holder, ignore_errors=True)
    report.seconds = time.perf_counter() - started
    return report


def _write(reader: Any, path: Path, report: LabelBagReport, labeler: Labeler,
           intensity_field: str, intensity_scale: float, distro: str,
           progress: Callable[[int], None] | None) -> None:
    """The copy plus the labeled clouds and legends, into a new bag at ``path``."""
    with BagWriter(path, storage=report.storage, distro=distro) as writer:
        store = getattr(reader, 'typestore', None)
        copies = {id(c): writer.add_connection_from(c, store) for c in reader.connections}
        writer.add_topic(report.labeled_topic, POINTCLOUD2)
        writer.add_topic(report.legend_topic, MARKER_ARRAY, latched=True)
        vocabulary = labeler.vocabulary
        colors = entry_colors(vocabulary)
        legend_frame: str | None = None
        for connection, t_ns, raw in raw_messages(reader):
            writer.write_raw(copies[id(connection)], t_ns, raw)
            report.copied += 1
            if progress is not None:
                progress(1)
            if connection.topic != report.lidar_topic:
                continue
            report.scans += 1
            try:
                message: Any = reader.deserialize(raw, connection.msgtype)
                scan = cloud_to_scan(message, intensity_field=intensity_field,
                                     intensity_scale=intensity_scale)
                result = labeler.label(scan.points)
            except (DataError, ValueError, TypeError, OverflowError) as err:
                reason = f'{type(err).__name__}: {err}'
                report.dropped[reason] = report.dropped.get(reason, 0) + 1
                _LOG.warning('scan at record time %d dropped: %s', t_ns, reason)
                continue
            scan_ns, frame_id = stamp_ns(message.header.stamp), str(message.header.frame_id)
            points = labeled_points(scan.points, result, colors)
            writer.write(report.labeled_topic, t_ns, writer.factory.point_cloud(
                points, scan_ns, frame_id, height=scan.height, is_dense=False))
            report.labeled += 1
            report.points += len(points)
            if frame_id != legend_frame:
                legend_frame = frame_id
                writer.write(report.legend_topic, t_ns, legend_message(
                    writer.factory, vocabulary.names, colors, scan_ns, frame_id))
                report.legends += 1
