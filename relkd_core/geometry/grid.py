"""Bilinear sampling of a patch-level feature grid at pixel positions.

A dense 2D teacher returns one feature per image patch. The grid cell ``(r, c)`` of an
``Hg × Wg`` grid over a ``W × H`` image is centred at pixel
``((c + 0.5) · W / Wg − 0.5, (r + 0.5) · H / Hg − 0.5)`` (pixel centres at integers, as in
ROS); between centres features are interpolated bilinearly, outside the outermost centres
they are clamped to the edge cells. Sampling there equals upsampling the grid to the image
(bilinear, ``align_corners=False``) and reading the pixel, without building the full grid.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from relkd_core.errors import DataError

__all__ = ['axis_weights', 'sample_grid']

#: Values (samples x feature dimension) interpolated at a time: the temporaries of a
#: block, 512 KiB of float32, stay in cache.
_BLOCK_VALUES = 1 << 17


def axis_weights(coords_px: NDArray[np.floating], num_cells: int, num_px: int
                 ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Linear interpolation along one axis of ``num_px`` pixels covered by ``num_cells``
    cells: the two cells ``i0``, ``i1`` around each coordinate and the weight of ``i1``."""
    # Continuous cell coordinates whose integers are cell centres, clamped to the edge cells.
    cell = np.clip((np.asarray(coords_px, dtype=np.float64) + 0.5) * num_cells / num_px - 0.5,
                   0.0, num_cells - 1)
    i0 = np.minimum(np.floor(cell).astype(np.int64), max(num_cells - 2, 0))
    i1 = np.minimum(i0 + 1, num_cells - 1)
    return i0, i1, cell - i0


def sample_grid(features: NDArray[np.floating], image_size_px: tuple[int, int],
                uv_px: NDArray[np.floating], *, normalize: bool = True) -> NDArray[np.float32]:
    """Features (Hg×Wg×D) sampled at M×2 pixel positions ``(u, v)`` → M×D float32.

    ``image_size_px`` is the ``(width, height)`` the grid covers. With ``normalize`` each
    sample is re-normalised to unit length (bilinear mixing shortens unit vectors).
    """
    if features.ndim != 3:
        raise DataError(f'feature grid must be Hg×Wg×D, got shape {features.shape}')
    uv = np.asarray(uv_px, dtype=np.float64).reshape(-1, 2)
    grid_h, grid_w, dim = features.shape
    width, height = image_size_px
    x0, x1, wx = axis_weights(uv[:, 0], grid_w, width)
    y0, y1, wy = axis_weights(uv[:, 1], grid_h, height)
    flat = features.reshape(grid_h * grid_w, dim)
    if flat.dtype != np.float16 or flat.shape[0] <= 4 * len(uv):
        # Widening float16 is exact, so doing it once for the grid instead of for each of the
        # four gathers gives the same values, with fewer conversions (a float16 grid much
        # larger than the samples is gathered first, then widened).
        flat = np.ascontiguousarray(flat, dtype=np.float32)
    cells = torch.from_numpy(flat if flat.flags.writeable and flat.flags.c_contiguous
                             else np.array(flat))

    corners = [torch.from_numpy(y * grid_w + x) for y, x in ((y0, x0), (y0, x1), (y1, x0),
                                                             (y1, x1))]
    fx = torch.from_numpy(wx.astype(np.float32))[:, None]
    fy = torch.from_numpy(wy.astype(np.float32))[:, None]
    out = torch.empty((len(uv), dim), dtype=torch.float32)
    # torch's gathers and in-place lerps, a block of samples at a time so the temporaries stay
    # in cache: 0.34-0.70x the time of NumPy's fancy indexing with whole-size temporaries on
    # 64- to 512-d grids; reading a prepared frame with its teacher features 0.31-0.44x
    # (bench/bench_eval_paths.py).
    step = max(64, _BLOCK_VALUES // max(dim, 1))
    for start in range(0, len(uv), step):
        rows = slice(start, start + step)
        top_left, top_right, bottom_left, bottom_right = (
            cells.index_select(0, corner[rows]).float() for corner in corners)
        block = top_left.lerp_(top_right, fx[rows]).lerp_(
            bottom_left.lerp_(bottom_right, fx[rows]), fy[rows])
        if normalize:
            block /= block.norm(dim=1, keepdim=True).clamp_min_(1e-12)
        out[rows] = block
    return out.numpy()
