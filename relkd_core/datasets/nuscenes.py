"""nuScenes (+ nuScenes-lidarseg) read from its JSON tables, one :class:`Scene` per scene.

Layout (``<dataroot>``)::

    <version>/scene.json sample.json sample_data.json calibrated_sensor.json ego_pose.json
              sensor.json [lidarseg.json]
    samples/<CHANNEL>/*   keyframes         sweeps/<CHANNEL>/*   the other readings
    lidarseg/<version>/<sample_data token>_lidarseg.bin   (uint8 per keyframe lidar point)

Every ``sample_data`` row is one reading with its own ego pose (``ego_pose``, global frame)
and its sensor's mount in the ego frame (``calibrated_sensor``; quaternions [w, x, y, z],
camera intrinsics 3×3). LIDAR_TOP ``.pcd.bin`` files hold float32 × 5 per point: x, y, z,
intensity (0–255), ring. Lidarseg labels index the 32 general classes and are mapped into
``nuscenes16`` (see ``config/taxonomies/nuscenes16.yaml``).

The bag follows the ``nuscenes`` / ``nuscenes-lidarseg`` presets: ``/LIDAR_TOP`` (frame
``LIDAR_TOP``; fields x, y, z, intensity, ring and, with lidarseg, ``label``),
``/CAM_*/image_rect_compressed`` + ``/CAM_*/camera_info`` (frame ``CAM_*``, which in
nuScenes is already an optical frame), ``/tf`` map → base_link, ``/tf_static``
base_link → each sensor.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from relkd_core.datasets.scene import CameraStream, DatasetError, ImageReading, LidarReading
from relkd_core.geometry.se3 import make_transform, quaternion_to_matrix
from relkd_core.resources import find_named_config
from relkd_core.taxonomy import NUSCENES16, Taxonomy

__all__ = [
    'LIDAR_CHANNEL',
    'VERSIONS',
    'NuScenes',
    'NuScenesScene',
    'official_split',
    'select_scenes',
]

VERSIONS = ('v1.0-mini', 'v1.0-trainval', 'v1.0-test')
LIDAR_CHANNEL = 'LIDAR_TOP'
FIXED_FRAME = 'map'
BASE_FRAME = 'base_link'
_TABLES = ('scene', 'sample', 'sample_data', 'calibrated_sensor', 'ego_pose', 'sensor')

#: Point layout of the bag's lidar cloud (20 bytes; with ``label`` when lidarseg is read).
CLOUD_DTYPE = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('intensity', '<f4'),
                        ('ring', '<u2'), ('label', '<u2')])
CLOUD_DTYPE_UNLABELLED = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'),
                                   ('intensity', '<f4'), ('ring', '<u2'), ('_pad', '<u2')])


def official_split(name: str) -> tuple[str, ...]:
    """Scene names of an official split (train, val, test, mini_train, mini_val)."""
    path = find_named_config('datasets', 'nuscenes_splits')
    splits: dict[str, list[str]] = yaml.safe_load(path.read_text())['splits']
    if name not in splits:
        raise DatasetError(f'unknown nuScenes split {name!r}; expected one of {sorted(splits)}')
    return tuple(splits[name])


def _pose(row: dict[str, Any]) -> NDArray[np.float64]:
    w, x, y, z = row['rotation']
    return make_transform(quaternion_to_matrix([x, y, z, w]), row['translation'])


@dataclass(frozen=True)
class _Reading:
    t_ns: int
    channel: str
    path: Path
    lidarseg: Path | None
    T_global_ego: NDArray[np.float64]
    width: int
    height: int


class NuScenesScene:
    """One scene's readings (keyframes only, or with sweeps), checked on construction."""

    lidar_topic = f'/{LIDAR_CHANNEL}'
    lidar_frame = LIDAR_CHANNEL
    fixed_frame = FIXED_FRAME
    moving_frame = BASE_FRAME

    def __init__(self, name: str, readings: list[_Reading],
                 mounts: dict[str, tuple[NDArray[np.float64], NDArray[np.float64] | None]],
                 taxonomy: Taxonomy, labelled: bool) -> None:
        self.name = name
        self._readings = sorted(readings, key=lambda r: (r.t_ns, r.channel != LIDAR_CHANNEL))
        self._mounts = mounts
        self._taxonomy = taxonomy
        self.labelled = labelled
        channels = sorted(c for c in mounts if c != LIDAR_CHANNEL)
        self.cameras = tuple(CameraStream(name=c, image_topic=f'/{c}/image_rect_compressed',
                                          info_topic=f'/{c}/camera_info', frame_id=c)
                             for c in channels)
        self.static_transforms = tuple((BASE_FRAME, channel, T)
                                       for channel, (T, _) in sorted(mounts.items()))
        self.num_scans = sum(r.channel == LIDAR_CHANNEL for r in self._readings)

    def readings(self) -> Iterator[LidarReading | ImageReading]:
        for reading in self._readings:
            if reading.channel == LIDAR_CHANNEL:
                yield LidarReading(t_ns=reading.t_ns, points=self._cloud(reading),
                                   T_fixed_moving=reading.T_global_ego)
            else:
                K = self._mounts[reading.channel][1]
                assert K is not None  # cameras are checked to have intrinsics on construction
                suffix = reading.path.suffix.lower()
                yield ImageReading(
                    t_ns=reading.t_ns, camera=reading.channel, data=reading.path.read_bytes(),
                    format='png' if suffix == '.png' else 'jpeg', width=reading.width,
                    height=reading.height, K=K, T_fixed_moving=reading.T_global_ego)

    def _cloud(self, reading: _Reading) -> NDArray[np.void]:
        raw = np.fromfile(reading.path, dtype='<f4').reshape(-1, 5)
        points = np.empty(len(raw), CLOUD_DTYPE if self.labelled else CLOUD_DTYPE_UNLABELLED)
        for column, name in enumerate(('x', 'y', 'z', 'intensity')):
            points[name] = raw[:, column]
        points['ring'] = raw[:, 4].astype(np.uint16)
        if self.labelled:
            points['label'] = 0  # sweeps carry no lidarseg labels: ignore
            if reading.lidarseg is not None:
                points['label'] = self._taxonomy.map_raw(np.fromfile(reading.lidarseg, np.uint8))
        else:
            points['_pad'] = 0
        return points


class NuScenes:
    """The tables of one nuScenes version under ``dataroot``.

    Raises :class:`DatasetError` naming the file for a missing or unreadable table. Lidarseg
    is read when ``<version>/lidarseg.json`` exists (``labels=None``), required with
    ``labels=True`` and skipped with ``labels=False``.
    """

    def __init__(self, dataroot: str | os.PathLike[str], version: str = 'v1.0-mini', *,
                 labels: bool | None = None, taxonomy: Taxonomy = NUSCENES16) -> None:
        self.dataroot = Path(dataroot)
        self.version = version
        self.taxonomy = taxonomy
        folder = self.dataroot / version
        if not self.dataroot.is_dir():
            raise DatasetError(f'{self.dataroot}: dataroot is not a folder')
        if not folder.is_dir():
            found = sorted(p.name for p in self.dataroot.iterdir() if p.name.startswith('v1.0'))
            raise DatasetError(f'{folder}: no such version folder (found: {found or "none"})')
        self.tables = {name: self._table(folder / f'{name}.json') for name in _TABLES}
        lidarseg_json = folder / 'lidarseg.json'
        self.labelled = lidarseg_json.is_file() if labels is None else labels
        self.lidarseg: dict[str, Path] = {}
        if self.labelled:
            labels_folder = self.dataroot / 'lidarseg' / version
            rows = self._table(lidarseg_json)
            if not labels_folder.is_dir():
                raise DatasetError(f'{labels_folder}: lidarseg folder missing (named by '
                                   f'{lidarseg_json})')
            self.lidarseg = {r['sample_data_token']: self.dataroot / r['filename'] for r in rows}
        self._by_token = {name: {r['token']: r for r in rows}
                          for name, rows in self.tables.items()}
        # One pass over the (large: 2.6M rows in v1.0-trainval) sample_data table, so that a
        # scene costs its own rows only.
        self._samples_of: dict[str, list[str]] = {}
        for row in self.tables['sample']:
            self._samples_of.setdefault(row['scene_token'], []).append(row['token'])
        self._readings_of: dict[str, list[dict[str, Any]]] = {}
        for row in self.tables['sample_data']:
            self._readings_of.setdefault(row['sample_token'], []).append(row)

    @staticmethod
    def _table(path: Path) -> list[dict[str, Any]]:
        try:
            rows = json.loads(path.read_text())
        except FileNotFoundError:
            raise DatasetError(f'{path}: missing table') from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DatasetError(f'{path}: unreadable table: {err}') from err
        if not isinstance(rows, list):
            raise DatasetError(f'{path}: expected a JSON list of rows, got {type(rows).__name__}')
        return rows

    def scene_names(self) -> list[str]:
        """Scene names in table order."""
        return [r['name'] for r in self.tables['scene']]

    def _row(self, table: str, token: str, where: str) -> dict[str, Any]:
        try:
            return self._by_token[table][token]
        except KeyError:
            raise DatasetError(f'{self.dataroot / self.version / (table + ".json")}: no row '
                               f'with token {token} (referenced by {where})') from None

    def scene(self, name: str, *, sweeps: bool = False) -> NuScenesScene:
        """The readings of scene ``name``: keyframes, or every reading with ``sweeps``.

        Checks every file the bag needs (existence; lidar and label sizes) before returning.
        """
        scenes = {r['name']: r for r in self.tables['scene']}
        if name not in scenes:
            raise DatasetError(f'{self.dataroot / self.version / "scene.json"}: no scene '
                               f'{name!r} (it has {len(scenes)} scenes)')
        rows = [row for sample in self._samples_of.get(scenes[name]['token'], [])
                for row in self._readings_of.get(sample, [])]
        readings: list[_Reading] = []
        mounts: dict[str, tuple[NDArray[np.float64], NDArray[np.float64] | None]] = {}
        for row in rows:
            if not (sweeps or row['is_key_frame']):
                continue
            where = f'sample_data {row["token"]}'
            calibrated = self._row('calibrated_sensor', row['calibrated_sensor_token'], where)
            sensor = self._row('sensor', calibrated['sensor_token'], where)
            channel, modality = sensor['channel'], sensor['modality']
            if modality not in ('lidar', 'camera') or (modality == 'lidar'
                                                      and channel != LIDAR_CHANNEL):
                continue  # radars and other lidars are not converted
            K = None
            if modality == 'camera':
                K = np.asarray(calibrated.get('camera_intrinsic') or [], dtype=np.float64)
                if K.shape != (3, 3):
                    raise DatasetError(f'{self.dataroot / self.version / "calibrated_sensor.json"}'
                                       f': {channel} has no 3×3 camera_intrinsic')
            mounts.setdefault(channel, (_pose(calibrated), K))
            path = self.dataroot / row['filename']
            ego = self._row('ego_pose', row['ego_pose_token'], where)
            label = None
            if channel == LIDAR_CHANNEL:
                label = self._check_lidar(path, row)
            elif not path.is_file():
                raise DatasetError(f'{path}: missing image file (sample_data {row["token"]})')
            readings.append(_Reading(t_ns=int(row['timestamp']) * 1000, channel=channel,
                                     path=path, lidarseg=label, T_global_ego=_pose(ego),
                                     width=int(row.get('width') or 0),
                                     height=int(row.get('height') or 0)))
        if not any(r.channel == LIDAR_CHANNEL for r in readings):
            raise DatasetError(f'{self.dataroot / self.version / "sample_data.json"}: scene '
                               f'{name} has no {LIDAR_CHANNEL} readings')
        return NuScenesScene(name, readings, mounts, self.taxonomy, self.labelled)

    def _check_lidar(self, path: Path, row: dict[str, Any]) -> Path | None:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise DatasetError(f'{path}: missing lidar file (sample_data {row["token"]})'
                               ) from None
        if size % 20:
            raise DatasetError(f'{path}: {size} bytes is not a whole number of points '
                               '(float32 × 5 each)')
        if not (self.labelled and row['is_key_frame']):
            return None
        label = self.lidarseg.get(row['token'])
        if label is None:
            raise DatasetError(f'{self.dataroot / self.version / "lidarseg.json"}: no labels '
                               f'for keyframe {row["token"]} ({path.name})')
        try:
            count = label.stat().st_size
        except FileNotFoundError:
            raise DatasetError(f'{label}: missing lidarseg label file') from None
        if count != size // 20:
            raise DatasetError(f'{label}: {count} labels for {size // 20} points in {path.name}')
        return label


def select_scenes(nusc: NuScenes, *, split: str | None = None,
                  scenes: Sequence[str] = ()) -> list[str]:
    """Scene names to convert: ``scenes`` if given, else the split's scenes present in this
    version, else every scene (table order)."""
    present = nusc.scene_names()
    if scenes:
        missing = [s for s in scenes if s not in present]
        if missing:
            raise DatasetError(f'{nusc.dataroot / nusc.version / "scene.json"}: no scene(s) '
                               f'{missing}')
        return list(scenes)
    if split is not None:
        wanted = set(official_split(split))
        chosen = [s for s in present if s in wanted]
        if not chosen:
            raise DatasetError(f'{nusc.dataroot / nusc.version / "scene.json"}: none of the '
                               f'{len(wanted)} scenes of split {split!r} is in {nusc.version}')
        return chosen
    return present

