"""Image decoding and resizing as TensorFlow graph ops.

One definition, used by the data set loader for training and evaluation and by every serving
signature, so a model sees pixels prepared the same way wherever they come from.

    >>> image = decode_image(tf.io.read_file("cat.png"), image_size=(32, 32))
    >>> image.shape, image.dtype
    (TensorShape([32, 32, 3]), tf.float32)

Pixels stay in the raw 0-255 range: rescaling and normalisation belong to the model.
"""

import tensorflow as tf

#: The formats imgclf decodes, and their file extensions: the one list behind both the data set
#: loader (which files it reads) and the bytes signatures (which encoded images they accept). Each
#: has a header parser in `declared_pixels`, so none can get past the decompression-bomb limit.
#: `tf.io.decode_image` also accepts JPEG XL; it is refused by its magic number instead, because its
#: size header is bit-packed (and may sit in an ISO-BMFF box) and no encoder here could test a parser.
IMAGE_FORMATS = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg"),
    "BMP": (".bmp",),
    "GIF": (".gif",),
    "WebP": (".webp",),
}

#: Extensions the data set loader reads (any case), from `IMAGE_FORMATS`.
IMAGE_EXTENSIONS = tuple(extension for extensions in IMAGE_FORMATS.values() for extension in extensions)

#: The refusal of bytes in none of `IMAGE_FORMATS` (JPEG XL, TIFF, text, ...).
UNKNOWN_FORMAT_MESSAGE = (
    f"Unknown image file format. One of {', '.join(IMAGE_FORMATS)} required "
    "(JPEG XL is not accepted)."
)

#: The refusal of an animated WebP (see `is_animated_webp`).
ANIMATED_WEBP_MESSAGE = "Animated WebP images are not accepted; send one frame as a still image."

#: Most pixels all the frames of a GIF may add up to (8 x `MAX_IMAGE_PIXELS`, bounded from the
#: bytes by `gif_frames_bound`): TensorFlow decompresses every frame to keep the first, and a 784 KB
#: GIF of 200 frames of 2000 x 2000 took 3.6 s of CPU.
MAX_GIF_DECODED_PIXELS = 1 << 28

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


def _padded_header(image_bytes, length=32):
    """The first `length` bytes of `image_bytes`, padded with NULs (substr fails past the end)."""
    padded = tf.strings.join([tf.strings.substr(image_bytes, 0, length), tf.constant(b"\0" * length)])
    return tf.strings.substr(padded, 0, length)


def _is_webp(image_bytes):
    return _is_webp_header(_padded_header(image_bytes, 16))


def _is_webp_header(padded):
    """`_is_webp` from the bytes' `_padded_header` (of 16 bytes or more)."""
    return tf.logical_and(tf.equal(tf.strings.substr(padded, 0, 4), b"RIFF"),
                          tf.equal(tf.strings.substr(padded, 8, 4), b"WEBP"))


def is_animated_webp(image_bytes):
    """Whether the bytes are a WebP whose extended header (VP8X) sets the animation flag.

    TensorFlow 2.21's WebP decoder corrupts the heap on animated WebPs ("malloc(): invalid size",
    "corrupted double-linked list", then the process dies), so `decode_image` refuses them before
    decoding.
    """
    padded = _padded_header(image_bytes)
    return _is_animated_webp_header(padded, _is_webp_header(padded))


def _is_animated_webp_header(padded, is_webp):
    """`is_animated_webp` from the bytes' 32-byte `_padded_header` and `_is_webp`."""
    flags = tf.io.decode_raw(tf.strings.substr(padded, 20, 1), tf.uint8)[0]
    return tf.logical_and(
        tf.logical_and(is_webp, tf.equal(tf.strings.substr(padded, 12, 4), b"VP8X")),
        tf.not_equal(tf.bitwise.bitwise_and(flags, 2), 0),
    )


def gif_frames_bound(image_bytes):
    """At most how many frames a GIF holds, from its bytes, without decoding; 0 for other formats.

    Every frame after the first is an image descriptor (0x2C, then left, top, width and height
    inside the screen, flags, and an LZW code size of 2-8 unless a colour table follows) right
    after a block terminator (0x00). 1 + the number of such byte runs bounds the frames from above
    (compressed data could imitate one, by chance about once in 10^9 positions). Counted in one
    vectorised pass: walking the blocks one by one would be a cost an attacker could inflate.
    """
    is_gif = tf.equal(tf.strings.substr(image_bytes, 0, 3), b"GIF")
    return tf.cond(is_gif, lambda: _gif_frames(image_bytes), lambda: tf.constant(0, dtype=tf.int64))


def _gif_frames(image_bytes):
    """`gif_frames_bound` of bytes known to be a GIF."""
    length = tf.strings.length(image_bytes)
    padded = tf.io.decode_raw(tf.strings.join([image_bytes, tf.constant(b"\0" * 12)]), tf.uint8)
    padded = tf.cast(padded, tf.int32)

    def at(offset):  # byte `offset` after each position of the file (0 past its end)
        return padded[offset:offset + length - 1]

    def word(offset):
        return at(offset) + at(offset + 1) * 256

    screen_width = padded[6] + padded[7] * 256
    screen_height = padded[8] + padded[9] * 256
    left, top, width, height, flags, code_size = word(2), word(4), word(6), word(8), at(10), at(11)
    descriptor = (tf.equal(at(0), 0) & tf.equal(at(1), 0x2C) & (width > 0) & (height > 0)
                  & (left + width <= screen_width) & (top + height <= screen_height)
                  & ((tf.bitwise.bitwise_and(flags, 0x80) > 0)
                     | ((code_size >= 2) & (code_size <= 8))))
    return 1 + tf.reduce_sum(tf.cast(descriptor, tf.int64))


def declared_pixels(image_bytes):
    """Width x height that an encoded image of `IMAGE_FORMATS` declares in its header, without decoding.

    Returns -1 for bytes in none of those formats, and 0 for empty bytes (the decoder refuses
    them with its own message). Header fields of a truncated image read as zeros.

        >>> declared_pixels(tf.constant(webp_bytes)).numpy()   # a 7000 x 7000 WebP of 117 KB
        49000000
    """
    return _header_facts(image_bytes)[0]


def _header_facts(image_bytes):
    """`(declared_pixels, gif_frames_bound, _is_webp, is_animated_webp)` of the bytes, read from
    one padded header with one Case op on the format: in a tf.data map every op and every cond
    costs, and these checks run for every image of every epoch."""
    padded = _padded_header(image_bytes)
    header = tf.io.decode_raw(padded, tf.uint8)
    magic = tf.strings.substr(padded, 0, 4)  # the patterns below hold no NUL: padding never matches
    webp_chunk = tf.strings.substr(padded, 12, 4)

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

    # WebP (RIFF container, https://developers.google.com/speed/webp/docs/riff_container): the
    # first chunk at byte 12 says which of three headers follows at byte 20.
    def webp_lossy():  # "VP8 ": frame tag (3), start code (3), then 14-bit width and height
        width = tf.bitwise.bitwise_and(_header_uint(header, 26, 2, True), 0x3FFF)
        height = tf.bitwise.bitwise_and(_header_uint(header, 28, 2, True), 0x3FFF)
        return width * height

    def webp_lossless():  # "VP8L": signature 0x2f, then 14 bits width - 1, 14 bits height - 1
        bits = _header_uint(header, 21, 4, True)
        width = tf.bitwise.bitwise_and(bits, 0x3FFF) + 1
        height = tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 14), 0x3FFF) + 1
        return width * height

    def webp_extended():  # "VP8X": flags (4), then 24-bit canvas width - 1 and height - 1
        return (_header_uint(header, 24, 3, True) + 1) * (_header_uint(header, 27, 3, True) + 1)

    is_webp = _is_webp_header(padded)

    def no_frames(pixels):  # a format that is not a GIF: no frames to bound
        return lambda: (pixels(), tf.constant(0, dtype=tf.int64))

    formats = [
        (tf.equal(tf.strings.length(image_bytes), 0),
         no_frames(lambda: tf.constant(0, dtype=tf.int64))),
        (tf.equal(magic, b"\x89PNG"), no_frames(png)),
        (tf.equal(tf.strings.substr(magic, 0, 3), b"GIF"), lambda: (gif(), _gif_frames(image_bytes))),
        (tf.equal(tf.strings.substr(magic, 0, 2), b"BM"), no_frames(bmp)),
        (tf.equal(tf.strings.substr(magic, 0, 3), b"\xff\xd8\xff"), no_frames(jpeg)),
        (tf.logical_and(is_webp, tf.equal(webp_chunk, b"VP8 ")), no_frames(webp_lossy)),
        (tf.logical_and(is_webp, tf.equal(webp_chunk, b"VP8L")), no_frames(webp_lossless)),
        (tf.logical_and(is_webp, tf.equal(webp_chunk, b"VP8X")), no_frames(webp_extended)),
        (tf.constant(True), no_frames(lambda: tf.constant(-1, dtype=tf.int64))),
    ]
    # The first format whose test holds, as one Case op: `tf.case(exclusive=False)` nests a cond
    # per format, and in a tf.data map each is a function call (a JPEG went through five).
    first = tf.argmax(tf.stack([test for test, _ in formats]), output_type=tf.int32)
    pixels, frames = tf.switch_case(first, [branch for _, branch in formats])
    return pixels, frames, is_webp, _is_animated_webp_header(padded, is_webp)


def decode_image(image_bytes, image_size, max_pixels=MAX_IMAGE_PIXELS):
    """Decode one encoded image (PNG, JPEG, BMP, GIF, WebP) into float32 `[height, width, 3]`, 0-255.

    Grayscale, RGBA, palette and 16-bit images become 8-bit RGB; an animated GIF or WebP gives its
    first frame. Raises `InvalidArgumentError` for bytes that are not an image of `IMAGE_FORMATS`
    (JPEG XL included), for a truncated image, for one that declares more than `max_pixels`
    pixels, for an animated WebP and for a GIF whose frames may add up to more than
    `MAX_GIF_DECODED_PIXELS`.
    """
    pixels, frames, is_webp, animated = _header_facts(image_bytes)
    known = tf.debugging.Assert(pixels >= 0, [UNKNOWN_FORMAT_MESSAGE])
    still = tf.debugging.Assert(tf.logical_not(animated), [ANIMATED_WEBP_MESSAGE])
    with tf.control_dependencies([known, still]):
        check = tf.debugging.Assert(
            pixels <= max_pixels,
            ["image declares", pixels, "pixels, more than the limit of", max_pixels],
        )
    with tf.control_dependencies([check]):
        few = tf.debugging.Assert(
            frames * pixels <= MAX_GIF_DECODED_PIXELS,
            ["GIF may hold", frames, "frames of", pixels, "pixels, more than the limit of",
             MAX_GIF_DECODED_PIXELS, "decoded pixels"],
        )
    with tf.control_dependencies([known, still, check, few]):
        # TensorFlow's WebP decoder cannot turn RGBA (alpha, animations) into RGB: decode the
        # channels the file has, then drop alpha, as the other decoders do.
        image = tf.cond(
            is_webp,
            lambda: tf.io.decode_image(image_bytes, dtype=tf.uint8, expand_animations=False)[..., :3],
            lambda: tf.io.decode_image(
                image_bytes, channels=3, dtype=tf.uint8, expand_animations=False
            ),
        )
    image = tf.ensure_shape(image, [None, None, 3])
    image = tf.cast(image, tf.float32)
    # No cond to skip images already of the size (as `resize_images` has): bilinear resizing to
    # the same size gives the pixels back exactly, and in a tf.data map the cond cost more than
    # the resizing it saves.
    return tf.image.resize(image, image_size, method="bilinear")


def decode_image_batch(image_bytes, image_size, max_pixels=MAX_IMAGE_PIXELS):
    """Decode a scalar or a 1-D batch of encoded images into float32 `[N, height, width, 3]`."""
    image_bytes = tf.reshape(image_bytes, [-1])
    height, width = image_size
    return tf.map_fn(
        lambda one: decode_image(one, image_size, max_pixels),
        image_bytes,
        fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32),
    )
