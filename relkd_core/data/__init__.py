"""Data: ROS 2 bag I/O (:mod:`relkd_core.data.bag`; the only ``rosbags`` import lives in its
``_rosbags`` module), message ↔ numpy conversion, tf resolution."""
