"""relkd_core: image-to-lidar relational distillation, without any ROS import.

Sub-packages each own one concept: ``geometry`` (SE(3), projection), ``sim`` (the synthetic
driving world), ``data`` (bags and prepared datasets), and later ``teachers``, ``models``,
``losses``, ``train``, ``eval`` and ``infer``. ``cli`` holds the command-line entry points.
"""

__version__ = '0.1.0'
