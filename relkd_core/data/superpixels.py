"""SLIC superpixels of camera images, for contrastive losses that pool point and pixel
features per superpixel (SLidR, Sautier et al. 2022).

The only module that imports scikit-image; it is imported when first needed, so preparing a
dataset without superpixels does not require it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.errors import DataError

__all__ = ['slic_superpixels']


def _import_slic() -> Any:
    try:
        from skimage.segmentation import slic
    except ImportError as err:
        raise DataError(
            'superpixels need scikit-image: `pip install scikit-image` (or the [superpixels] '
            f'extra of relkd_ros), or prepare without --superpixels; {err}') from err
    return slic


def slic_superpixels(rgb: NDArray[np.uint8], num_segments: int,
                     compactness: float = 10.0) -> NDArray[np.int32]:
    """SLIC superpixels of one image: H×W int32 segment ids ``0..S-1``, contiguous.

    ``rgb`` is H×W×3 uint8. ``num_segments`` is the number SLIC aims for; it returns about
    that many (fewer on flat images, since segments must be connected). ``compactness``
    trades colour similarity (low) for square, grid-like segments (high). SLIC has no
    randomness, so the same image always gives the same segments.

    SLidR computes SLIC with 150 segments per nuScenes image (``compactness=6, sigma=3`` in
    its ``superpixel_segmenter.py``); its loss then averages point and pixel features within
    each superpixel before contrasting them.
    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        got = (f'{rgb.dtype} array of shape {rgb.shape}' if isinstance(rgb, np.ndarray)
               else type(rgb).__name__)
        raise DataError(f'rgb: expected an H×W×3 uint8 image, got {got}')
    if isinstance(num_segments, bool) or not isinstance(num_segments, (int, np.integer)) \
            or num_segments < 1:
        raise DataError(f'num_segments: expected a whole number of at least 1, got '
                        f'{num_segments!r}')
    if not np.isfinite(compactness) or compactness <= 0:
        raise DataError(f'compactness: expected a positive number, got {compactness!r}')
    slic = _import_slic()
    segments = slic(rgb, n_segments=int(num_segments), compactness=float(compactness),
                    start_label=0, channel_axis=-1)
    # SLIC's ids can have gaps (connectivity enforcement merges small segments away).
    _, dense = np.unique(np.asarray(segments).ravel(), return_inverse=True)
    return dense.reshape(rgb.shape[:2]).astype(np.int32)
