"""Benchmark: 2D teacher throughput (images/s) and the simulated VLM's own zero-shot mIoU.

Run: ``.venv/bin/python bench/bench_teacher.py --out bench/results/teacher.json``
Writes JSON with images/s of the ``synthetic`` teacher and of the ``openclip`` teacher (ViT-B-16
architecture, random weights: the cost does not depend on the weights) at the nuScenes rig's
400x224, and the synthetic teacher's 2D zero-shot mIoU (per class too) on the pixels and on the
lidar points projected into the cameras, default vocabulary. Prints a Markdown table.
Target: the synthetic teacher at >= 50 images/s on 2 CPU cores (6 images per lidar frame).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import machine_info, write_results

from relkd_core.geometry.projection import project_points, unoccluded_mask
from relkd_core.geometry.se3 import invert_transform, transform_points
from relkd_core.metrics import confusion_matrix
from relkd_core.sim.drive import SimFrame, SyntheticDrive
from relkd_core.sim.rig import RIGS
from relkd_core.taxonomy import CLASS_NAMES, NUM_CLASSES
from relkd_core.teachers import build_teacher
from relkd_core.teachers.base import Teacher, TeacherImage, sample_grid
from relkd_core.teachers.evaluate import ZeroShotResult, predict_labels, zero_shot_pixels
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


def zero_shot_on_points(teacher: Teacher, drive: SyntheticDrive, frames: list[SimFrame],
                        vocabulary: Vocabulary) -> ZeroShotResult:
    """Every (point, camera) pair where the point projects unoccluded into the image."""
    text = teacher.text_features(vocabulary)
    rig = drive.rig
    T_base_lidar = rig.lidar.mount.T_base_sensor()
    confusion = np.zeros((NUM_CLASSES + 1, NUM_CLASSES + 1), dtype=np.int64)
    for frame in frames:
        xyz_lidar = np.stack([frame.points[k] for k in ('x', 'y', 'z')], axis=1).astype(float)
        xyz_odom = transform_points(frame.ego_poses[frame.t_ns] @ T_base_lidar, xyz_lidar)
        grids = teacher.image_features(teacher_images(frame))
        for shot, grid in zip(frame.shots, grids, strict=True):
            camera = shot.camera
            T_optical_odom = invert_transform(frame.ego_poses[shot.t_ns] @ camera.T_base_optical())
            xyz_cam = transform_points(T_optical_odom, xyz_odom)
            uv, visible = project_points(xyz_cam, camera.K(), camera.width_px, camera.height_px)
            index = np.flatnonzero(visible)
            keep = unoccluded_mask(uv[index], xyz_cam[index, 2], camera.width_px,
                                   camera.height_px)
            index = index[keep]
            predicted = predict_labels(sample_grid(grid, uv[index]), text, vocabulary)
            confusion += confusion_matrix(frame.points['label'][index], predicted)
    return ZeroShotResult.from_confusion(confusion)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, default=Path('bench/results/teacher.json'))
    parser.add_argument('--frames', type=int, default=20, help='nuScenes-rig frames (6 images)')
    parser.add_argument('--openclip-images', type=int, default=12)
    args = parser.parse_args()

    rig = RIGS['nuscenes']
    drive = SyntheticDrive(rig, args.frames * 10, seed=0)
    frames = [drive.frame(i) for i in range(0, args.frames * 10, 10)]  # 0.5 s apart
    images = [image for frame in frames for image in teacher_images(frame)]
    vocabulary = Vocabulary.default()
    size = f'{rig.cameras[0].width_px}x{rig.cameras[0].height_px}'

    synthetic = build_teacher('synthetic')
    synthetic.text_features(vocabulary)  # loads the text model outside the timing
    runs: dict[str, Any] = {
        'synthetic': {
            'teacher_id': synthetic.teacher_id,
            'image_size': size,
            'images': len(images),
            'images_per_s': round(images_per_s(synthetic, images, batch=6, repeats=3), 1),
        },
    }
    print('synthetic', runs['synthetic'], flush=True)
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

    pixels = zero_shot_pixels(synthetic, vocabulary, images, batch_size=6)
    points = zero_shot_on_points(synthetic, drive, frames, vocabulary)
    results = {
        'machine': machine_info(),
        'target': 'synthetic teacher >= 50 images/s at 400x224',
        'runs': runs,
        'synthetic_zero_shot': {'frames': len(frames), 'rig': 'nuscenes', 'seed': 0,
                                'vocabulary': 'default (nuScenes 16)',
                                'pixels': pixels.to_dict(), 'points': points.to_dict()},
    }
    write_results(args.out, results)

    print('\n| teacher | image size | images/s |\n|---|---|---|')
    for name, run in runs.items():
        print(f"| {name} | {run['image_size']} | {run['images_per_s']} |")
    pixel_iou, point_iou = (r.to_dict()['per_class_iou_pct'] for r in (pixels, points))
    print('\n| class | IoU pixels (%) | IoU points (%) |\n|---|---|---|')
    for name in CLASS_NAMES:
        print(f'| {name} | {pixel_iou[name]} | {point_iou[name]} |')
    print(f'| **mIoU** | **{100 * pixels.miou:.1f}** | **{100 * points.miou:.1f}** |')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
