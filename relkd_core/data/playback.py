"""What ``relkd-play`` publishes from a bag, without ROS: the topics to play (type, message
count, whether latched) and the raw messages in record order."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from relkd_core.data.bag import bag_topics, open_bags, raw_messages
from relkd_core.errors import BagError

__all__ = ['PlayedTopic', 'bag_playlist', 'played_topics', 'recorded_messages']


@dataclass(frozen=True)
class PlayedTopic:
    """A topic being published: its type, message count in the bag and whether it is latched."""

    msgtype: str
    count: int
    latched: bool


def played_topics(reader: Any, wanted: Sequence[str]) -> dict[str, PlayedTopic]:
    """The topics of an opened bag to publish (``wanted``, or all when empty)."""
    topics = bag_topics(reader)
    missing = sorted(set(wanted) - set(topics))
    if missing:
        raise BagError(f'topic(s) {missing} are not in the bag; its topics: '
                       f'{", ".join(sorted(topics))}')
    played: dict[str, PlayedTopic] = {}
    for connection in reader.connections:
        if wanted and connection.topic not in wanted:
            continue
        offered = getattr(getattr(connection, 'ext', None), 'offered_qos_profiles', None) or []
        latched = connection.topic == '/tf_static' or any(
            getattr(q.durability, 'name', '') == 'TRANSIENT_LOCAL' for q in offered)
        known = played.get(connection.topic)
        count = int(getattr(connection, 'msgcount', 0) or 0) + (known.count if known else 0)
        played[connection.topic] = PlayedTopic(connection.msgtype, count,
                                               latched or bool(known and known.latched))
    return played


def bag_playlist(bag: str | os.PathLike[str], wanted: Sequence[str] = ()
                 ) -> dict[str, PlayedTopic]:
    """The topics of ``bag`` to publish (``wanted``, or all when empty); BagError for a ROS 1
    bag or a wanted topic the bag lacks."""
    with open_bags([bag]) as reader:
        if not getattr(reader, 'is2', True):
            raise BagError(f'{bag} is a ROS 1 bag; convert it first '
                           '(rosbags-convert --src BAG --dst FOLDER)')
        return played_topics(reader, wanted)


def recorded_messages(bag: str | os.PathLike[str]) -> Iterator[tuple[str, int, bytes]]:
    """``(topic, record_time_ns, raw CDR bytes)`` of every message of ``bag``, in record
    order."""
    with open_bags([bag]) as reader:
        for connection, t_ns, raw in raw_messages(reader):
            yield connection.topic, t_ns, bytes(raw)
