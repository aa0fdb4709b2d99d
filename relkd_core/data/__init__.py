"""Data: ROS 2 bag I/O (the only ``rosbags`` import lives in :mod:`relkd_core.data.bag`),
message ↔ numpy conversion, tf resolution."""
