"""Test helpers that derive damaged or differently laid out bags from a synthetic bag."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rosbags.convert import convert
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from relkd_core.data.bag import BagWriter, open_bags, read_messages

Rewrite = Callable[[str, int, Any], Any]


def rewrite_bag(src: Path, dst: Path, *, storage: str = 'mcap',
                rename: dict[str, str] | None = None, drop: tuple[str, ...] = (),
                edit: Rewrite | None = None) -> Path:
    """Copy ``src`` to ``dst`` dropping topics (prefix match), renaming topics, and passing
    each message through ``edit(topic, t_ns, msg)`` (return None to drop it)."""
    rename = rename or {}
    with open_bags([src]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        messages = list(read_messages(reader))
    with BagWriter(dst, storage=storage) as writer:  # type: ignore[arg-type]
        for topic, msgtype in types.items():
            if not topic.startswith(drop) or not drop:
                writer.add_topic(rename.get(topic, topic), msgtype,
                                 latched=topic == '/tf_static')
        for topic, t_ns, msg in messages:
            if drop and topic.startswith(drop):
                continue
            if edit is not None:
                msg = edit(topic, t_ns, msg)
                if msg is None:
                    continue
            writer.write(rename.get(topic, topic), t_ns, msg)
    return dst


def _to_ros1(msg: Any, store: Any) -> Any:
    """The ROS 1 message with the same content (Header gains seq, CameraInfo's k -> K ...,
    frame ids gain ROS 1's leading slash)."""
    cls = store.types[msg.__msgtype__]
    values = {}
    for f in dataclasses.fields(cls):
        if f.name == '__msgtype__':
            continue
        if f.name == 'seq':
            values[f.name] = 0
            continue
        value = getattr(msg, f.name if hasattr(msg, f.name) else f.name.lower())
        if f.name in ('frame_id', 'child_frame_id') and value:
            value = '/' + value
        elif dataclasses.is_dataclass(value):
            value = _to_ros1(value, store)
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            value = [_to_ros1(v, store) for v in value]
        values[f.name] = value
    return cls(**values)


def write_ros1_bag(src: Path, dst: Path) -> Path:
    """The content of a ROS 2 bag as a ROS 1 ``.bag`` (as kitti2bag or nuscenes2bag write)."""
    store = get_typestore(Stores.ROS1_NOETIC)
    store.register(get_types_from_msg('geometry_msgs/TransformStamped[] transforms',
                                      'tf2_msgs/msg/TFMessage'))
    with open_bags([src]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        messages = list(read_messages(reader))
    with Ros1Writer(dst) as writer:
        connections = {t: writer.add_connection(t, m, typestore=store) for t, m in types.items()}
        for topic, t_ns, msg in messages:
            ros1 = _to_ros1(msg, store)
            writer.write(connections[topic], t_ns,
                         store.serialize_ros1(ros1, types[topic]))
    return dst


def convert_ros1_bag(src: Path, dst: Path) -> Path:
    """``rosbags-convert`` of a ROS 1 bag into a ROS 2 MCAP bag."""
    convert([src], dst, 'mcap', 8, None, 'file', None, None, [], [], [], [])
    return dst
