"""SemanticKITTI (KITTI odometry layout), one :class:`Scene` per sequence.

Layout (``<dataroot>/sequences/<XX>/``)::

    velodyne/NNNNNN.bin   float32 × 4 per point: x, y, z, remission (0–1), velodyne frame
    labels/NNNNNN.label   uint32 per point: semantic id (lower 16 bits) | instance << 16
    image_2/ image_3/     rectified colour PNGs (often not downloaded: lidar-only bags)
    calib.txt             P0..P3 (3×4, rectified camera i; P_i = K_i [I | t_i] in camera 0)
                          and Tr (3×4, velodyne → camera 0)
    poses.txt             per scan, the 3×4 camera-0 pose in the camera-0 frame of scan 0
    times.txt             per scan, seconds

The bag follows the ``semantickitti`` presets: ``/kitti/velo/pointcloud`` (frame
``velo_link``; x, y, z, intensity and, where labels exist, uint16 ``label`` and
``instance``), ``/kitti/camera_color_{left,right}/image_rect_compressed`` (the PNG bytes) and
``camera_info``, ``/tf`` world → velo_link (world = the velodyne frame of scan 0: the
velodyne pose is Tr⁻¹ · pose · Tr), ``/tf_static`` velo_link → each camera.
Labels are mapped into ``semantickitti19`` by default, or kept as raw ids (``labels='raw'``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from relkd_core.datasets.scene import CameraStream, DatasetError, ImageReading, LidarReading
from relkd_core.geometry.se3 import invert_transform
from relkd_core.taxonomy import Taxonomy, load_taxonomy

__all__ = ['SPLITS', 'LabelMode', 'SemanticKitti', 'SemanticKittiSequence']

LabelMode = Literal['mapped', 'raw', 'none']

#: The official sequence splits of SemanticKITTI (test sequences have no labels).
SPLITS: dict[str, tuple[str, ...]] = {
    'train': ('00', '01', '02', '03', '04', '05', '06', '07', '09', '10'),
    'val': ('08',),
    'test': tuple(f'{i:02d}' for i in range(11, 22)),
}

LIDAR_FRAME = 'velo_link'
FIXED_FRAME = 'world'
#: image folder → (camera name, projection key in calib.txt)
_CAMERAS = {'image_2': ('camera_color_left', 'P2'), 'image_3': ('camera_color_right', 'P3')}

CLOUD_DTYPE = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('intensity', '<f4'),
                        ('label', '<u2'), ('instance', '<u2')])
CLOUD_DTYPE_UNLABELLED = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'),
                                   ('intensity', '<f4')])


def _matrices(path: Path) -> dict[str, NDArray[np.float64]]:
    """``key: v v v ...`` lines of calib.txt as arrays."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DatasetError(f'{path}: missing calibration file') from None
    out = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, values = line.partition(':')
        try:
            if not sep:
                raise ValueError('no "key:"')
            out[key.strip()] = np.array([float(v) for v in values.split()], dtype=np.float64)
        except ValueError as err:
            raise DatasetError(f'{path}:{number}: cannot read {line[:40]!r}: {err}') from None
    return out


def _matrix_3x4(path: Path, values: dict[str, NDArray[np.float64]], key: str,
                meaning: str) -> NDArray[np.float64]:
    if key not in values:
        raise DatasetError(f'{path}: no {key} line ({meaning})')
    if values[key].size != 12:
        raise DatasetError(f'{path}: {key} has {values[key].size} values, expected 12 (3×4)')
    T = np.eye(4)
    T[:3] = values[key].reshape(3, 4)
    return T


def _rows(path: Path, what: str, width: int) -> NDArray[np.float64]:
    try:
        rows = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except FileNotFoundError:
        raise DatasetError(f'{path}: missing {what} file') from None
    except ValueError as err:
        raise DatasetError(f'{path}: unreadable {what}: {err}') from None
    if rows.size and rows.shape[1] != width:
        raise DatasetError(f'{path}: {rows.shape[1]} values per line, expected {width}')
    return rows


@dataclass(frozen=True)
class _Camera:
    stream: CameraStream
    folder: Path
    K: NDArray[np.float64]
    width: int
    height: int


class SemanticKittiSequence:
    """One sequence's scans (and images), checked on construction."""

    lidar_topic = '/kitti/velo/pointcloud'
    lidar_frame = LIDAR_FRAME
    fixed_frame = FIXED_FRAME
    moving_frame = LIDAR_FRAME

    def __init__(self, folder: Path, *, labels: LabelMode, taxonomy: Taxonomy,
                 images: bool = True) -> None:
        self.folder = folder
        self.name = folder.name
        self.taxonomy = taxonomy
        velodyne = folder / 'velodyne'
        if not velodyne.is_dir():
            raise DatasetError(f'{velodyne}: missing velodyne folder')
        self.scans = sorted(velodyne.glob('*.bin'))
        if not self.scans:
            raise DatasetError(f'{velodyne}: no .bin scans')
        calib_path = folder / 'calib.txt'
        calib = _matrices(calib_path)
        Tr = _matrix_3x4(calib_path, calib, 'Tr', 'velodyne → camera 0')
        T_velo_cam0 = invert_transform(Tr)
        poses = _rows(folder / 'poses.txt', 'poses', 12)
        times = _rows(folder / 'times.txt', 'times', 1)[:, 0]
        for path, rows in ((folder / 'poses.txt', poses), (folder / 'times.txt', times)):
            if len(rows) != len(self.scans):
                raise DatasetError(f'{path}: {len(rows)} lines for {len(self.scans)} scans')
        self.t_ns = [round(float(t) * 1e9) for t in times]
        self.T_world_velo = []
        for row in poses:
            pose = np.eye(4)
            pose[:3] = row.reshape(3, 4)
            self.T_world_velo.append(T_velo_cam0 @ pose @ Tr)
        label_folder = folder / 'labels'
        self.labels: list[Path] | None = None
        if labels != 'none' and label_folder.is_dir():
            self.labels = [label_folder / f'{p.stem}.label' for p in self.scans]
            for scan, label in zip(self.scans, self.labels, strict=True):
                self._check_label(scan, label)
        self.raw_labels = labels == 'raw'
        cameras = []
        static = []
        for name, (camera, key) in _CAMERAS.items():
            image_folder = folder / name
            if not images or not image_folder.is_dir():
                continue
            P = _matrix_3x4(calib_path, calib, key, f'projection of {name}')[:3]
            K = P[:, :3]
            # P = K [I | t]: camera-0 points x0 are x0 + t in this camera.
            T_cam0_cam = np.eye(4)
            T_cam0_cam[:3, 3] = -np.linalg.solve(K, P[:, 3])
            width, height = self._image_size(image_folder)
            stream = CameraStream(name=camera,
                                  image_topic=f'/kitti/{camera}/image_rect_compressed',
                                  info_topic=f'/kitti/{camera}/camera_info', frame_id=camera)
            cameras.append(_Camera(stream, image_folder, K, width, height))
            static.append((LIDAR_FRAME, camera, T_velo_cam0 @ T_cam0_cam))
        self._cameras = tuple(cameras)
        self.cameras = tuple(c.stream for c in cameras)
        self.static_transforms = tuple(static)
        self.num_scans = len(self.scans)
        self.labelled = self.labels is not None

    @staticmethod
    def _check_label(scan: Path, label: Path) -> None:
        points = scan.stat().st_size
        if points % 16:
            raise DatasetError(f'{scan}: {points} bytes is not a whole number of points '
                               '(float32 × 4 each)')
        try:
            count = label.stat().st_size
        except FileNotFoundError:
            raise DatasetError(f'{label}: missing label file for {scan.name}') from None
        if count != points // 16 * 4:
            raise DatasetError(f'{label}: {count // 4} labels for {points // 16} points in '
                               f'{scan.name}')

    def _image_size(self, folder: Path) -> tuple[int, int]:
        from PIL import Image as PilImage

        missing = [f'{p.stem}.png' for p in self.scans if not (folder / f'{p.stem}.png').is_file()]
        if missing:
            raise DatasetError(f'{folder / missing[0]}: missing image ({len(missing)} of '
                               f'{len(self.scans)} scans have none)')
        first = folder / f'{self.scans[0].stem}.png'
        try:
            with PilImage.open(first) as image:
                return image.size
        except OSError as err:
            raise DatasetError(f'{first}: unreadable image: {err}') from err

    def readings(self) -> Iterator[LidarReading | ImageReading]:
        for i, scan in enumerate(self.scans):
            t_ns, pose = self.t_ns[i], self.T_world_velo[i]
            yield LidarReading(t_ns=t_ns, points=self._cloud(i, scan), T_fixed_moving=pose)
            for camera in self._cameras:
                path = camera.folder / f'{scan.stem}.png'
                yield ImageReading(t_ns=t_ns, camera=camera.stream.name, data=path.read_bytes(),
                                   format='png', width=camera.width, height=camera.height,
                                   K=camera.K, T_fixed_moving=pose)

    def _cloud(self, i: int, scan: Path) -> NDArray[np.void]:
        raw = np.fromfile(scan, dtype='<f4').reshape(-1, 4)
        if self.labels is None:
            points = np.empty(len(raw), CLOUD_DTYPE_UNLABELLED)
        else:
            points = np.empty(len(raw), CLOUD_DTYPE)
            value = np.fromfile(self.labels[i], dtype='<u4')
            semantic = (value & 0xFFFF).astype(np.uint16)
            points['label'] = semantic if self.raw_labels else self.taxonomy.map_raw(semantic)
            points['instance'] = (value >> 16).astype(np.uint16)
        for column, name in enumerate(('x', 'y', 'z', 'intensity')):
            points[name] = raw[:, column]
        return points


class SemanticKitti:
    """A SemanticKITTI dataset root (the folder holding ``sequences/``)."""

    def __init__(self, dataroot: str | os.PathLike[str], *, labels: LabelMode = 'mapped',
                 taxonomy: Taxonomy | None = None, images: bool = True) -> None:
        self.dataroot = Path(dataroot)
        self.labels: LabelMode = labels
        self.taxonomy = taxonomy or load_taxonomy('semantickitti19')
        self.images = images
        if not (self.dataroot / 'sequences').is_dir():
            raise DatasetError(f'{self.dataroot / "sequences"}: no sequences folder (dataroot is '
                               'the folder that holds sequences/)')

    def sequence_names(self) -> list[str]:
        return sorted(p.name for p in (self.dataroot / 'sequences').iterdir() if p.is_dir()
                      and not p.name.startswith('.'))

    def sequence(self, name: str) -> SemanticKittiSequence:
        folder = self.dataroot / 'sequences' / name
        if not folder.is_dir():
            raise DatasetError(f'{folder}: no such sequence (found: '
                               f'{self.sequence_names() or "none"})')
        return SemanticKittiSequence(folder, labels=self.labels, taxonomy=self.taxonomy,
                                     images=self.images)

    def select(self, *, split: str | None = None, sequences: Sequence[str] = ()) -> list[str]:
        """Sequence names: ``sequences`` if given, else the split's present ones, else all."""
        if sequences:
            return list(sequences)
        present = self.sequence_names()
        if split is not None:
            if split not in SPLITS:
                raise DatasetError(f'unknown SemanticKITTI split {split!r}; expected one of '
                                   f'{sorted(SPLITS)}')
            chosen = [s for s in SPLITS[split] if s in present]
            if not chosen:
                raise DatasetError(f'{self.dataroot / "sequences"}: none of the sequences of '
                                   f'split {split!r} ({", ".join(SPLITS[split])})')
            return chosen
        return present
