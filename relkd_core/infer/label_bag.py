"""Label a recorded bag offline: what ``segment_node`` would publish, written into a copy.

:func:`label_bag` copies every message of a ROS 2 bag unchanged (raw bytes, record times,
connection types, definitions and offered QoS, types unknown to the typestore included) into a
new bag, and adds for each lidar scan the labeled cloud the node would publish for it (same
header, same point layout, same labels) plus the legend, written once per lidar frame. Record
times of the added messages are those of their scan. The new bag appears atomically: built
beside the destination and renamed into place only when complete.

A scan the node would drop (malformed cloud, too many points) gets no labeled cloud; it is
counted in the report and logged, and the copy goes on. A damaged input (an MCAP file cut
short, a message that cannot be read) is copied up to the damage, and the report says how far
(``damage``: read K of N messages). When not a single scan could be labelled nothing is
written at all.
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

from relkd_core.atomic import make_staging_dir
from relkd_core.data.bag import (
    BagWriter,
    MessageFactory,
    Storage,
    bag_storage,
    bag_topics,
    open_bags,
    raw_messages,
)
from relkd_core.data.scan import ScanInput, stamp_ns
from relkd_core.errors import BagError, DataError, RelkdError
from relkd_core.infer.labeler import Labeler
from relkd_core.infer.legend import LEGEND_NAMESPACE, legend_entries
from relkd_core.infer.pipeline import LabelingCore, ReadSettings
from relkd_core.infer.topics import LABELED_TOPIC, LEGEND_TOPIC
from relkd_core.outputs import claim_output, replace_output

__all__ = ['LABELED_BAG_KIND', 'LabelBagReport', 'claim_label_output', 'label_bag',
           'legend_message', 'lidar_topic_of']

_LOG = logging.getLogger(__name__)
POINTCLOUD2 = 'sensor_msgs/msg/PointCloud2'
MARKER_ARRAY = 'visualization_msgs/msg/MarkerArray'
#: The output kind of a labelled bag (see relkd_core.outputs).
LABELED_BAG_KIND = 'labeled-bag'


@dataclass
class LabelBagReport:
    """What :func:`label_bag` wrote: ``copied`` input messages, ``scans`` read on the lidar
    topic and ``labeled`` of them (the rest ``dropped``, counted by reason), ``points``
    labelled in all, ``legends`` written, and the wall time. ``damage`` describes a damaged
    input (None: read to its end); ``expected`` is the input's message count where known."""

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
    damage: str | None = None
    expected: int | None = None


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


def claim_label_output(src: Path, dst: Path, overwrite: bool,
                       other_inputs: tuple[Path, ...] = ()) -> None:
    """Raise OutputError unless ``dst`` may receive the labelled copy of bag ``src`` (see
    :func:`relkd_core.outputs.claim_output`): new, or a labelled bag and ``overwrite``; never
    the input, inside it or around it."""
    claim_output(dst, kind=LABELED_BAG_KIND, overwrite=overwrite,
                 inputs=(src, *other_inputs))


def label_bag(src: str | os.PathLike[str], dst: str | os.PathLike[str], labeler: Labeler, *,
              lidar_topic: str | None = None, settings: ReadSettings | None = None,
              labeled_topic: str = LABELED_TOPIC,
              legend_topic: str = LEGEND_TOPIC, storage: Storage | None = None,
              distro: str = 'humble', overwrite: bool = False,
              on_start: Callable[[int], None] | None = None,
              progress: Callable[[int], None] | None = None) -> LabelBagReport:
    """Write ``dst``: the ROS 2 bag ``src`` plus the node's outputs for each scan.

    ``lidar_topic``: the PointCloud2 topic to label (None: the bag's only one); its clouds are
    read and labelled by the node's per-scan core (:class:`~relkd_core.infer.pipeline.
    LabelingCore`) with ``labeler`` and ``settings`` (None: the ScanInput the checkpoint
    records, else the default one, and the labeler's limits). Outputs go on ``labeled_topic`` and
    ``legend_topic`` (relative names get a leading ``/``, as in the node's root namespace); the
    legend is offered transient-local.
    ``storage``: 'mcap' or 'sqlite3' (None: the input's, else MCAP); ``distro`` picks the
    typestore of the new messages. With ``overwrite`` an existing labelled bag ``dst`` is
    replaced, only once the new bag is complete; nothing else is ever replaced.
    ``on_start(total_messages)`` and ``progress(messages)`` report progress.

    Raises OutputError for an unusable destination; BagError for an unreadable, ROS 1 or
    already labelled bag, a missing or non-cloud lidar topic, or a bag none of whose scans
    could be labelled (then nothing is written).
    """
    started = time.perf_counter()
    src, dst = Path(src), Path(dst)
    labeled_topic, legend_topic = _bag_topic(labeled_topic), _bag_topic(legend_topic)
    claim_label_output(src, dst, overwrite)
    # One vocabulary version (never swapped here) labels every scan.
    core = LabelingCore(labeler, settings or ReadSettings(
        labeler.checkpoint.scan_input or ScanInput(), labeler.limits))
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
        report.expected = _expected_messages(reader)
        if on_start is not None:
            on_start(report.expected or 0)
        if not os.path.lexists(dst):
            _write(reader, dst, report, core, distro, progress)
        else:
            # The new bag is built under a hidden folder beside dst, keeping its final name
            # (rosbags names the storage file after the bag folder), and swapped in when done.
            holder = make_staging_dir(dst)
            try:
                _write(reader, holder / dst.name, report, core, distro, progress)
                replace_output(holder / dst.name, dst)
            finally:
                shutil.rmtree(holder, ignore_errors=True)
    report.seconds = time.perf_counter() - started
    return report


def _expected_messages(reader: Any) -> int | None:
    """Messages the input should hold: its index (rosbags) or, for an MCAP salvaged without
    its summary, the counts of its metadata.yaml (None: unknown)."""
    expected = getattr(reader, 'expected_counts', None)
    if expected is not None:
        return sum(expected.values()) if expected else None
    count = getattr(reader, 'message_count', None)
    return int(count) if count else None


def _read_damage(reader: Any, report: LabelBagReport, error: Exception | None) -> str | None:
    """What stopped the copy early, as 'read K of N messages ...'; None for a whole bag."""
    of = f' of {report.expected}' if report.expected is not None else ''
    truncated_at = getattr(reader, 'truncated_at', None)
    if error is not None:
        return (f'unreadable after {report.copied}{of} messages '
                f'({type(error).__name__}: {error})')
    if truncated_at is not None:
        return (f'the MCAP file ends without its footer (truncated at byte {truncated_at} of '
                f'{reader.size_bytes}); read {report.copied}{of} messages written before the '
                'damage')
    if report.expected is not None and report.copied < report.expected:
        return f'read {report.copied} of {report.expected} messages'
    return None


def _deserialize(reader: Any, raw: bytes, msgtype: str) -> Any:
    """The message of ``raw`` bytes; DataError when they do not decode as ``msgtype``."""
    try:
        return reader.deserialize(raw, msgtype)
    except (ValueError, TypeError, OverflowError, IndexError) as err:
        raise DataError(f'undecodable {msgtype} ({type(err).__name__}: {err})') from err


def _write(reader: Any, path: Path, report: LabelBagReport, core: LabelingCore, distro: str,
           progress: Callable[[int], None] | None) -> None:
    """The copy plus the labeled clouds and legends, into a new bag at ``path``."""
    with BagWriter(path, storage=report.storage, distro=distro,
                   kind=LABELED_BAG_KIND) as writer:
        store = getattr(reader, 'typestore', None)
        copies = {id(c): writer.add_connection_from(c, store) for c in reader.connections}
        writer.add_topic(report.labeled_topic, POINTCLOUD2)
        writer.add_topic(report.legend_topic, MARKER_ARRAY, latched=True)
        legend_frame: str | None = None
        messages = raw_messages(reader)
        while True:
            try:
                connection, t_ns, raw = next(messages)
            except StopIteration:
                break
            except RelkdError:
                raise
            except Exception as err:  # a damaged bag: keep what was read before the damage
                report.damage = _read_damage(reader, report, err)
                break
            writer.write_raw(copies[id(connection)], t_ns, raw)
            report.copied += 1
            if progress is not None:
                progress(1)
            if connection.topic != report.lidar_topic:
                continue
            report.scans += 1
            try:
                message = _deserialize(reader, raw, connection.msgtype)
                scan = core.read(message)
                labeled = core.label(scan)
            except DataError as err:
                reason = f'{type(err).__name__}: {err}'
                report.dropped[reason] = report.dropped.get(reason, 0) + 1
                _LOG.warning('scan at record time %d dropped: %s', t_ns, reason)
                continue
            scan_ns, frame_id = stamp_ns(message.header.stamp), str(message.header.frame_id)
            points = labeled.points
            writer.write(report.labeled_topic, t_ns, writer.factory.point_cloud(
                points, scan_ns, frame_id, height=scan.height, is_dense=False))
            report.labeled += 1
            report.points += len(points)
            if frame_id != legend_frame:
                legend_frame = frame_id
                writer.write(report.legend_topic, t_ns, legend_message(
                    writer.factory, labeled.vocabulary.names, labeled.vocabulary.colors, scan_ns,
                    frame_id))
                report.legends += 1
        if report.damage is None:
            report.damage = _read_damage(reader, report, None)
        if report.damage is not None:
            _LOG.warning('the input bag is damaged: %s', report.damage)
        if not report.labeled:  # raising inside the writer discards the bag
            reasons = '; '.join(f'{n} × {reason}' for reason, n in sorted(report.dropped.items()))
            damage = f'; the input is damaged: {report.damage}' if report.damage else ''
            raise BagError(f'no scan of {report.lidar_topic} could be labelled ({report.scans} '
                           f'read{": " + reasons if reasons else ""}){damage}; nothing written')
