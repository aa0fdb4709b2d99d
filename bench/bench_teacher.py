"""Benchmark: 2D teacher throughput (images/s) and each teacher's own zero-shot mIoU.

Run: ``.venv/bin/python bench/bench_teacher.py --out bench/results/teacher.json``
Writes JSON with images/s of the ``synthetic`` teacher, the ``learned`` teacher and the
``openclip`` teacher (ViT-B-16 architecture, random weights: the cost does not depend on the
weights) at the nuScenes rig's 400x224, and, for every teacher of the sensitivity study, the
three named zero-shot figures of :mod:`relkd_core.eval.teacher_scores` (``teacher_pixels``,
``teacher_projected``, ``teacher_visible``, per class too) on the validation drive of
``relkd-bench paper`` (nuScenes rig, scene seed 200, 8 scans, recorded and prepared here in a
temporary folder), default vocabulary. For the synthetic teacher it adds ``teacher_pixels`` on
a longer drive (seed 0, 20 frames 0.5 s apart: the figure this benchmark reported before) to
show how much the drive moves the figure. Prints Markdown tables.
Target: the synthetic teacher at >= 50 images/s on 2 CPU cores (6 images per lidar frame).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from common import machine_info, write_results

from relkd_core.cli.bench import SPLITS, STUDY_TEACHERS
from relkd_core.cli.prepare import main as prepare
from relkd_core.cli.synth import main as synth
from relkd_core.data.prepared import PreparedDataset
from relkd_core.eval.teacher_scores import teacher_pixels, teacher_projected, teacher_visible
from relkd_core.resources import find_named_config
from relkd_core.sim.drive import SimFrame, SyntheticDrive
from relkd_core.sim.rig import RIGS
from relkd_core.taxonomy import CLASS_NAMES
from relkd_core.teachers import build_teacher
from relkd_core.teachers.base import Teacher, TeacherImage
from relkd_core.teachers.vocabulary import Vocabulary


def teacher_images(frame: SimFrame) -> list[TeacherImage]:
    return [TeacherImage(rgb=s.images.rgb, camera=s.camera.name, t_ns=s.t_ns,
                         semantic=s.images.semantic, instance=s.images.instance)
            for s in frame.shots]


def images_per_s(teacher: Teacher, images: list[TeacherImage], batch: int,
                 repeats: int) -> float:
    teacher.image_features(images[:batch])  # warm-up: lazy tables, first-call allocations
    started = time.perf_counter()
    for _ in range(repeats):
        for start in range(0, len(images), batch):
            teacher.image_features(images[start:start + batch])
    return repeats * len(images) / (time.perf_counter() - started)


def build_study_teacher(name: str) -> Teacher:
    teacher, config = STUDY_TEACHERS[name]
    return build_teacher(teacher, None if config is None else  # type: ignore[arg-type]
                         find_named_config('teachers', config))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, default=Path('bench/results/teacher.json'))
    parser.add_argument('--openclip-images', type=int, default=12)
    args = parser.parse_args()

    _, rig_name, seed = next(split for split in SPLITS if split[0] == 'val')
    frames = 8
    rig = RIGS[rig_name]
    drive = SyntheticDrive(rig, frames, seed)
    images = [image for i in range(frames) for image in teacher_images(drive.frame(i))]
    vocabulary = Vocabulary.default()
    size = f'{rig.cameras[0].width_px}x{rig.cameras[0].height_px}'

    runs: dict[str, Any] = {}
    built = {name: build_study_teacher(name) for name in STUDY_TEACHERS}
    for name in ('synthetic', 'learned'):
        teacher = built[name]
        teacher.text_features(vocabulary)  # loads the text model outside the timing
        runs[name] = {'teacher_id': teacher.teacher_id, 'image_size': size,
                      'images': len(images),
                      'images_per_s': round(images_per_s(teacher, images, 6, 3), 1)}
        print(name, runs[name], flush=True)
    openclip = build_teacher('openclip', None, ['pretrained=null'])
    clip_images = images[:args.openclip_images]
    runs['openclip_vit_b_16'] = {
        'teacher_id': openclip.teacher_id,
        'weights': 'random init (same cost as trained weights)',
        'image_size': size,
        'grid': list(openclip.image_features(clip_images[:1])[0].shape),
        'images': len(clip_images),
        'images_per_s': round(images_per_s(openclip, clip_images, batch=6, repeats=1), 2),
    }
    print('openclip', runs['openclip_vit_b_16'], flush=True)

    zero_shot: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix='bench_teacher_') as tmp:
        bag = Path(tmp) / 'val'
        if synth(['--out', str(bag), '--rig', rig_name, '--frames', str(frames), '--seed',
                  str(seed), '--storage', 'mcap', '--image-format', 'jpeg']):
            raise SystemExit('recording the validation drive failed')
        for name, teacher in built.items():
            prepared = Path(tmp) / f'prepared_{name}'
            argv = ['--bag', str(bag), '--preset', 'synth-nuscenes', '--teacher',
                    STUDY_TEACHERS[name][0], '--out', str(prepared)]
            if STUDY_TEACHERS[name][1] is not None:
                argv += ['--teacher-config',
                         str(find_named_config('teachers', STUDY_TEACHERS[name][1]))]
            if prepare(argv):
                raise SystemExit(f'preparing with {name} failed')
            dataset = PreparedDataset(prepared)
            text = teacher.text_features(vocabulary)
            zero_shot[name] = {
                'teacher_id': teacher.teacher_id,
                'teacher_pixels': teacher_pixels(teacher, vocabulary, images, 6).to_dict(),
                'teacher_projected': teacher_projected(dataset, text, vocabulary).to_dict(),
                'teacher_visible': teacher_visible(dataset, text, vocabulary).to_dict()}
            print(name, {k: v['miou_pct'] for k, v in zero_shot[name].items()
                         if isinstance(v, dict)}, flush=True)
    # The figure this benchmark reported before: pixels of another, longer drive.
    long_drive = SyntheticDrive(rig, 200, seed=0)
    long_images = [image for i in range(0, 200, 10)
                   for image in teacher_images(long_drive.frame(i))]
    long_pixels = teacher_pixels(built['synthetic'], vocabulary, long_images, 6).to_dict()
    results = {
        'machine': machine_info(),
        'target': 'synthetic teacher >= 50 images/s at 400x224',
        'runs': runs,
        'zero_shot': {'drive': {'rig': rig_name, 'scene_seed': seed, 'frames': frames,
                                'what': "relkd-bench paper's validation drive"},
                      'vocabulary': 'default (nuScenes 16)', 'teachers': zero_shot},
        'synthetic_teacher_pixels_other_drive': {
            'drive': {'rig': rig_name, 'scene_seed': 0, 'frames': 20,
                      'what': 'frames 0, 10, ..., 190 of a 200-frame drive (0.5 s apart)'},
            'teacher_pixels': long_pixels},
    }
    write_results(args.out, results)

    print('\n| teacher | image size | images/s |\n|---|---|---|')
    for name, run in runs.items():
        print(f"| {name} | {run['image_size']} | {run['images_per_s']} |")
    figures = ('teacher_pixels', 'teacher_projected', 'teacher_visible')
    print('\n| teacher | ' + ' | '.join(figures) + ' |\n|---|---:|---:|---:|')
    for name, scores in zero_shot.items():
        print(f'| {name} | ' + ' | '.join(str(scores[f]['miou_pct']) for f in figures) + ' |')
    print(f"\nsynthetic, teacher_pixels on the seed-0 drive: {long_pixels['miou_pct']}")
    print('\n| class | ' + ' | '.join(zero_shot) + ' |  (teacher_visible IoU %)')
    for name in CLASS_NAMES:
        print(f'| {name} | ' + ' | '.join(
            str(scores['teacher_visible']['per_class_iou_pct'][name])
            for scores in zero_shot.values()) + ' |')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
