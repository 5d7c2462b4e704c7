"""Decoding of encoded images in the graph, shared by data loading and the bytes signatures."""

import io
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from imgclf import images

from conftest import encode_image


def decode(data, size=(8, 8)):
    return images.decode_image(tf.constant(data), size).numpy()


@pytest.mark.parametrize("image_format", ["PNG", "BMP", "GIF", "JPEG"])
def test_formats_decode_to_rgb_float(image_format):
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    pixels[:, :4] = (200, 30, 60)
    out = decode(encode_image(pixels, image_format))
    assert out.shape == (8, 8, 3) and out.dtype == np.float32
    tolerance = 12 if image_format in ("JPEG", "GIF") else 0
    np.testing.assert_allclose(out[2, 1], (200, 30, 60), atol=tolerance)
    np.testing.assert_allclose(out[2, 6], (0, 0, 0), atol=tolerance)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grayscale_rgba_and_palette_become_three_channels(mode):
    pixels = np.random.default_rng(1).integers(0, 256, size=(8, 8, 3))
    data = encode_image(pixels, "PNG", mode=mode)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
    np.testing.assert_array_equal(decode(data), expected)


def test_sixteen_bit_png_becomes_eight_bit():
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(buffer, "PNG")
    out = decode(buffer.getvalue())
    np.testing.assert_allclose(out, 40000 / 257, atol=1)


def test_batch_decodes_scalar_and_vector():
    one = encode_image(np.zeros((4, 4, 3)))
    assert images.decode_image_batch(tf.constant(one), (8, 8)).shape == (1, 8, 8, 3)
    assert images.decode_image_batch(tf.constant([one, one]), (8, 8)).shape == (2, 8, 8, 3)


def png_declaring(width, height):
    """A tiny PNG whose header declares `width` x `height` (the data is a few bytes)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def gif_declaring(width, height):
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b"\x3b"


def bmp_declaring(width, height):
    return b"BM" + b"\0" * 16 + struct.pack("<ii", width, height) + b"\0" * 30


@pytest.mark.parametrize(
    "data, pixels",
    [
        (png_declaring(100_000, 100_000), 10_000_000_000),
        (gif_declaring(65_535, 65_535), 65_535 * 65_535),
        (bmp_declaring(50_000, -50_000), 2_500_000_000),
    ],
)
def test_decompression_bombs_are_refused_from_the_header(data, pixels):
    assert images.declared_pixels(tf.constant(data)).numpy() == pixels
    with pytest.raises(tf.errors.InvalidArgumentError, match="image declares"):
        decode(data)


def test_jpeg_declared_size_is_read_without_decoding():
    data = encode_image(np.zeros((12, 20, 3)), "JPEG")
    assert images.declared_pixels(tf.constant(data)).numpy() == 240


@pytest.mark.parametrize(
    "data",
    [b"", b"this is not an image", encode_image(np.zeros((16, 16, 3)), "PNG")[:40]],
    ids=["empty", "text", "truncated"],
)
def test_non_images_raise_invalid_argument(data):
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode(data)
