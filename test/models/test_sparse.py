"""Tests for the sparse backends: every convolution against a dense 3D convolution reference."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from relkd_core.errors import ModelError
from relkd_core.models.sparse import SparseGeometry, build_geometry, check_backend
from relkd_core.models.sparse.native import NativeGeometry

GRID = 8  # dense reference grid edge, in voxels at level 0
CHANNELS_IN, CHANNELS_OUT = 3, 4


def random_coords(num_scans: int = 2, density: float = 0.35, seed: int = 0) -> torch.Tensor:
    """(V, 4) int64 occupied cells of a GRID³ block per scan, shifted to negative cells too."""
    generator = torch.Generator().manual_seed(seed)
    occupied = torch.rand((num_scans, GRID, GRID, GRID), generator=generator) < density
    coords = torch.nonzero(occupied)
    coords[:, 1:] -= GRID // 2  # an even shift keeps the stride-2 parents aligned with the grid
    return coords


def to_dense(features: torch.Tensor, coords: torch.Tensor, num_scans: int, size: int,
             shift: int) -> torch.Tensor:
    """Scatter (V, C) sparse features into a (B, C, size, size, size) dense grid, axes x, y, z."""
    dense = features.new_zeros((num_scans, features.shape[1], size, size, size))
    x, y, z = (coords[:, axis] + shift for axis in (1, 2, 3))
    dense[coords[:, 0], :, x, y, z] = features
    return dense


def from_dense(dense: torch.Tensor, coords: torch.Tensor, shift: int) -> torch.Tensor:
    x, y, z = (coords[:, axis] + shift for axis in (1, 2, 3))
    return dense[coords[:, 0], :, x, y, z]


def dense_weight(weight: torch.Tensor, *, transposed: bool = False) -> torch.Tensor:
    """(K³, C_in, C_out) x-fastest -> conv3d (C_out, C_in, Kx, Ky, Kz) or transposed layout."""
    size = round(weight.shape[0] ** (1.0 / 3.0))
    grid = weight.reshape(size, size, size, weight.shape[1], weight.shape[2])  # (z, y, x, i, o)
    return grid.permute(3, 4, 2, 1, 0) if transposed else grid.permute(4, 3, 2, 1, 0)


def coarse_coords(coords: torch.Tensor) -> torch.Tensor:
    parents = coords.clone()
    parents[:, 1:] = torch.div(coords[:, 1:], 2, rounding_mode="floor")
    return torch.unique(parents, dim=0)


def sparse_rows_of(geometry_output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Reorder the rows of a coarse-level output to match ``reference`` (backends may order
    coarse voxels differently); rows are matched by their values, which are distinct here."""
    order_out = torch.argsort(geometry_output.sum(dim=1))
    order_ref = torch.argsort(reference.sum(dim=1))
    matched = torch.empty_like(geometry_output)
    matched[order_ref] = geometry_output[order_out]
    return matched


def dtype_for(backend: str) -> torch.dtype:
    # float64 where the backend supports it: the comparison then tests the maps, not rounding.
    return torch.float64 if backend.startswith("native") else torch.float32


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-10, "rtol": 1e-10} if dtype == torch.float64 else {"atol": 1e-4,
                                                                            "rtol": 1e-4}


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_subm_conv_matches_dense_conv3d_forward_and_gradients(backend: str,
                                                              kernel_size: int) -> None:
    dtype = dtype_for(backend)
    coords = random_coords()
    features = torch.randn(len(coords), CHANNELS_IN, dtype=dtype, requires_grad=True)
    weight = torch.randn(kernel_size**3, CHANNELS_IN, CHANNELS_OUT, dtype=dtype,
                         requires_grad=True)
    out = build_geometry(backend, coords, 3).subm_conv(0, features, weight)
    dense = functional.conv3d(to_dense(features, coords, 2, GRID, GRID // 2), dense_weight(weight),
                     padding=kernel_size // 2)
    reference = from_dense(dense, coords, GRID // 2)
    torch.testing.assert_close(out, reference, **tolerance(dtype))
    probe = torch.randn_like(out)
    grads = torch.autograd.grad((out * probe).sum(), (features, weight))
    reference_grads = torch.autograd.grad((reference * probe).sum(), (features, weight))
    for grad, reference_grad in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(grad, reference_grad, **tolerance(dtype))


def test_native_subm_conv_split_in_chunks_matches_dense_conv3d(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Large scans run each kernel offset in chunks of pairs; shrink the chunks so that every
    # offset of this small grid spans several of them, ragged last chunk included.
    from relkd_core.models.sparse import native

    assert native._chunk_rows(torch.zeros(1, 96), torch.zeros(27, 96, 96)) == 4096
    monkeypatch.setattr(native, "_chunk_rows", lambda features, weight: 7)
    test_subm_conv_matches_dense_conv3d_forward_and_gradients("native", 3)


def test_down_conv_matches_dense_strided_conv3d_forward_and_gradients(backend: str) -> None:
    dtype = dtype_for(backend)
    coords = random_coords()
    features = torch.randn(len(coords), CHANNELS_IN, dtype=dtype, requires_grad=True)
    weight = torch.randn(8, CHANNELS_IN, CHANNELS_OUT, dtype=dtype, requires_grad=True)
    geometry = build_geometry(backend, coords, 3)
    out = geometry.down_conv(0, features, weight)
    parents = coarse_coords(coords)
    dense = functional.conv3d(to_dense(features, coords, 2, GRID, GRID // 2), dense_weight(weight),
                     stride=2)
    reference = from_dense(dense, parents, GRID // 4)
    assert geometry.num_voxels(1) == len(parents)
    out = sparse_rows_of(out, reference)
    torch.testing.assert_close(out, reference, **tolerance(dtype))
    probe = torch.randn_like(out)
    grads = torch.autograd.grad((out * probe).sum(), (features, weight))
    reference_grads = torch.autograd.grad((reference * probe).sum(), (features, weight))
    for grad, reference_grad in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(grad, reference_grad, **tolerance(dtype))


def test_up_conv_matches_dense_transposed_conv3d_forward_and_gradients(backend: str) -> None:
    dtype = dtype_for(backend)
    coords = random_coords()
    geometry = build_geometry(backend, coords, 3)
    # The same coarse features twice: in the backend's own level-1 order for the backend, in
    # the order of ``parents`` for the dense reference.
    parents = coarse_coords(coords)
    coarse_reference = torch.randn(len(parents), CHANNELS_IN, dtype=dtype)
    coarse = _coarse_in_backend_order(geometry, coords, parents, coarse_reference)
    coarse.requires_grad_(True)
    weight = torch.randn(8, CHANNELS_IN, CHANNELS_OUT, dtype=dtype, requires_grad=True)
    out = geometry.up_conv(0, coarse, weight)
    coarse_leaf = coarse_reference.clone().requires_grad_(True)
    dense = functional.conv_transpose3d(to_dense(coarse_leaf, parents, 2, GRID // 2, GRID // 4),
                               dense_weight(weight, transposed=True), stride=2)
    reference = from_dense(dense, coords, GRID // 2)
    torch.testing.assert_close(out, reference, **tolerance(dtype))
    probe = torch.randn_like(out)
    grad_weight, = torch.autograd.grad((out * probe).sum(), (weight,), retain_graph=True)
    reference_grad_weight, = torch.autograd.grad((reference * probe).sum(), (weight,),
                                                 retain_graph=True)
    torch.testing.assert_close(grad_weight, reference_grad_weight, **tolerance(dtype))
    grad_coarse, = torch.autograd.grad((out * probe).sum(), (coarse,))
    reference_grad_coarse, = torch.autograd.grad((reference * probe).sum(), (coarse_leaf,))
    torch.testing.assert_close(torch.sort(grad_coarse.sum(dim=1)).values,
                               torch.sort(reference_grad_coarse.sum(dim=1)).values,
                               **tolerance(dtype))


def _coarse_in_backend_order(geometry: SparseGeometry, coords: torch.Tensor, parents: torch.Tensor,
                             coarse_reference: torch.Tensor) -> torch.Tensor:
    """``coarse_reference`` (rows in ``parents`` order) in the geometry's level-1 order.

    Each fine voxel carries the index of its parent in ``parents``; a down convolution with
    all-ones weights sums those codes per parent and another counts the children, so the
    quotient is each backend row's index in ``parents``.
    """
    dtype = coarse_reference.dtype
    fine_parent = torch.div(coords[:, 1:], 2, rounding_mode="floor")
    code = torch.searchsorted(_keys(parents), _keys(torch.cat([coords[:, :1], fine_parent], 1)))
    ones = torch.ones(8, 1, 1, dtype=dtype)
    code_sum = geometry.down_conv(0, code[:, None].to(dtype), ones)
    count = geometry.down_conv(0, torch.ones(len(coords), 1, dtype=dtype), ones)
    parent_index = torch.round(code_sum / count).long().squeeze(1)
    return coarse_reference[parent_index].detach().clone()


def _keys(coords: torch.Tensor) -> torch.Tensor:
    shifted = coords - coords.new_tensor([0, -GRID, -GRID, -GRID])
    return ((shifted[:, 0] * 64 + shifted[:, 1]) * 64 + shifted[:, 2]) * 64 + shifted[:, 3]


@pytest.mark.slow
def test_native_convolutions_pass_gradcheck() -> None:
    coords = random_coords(num_scans=1, density=0.3)
    features = torch.randn(len(coords), 2, dtype=torch.float64, requires_grad=True)
    geometry = build_geometry("native", coords, 2)
    coarse = torch.randn(geometry.num_voxels(1), 2, dtype=torch.float64, requires_grad=True)
    weight3 = torch.randn(27, 2, 2, dtype=torch.float64, requires_grad=True)
    weight2 = torch.randn(8, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, w: geometry.subm_conv(0, f, w), (features, weight3))
    assert torch.autograd.gradcheck(lambda f, w: geometry.down_conv(0, f, w), (features, weight2))
    assert torch.autograd.gradcheck(lambda f, w: geometry.up_conv(0, f, w), (coarse, weight2))


def test_native_geometry_caches_kernel_maps_per_level() -> None:
    geometry = NativeGeometry(random_coords(), 3)
    first = geometry._subm_map(1, 3)
    assert geometry._subm_map(1, 3) is first
    assert geometry._down_map(0) is geometry._down_map(0)


def test_native_subm_map_pairs_are_symmetric() -> None:
    geometry = NativeGeometry(random_coords(), 2)
    pairs = geometry._subm_map(0, 3)
    assert pairs[13] is None  # the centre offset is the identity
    for k in range(13):
        forward, mirror = pairs[k], pairs[26 - k]
        assert forward is not None and mirror is not None
        torch.testing.assert_close(forward[0], mirror[1])


def test_native_geometry_of_no_voxels_gives_empty_outputs() -> None:
    # The model never calls a backend without voxels; native still handles it, for direct use.
    geometry = build_geometry("native", torch.zeros((0, 4), dtype=torch.int64), 3)
    features = torch.zeros((0, 2))
    assert geometry.subm_conv(0, features, torch.randn(27, 2, 3)).shape == (0, 3)
    assert geometry.down_conv(0, features, torch.randn(8, 2, 3)).shape == (0, 3)
    assert geometry.num_voxels(2) == 0


def test_geometry_rejects_bad_coordinates_and_levels() -> None:
    with pytest.raises(ValueError, match=r"coords must be \(V, 4\) int64"):
        build_geometry("native", torch.zeros((3, 3), dtype=torch.int64), 2)
    with pytest.raises(ValueError, match=r"coords must be \(V, 4\) int64"):
        build_geometry("native", torch.zeros((3, 4), dtype=torch.int32), 2)
    geometry = build_geometry("native", random_coords(), 2)
    with pytest.raises(ValueError, match="no level below 1"):
        geometry.down_conv(1, torch.zeros((geometry.num_voxels(1), 1)), torch.zeros(8, 1, 1))


def test_check_backend_unknown_name_lists_choices() -> None:
    with pytest.raises(ModelError, match="unknown sparse backend 'torchsparse'; choose one of "
                                         "native, native-ref, spconv, minkowski"):
        check_backend("torchsparse")
