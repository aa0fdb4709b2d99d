"""Shared fixtures for the student tests: tiny configs, synthetic scans, backend lists."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from relkd_core.models import StudentConfig
from relkd_core.models.sparse import available_backends

# Parity and per-layer tests run on every installed backend; the others are skipped, with
# the reason, so a CI log says what was and was not checked.
OPTIONAL_BACKENDS = ("spconv", "minkowski")


def backend_params() -> list[object]:
    installed = available_backends()
    return [
        pytest.param(
            name,
            marks=pytest.mark.skipif(name not in installed, reason=f"{name} is not installed"),
        )
        for name in ("native", "native-ref", *OPTIONAL_BACKENDS)
    ]


def tiny_config(**overrides: object) -> StudentConfig:
    """MinkUNet14 at 1/8 width on 0.5 m Cartesian voxels: fast, and still 5 levels deep."""
    fields: dict[str, object] = {
        "variant": "14",
        "width_multiplier": 0.125,
        "voxelization": "cartesian",
        "voxel_size_m": 0.5,
        "out_dim": 8,
    }
    fields.update(overrides)
    return StudentConfig(**fields)  # type: ignore[arg-type]


def synthetic_scan(num_points: int, seed: int = 0, scale_m: float = 6.0) -> torch.Tensor:
    """(N, 4) float32 xyzi: a ground plane and a box-like blob, so voxels have neighbours."""
    rng = np.random.default_rng(seed)
    ground = np.column_stack([
        rng.uniform(-scale_m, scale_m, num_points // 2),
        rng.uniform(-scale_m, scale_m, num_points // 2),
        rng.normal(-1.5, 0.05, num_points // 2),
    ])
    rest = num_points - num_points // 2
    blob = rng.normal(0.0, scale_m / 4, size=(rest, 3)) + np.array([2.0, -1.0, 0.0])
    xyz = np.concatenate([ground, blob])
    intensity = rng.uniform(0.0, 1.0, size=(num_points, 1))
    return torch.from_numpy(np.concatenate([xyz, intensity], axis=1)).float()


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(params=backend_params())
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn (skipped when not installed)."""
    name: str = request.param
    return name


@pytest.fixture(params=[p for p in backend_params()  # type: ignore[attr-defined]
                        if not p.values[0].startswith("native")])
def other_backend(request: pytest.FixtureRequest) -> str:
    """Each optional backend in turn, for parity with native."""
    name: str = request.param
    return name


@pytest.fixture
def make_config() -> Callable[..., StudentConfig]:
    """``make_config(**overrides)``: the tiny config with some fields changed."""
    return tiny_config


@pytest.fixture
def make_scan() -> Callable[..., torch.Tensor]:
    """``make_scan(num_points, seed=0, scale_m=6.0)``: a synthetic (N, 4) float32 scan."""
    return synthetic_scan
