"""The 3D student: voxelization, MinkUNet over pluggable sparse backends, checkpoint import.

Typical use::

    config = StudentConfig(variant="34", backend="native")
    model = build_student(config)
    batch = voxelize_batch([scan_xyzi], config)   # scans: (N_i, 4) float32 tensors
    features = model(batch)                       # (sum N_i, config.out_dim)
"""

from relkd_core.models.batch import VoxelBatch, voxelize_batch
from relkd_core.models.config import StudentConfig
from relkd_core.models.convert import load_minkowski_state_dict
from relkd_core.models.minkunet import (
    MinkUNet,
    MinkUNet14,
    MinkUNet18,
    MinkUNet34,
    build_student,
)
from relkd_core.models.sparse import available_backends

__all__ = [
    "MinkUNet",
    "MinkUNet14",
    "MinkUNet18",
    "MinkUNet34",
    "StudentConfig",
    "VoxelBatch",
    "available_backends",
    "build_student",
    "load_minkowski_state_dict",
    "voxelize_batch",
]
