"""The public datasets the paper uses, read in their own layouts and written as ROS 2 bags.

- :mod:`relkd_core.datasets.nuscenes`: nuScenes (+ nuScenes-lidarseg), read from its JSON
  tables directly (``nuscenes-devkit`` pins ``numpy<2``; see the README).
- :mod:`relkd_core.datasets.semantickitti`: SemanticKITTI / KITTI odometry sequences.
- :mod:`relkd_core.datasets.scene`: what both readers produce (a :class:`Scene`) and
  :func:`write_scene_bag`, which writes one as a bag in the layout of its topic preset.
"""

from relkd_core.datasets.scene import (
    CameraStream,
    DatasetError,
    ImageReading,
    LidarReading,
    Scene,
    SceneBagSummary,
    write_scene_bag,
)

__all__ = ['CameraStream', 'DatasetError', 'ImageReading', 'LidarReading', 'Scene',
           'SceneBagSummary', 'write_scene_bag']
