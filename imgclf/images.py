"""Image decoding and resizing as TensorFlow graph ops.

One definition, used by the data set loader for training and evaluation and by every serving
signature, so a model sees pixels prepared the same way wherever they come from.

    >>> image = decode_image(tf.io.read_file("cat.png"), image_size=(32, 32))
    >>> image.shape, image.dtype
    (TensorShape([32, 32, 3]), tf.float32)

Pixels stay in the raw 0-255 range: rescaling and normalisation belong to the model.
"""

import tensorflow as tf

#: Extensions the data set loader reads; the formats the bytes signatures decode.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

#: Largest width x height an encoded image may declare before it is decoded (about 6000 x 5500).
#: A decompression bomb declares billions of pixels in a few bytes; refusing it from the header
#: keeps a server's memory safe.
MAX_IMAGE_PIXELS = 1 << 25


def resize_images(images, image_size):
    """Resize a batch `[N, H, W, C]` of float images to `image_size` `(height, width)`, bilinearly.

    Images that already have the size pass through untouched.
    """
    image_size = tf.constant(image_size, dtype=tf.int32)
    same_size = tf.reduce_all(tf.equal(tf.shape(images)[1:3], image_size))
    return tf.cond(
        same_size,
        lambda: tf.identity(images),
        lambda: tf.image.resize(images, image_size, method="bilinear"),
    )


def _header_uint(header, start, length, little_endian):
    """An unsigned integer read from `length` bytes of `header` (uint8 vector) at `start`."""
    octets = tf.cast(header[start:start + length], tf.int64)
    weights = [256 ** i for i in range(length)]
    if not little_endian:
        weights = weights[::-1]
    return tf.reduce_sum(octets * tf.constant(weights, dtype=tf.int64))


def declared_pixels(image_bytes):
    """Width x height that an encoded PNG, GIF, BMP or JPEG declares in its header, without decoding.

    Returns 0 for anything else (the decoder then refuses it with its own message).
    """
    padded = tf.strings.join([tf.strings.substr(image_bytes, 0, 32), tf.constant(b"\0" * 32)])
    header = tf.io.decode_raw(tf.strings.substr(padded, 0, 32), tf.uint8)
    magic = tf.strings.substr(image_bytes, 0, 4)

    def png():
        return _header_uint(header, 16, 4, False) * _header_uint(header, 20, 4, False)

    def gif():
        return _header_uint(header, 6, 2, True) * _header_uint(header, 8, 2, True)

    def bmp():
        width = _header_uint(header, 18, 4, True)
        height = _header_uint(header, 22, 4, True)
        # Top-down bitmaps store a negative height (two's complement).
        height = tf.where(height >= 2 ** 31, 2 ** 32 - height, height)
        return width * height

    def jpeg():
        shape = tf.io.extract_jpeg_shape(image_bytes, output_type=tf.int64)
        return shape[0] * shape[1]

    return tf.case(
        [
            (tf.equal(magic, b"\x89PNG"), png),
            (tf.equal(tf.strings.substr(magic, 0, 3), b"GIF"), gif),
            (tf.equal(tf.strings.substr(magic, 0, 2), b"BM"), bmp),
            (tf.equal(tf.strings.substr(magic, 0, 3), b"\xff\xd8\xff"), jpeg),
        ],
        default=lambda: tf.constant(0, dtype=tf.int64),
        exclusive=False,
    )


def decode_image(image_bytes, image_size, max_pixels=MAX_IMAGE_PIXELS):
    """Decode one encoded image (PNG, JPEG, BMP, GIF) into float32 `[height, width, 3]`, 0-255.

    Grayscale, RGBA, palette and 16-bit images become 8-bit RGB; an animated GIF gives its first
    frame. Raises `InvalidArgumentError` for bytes that are not an image of those formats, for a
    truncated image, and for one that declares more than `max_pixels` pixels.
    """
    pixels = declared_pixels(image_bytes)
    check = tf.debugging.Assert(
        pixels <= max_pixels,
        ["image declares", pixels, "pixels, more than the limit of", max_pixels],
    )
    with tf.control_dependencies([check]):
        image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image = tf.ensure_shape(image, [None, None, 3])
    image = tf.cast(image, tf.float32)
    return resize_images(image[tf.newaxis], image_size)[0]


def decode_image_batch(image_bytes, image_size, max_pixels=MAX_IMAGE_PIXELS):
    """Decode a scalar or a 1-D batch of encoded images into float32 `[N, height, width, 3]`."""
    image_bytes = tf.reshape(image_bytes, [-1])
    height, width = image_size
    return tf.map_fn(
        lambda one: decode_image(one, image_size, max_pixels),
        image_bytes,
        fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32),
    )
