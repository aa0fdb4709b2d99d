"""Tests for relkd_core.data.image: Image / CompressedImage → NumPy without cv_bridge."""

from __future__ import annotations

import array
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from relkd_core.data.bag import MessageFactory, typestore
from relkd_core.data.image import compressed_to_rgb, image_to_array, to_rgb
from relkd_core.errors import DataError

HEIGHT, WIDTH = 5, 7
IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'


@pytest.fixture(scope='module')
def factory() -> MessageFactory:
    return MessageFactory(typestore('humble'))


def random_pixels(shape: tuple[int, ...], dtype: str, seed: int = 0) -> NDArray[Any]:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def smooth_rgb(height: int = 48, width: int = 64) -> NDArray[np.uint8]:
    """Gentle gradients: JPEG reproduces them to within a few grey levels."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rgb = np.stack([40 + 150 * u / width, 60 + 120 * v / height,
                    128 + 60 * np.sin(u / 12.0) * np.cos(v / 10.0)], axis=-1)
    return np.rint(rgb).astype(np.uint8)


def image_message(factory: MessageFactory, *, encoding: str, height: int, width: int,
                  step: int, data: Any, is_bigendian: int = 0) -> Any:
    return factory.types[IMAGE](header=factory.header(0, 'cam'), height=height, width=width,
                                encoding=encoding, is_bigendian=is_bigendian, step=step,
                                data=data)


@pytest.mark.parametrize(
    ("encoding", "shape", "dtype"),
    [
        ('rgb8', (HEIGHT, WIDTH, 3), 'uint8'),
        ('bgr8', (HEIGHT, WIDTH, 3), 'uint8'),
        ('mono8', (HEIGHT, WIDTH), 'uint8'),
        ('mono16', (HEIGHT, WIDTH), 'uint16'),
        ('16UC1', (HEIGHT, WIDTH), 'uint16'),
        ('32SC1', (HEIGHT, WIDTH), 'int32'),
    ],
)
def test_image_to_array_round_trip(factory: MessageFactory, encoding: str,
                                   shape: tuple[int, ...], dtype: str) -> None:
    pixels = random_pixels(shape, dtype)
    result = image_to_array(factory.image(pixels, encoding, 0, 'cam'))
    assert result.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(result, pixels)


def test_image_to_array_32fc1_round_trip(factory: MessageFactory) -> None:
    depth_m = np.random.default_rng(0).uniform(0.1, 80.0, (HEIGHT, WIDTH)).astype(np.float32)
    result = image_to_array(factory.image(depth_m, '32FC1', 0, 'cam'))
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, depth_m)


def test_image_to_array_cdr_round_trip(factory: MessageFactory) -> None:
    pixels = random_pixels((HEIGHT, WIDTH), 'uint16', seed=1)
    store = factory.store
    msg = factory.image(pixels, 'mono16', 0, 'cam')
    decoded: Any = store.deserialize_cdr(store.serialize_cdr(msg, IMAGE), IMAGE)
    np.testing.assert_array_equal(image_to_array(decoded), pixels)


def test_image_to_array_big_endian_mono16(factory: MessageFactory) -> None:
    pixels = random_pixels((HEIGHT, WIDTH), 'uint16', seed=2)
    data = pixels.astype('>u2').view(np.uint8).reshape(-1)
    msg = image_message(factory, encoding='mono16', height=HEIGHT, width=WIDTH,
                        step=2 * WIDTH, data=data, is_bigendian=1)
    result = image_to_array(msg)
    assert result.dtype == np.dtype('=u2')
    np.testing.assert_array_equal(result, pixels)


def test_image_to_array_row_padding(factory: MessageFactory) -> None:
    pixels = random_pixels((HEIGHT, WIDTH, 3), 'uint8', seed=3)
    step = WIDTH * 3 + 5
    rows = np.full((HEIGHT, step), 0xAB, dtype=np.uint8)
    rows[:, : WIDTH * 3] = pixels.reshape(HEIGHT, -1)
    msg = image_message(factory, encoding='rgb8', height=HEIGHT, width=WIDTH, step=step,
                        data=rows.reshape(-1))
    np.testing.assert_array_equal(image_to_array(msg), pixels)


def test_image_to_array_row_padding_mono16(factory: MessageFactory) -> None:
    # Padding of an odd byte count: rows must be cut before the bytes are viewed as uint16.
    pixels = random_pixels((HEIGHT, WIDTH), 'uint16', seed=4)
    step = WIDTH * 2 + 3
    rows = np.zeros((HEIGHT, step), dtype=np.uint8)
    rows[:, : WIDTH * 2] = pixels.view(np.uint8).reshape(HEIGHT, -1)
    msg = image_message(factory, encoding='mono16', height=HEIGHT, width=WIDTH, step=step,
                        data=rows.reshape(-1))
    np.testing.assert_array_equal(image_to_array(msg), pixels)


def test_image_to_array_accepts_array_array(factory: MessageFactory) -> None:
    # rclpy hands Image.data over as array.array('B').
    pixels = random_pixels((HEIGHT, WIDTH), 'uint8', seed=5)
    msg = image_message(factory, encoding='mono8', height=HEIGHT, width=WIDTH, step=WIDTH,
                        data=array.array('B', pixels.tobytes()))
    np.testing.assert_array_equal(image_to_array(msg), pixels)


def test_to_rgb_rgb8_unchanged(factory: MessageFactory) -> None:
    pixels = random_pixels((HEIGHT, WIDTH, 3), 'uint8', seed=6)
    rgb = to_rgb(factory.image(pixels, 'rgb8', 0, 'cam'))
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, pixels)


def test_to_rgb_bgr8_swaps_channels(factory: MessageFactory) -> None:
    bgr = random_pixels((HEIGHT, WIDTH, 3), 'uint8', seed=7)
    rgb = to_rgb(factory.image(bgr, 'bgr8', 0, 'cam'))
    np.testing.assert_array_equal(rgb[..., 0], bgr[..., 2])
    np.testing.assert_array_equal(rgb[..., 1], bgr[..., 1])
    np.testing.assert_array_equal(rgb[..., 2], bgr[..., 0])
    assert rgb.flags.c_contiguous


def test_to_rgb_bgr8_stored_order_kept_by_image_to_array(factory: MessageFactory) -> None:
    bgr = random_pixels((HEIGHT, WIDTH, 3), 'uint8', seed=8)
    np.testing.assert_array_equal(image_to_array(factory.image(bgr, 'bgr8', 0, 'cam')), bgr)


@pytest.mark.parametrize(("encoding", "order"), [('rgba8', [0, 1, 2]), ('bgra8', [2, 1, 0])])
def test_to_rgb_drops_alpha(factory: MessageFactory, encoding: str, order: list[int]) -> None:
    pixels = random_pixels((HEIGHT, WIDTH, 4), 'uint8', seed=9)
    msg = image_message(factory, encoding=encoding, height=HEIGHT, width=WIDTH, step=WIDTH * 4,
                        data=pixels.reshape(-1))
    np.testing.assert_array_equal(to_rgb(msg), pixels[..., order])


def test_to_rgb_mono8_repeats_grey(factory: MessageFactory) -> None:
    grey = random_pixels((HEIGHT, WIDTH), 'uint8', seed=10)
    rgb = to_rgb(factory.image(grey, 'mono8', 0, 'cam'))
    assert rgb.shape == (HEIGHT, WIDTH, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], grey)


def test_to_rgb_jpeg_close_to_original(factory: MessageFactory) -> None:
    rgb = smooth_rgb()
    decoded = to_rgb(factory.compressed_image(rgb, 0, 'cam', quality=95))
    assert decoded.dtype == np.uint8
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(np.int16) - rgb.astype(np.int16)).mean() < 3.0


def test_compressed_to_rgb_after_cdr_round_trip(factory: MessageFactory) -> None:
    rgb = smooth_rgb()
    store = factory.store
    msg = factory.compressed_image(rgb, 0, 'cam')
    decoded: Any = store.deserialize_cdr(store.serialize_cdr(msg, COMPRESSED), COMPRESSED)
    np.testing.assert_array_equal(compressed_to_rgb(decoded), compressed_to_rgb(msg))


def test_compressed_to_rgb_png(factory: MessageFactory) -> None:
    import io

    from PIL import Image as PilImage

    rgb = random_pixels((HEIGHT, WIDTH, 3), 'uint8', seed=11)
    buffer = io.BytesIO()
    PilImage.fromarray(rgb).save(buffer, format='PNG')
    msg = factory.types[COMPRESSED](header=factory.header(0, 'cam'), format='png',
                                    data=np.frombuffer(buffer.getvalue(), dtype=np.uint8))
    np.testing.assert_array_equal(to_rgb(msg), rgb)  # PNG is lossless


def test_compressed_image_deterministic(factory: MessageFactory) -> None:
    rgb = smooth_rgb()
    first = factory.compressed_image(rgb, 0, 'cam')
    second = factory.compressed_image(rgb, 0, 'cam')
    np.testing.assert_array_equal(first.data, second.data)


@pytest.mark.parametrize(
    ("encoding", "step", "size", "message"),
    [
        ('yuv422', WIDTH * 2, HEIGHT * WIDTH * 2, r"unsupported image encoding 'yuv422'"),
        ('RGB8', WIDTH * 3, HEIGHT * WIDTH * 3, r"unsupported image encoding 'RGB8'"),
        ('rgb8', WIDTH * 3, HEIGHT * WIDTH * 3 - 1,
         r'image data too short for 7x5 rgb8 \(step 21, 104 bytes\)'),
        ('rgb8', WIDTH * 3 - 1, HEIGHT * WIDTH * 3,
         r'image data too short for 7x5 rgb8 \(step 20, 105 bytes\)'),
        ('mono16', WIDTH, HEIGHT * WIDTH * 2, r'image data too short for 7x5 mono16 \(step 7,'),
    ],
    ids=['unknown-encoding', 'wrong-case-encoding', 'short-data', 'step-below-row',
         'step-ignores-bytes-per-pixel'],
)
def test_image_to_array_rejects_bad_message(factory: MessageFactory, encoding: str, step: int,
                                            size: int, message: str) -> None:
    msg = image_message(factory, encoding=encoding, height=HEIGHT, width=WIDTH, step=step,
                        data=np.zeros(size, dtype=np.uint8))
    with pytest.raises(DataError, match=message):
        image_to_array(msg)


@pytest.mark.parametrize("encoding", ['mono16', '32FC1'])
def test_to_rgb_rejects_non_colour(factory: MessageFactory, encoding: str) -> None:
    dtype = 'uint16' if encoding == 'mono16' else 'float32'
    msg = factory.image(np.zeros((HEIGHT, WIDTH), dtype=dtype), encoding, 0, 'cam')
    with pytest.raises(DataError, match=f"image encoding '{encoding}' is not a colour image"):
        to_rgb(msg)


def _jpeg_bytes(factory: MessageFactory) -> bytes:
    return bytes(factory.compressed_image(smooth_rgb(), 0, 'cam').data)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda jpeg: b'',
        lambda jpeg: b'this is not an image',
        lambda jpeg: jpeg[:40],                      # header only
        lambda jpeg: jpeg[: len(jpeg) // 2],         # cut mid-scan
        lambda jpeg: jpeg[:2] + bytes(len(jpeg) - 2),  # JPEG magic, then zeros
    ],
    ids=['empty', 'text', 'header-only', 'truncated', 'zeroed-body'],
)
def test_to_rgb_rejects_corrupt_jpeg(factory: MessageFactory, corrupt: Any) -> None:
    data = corrupt(_jpeg_bytes(factory))
    msg = factory.types[COMPRESSED](header=factory.header(0, 'cam'), format='jpeg',
                                    data=np.frombuffer(data, dtype=np.uint8))
    with pytest.raises(DataError, match=r"cannot decode CompressedImage \(format 'jpeg'\)"):
        to_rgb(msg)
