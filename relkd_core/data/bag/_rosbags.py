"""The one module of relkd_core that imports ``rosbags``: the rest of :mod:`relkd_core.data.bag`
takes the rosbags names it needs from here, and :func:`typestore` gives the message types of a
ROS 2 distro (Humble by default, whose message layouts Jazzy and Kilted share for every type
used here).
"""

from __future__ import annotations

from typing import Literal

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag2,
    Nodetype,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from relkd_core.errors import BagError

__all__ = ['LATCHED_QOS', 'AnyReader', 'AnyReaderError', 'Connection', 'ConnectionExtRosbag2',
           'Nodetype', 'Qos', 'Storage', 'StoragePlugin', 'Typestore', 'Writer', 'typestore']

#: ``/tf_static`` must be offered transient-local so that late subscribers (RViz, tf2
#: listeners) still receive it when the bag is played back.
LATCHED_QOS = Qos(
    history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
    durability=QosDurability.TRANSIENT_LOCAL, deadline=QosTime(0, 0), lifespan=QosTime(0, 0),
    liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=QosTime(0, 0),
    avoid_ros_namespace_conventions=False,
)

#: The storages of a ROS 2 bag that relkd reads and writes.
Storage = Literal['mcap', 'sqlite3']

_STORES = {
    'humble': Stores.ROS2_HUMBLE,
    'jazzy': Stores.ROS2_JAZZY,
    'kilted': Stores.ROS2_KILTED,
}



def typestore(distro: str = 'humble') -> Typestore:
    """The rosbags typestore of a ROS 2 distro (``humble``, ``jazzy`` or ``kilted``)."""
    try:
        return get_typestore(_STORES[distro])
    except KeyError:
        raise BagError(
            f'unknown ROS 2 distro {distro!r}; expected one of {sorted(_STORES)}') from None

