"""A prepared distillation dataset on disk, and the ``Dataset`` training reads it through.

Layout (written by :mod:`relkd_core.data.prepare`)::

    <root>/manifest.json        written last: the dataset is complete when it exists
    <root>/plan.json            what the run was asked to do (bags, preset, teacher,
                                frames per shard, superpixels)
    <root>/shards/000000/       one folder per shard of consecutive scans, renamed into
        meta.json               place only when complete (frames, drop reasons, checksums)
        points.npy              P×4 float32 x, y, z (m, lidar frame), intensity [0, 1]
        point_offsets.npy       F+1 int64: frame f owns points[o[f]:o[f+1]]
        labels.npy              P uint16 ground truth (when the bag has labels)
        image_frame.npy         I int32 frame (within the shard) of each paired image
        image_camera.npy        I int16 camera index (manifest ``cameras``)
        image_t_ns.npy          I int64 image stamps
        image_size.npy          I×2 int32 (width, height)
        pair_point.npy          M int32 point index within its frame
        pair_image.npy          M int32 image index within the shard
        pair_uv.npy             M×2 float32 pixel (u, v)
        pair_offsets.npy        F+1 int64: frame f owns pairs[o[f]:o[f+1]]
        pair_pixel_label.npy    M uint16 label of the pixel (when the bag has semantic images)
        pair_superpixel.npy     M int32 SLIC superpixel of the pixel, 0..S-1 within its image
                                (when prepared with superpixels: manifest ``superpixels``)
        features.npy            sum(Hg·Wg)×D float16 teacher grids, row-major per image
        feature_offsets.npy     I+1 int64
        feature_shape.npy       I×2 int32 (Hg, Wg)

Every array is a plain ``.npy`` opened memory-mapped, so worker processes share pages.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.data.scan import ScanInput
from relkd_core.errors import DataError
from relkd_core.geometry.grid import sample_grid

__all__ = ['FORMAT', 'PREPARED_KIND', 'PreparedDataset', 'PreparedFrame', 'is_prepared_dataset',
           'rank_indices']

FORMAT = 'relkd-prepared/1'
MANIFEST = 'manifest.json'
PLAN = 'plan.json'
SHARDS = 'shards'
SHARD_META = 'meta.json'
#: The output kind of relkd-prepare (see relkd_core.outputs): recognised by its plan or manifest.
PREPARED_KIND = 'prepared-dataset'


def is_prepared_dataset(path: Path) -> bool:
    """Whether folder ``path`` holds a preparation (complete or not): its plan or manifest
    names this format."""
    for name in (MANIFEST, PLAN):
        try:
            if json.loads((path / name).read_text()).get('format') == FORMAT:
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


@dataclass(frozen=True)
class PreparedFrame:
    """One frame as training consumes it (arrays are copies, safe to modify).

    ``pair_camera`` indexes :attr:`PreparedDataset.cameras`; ``pair_features`` (M×D float32,
    unit length) are the teacher's features bilinearly sampled at ``pair_uv``, or None when
    the dataset has no teacher features or they were not requested. ``pair_superpixel`` (M
    int64) numbers the superpixels of this frame's returned pairs densely ``0..K-1``: two
    pairs share an id exactly when their pixels lie in the same SLIC segment of the same
    image (ids are not stable across epochs when pairs are subsampled); None when the
    dataset was prepared without superpixels.
    """

    key: str
    t_ns: int
    points: NDArray[np.float32]
    labels: NDArray[np.uint16] | None
    pair_point: NDArray[np.int64]
    pair_camera: NDArray[np.int64]
    pair_uv: NDArray[np.float32]
    pair_pixel_label: NDArray[np.uint16] | None
    pair_features: NDArray[np.float32] | None
    pair_superpixel: NDArray[np.int64] | None = None


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object of the dataset; DataError naming the file when it is damaged."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f'{path}: damaged prepared file ({_first_line(err)}); prepare the '
                        'dataset again into a new folder') from err
    if not isinstance(data, dict):
        raise DataError(f'{path}: damaged prepared file (not a JSON object); prepare the '
                        'dataset again into a new folder')
    return data


class _Shard:
    """Lazily memory-mapped arrays of one shard folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._arrays: dict[str, NDArray[Any]] = {}
        self.meta = _read_json(path / SHARD_META)

    def __getitem__(self, name: str) -> NDArray[Any]:
        if name not in self._arrays:
            file = self.path / f'{name}.npy'
            if not file.exists():
                raise DataError(f'prepared shard {self.path} has no {file.name}')
            try:
                self._arrays[name] = np.load(file, mmap_mode='r', allow_pickle=False)
            except (OSError, ValueError, EOFError) as err:  # truncated or overwritten
                raise DataError(f'{file}: damaged prepared file ({_first_line(err)}); prepare '
                                'the dataset again into a new folder') from err
        return self._arrays[name]

    def has(self, name: str) -> bool:
        return (self.path / f'{name}.npy').exists()


class PreparedDataset:
    """Map-style dataset over a prepared folder: ``len()`` frames, ``ds[i]`` a
    :class:`PreparedFrame`.

    Shards are memory-mapped lazily, in each process on first use, so the object can be
    handed to DataLoader workers (fork or spawn) and DDP ranks. ``pairs_per_frame`` keeps a
    random subset of each frame's pairs, drawn from ``(seed, epoch, index)`` so that every
    rank and worker draws the same subset for the same frame; call :meth:`set_epoch` between
    epochs.
    """

    def __init__(self, root: str | os.PathLike[str], *, features: bool = True,
                 pairs_per_frame: int | None = None, seed: int = 0) -> None:
        self.root = Path(root)
        manifest_path = self.root / MANIFEST
        if not manifest_path.exists():
            raise DataError(f'{self.root} is not a complete prepared dataset: {MANIFEST} is '
                            'missing (run relkd-prepare to completion)')
        self.manifest: dict[str, Any] = _read_json(manifest_path)
        if self.manifest.get('format') != FORMAT:
            raise DataError(f'{manifest_path} has format {self.manifest.get("format")!r}, '
                            f'expected {FORMAT!r}')
        self.cameras: list[str] = list(self.manifest['cameras'])
        teacher = self.manifest.get('teacher')
        self.teacher_id: str | None = teacher['id'] if teacher else None
        self.feature_dim: int = int(teacher['feature_dim']) if teacher else 0
        self.features = features and teacher is not None
        preset = self.manifest.get('preset')
        #: How the scans were read (the preset's lidar settings; None: a manifest without a
        #: preset) and the taxonomy of their labels (None: the manifest names none).
        self.scan_input: ScanInput | None = _scan_input(preset)
        self.taxonomy: str | None = (str(preset['taxonomy']) if isinstance(preset, dict)
                                     and preset.get('taxonomy') else None)
        superpixels = self.manifest.get('superpixels')  # absent from older manifests
        self.superpixels: int | None = int(superpixels) if superpixels is not None else None
        self.pairs_per_frame = pairs_per_frame
        self.seed = seed
        self.epoch = 0
        self._index: list[tuple[int, int]] = []
        for s, shard in enumerate(self.manifest['shards']):
            self._index.extend((s, f) for f in range(int(shard['frames'])))
        self._shards: dict[int, _Shard] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self._index)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard(self, s: int) -> _Shard:
        if os.getpid() != self._pid:  # a forked worker must not reuse the parent's maps
            self._shards, self._pid = {}, os.getpid()
        if s not in self._shards:
            self._shards[s] = _Shard(self.root / SHARDS / self.manifest['shards'][s]['name'])
        return self._shards[s]

    def __getitem__(self, i: int) -> PreparedFrame:
        if not -len(self) <= i < len(self):
            raise IndexError(f'frame {i} out of range for {len(self)} frames')
        s, f = self._index[i]
        shard = self._shard(s)
        p0, p1 = (int(v) for v in shard['point_offsets'][f:f + 2])
        q0, q1 = (int(v) for v in shard['pair_offsets'][f:f + 2])
        pairs = np.arange(q0, q1)
        if self.pairs_per_frame is not None and len(pairs) > self.pairs_per_frame:
            rng = np.random.default_rng((self.seed, self.epoch, i))
            pairs = np.sort(rng.choice(pairs, self.pairs_per_frame, replace=False))
        pair_image = np.asarray(shard['pair_image'][pairs], dtype=np.int64)
        uv = np.asarray(shard['pair_uv'][pairs], dtype=np.float32)
        features = self._pair_features(shard, pair_image, uv) if self.features else None
        superpixel = (_frame_superpixels(pair_image, shard['pair_superpixel'][pairs])
                      if self.superpixels is not None else None)
        meta = shard.meta['frames'][f]
        return PreparedFrame(
            key=meta['key'], t_ns=int(meta['t_ns']),
            points=np.array(shard['points'][p0:p1], dtype=np.float32),
            labels=np.array(shard['labels'][p0:p1]) if shard.has('labels') else None,
            pair_point=np.asarray(shard['pair_point'][pairs], dtype=np.int64),
            pair_camera=np.asarray(shard['image_camera'][pair_image], dtype=np.int64),
            pair_uv=uv,
            pair_pixel_label=(np.array(shard['pair_pixel_label'][pairs])
                              if shard.has('pair_pixel_label') else None),
            pair_features=features, pair_superpixel=superpixel)

    def _pair_features(self, shard: _Shard, pair_image: NDArray[np.int64],
                       uv: NDArray[np.float32]) -> NDArray[np.float32]:
        out = np.empty((len(uv), self.feature_dim), dtype=np.float32)
        offsets, shapes, sizes = (shard['feature_offsets'], shard['feature_shape'],
                                  shard['image_size'])
        for image in np.unique(pair_image):
            rows = pair_image == image
            o0, o1 = int(offsets[image]), int(offsets[image + 1])
            grid_h, grid_w = (int(v) for v in shapes[image])
            grid = np.asarray(shard['features'][o0:o1]).reshape(grid_h, grid_w, -1)
            size = (int(sizes[image][0]), int(sizes[image][1]))
            out[rows] = sample_grid(grid, size, uv[rows])
        return out

    def image_grid(self, i: int, camera: str) -> NDArray[np.float16] | None:
        """The stored teacher grid (Hg×Wg×D float16) of frame ``i``'s image from ``camera``."""
        s, f = self._index[i]
        shard = self._shard(s)
        cam = self.cameras.index(camera)
        hits = np.flatnonzero((np.asarray(shard['image_frame']) == f)
                              & (np.asarray(shard['image_camera']) == cam))
        if not len(hits) or not shard.has('features'):
            return None
        image = int(hits[0])
        o0, o1 = (int(v) for v in shard['feature_offsets'][image:image + 2])
        grid_h, grid_w = (int(v) for v in shard['feature_shape'][image])
        return np.array(shard['features'][o0:o1]).reshape(grid_h, grid_w, -1)


def _scan_input(preset: Any) -> ScanInput | None:
    """The ScanInput of a manifest's preset dict (None when it holds no lidar settings)."""
    lidar = preset.get('lidar') if isinstance(preset, dict) else None
    if not isinstance(lidar, dict):
        return None
    try:
        return ScanInput(intensity_field=str(lidar['intensity_field']),
                         intensity_scale=float(lidar['intensity_scale']),
                         min_range_m=float(lidar['min_range_m']),
                         max_range_m=float(lidar['max_range_m']))
    except (KeyError, TypeError, ValueError):
        return None


def _frame_superpixels(pair_image: NDArray[np.int64], segment: NDArray[Any]
                       ) -> NDArray[np.int64]:
    """Dense ids 0..K-1 of the (image, segment) pairs: segment ids repeat across images."""
    key = (pair_image << 32) | np.asarray(segment, dtype=np.int64)
    _, dense = np.unique(key, return_inverse=True)
    return dense.reshape(-1).astype(np.int64)


def rank_indices(num_frames: int, rank: int, world_size: int, *, shuffle: bool = True,
                 seed: int = 0, epoch: int = 0) -> list[int]:
    """The frames of one DDP rank: a disjoint, equally long share of ``range(num_frames)``.

    Every rank draws the same permutation from ``(seed, epoch)`` and takes every
    ``world_size``-th entry from ``rank``; the permutation is padded by wrapping around so all
    ranks run the same number of steps (a rank that ran out early would hang the others'
    all-reduce). Within a rank, DataLoader workers split these indices themselves.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise DataError(f'rank {rank} is not in [0, world_size={world_size})')
    if num_frames == 0:
        return []
    order = (np.random.default_rng((seed, epoch)).permutation(num_frames) if shuffle
             else np.arange(num_frames))
    total = -(-num_frames // world_size) * world_size
    padded = np.resize(order, total)
    return [int(v) for v in padded[rank::world_size]]

