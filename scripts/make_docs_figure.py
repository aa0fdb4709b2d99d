"""Render docs/synth_projection.png: synthetic camera images with the lidar scan projected
onto them, each point coloured by its ground-truth class.

Run: ``.venv/bin/python scripts/make_docs_figure.py [--out docs/synth_projection.png]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from relkd_core.data.pointcloud import xyz_of
from relkd_core.geometry.projection import project_points, unoccluded_mask
from relkd_core.geometry.se3 import invert_transform, transform_points
from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.rig import RIGS
from relkd_core.taxonomy import CLASS_NAMES, LABEL_COLORS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, default=Path('docs/synth_projection.png'))
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--frame', type=int, default=4)
    args = parser.parse_args()

    rig = RIGS['nuscenes'].with_image_size(800, 448)
    drive = SyntheticDrive(rig, args.frame + 1, seed=args.seed)
    frame = drive.frame(args.frame)
    colors = np.asarray(LABEL_COLORS, dtype=float) / 255.0
    points = frame.points[frame.points['label'] != 0]
    T_odom_lidar = frame.ego_poses[frame.t_ns] @ rig.lidar.mount.T_base_sensor()

    shots = {s.camera.name: s for s in frame.shots}
    layout = [['CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT'],
              ['CAM_BACK_LEFT', 'CAM_BACK', 'CAM_BACK_RIGHT']]
    fig, axes = plt.subplots(3, 3, figsize=(18, 10.5),
                             gridspec_kw={'height_ratios': [1, 1, 1]})
    for row, names in enumerate(layout):
        for col, name in enumerate(names):
            shot, ax = shots[name], axes[row, col]
            cam = shot.camera
            T = invert_transform(frame.ego_poses[shot.t_ns] @ cam.T_base_optical()) @ T_odom_lidar
            xyz = transform_points(T, xyz_of(points))
            uv, visible = project_points(xyz, cam.K(), cam.width_px, cam.height_px)
            keep = np.flatnonzero(visible)
            keep = keep[unoccluded_mask(uv[keep], xyz[keep, 2], cam.width_px, cam.height_px)]
            ax.imshow(shot.images.rgb)
            ax.scatter(uv[keep, 0], uv[keep, 1], s=1.2, c=colors[points['label'][keep]],
                       linewidths=0)
            ax.set_title(name, fontsize=10)
            ax.axis('off')
    # Bottom row: the camera image, its ground-truth labels, and a bird's-eye view.
    front = shots['CAM_FRONT']
    axes[2, 0].imshow(front.images.rgb)
    axes[2, 0].set_title('CAM_FRONT image', fontsize=10)
    axes[2, 1].imshow(colors[front.images.semantic])
    axes[2, 1].set_title('CAM_FRONT ground-truth labels (/CAM_FRONT/semantic)', fontsize=10)
    xyz_all = xyz_of(points)
    near = (np.abs(xyz_all[:, 0]) < 40) & (np.abs(xyz_all[:, 1]) < 25)
    axes[2, 2].scatter(xyz_all[near, 0], xyz_all[near, 1], s=0.3,
                       c=colors[points['label'][near]], linewidths=0)
    axes[2, 2].set_aspect('equal')
    axes[2, 2].set_title("lidar scan, bird's-eye view (x forward, 80 m × 50 m)", fontsize=10)
    for ax in axes[2]:
        ax.axis('off')
    handles = [Patch(color=colors[i + 1], label=name) for i, name in enumerate(CLASS_NAMES)]
    fig.legend(handles=handles, loc='lower center', ncol=8, fontsize=9, frameon=False)
    fig.suptitle(f'relkd-synth, nuscenes rig, seed {args.seed}, frame {args.frame}: lidar '
                 'points projected with the rig calibration, coloured by class', fontsize=12)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=72)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
