"""Topic presets: which topics of a bag play which role (lidar, cameras, tf, ground truth).

A preset is a YAML file; the shipped ones live in ``config/presets/`` and are named by their
file stem (``synth-nuscenes``, ``synth-kitti``, ``nuscenes``, ``kitti``). Users pass either a
name or a path to their own YAML with the same keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from relkd_core.config import bounded, load_config
from relkd_core.data.scan import ScanInput
from relkd_core.resources import find_named_config

__all__ = ['CameraPreset', 'LidarPreset', 'TopicPreset', 'load_preset']


@dataclass(frozen=True, kw_only=True)
class LidarPreset:
    """The lidar stream: ``PointCloud2`` on ``topic``.

    ``intensity_field`` names the field read as intensity and ``intensity_scale`` maps it
    into [0, 1] (e.g. 1/255 for nuScenes' 0–255 intensities). ``label_field`` names an optional
    per-point ground-truth label field (in the preset's ``taxonomy``). Points closer than
    ``min_range_m`` (the ego vehicle) or farther than ``max_range_m`` are dropped.
    """

    topic: str
    intensity_field: str = 'intensity'
    intensity_scale: float = bounded(1.0, min=0.0)
    label_field: str | None = None
    frame_id: str | None = None
    min_range_m: float = bounded(1.0, min=0.0)
    max_range_m: float = bounded(120.0, min=0.0)

    @property
    def scan_input(self) -> ScanInput:
        """How this preset's clouds are read (intensity and range settings)."""
        return ScanInput(intensity_field=self.intensity_field,
                         intensity_scale=self.intensity_scale, min_range_m=self.min_range_m,
                         max_range_m=self.max_range_m)


@dataclass(frozen=True, kw_only=True)
class CameraPreset:
    """One camera: an ``Image`` or ``CompressedImage`` topic and its ``CameraInfo`` topic.

    ``intrinsics='raw'`` projects with ``k`` and ``d`` (distorted images); ``'rectified'``
    with ``r`` and ``p`` (``image_rect*`` topics). ``frame_id`` overrides the optical frame
    named in the image header. ``semantic_topic``/``instance_topic`` carry per-pixel ground
    truth (synthetic bags).
    """

    name: str
    image_topic: str
    info_topic: str
    intrinsics: Literal['raw', 'rectified'] = 'raw'
    frame_id: str | None = None
    semantic_topic: str | None = None
    instance_topic: str | None = None


@dataclass(frozen=True, kw_only=True)
class TopicPreset:
    """The whole mapping, plus how scans and images are paired.

    Each scan is paired, per camera, with the image nearest in header stamp if it lies within
    ``max_dt_ns``. Ego motion between the two stamps is compensated through ``fixed_frame``
    (e.g. ``odom``/``map``/``world``); with ``fixed_frame: null`` the extrinsics are taken at
    the image stamp. Pairs need depth above ``min_depth_m``; with ``occlusion_filter`` points
    hidden from the camera behind nearer points of the same scan are not paired.
    ``taxonomy`` names the label space of ``lidar.label_field`` (a shipped taxonomy such as
    ``nuscenes16`` or ``semantickitti19``, or a taxonomy YAML path): evaluation, reports and
    default vocabularies follow it.
    """

    name: str
    distro: Literal['humble', 'jazzy', 'kilted'] = 'humble'
    lidar: LidarPreset
    cameras: tuple[CameraPreset, ...]
    tf_topic: str = '/tf'
    tf_static_topic: str = '/tf_static'
    fixed_frame: str | None = 'odom'
    max_dt_ns: int = bounded(60_000_000, min=0)
    min_depth_m: float = bounded(1.0, min=0.0)
    occlusion_filter: bool = True
    taxonomy: str = 'nuscenes16'

    def validate(self) -> None:
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f'camera names must be unique, got {names}')
        if self.lidar.max_range_m <= self.lidar.min_range_m:
            raise ValueError('lidar.max_range_m must exceed lidar.min_range_m')

    def topics(self) -> dict[str, str]:
        """Every topic the preset reads, mapped to the dotted key that names it."""
        out = {self.lidar.topic: 'lidar.topic', self.tf_topic: 'tf_topic',
               self.tf_static_topic: 'tf_static_topic'}
        for i, cam in enumerate(self.cameras):
            out[cam.image_topic] = f'cameras[{i}].image_topic'
            out[cam.info_topic] = f'cameras[{i}].info_topic'
            if cam.semantic_topic:
                out[cam.semantic_topic] = f'cameras[{i}].semantic_topic'
            if cam.instance_topic:
                out[cam.instance_topic] = f'cameras[{i}].instance_topic'
        return out


def load_preset(name_or_path: str | os.PathLike[str], overrides: tuple[str, ...] = ()
                ) -> TopicPreset:
    """Load a shipped preset by name or a user preset YAML; see :class:`TopicPreset`."""
    return load_config(TopicPreset, find_named_config('presets', name_or_path), overrides)
