"""Write a synthetic drive in the public datasets' own on-disk layouts.

The converters of :mod:`relkd_core.datasets` are tested on these folders: the same drive
recorded as a bag directly and written here, then converted, must prepare to the same points,
labels and point-pixel pairs. Only the parts of each layout the converters read are written.

- nuScenes (``write_nuscenes``): ``<root>/<version>/*.json`` tables (scene, sample,
  sample_data, calibrated_sensor, ego_pose, sensor, log, category, lidarseg),
  ``samples/<CHANNEL>/`` keyframes and ``sweeps/<CHANNEL>/`` the rest (``.pcd.bin`` float32
  × 5: x, y, z, intensity 0–255, ring; JPEG images), ``lidarseg/<version>/<token>_lidarseg.bin``
  (uint8 general-class index per keyframe point). Quaternions are [w, x, y, z]; timestamps µs.
- SemanticKITTI (``write_semantickitti``): ``<root>/sequences/<XX>/`` with ``velodyne/`` (float32
  × 4: x, y, z, remission), ``labels/`` (uint32: semantic id | instance << 16),
  ``image_2``/``image_3`` (PNG), ``calib.txt`` (P0..P3, Tr), ``poses.txt`` (camera-0 poses in
  the camera-0 frame of scan 0), ``times.txt`` (seconds).

Labels: the drive's nuScenes-16 labels go out as one raw id each (the first raw id of the class
in ``nuscenes16``; :data:`SEMANTICKITTI_RAW_OF_NUSCENES16` for SemanticKITTI).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.errors import SimError
from relkd_core.geometry.se3 import invert_transform, matrix_to_quaternion
from relkd_core.sim.drive import START_NS, SimFrame, SyntheticDrive
from relkd_core.taxonomy import NUSCENES16

__all__ = ['SEMANTICKITTI_RAW_OF_NUSCENES16', 'nuscenes_token', 'write_nuscenes',
           'write_semantickitti']

#: SemanticKITTI raw id written for each nuScenes-16 label (index = label; 0 = unlabeled).
#: Traffic cones become ``other-object`` (99), which SemanticKITTI's benchmark ignores;
#: construction vehicles and trailers become ``other-vehicle``, barriers ``fence``.
SEMANTICKITTI_RAW_OF_NUSCENES16: NDArray[np.uint32] = np.array(
    [0, 51, 11, 13, 10, 20, 15, 30, 99, 20, 18, 40, 49, 48, 72, 50, 70], dtype=np.uint32)

OnFrame = Callable[[SimFrame], None]


def nuscenes_token(*parts: object) -> str:
    """A deterministic 32-hex-digit token, nuScenes-style."""
    return hashlib.md5('/'.join(map(str, parts)).encode()).hexdigest()


def _jpeg(rgb: NDArray[np.uint8], quality: int = 90) -> bytes:
    from PIL import Image as PilImage

    buffer = io.BytesIO()
    PilImage.fromarray(rgb, mode='RGB').save(buffer, format='JPEG', quality=quality)
    return buffer.getvalue()


def _png(rgb: NDArray[np.uint8]) -> bytes:
    from PIL import Image as PilImage

    buffer = io.BytesIO()
    PilImage.fromarray(rgb, mode='RGB').save(buffer, format='PNG')
    return buffer.getvalue()


def _pose(T: NDArray[np.float64]) -> dict[str, list[float]]:
    x, y, z, w = matrix_to_quaternion(T[:3, :3])
    return {'translation': [float(v) for v in T[:3, 3]],
            'rotation': [float(w), float(x), float(y), float(z)]}


def _staging_dir(target: Path) -> Path:
    """A hidden folder beside ``target`` to build it in before renaming it into place."""
    return Path(tempfile.mkdtemp(prefix=f'.{target.name}.', suffix='.tmp', dir=target.parent))


def _commit(staging: Path, target: Path) -> None:
    """Move a complete staging folder into place (``target`` must not exist)."""
    os.rename(staging, target)


def write_nuscenes(drives: Sequence[tuple[str, SyntheticDrive]], root: str | os.PathLike[str],
                   *, version: str = 'v1.0-mini', keyframe_every: int = 1,
                   lidarseg: bool = True, on_frame: OnFrame | None = None) -> Path:
    """Write ``(scene name, drive)`` pairs as one nuScenes-format dataset at ``root``.

    Every ``keyframe_every``-th scan (from the first) is a keyframe (a ``sample``, under
    ``samples/``, with lidarseg labels when ``lidarseg``); the others are sweeps. The camera
    images rendered with a scan share its keyframe status, as in nuScenes, where a sample's
    images are the ones taken as the lidar sweeps past each camera. ``root`` must not exist;
    it appears complete or not at all. Returns ``root``.
    """
    root = Path(root)
    if root.exists():
        raise SimError(f'{root} already exists; choose a new folder')
    if keyframe_every < 1:
        raise SimError(f'keyframe_every must be at least 1, got {keyframe_every}')
    if not root.parent.is_dir():
        raise SimError(f'cannot write {root}: folder {root.parent} does not exist')
    staging = _staging_dir(root)
    try:
        tables = _NuScenesTables(staging, version)
        for name, drive in drives:
            tables.add_scene(name, drive, keyframe_every, lidarseg, on_frame)
        tables.dump(lidarseg)
        _commit(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root


@dataclass(frozen=True)
class _Where:
    """The scene and frame a reading belongs to."""

    scene: str
    frame: SimFrame
    key: bool
    sample_token: str
    calibrated: dict[str, str]
    by_channel: dict[str, list[dict[str, Any]]]


class _NuScenesTables:
    def __init__(self, root: Path, version: str) -> None:
        self.root, self.version = root, version
        self.rows: dict[str, list[dict[str, Any]]] = {
            name: [] for name in ('scene', 'sample', 'sample_data', 'calibrated_sensor',
                                  'ego_pose', 'sensor', 'log', 'category', 'lidarseg')}
        self.sensors: dict[str, str] = {}

    def _sensor(self, channel: str, modality: str) -> str:
        if channel not in self.sensors:
            token = nuscenes_token('sensor', channel)
            self.sensors[channel] = token
            self.rows['sensor'].append({'token': token, 'channel': channel,
                                        'modality': modality})
        return self.sensors[channel]

    def _calibrated(self, scene: str, channel: str, modality: str, T_ego_sensor: NDArray[Any],
                    K: NDArray[Any] | None) -> str:
        token = nuscenes_token(scene, 'calibrated_sensor', channel)
        self.rows['calibrated_sensor'].append({
            'token': token, 'sensor_token': self._sensor(channel, modality), **_pose(T_ego_sensor),
            'camera_intrinsic': [] if K is None else [[float(v) for v in row] for row in K]})
        return token

    def add_scene(self, name: str, drive: SyntheticDrive, keyframe_every: int,
                  lidarseg: bool, on_frame: OnFrame | None) -> None:
        rig = drive.rig
        lidar = rig.lidar.frame_id
        calibrated = {lidar: self._calibrated(name, lidar, 'lidar',
                                              rig.lidar.mount.T_base_sensor(), None)}
        if drive.render_cameras:
            for cam in rig.cameras:
                calibrated[cam.name] = self._calibrated(name, cam.name, 'camera',
                                                        cam.T_base_optical(), cam.K())
        log_token = nuscenes_token(name, 'log')
        self.rows['log'].append({'token': log_token, 'logfile': f'synthetic-seed{drive.seed}',
                                 'vehicle': rig.name, 'date_captured': '2023-11-14',
                                 'location': 'synthetic'})
        scene_token = nuscenes_token(name, 'scene')
        raw_of_label = NUSCENES16.representative_raw_ids()
        samples: list[dict[str, Any]] = []
        # channel -> rows in time order, for prev/next links
        by_channel: dict[str, list[dict[str, Any]]] = {}
        for frame in drive.frames():
            key = frame.index % keyframe_every == 0
            sample_token = nuscenes_token(name, 'sample', frame.index // keyframe_every)
            if key:
                samples.append({'token': sample_token, 'timestamp': frame.t_ns // 1000,
                                'scene_token': scene_token})

            points = frame.points
            cloud = np.stack([points['x'], points['y'], points['z'], points['intensity'],
                              points['ring'].astype(np.float32)], axis=1).astype('<f4')
            where = _Where(scene=name, frame=frame, key=key, sample_token=sample_token,
                           calibrated=calibrated, by_channel=by_channel)
            row = self._sample_data(where, lidar, frame.t_ns, '.pcd.bin', cloud.tobytes(),
                                    'pcd', (0, 0))
            if key and lidarseg:
                filename = f'lidarseg/{self.version}/{row["token"]}_lidarseg.bin'
                path = self.root / filename
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(raw_of_label[points['label']].astype(np.uint8).tobytes())
                self.rows['lidarseg'].append({'token': nuscenes_token(row['token'], 'lidarseg'),
                                              'sample_data_token': row['token'],
                                              'filename': filename})
            for shot in frame.shots:
                rgb = shot.images.rgb
                self._sample_data(where, shot.camera.name, shot.t_ns, '.jpg', _jpeg(rgb), 'jpg',
                                  (rgb.shape[1], rgb.shape[0]))
            if on_frame is not None:
                on_frame(frame)
        for rows in by_channel.values():
            for before, after in itertools.pairwise(rows):
                before['next'], after['prev'] = after['token'], before['token']
        for before, after in itertools.pairwise(samples):
            before['next'], after['prev'] = after['token'], before['token']
        for sample in samples:
            sample.setdefault('prev', '')
            sample.setdefault('next', '')
        self.rows['sample'].extend(samples)
        self.rows['scene'].append({
            'token': scene_token, 'log_token': log_token, 'nbr_samples': len(samples),
            'first_sample_token': samples[0]['token'], 'last_sample_token': samples[-1]['token'],
            'name': name, 'description': f'synthetic drive, rig {rig.name}, seed {drive.seed}'})

    def _sample_data(self, where: _Where, channel: str, t_ns: int, suffix: str, data: bytes,
                     fileformat: str, size: tuple[int, int]) -> dict[str, Any]:
        """Write one reading's file, its ego pose and its sample_data row."""
        folder = 'samples' if where.key else 'sweeps'
        filename = f'{folder}/{channel}/{where.scene}__{channel}__{t_ns // 1000}{suffix}'
        path = self.root / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        ego_token = nuscenes_token(where.scene, 'ego_pose', channel, t_ns)
        self.rows['ego_pose'].append({'token': ego_token, 'timestamp': t_ns // 1000,
                                      **_pose(where.frame.ego_poses[t_ns])})
        row = {'token': nuscenes_token(where.scene, 'sample_data', channel, t_ns),
               'sample_token': where.sample_token, 'ego_pose_token': ego_token,
               'calibrated_sensor_token': where.calibrated[channel],
               'timestamp': t_ns // 1000, 'fileformat': fileformat,
               'is_key_frame': where.key, 'height': size[1], 'width': size[0],
               'filename': filename, 'prev': '', 'next': ''}
        where.by_channel.setdefault(channel, []).append(row)
        self.rows['sample_data'].append(row)
        return row

    def dump(self, lidarseg: bool) -> None:
        for index, raw_name in NUSCENES16.raw_names:
            self.rows['category'].append({'token': nuscenes_token('category', raw_name),
                                          'name': raw_name, 'description': '', 'index': index})
        folder = self.root / self.version
        folder.mkdir(parents=True, exist_ok=True)
        for table, rows in self.rows.items():
            if table == 'lidarseg' and not lidarseg:
                continue
            (folder / f'{table}.json').write_text(json.dumps(rows, indent=0))


def _calib_line(key: str, matrix: NDArray[np.float64]) -> str:
    return f'{key}: ' + ' '.join(f'{v:.17g}' for v in matrix.reshape(-1)) + '\n'


def write_semantickitti(drive: SyntheticDrive, root: str | os.PathLike[str],
                        sequence: str = '00', *, labels: bool = True,
                        on_frame: OnFrame | None = None) -> Path:
    """Write ``drive`` as sequence ``sequence`` of a SemanticKITTI-format dataset at ``root``.

    The first camera of the rig is KITTI's camera 0 and ``image_2``; the second (if any) is
    ``image_3``. Cameras must share one orientation (KITTI's rectified stereo: ``P`` holds
    only a translation) and fire with the scan. ``root`` may exist; the sequence folder must
    not, and appears complete or not at all. Returns the sequence folder.
    """
    folder = Path(root) / 'sequences' / sequence
    if folder.exists():
        raise SimError(f'{folder} already exists; choose another sequence or root')
    rig = drive.rig
    cameras = rig.cameras[:2] if drive.render_cameras else ()
    if any(c.time_offset_ns for c in cameras):
        raise SimError('the SemanticKITTI layout needs cameras that fire with the scan '
                       '(time_offset_ns 0)')
    T_base_velo = rig.lidar.mount.T_base_sensor()
    T_base_cam0 = (rig.cameras[0] if rig.cameras else None)
    T_base_c0 = T_base_cam0.T_base_optical() if T_base_cam0 is not None else T_base_velo
    projections = []
    for cam in cameras:
        T_c0_ci = invert_transform(T_base_c0) @ cam.T_base_optical()
        if not np.allclose(T_c0_ci[:3, :3], np.eye(3), atol=1e-12):
            raise SimError(f'camera {cam.name} is rotated against camera 0; the SemanticKITTI '
                           'layout needs rectified (parallel) cameras')
        # P_i = K_i [I | t]: t moves camera-0 points into camera i (x_i = x_0 + t).
        P = np.zeros((3, 4))
        P[:, :3] = cam.K()
        P[:, 3] = cam.K() @ (-T_c0_ci[:3, 3])
        projections.append(P)
    fallback = np.hstack([rig.cameras[0].K() if rig.cameras else np.eye(3), np.zeros((3, 1))])
    P2 = projections[0] if projections else fallback
    P3 = projections[1] if len(projections) > 1 else P2
    Tr = invert_transform(T_base_c0) @ T_base_velo  # velodyne -> camera 0
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_dir(folder)
    try:
        (staging / 'velodyne').mkdir()
        if labels:
            (staging / 'labels').mkdir()
        for i, _ in enumerate(cameras):
            (staging / f'image_{i + 2}').mkdir()
        (staging / 'calib.txt').write_text(
            _calib_line('P0', P2) + _calib_line('P1', P3) + _calib_line('P2', P2)
            + _calib_line('P3', P3) + _calib_line('Tr', Tr[:3]))
        poses, times = [], []
        T_odom_c0_first: NDArray[np.float64] | None = None
        for frame in drive.frames():
            stem = f'{frame.index:06d}'
            points = frame.points
            scan = np.stack([points['x'], points['y'], points['z'], points['intensity']],
                            axis=1).astype('<f4')
            (staging / 'velodyne' / f'{stem}.bin').write_bytes(scan.tobytes())
            if labels:
                raw = SEMANTICKITTI_RAW_OF_NUSCENES16[points['label']]
                value = raw | (points['instance'].astype(np.uint32) & 0xFFFF) << 16
                (staging / 'labels' / f'{stem}.label').write_bytes(
                    value.astype('<u4').tobytes())
            for i, shot in enumerate(frame.shots[:2]):
                (staging / f'image_{i + 2}' / f'{stem}.png').write_bytes(_png(shot.images.rgb))
            T_odom_c0 = frame.ego_poses[frame.t_ns] @ T_base_c0
            if T_odom_c0_first is None:
                T_odom_c0_first = T_odom_c0
            poses.append((invert_transform(T_odom_c0_first) @ T_odom_c0)[:3].reshape(-1))
            times.append((frame.t_ns - START_NS) * 1e-9)
            if on_frame is not None:
                on_frame(frame)
        (staging / 'poses.txt').write_text(''.join(
            ' '.join(f'{v:.17g}' for v in pose) + '\n' for pose in poses))
        (staging / 'times.txt').write_text(''.join(f'{t:.6e}\n' for t in times))
        _commit(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder

