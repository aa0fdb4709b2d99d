"""ROS 2 bag I/O through ``rosbags``, one module per concept: :mod:`._rosbags` (the only import
of rosbags in relkd_core, and the typestore of a distro), :mod:`.messages` (messages built from
NumPy arrays), :mod:`.writer` (atomic bag writing), :mod:`.reader` (reading, topics, raw
messages) and :mod:`.salvage` (an MCAP file cut short). Every public name is importable from
here as before.
"""

from relkd_core.data.bag._rosbags import Storage, typestore
from relkd_core.data.bag.messages import MessageFactory
from relkd_core.data.bag.reader import (
    bag_storage,
    bag_topics,
    deserialize,
    header_stamp_ns,
    open_bags,
    raw_messages,
    read_messages,
    read_raw,
)
from relkd_core.data.bag.salvage import SalvagedMcap
from relkd_core.data.bag.writer import LATCHED_QOS, BagWriter

__all__ = ['LATCHED_QOS', 'BagWriter', 'MessageFactory', 'SalvagedMcap', 'Storage',
           'bag_storage', 'bag_topics', 'deserialize', 'header_stamp_ns', 'open_bags',
           'raw_messages', 'read_messages', 'read_raw', 'typestore']
