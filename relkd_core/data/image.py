"""``sensor_msgs/Image`` and ``CompressedImage`` → NumPy, duck-typed and without cv_bridge."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.errors import DataError

# encoding → (dtype, channels)
_ENCODINGS = {
    'rgb8': ('u1', 3), 'bgr8': ('u1', 3), 'rgba8': ('u1', 4), 'bgra8': ('u1', 4),
    'mono8': ('u1', 1), '8UC1': ('u1', 1), 'mono16': ('u2', 1), '16UC1': ('u2', 1),
    '32SC1': ('i4', 1), '32FC1': ('f4', 1),
}


def image_to_array(msg: Any) -> NDArray[Any]:
    """Pixels of an ``Image``: H×W for one channel, H×W×C otherwise (native byte order).

    Colour images are returned as stored; use :func:`to_rgb` for RGB order.
    """
    if msg.encoding not in _ENCODINGS:
        raise DataError(f'unsupported image encoding {msg.encoding!r}; '
                        f'supported: {sorted(_ENCODINGS)}')
    kind, channels = _ENCODINGS[msg.encoding]
    dtype = np.dtype(('>' if msg.is_bigendian else '<') + kind)
    row_bytes = msg.width * channels * dtype.itemsize
    buffer = memoryview(msg.data).cast('B')
    if msg.step < row_bytes or len(buffer) < msg.step * msg.height:
        raise DataError(f'image data too short for {msg.width}x{msg.height} {msg.encoding} '
                        f'(step {msg.step}, {len(buffer)} bytes)')
    rows = np.frombuffer(buffer, np.uint8, count=msg.step * msg.height)
    rows = rows.reshape(msg.height, msg.step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype).astype(dtype.newbyteorder('='))
    shape = (msg.height, msg.width) if channels == 1 else (msg.height, msg.width, channels)
    return pixels.reshape(shape)


def compressed_to_rgb(msg: Any) -> NDArray[np.uint8]:
    """Decode a JPEG/PNG ``CompressedImage`` to H×W×3 RGB uint8."""
    from PIL import Image as PilImage

    try:
        with PilImage.open(io.BytesIO(bytes(memoryview(msg.data).cast('B')))) as image:
            return np.asarray(image.convert('RGB'))
    except OSError as err:
        raise DataError(f'cannot decode CompressedImage (format {msg.format!r}): {err}') from err


def to_rgb(msg: Any) -> NDArray[np.uint8]:
    """H×W×3 RGB uint8 from an ``Image`` (rgb8/bgr8/rgba8/bgra8/mono8) or ``CompressedImage``."""
    if hasattr(msg, 'format') and not hasattr(msg, 'encoding'):
        return compressed_to_rgb(msg)
    pixels = image_to_array(msg)
    if msg.encoding in ('mono8', '8UC1'):
        return np.repeat(pixels[..., None], 3, axis=2)
    if msg.encoding.startswith('bgr'):
        return np.ascontiguousarray(pixels[..., 2::-1])
    if msg.encoding.startswith('rgb'):
        return np.ascontiguousarray(pixels[..., :3])
    raise DataError(f'image encoding {msg.encoding!r} is not a colour image')
