"""Preparing a distillation dataset from bags: pair every scan's points with camera pixels,
attach the teacher's feature grids, and write memory-mappable shards.

Work is cut into shards of consecutive scans of one bag. Each shard is built in a hidden
temporary folder and renamed into place when complete, so an interrupted run leaves only
whole shards behind, and running the same command again skips them and resumes. The
manifest is written last, by whichever run completes the final shard; it holds nothing that
depends on timing, so an interrupted-and-resumed run produces the same manifest as an
uninterrupted one. ``shard_group=(i, n)`` makes a run do only shards ``k`` with
``k % n == i``, so several machines can share one output folder. ``superpixels=N`` also
stores the SLIC superpixel (N segments per image) of every pair's pixel.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.atomic import make_staging_dir, sweep_stale, write_text_atomic
from relkd_core.config import config_to_dict
from relkd_core.data.frames import BagSource, FrameResult, PlannedFrame, UnreadableBagError
from relkd_core.data.prepared import FORMAT, MANIFEST, PLAN, SHARD_META, SHARDS
from relkd_core.data.preset import TopicPreset
from relkd_core.data.superpixels import slic_superpixels
from relkd_core.errors import DataError
from relkd_core.geometry.camera import point_pixel_pairs
from relkd_core.types import CameraFrame

__all__ = ['PrepareOptions', 'PrepareReport', 'TeacherSpec', 'prepare_dataset']

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherSpec:
    """A frozen 2D teacher as preparation sees it: ``featurize`` maps camera frames to
    patch grids (Hg×Wg×D, unit length along D)."""

    teacher_id: str
    feature_dim: int
    featurize: Callable[[Sequence[CameraFrame]], list[NDArray[np.floating]]]


TeacherFactory = Callable[[], TeacherSpec]


@dataclass(frozen=True, kw_only=True)
class PrepareOptions:
    """``frames_per_shard`` scans per shard; ``workers`` processes; ``shard_group`` = (i, n);
    ``superpixels`` SLIC segments per image (None: no superpixels; SLidR uses 150)."""

    frames_per_shard: int = 32
    workers: int = 1
    shard_group: tuple[int, int] = (0, 1)
    superpixels: int | None = None

    def __post_init__(self) -> None:
        index, count = self.shard_group
        if count < 1 or not 0 <= index < count:
            raise DataError(f'shard group {index}/{count} is invalid: expected i/n with '
                            '0 <= i < n')
        if self.frames_per_shard < 1 or self.workers < 1:
            raise DataError('frames_per_shard and workers must be at least 1')
        if self.superpixels is not None and (
                isinstance(self.superpixels, bool) or not isinstance(self.superpixels, int)
                or self.superpixels < 1):
            raise DataError(f'superpixels: expected a whole number of segments per image of '
                            f'at least 1, or None for none; got {self.superpixels!r}')


@dataclass
class PrepareReport:
    """What a run did; ``complete`` once the manifest exists."""

    scans: int = 0
    shards_total: int = 0
    shards_written: int = 0
    shards_resumed: int = 0
    frames_written: int = 0
    points: int = 0
    pairs: int = 0
    images: int = 0
    nan_points: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    camera_problems: Counter[str] = field(default_factory=Counter)
    unpaired: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    complete: bool = False
    usable_frames: int = 0
    seconds: float = 0.0

    def add(self, meta: dict[str, Any]) -> None:
        counts = meta['counts']
        self.frames_written += counts['frames']
        self.points += counts['points']
        self.pairs += counts['pairs']
        self.images += counts['images']
        self.nan_points += counts['nan_points']
        self.dropped.update(counts['dropped'])
        self.camera_problems.update(counts['camera_problems'])


# -- planning -----------------------------------------------------------------------------

def _plan_identity(bags: Sequence[Path], preset: TopicPreset, teacher: dict[str, Any] | None,
                   frames_per_shard: int, superpixels: int | None) -> dict[str, Any]:
    return {'format': FORMAT, 'bags': [str(p) for p in bags], 'preset': config_to_dict(preset),
            'teacher': teacher, 'frames_per_shard': frames_per_shard,
            'superpixels': superpixels}


def _check_plan(out: Path, identity: dict[str, Any]) -> None:
    """Refuse to mix two different preparations in one folder; record the first.

    A key missing from either side counts as null, so a plan written before an option
    existed matches a run that leaves that option off.
    """
    path = out / PLAN
    if path.exists():
        previous = json.loads(path.read_text())
        differing = sorted(k for k in previous.keys() | identity.keys()
                           if previous.get(k) != identity.get(k))
        if differing:
            raise DataError(f'{out} holds a preparation with different {", ".join(differing)}; '
                            'use a new --out folder (or delete this one) to start over')
        return
    write_text_atomic(path, json.dumps(identity, indent=2, sort_keys=True))


def _shards_of(frames: Sequence[PlannedFrame], frames_per_shard: int
               ) -> list[list[PlannedFrame]]:
    """Consecutive scans of one bag per shard (a shard never spans two bags)."""
    shards: list[list[PlannedFrame]] = []
    for frame in frames:
        if not shards or shards[-1][0].source != frame.source or \
                len(shards[-1]) >= frames_per_shard:
            shards.append([])
        shards[-1].append(frame)
    return shards


# -- one shard ----------------------------------------------------------------------------

def build_shard(results: Sequence[FrameResult], preset: TopicPreset,
                teacher: TeacherSpec | None, superpixels: int | None = None
                ) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    """Arrays and metadata of one shard from read frames (see :mod:`.prepared` for the
    layout). Dropped frames appear only in the metadata, with their reason.
    ``superpixels`` (SLIC segments per image) adds ``pair_superpixel``."""
    camera_names = [c.name for c in preset.cameras]
    with_labels = preset.lidar.label_field is not None
    points, labels, point_offsets = [], [], [0]
    pair_point, pair_image, pair_uv, pair_label, pair_offsets = [], [], [], [], [0]
    pair_superpixel: list[NDArray[np.int32]] = []
    image_frame: list[int] = []
    image_camera: list[int] = []
    image_t: list[int] = []
    image_size: list[tuple[int, int]] = []
    grids: list[NDArray[np.float16]] = []
    pixel_labels = True
    frames_meta, dropped, camera_problems, nan_points = [], Counter[str](), Counter[str](), 0
    for result in results:
        nan_points += result.nan_points
        plan = result.plan
        entry: dict[str, Any] = {'key': f'{plan.source}:{plan.index}', 'source': plan.source,
                                 'index': plan.index, 't_ns': plan.scan.stamp_ns}
        for note in result.notes:
            camera_problems[note.split(':', 1)[0]] += 1
        if result.frame is None:
            assert result.reason is not None
            dropped[result.reason.split(':', 1)[0]] += 1
            frames_meta.append({**entry, 'dropped': result.reason})
            continue
        frame = result.frame
        f = len(point_offsets) - 1
        xyz = frame.scan.points[:, :3]
        cameras = list(frame.cameras)
        if teacher is not None and cameras:
            grids.extend(np.asarray(g, dtype=np.float16) for g in teacher.featurize(cameras))
        for camera in cameras:
            index, uv = point_pixel_pairs(xyz, camera.T_cam_lidar, camera.model,
                                          min_depth_m=preset.min_depth_m,
                                          occlusion_filter=preset.occlusion_filter)
            image = len(image_frame)
            image_frame.append(f)
            image_camera.append(camera_names.index(camera.name))
            image_t.append(camera.t_ns)
            image_size.append((camera.model.width_px, camera.model.height_px))
            pair_point.append(index.astype(np.int32))
            pair_image.append(np.full(len(index), image, dtype=np.int32))
            pair_uv.append(uv)
            px = np.rint(uv).astype(np.int64)
            if camera.semantic is None:
                pixel_labels = False
            else:
                pair_label.append(camera.semantic[px[:, 1], px[:, 0]].astype(np.uint16))
            if superpixels is not None:
                segments = slic_superpixels(camera.rgb, superpixels)
                pair_superpixel.append(segments[px[:, 1], px[:, 0]])
        points.append(frame.scan.points)
        if with_labels:
            assert frame.scan.labels is not None
            labels.append(frame.scan.labels)
        point_offsets.append(point_offsets[-1] + frame.scan.num_points)
        pair_offsets.append(sum(len(p) for p in pair_point))
        frames_meta.append({**entry, 'points': frame.scan.num_points,
                            'images': [{'camera': c.name, 't_ns': c.t_ns} for c in cameras],
                            'notes': list(result.notes)})

    def cat(parts: list[NDArray[Any]], dtype: Any, width: int | None = None) -> NDArray[Any]:
        if parts:
            return np.ascontiguousarray(np.concatenate(parts).astype(dtype, copy=False))
        return np.zeros((0,) if width is None else (0, width), dtype=dtype)

    arrays: dict[str, NDArray[Any]] = {
        'points': cat(points, np.float32, 4),
        'point_offsets': np.asarray(point_offsets, dtype=np.int64),
        'image_frame': np.asarray(image_frame, dtype=np.int32),
        'image_camera': np.asarray(image_camera, dtype=np.int16),
        'image_t_ns': np.asarray(image_t, dtype=np.int64),
        'image_size': np.asarray(image_size, dtype=np.int32).reshape(-1, 2),
        'pair_point': cat(pair_point, np.int32),
        'pair_image': cat(pair_image, np.int32),
        'pair_uv': cat(pair_uv, np.float32, 2),
        'pair_offsets': np.asarray(pair_offsets, dtype=np.int64),
    }
    if with_labels:
        arrays['labels'] = cat(labels, np.uint16)
    if pixel_labels and image_frame:
        arrays['pair_pixel_label'] = cat(pair_label, np.uint16)
    if superpixels is not None:  # written even when empty: the manifest promises it
        arrays['pair_superpixel'] = cat(pair_superpixel, np.int32)
    if teacher is not None:
        if len(grids) != len(image_frame):
            raise DataError(f'teacher {teacher.teacher_id} returned {len(grids)} grids for '
                            f'{len(image_frame)} images')
        shapes = np.asarray([g.shape[:2] for g in grids], dtype=np.int32).reshape(-1, 2)
        arrays['features'] = cat([g.reshape(-1, g.shape[-1]) for g in grids], np.float16,
                                 teacher.feature_dim)
        arrays['feature_shape'] = shapes
        arrays['feature_offsets'] = np.concatenate(
            [[0], np.cumsum(shapes[:, 0].astype(np.int64) * shapes[:, 1])]).astype(np.int64)
    counts = {'frames': len(point_offsets) - 1, 'points': int(point_offsets[-1]),
              'pairs': int(pair_offsets[-1]), 'images': len(image_frame),
              'nan_points': nan_points, 'dropped': dict(sorted(dropped.items())),
              'camera_problems': dict(sorted(camera_problems.items()))}
    return arrays, {'frames': frames_meta, 'counts': counts}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open('rb') as stream:
        for block in iter(lambda: stream.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def write_shard(out: Path, name: str, arrays: dict[str, NDArray[Any]], meta: dict[str, Any]
                ) -> dict[str, Any]:
    """Write a shard folder atomically (temp folder + rename); returns its metadata with
    per-file sha256 checksums."""
    shards = out / SHARDS
    shards.mkdir(parents=True, exist_ok=True)
    tmp = make_staging_dir(shards / name)
    try:
        for key, array in arrays.items():
            np.save(tmp / f'{key}.npy', array, allow_pickle=False)
        meta = {**meta, 'name': name,
                'checksums': {f'{k}.npy': _sha256(tmp / f'{k}.npy') for k in sorted(arrays)}}
        (tmp / SHARD_META).write_text(json.dumps(meta, indent=1, sort_keys=True))
        for file in tmp.iterdir():
            _fsync(file)
        os.rename(tmp, shards / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _fsync(path: Path) -> None:
    with path.open('rb') as stream:
        os.fsync(stream.fileno())


# -- running ------------------------------------------------------------------------------

def _process_shard(source: BagSource, frames: Sequence[PlannedFrame],
                   teacher: TeacherSpec | None, out: Path, name: str,
                   superpixels: int | None) -> dict[str, Any]:
    results = list(source.read(frames))
    arrays, meta = build_shard(results, source.preset, teacher, superpixels)
    return write_shard(out, name, arrays, meta)


# Worker-process state, set once per process by the pool initializer: bags are reopened and
# the teacher built (weights loaded) once per worker, not once per shard.
_WORKER: dict[str, Any] = {}


def _init_worker(sources: list[BagSource | None], factory: TeacherFactory | None,
                 superpixels: int | None) -> None:
    _WORKER['sources'] = sources
    _WORKER['teacher'] = factory() if factory is not None else None
    _WORKER['superpixels'] = superpixels


def _worker_shard(source: int, frames: list[PlannedFrame], out: str, name: str
                  ) -> dict[str, Any]:
    return _process_shard(_WORKER['sources'][source], frames, _WORKER['teacher'], Path(out),
                          name, _WORKER['superpixels'])


def prepare_dataset(bags: Sequence[str | os.PathLike[str]], preset: TopicPreset,
                    out: str | os.PathLike[str], *, teacher_factory: TeacherFactory | None = None,
                    options: PrepareOptions = PrepareOptions(),
                    progress: Callable[[int], None] | None = None,
                    on_plan: Callable[[int, int], None] | None = None) -> PrepareReport:
    """Prepare ``bags`` into ``out`` (see the module doc); resumable and shardable.

    ``teacher_factory`` builds the teacher (in this process, and once in each worker);
    ``progress(n)`` is called with the number of scans of each shard finished;
    ``on_plan(scans_to_do, scans_already_done)`` once the work is planned.
    """
    start = time.perf_counter()
    out_dir = Path(out)
    bag_paths = [Path(b).resolve() for b in bags]
    if not bag_paths:
        raise DataError('no bag given')
    report = PrepareReport()
    sources: list[BagSource | None] = []
    for i, path in enumerate(bag_paths):
        try:
            sources.append(BagSource(path, preset, i))
        except UnreadableBagError as err:  # other bags still count; reported in the manifest
            report.problems.append(str(err))
            sources.append(None)
    planned: list[PlannedFrame] = []
    for source in sources:
        if source is None:
            continue
        frames, unpaired = source.plan()
        planned.extend(frames)
        report.problems.extend(source.problems)
        for name, count in unpaired.items():
            report.unpaired[name] = report.unpaired.get(name, 0) + count
        source.close()
    report.scans = len(planned)
    teacher = teacher_factory() if teacher_factory is not None else None
    teacher_info = ({'id': teacher.teacher_id, 'feature_dim': teacher.feature_dim}
                    if teacher is not None else None)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SHARDS).mkdir(exist_ok=True)
    _check_plan(out_dir, _plan_identity(bag_paths, preset, teacher_info,
                                        options.frames_per_shard, options.superpixels))
    sweep_stale(out_dir / SHARDS)  # shards half-written by runs that were killed
    shards = _shards_of(planned, options.frames_per_shard)
    names = [f'{k:06d}' for k in range(len(shards))]
    report.shards_total = len(shards)
    group, groups = options.shard_group
    todo = [k for k in range(len(shards))
            if k % groups == group and not (out_dir / SHARDS / names[k] / SHARD_META).exists()]
    mine = [k for k in range(len(shards)) if k % groups == group]
    report.shards_resumed = len(mine) - len(todo)
    if on_plan is not None:
        on_plan(sum(len(shards[k]) for k in todo),
                sum(len(shards[k]) for k in mine if k not in todo))
    if options.workers > 1 and len(todo) > 1:
        _run_pool(sources, teacher_factory, options.superpixels, shards, names, todo, out_dir,
                  options.workers, report, progress)
    else:
        for k in todo:
            source = sources[shards[k][0].source]
            assert source is not None  # unreadable bags plan no frames
            _process_shard(source, shards[k], teacher, out_dir, names[k], options.superpixels)
            report.shards_written += 1
            if progress is not None:
                progress(len(shards[k]))
        for source in sources:
            if source is not None:
                source.close()
    _finish(out_dir, names, bag_paths, sources, preset, teacher_info, options.superpixels,
            report)
    report.seconds = time.perf_counter() - start
    return report


def _run_pool(sources: list[BagSource | None], factory: TeacherFactory | None,
              superpixels: int | None, shards: list[list[PlannedFrame]], names: list[str],
              todo: list[int], out: Path, workers: int, report: PrepareReport,
              progress: Callable[[int], None] | None) -> None:
    # spawn, not fork: the parent may hold torch threads and open bag handles.
    context = multiprocessing.get_context('spawn')
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context,
                             initializer=_init_worker,
                             initargs=(sources, factory, superpixels)) as pool:
        futures = {pool.submit(_worker_shard, shards[k][0].source, shards[k], str(out),
                               names[k]): k for k in todo}
        for future in as_completed(futures):
            future.result()
            report.shards_written += 1
            if progress is not None:
                progress(len(shards[futures[future]]))


def _finish(out: Path, names: list[str], bags: list[Path], sources: list[BagSource | None],
            preset: TopicPreset, teacher: dict[str, Any] | None, superpixels: int | None,
            report: PrepareReport) -> None:
    """Count what is on disk and, when every shard exists, write the manifest."""
    metas = []
    for name in names:
        path = out / SHARDS / name / SHARD_META
        if path.exists():
            metas.append(json.loads(path.read_text()))
    for meta in metas:
        report.add(meta)
    report.usable_frames = report.frames_written
    if len(metas) != len(names) or report.frames_written == 0:
        return  # incomplete, or complete but empty: no manifest promises a usable dataset
    manifest = {
        'format': FORMAT,
        'bags': [{'path': str(path), 'scans': source.num_scans if source else 0,
                  'readable': source is not None}
                 for path, source in zip(bags, sources, strict=True)],
        'preset': config_to_dict(preset),
        'cameras': [c.name for c in preset.cameras],
        'teacher': teacher,
        'labels': preset.lidar.label_field is not None,
        'superpixels': superpixels,
        'counts': {'scans': report.scans, 'frames': report.frames_written,
                   'points': report.points, 'pairs': report.pairs, 'images': report.images,
                   'nan_points': report.nan_points, 'dropped': dict(sorted(report.dropped.items())),
                   'camera_problems': dict(sorted(report.camera_problems.items())),
                   'unpaired_scans': dict(sorted(report.unpaired.items()))},
        'problems': report.problems,
        'shards': [{'name': m['name'], 'frames': m['counts']['frames'],
                    'checksums': m['checksums']} for m in metas],
    }
    write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    report.complete = True
