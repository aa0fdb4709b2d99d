"""relkd_ros: the thin ROS 2 shell over relkd_core (nodes, message conversion, parameters).

Only this package imports rclpy; the algorithms live in :mod:`relkd_core`.
"""
