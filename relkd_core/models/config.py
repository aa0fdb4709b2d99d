"""Configuration of the 3D student (a MinkUNet over sparse voxels)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from relkd_core.config import bounded

__all__ = ["INPUT_CHANNELS", "BackendName", "InputFeatures", "StudentConfig"]

BackendName = Literal["native", "native-ref", "spconv", "minkowski"]
InputFeatures = Literal["intensity", "ones", "xyzi"]

# Channels of the voxel features each choice of ``StudentConfig.input_features`` gives.
INPUT_CHANNELS: dict[str, int] = {"intensity": 1, "ones": 1, "xyzi": 4}


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudentConfig:
    """The 3D student: architecture, voxelization and sparse-convolution backend.

    The defaults reproduce the SLidR student (Res16UNet34C: 0.1 m cylindrical voxels with 1°
    azimuth bins, 3×3×3 stem, 64-d L2-normalised output).

    Fields:
        variant: encoder/decoder depth, MinkUNet14 / 18 / 34 (blocks per stage as in the
            MinkowskiEngine examples).
        width_multiplier: scales every stage width (32, 64, 128, 256, 256, 128, 96, 96);
            a stage never gets fewer than 1 channel.
        input_features: what each voxel sees of the N×4 xyzi scan: ``intensity`` (mean
            intensity of its points, 1 channel, as SLidR with ``use_intensity``), ``ones``
            (a constant 1, 1 channel, SLidR's default), or ``xyzi`` (mean x, y, z in metres and
            mean intensity, 4 channels).
        out_dim: channels of the per-point output features.
        voxel_size_m: voxel edge in metres (Cartesian), or the range and height bin in
            metres (cylindrical).
        voxelization: ``cartesian`` (x, y, z cubes) or ``cylindrical`` (rho, phi, z).
        angular_resolution_deg: azimuth bin of cylindrical voxels in degrees; unused for
            Cartesian voxels.
        stem_kernel_size: kernel of the first convolution (SLidR: 3; MinkowskiEngine
            examples: 5).
        bn_momentum: momentum of every batch norm (PyTorch convention; SLidR uses 0.05).
        backend: sparse-convolution engine; ``native`` is always available: PyTorch, with a
            compiled fast path on CPU built on first use when a C++ compiler is present;
            ``native-ref`` is its pure-PyTorch reference alone.
        normalize_output: L2-normalise the per-point output features.
    """

    variant: Literal["14", "18", "34"] = "34"
    width_multiplier: float = bounded(1.0, min=0.01, max=16.0)
    input_features: InputFeatures = "intensity"
    out_dim: int = bounded(64, min=1)
    voxel_size_m: float = bounded(0.1, min=1e-3, max=100.0)
    voxelization: Literal["cartesian", "cylindrical"] = "cylindrical"
    angular_resolution_deg: float = bounded(1.0, min=1e-3, max=90.0)
    stem_kernel_size: Literal[1, 3, 5] = 3
    bn_momentum: float = bounded(0.05, min=0.0, max=1.0)
    backend: BackendName = "native"
    normalize_output: bool = True

    @property
    def in_channels(self) -> int:
        """Channels of the voxel input features (1 or 4, from ``input_features``)."""
        return INPUT_CHANNELS[self.input_features]
