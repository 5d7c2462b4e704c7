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


def _padded_header(image_bytes, length=32):
    """The first `length` bytes of `image_bytes`, padded with NULs (substr fails past the end)."""
    padded = tf.strings.join([tf.strings.substr(image_bytes, 0, length), tf.constant(b"\0" * length)])
    return tf.strings.substr(padded, 0, length)


def is_animated_webp(image_bytes):
    """Whether the bytes are a WebP whose extended header (VP8X) sets the animation flag.

    TensorFlow 2.21's WebP decoder corrupts the heap on animated WebPs ("malloc(): invalid size",
    "corrupted double-linked list", then the process dies), so `decode_image` refuses them before
    decoding.
    """
    return _header_facts(image_bytes)[2]


def gif_frames_bound(image_bytes):
    """At most how many frames a GIF holds, from its bytes, without decoding; 0 for other formats.

    Every frame after the first is an image descriptor (0x2C, then left, top, width and height
    inside the screen, flags, and an LZW code size of 2-8 unless a colour table follows) right
    after a block terminator (0x00). 1 + the number of such byte runs bounds the frames from above
    (compressed data could imitate one, by chance about once in 10^9 positions). Counted in one
    vectorised pass: walking the blocks one by one would be a cost an attacker could inflate.
    """
    return _header_facts(image_bytes)[1]


#: Columns of `_gif_frames`' matrix product: each of the 12-byte windows (a block terminator,
#: then an image descriptor) times this gives terminator, separator, width, height,
#: left + width, top + height, flags and LZW code size (the 16-bit fields little-endian).
_GIF_WINDOW_COLUMNS = (
    {0: 1}, {1: 1}, {6: 1, 7: 256}, {8: 1, 9: 256},
    {2: 1, 3: 256, 6: 1, 7: 256}, {4: 1, 5: 256, 8: 1, 9: 256}, {10: 1}, {11: 1},
)


def _gif_frames(image_bytes, screen_size):
    """`gif_frames_bound` of bytes that are a GIF (or are empty: 1) whose logical screen is
    `screen_size` (int64 `[width, height]`), in a handful of ops over all positions at once."""
    positions = tf.maximum(tf.strings.length(image_bytes) - 1, 0)
    padded = tf.io.decode_raw(tf.strings.join([image_bytes, tf.constant(b"\0" * 12)]), tf.uint8)
    # [positions, 12]: each position's byte and the 11 after it
    windows = tf.gather(tf.cast(padded, tf.int64),
                        tf.range(positions)[:, None] + tf.range(12)[None, :])
    weights = [[column.get(row, 0) for column in _GIF_WINDOW_COLUMNS] for row in range(12)]
    fields = tf.linalg.matmul(windows, tf.constant(weights, tf.int64))
    # terminator 0, separator 0x2C, width and height > 0, left + width and top + height inside
    low = tf.constant([0, 0x2C, 1, 1, 0, 0], tf.int64)
    high = tf.concat([tf.constant([0, 0x2C, 2 ** 16, 2 ** 16], tf.int64), screen_size], 0)
    placed = tf.reduce_all((fields[:, :6] >= low) & (fields[:, :6] <= high), axis=1)
    # a local colour table (flag 0x80) or an LZW code size of 2-8
    coded = (fields[:, 6] >= 0x80) | ((fields[:, 7] >= 2) & (fields[:, 7] <= 8))
    return 1 + tf.reduce_sum(tf.cast(placed & coded, tf.int64))


def declared_pixels(image_bytes):
    """Width x height that an encoded image of `IMAGE_FORMATS` declares in its header, without decoding.

    Returns -1 for bytes in none of those formats, and 0 for empty bytes (the decoder refuses
    them with its own message). Header fields of a truncated image read as zeros.

        >>> declared_pixels(tf.constant(webp_bytes)).numpy()   # a 7000 x 7000 WebP of 117 KB
        49000000
    """
    return _header_facts(image_bytes)[0]


#: The smallest JPEG header `tf.io.extract_jpeg_shape` reads (1 x 1, one component): what it is
#: given instead of bytes that are not a JPEG, so that it runs, without a branch, for every image.
_TINY_JPEG = (b"\xff\xd8\xff\xc0\x00\x0b\x08\x00\x01\x00\x01\x01\x01\x11\x00"
              b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00\xff\xd9")

#: The formats `_header_facts` tells apart by the first 16 bytes, in its order: each with the
#: bytes it must have there, and the header fields (byte offset, length, little-endian, shift,
#: bits, plus) that make its width and height: ((bytes >> shift) & bits) + plus. JPEG keeps its
#: size in a frame header further on, read by `tf.io.extract_jpeg_shape`.
_WEBP = {0: b"RIFF", 8: b"WEBP"}
_HEADER_FORMATS = (
    # PNG: IHDR's big-endian width and height
    ({0: b"\x89PNG"}, [(16, 4, False, 0, 0, 0), (20, 4, False, 0, 0, 0)]),
    # GIF: the logical screen
    ({0: b"GIF"}, [(6, 2, True, 0, 0, 0), (8, 2, True, 0, 0, 0)]),
    # BMP: BITMAPINFOHEADER; a top-down bitmap stores a negative height (two's complement)
    ({0: b"BM"}, [(18, 4, True, 0, 0, 0), (22, 4, True, 0, 0, 0)]),
    # WebP (RIFF container, https://developers.google.com/speed/webp/docs/riff_container): the
    # first chunk at byte 12 says which of three headers follows at byte 20. "VP8 ": frame tag
    # (3), start code (3), then 14-bit width and height; "VP8L": signature 0x2f, then 14 bits
    # width - 1, 14 bits height - 1; "VP8X": flags (4), then 24-bit canvas width - 1, height - 1.
    ({**_WEBP, 12: b"VP8 "}, [(26, 2, True, 0, 0x3FFF, 0), (28, 2, True, 0, 0x3FFF, 0)]),
    ({**_WEBP, 12: b"VP8L"}, [(21, 4, True, 0, 0x3FFF, 1), (21, 4, True, 14, 0x3FFF, 1)]),
    ({**_WEBP, 12: b"VP8X"}, [(24, 3, True, 0, 0, 1), (27, 3, True, 0, 0, 1)]),
    ({0: b"\xff\xd8\xff"}, []),  # JPEG
)
_PNG, _GIF, _BMP, _VP8X, _JPEG = 0, 1, 2, 5, 6


def _header_tables():
    """The constant tables `_header_facts` reads `_HEADER_FORMATS` with (`_HEADER_TABLES`)."""
    pattern, mask = [], []
    weights, shifts, bits, plus = [], [], [], []
    for magic, fields in _HEADER_FORMATS:
        row = [0] * 16
        used = [0] * 16
        for offset, text in magic.items():
            for index, byte in enumerate(text):
                row[offset + index], used[offset + index] = byte, 1
        pattern.append(row)
        mask.append(used)
        for offset, length, little_endian, shift, field_bits, field_plus in fields:
            order = range(length) if little_endian else range(length - 1, -1, -1)
            column = [0] * 32
            for power, index in enumerate(order):
                column[offset + index] = 256 ** power
            weights.append(column)
            shifts.append(shift)
            bits.append(field_bits or 2 ** 40 - 1)
            plus.append(field_plus)
    weights = [list(row) for row in zip(*weights)]  # [32 header bytes, fields]
    return pattern, mask, weights, shifts, bits, plus


_HEADER_TABLES = _header_tables()


def _header_facts(image_bytes):
    """`(declared_pixels, gif_frames_bound, is_animated_webp)` of the bytes, without control flow.

    `decode_image` runs these checks for every image of every epoch, inside a tf.data map,
    where each op costs about a microsecond and a cond or a case (a function call) about a
    hundred: so every format's size is read from one padded header by a few matrix ops, and the
    format's is picked; the two reads that need more than the header (a JPEG's frame header, a
    GIF's frames) are given stand-in bytes when the bytes are another format.
    """
    pattern, mask, weights, shifts, bits, plus = _HEADER_TABLES
    header = tf.cast(tf.io.decode_raw(_padded_header(image_bytes), tf.uint8), tf.int64)
    # Which formats the first 16 bytes match (the padding is NUL, which no pattern ends with).
    differs = tf.cast(tf.not_equal(header[:16], tf.constant(pattern, tf.int64)), tf.int64)
    matches = tf.equal(tf.reduce_sum(differs * tf.constant(mask, tf.int64), axis=1), 0)
    fields = tf.linalg.matvec(tf.constant(weights, tf.int64), header, transpose_a=True)
    fields = tf.bitwise.bitwise_and(tf.bitwise.right_shift(fields, shifts), bits) + plus
    # A top-down BMP's height (field 5) is negative: fold it (and only it: a PNG declaring
    # 2^32 - 1 must stay a bomb).
    folds = tf.constant([index == 5 for index in range(len(shifts))])
    fields = tf.where(folds & (fields >= 2 ** 31), 2 ** 32 - fields, fields)
    sizes = tf.reduce_prod(tf.reshape(fields, [-1, 2]), axis=1)  # PNG, GIF, BMP, 3 WebPs

    jpeg = tf.reduce_prod(tf.io.extract_jpeg_shape(
        tf.where(matches[_JPEG], image_bytes, _TINY_JPEG), output_type=tf.int64)[:2])
    length = tf.strings.length(image_bytes)
    # The first test that holds: empty, then the formats, else unknown (-1).
    tests = tf.concat([[tf.equal(length, 0)], matches, [True]], 0)
    candidates = tf.concat([[0], sizes, [jpeg, -1]], 0)
    pixels = tf.gather(candidates, tf.argmax(tests, output_type=tf.int32))

    is_gif = matches[_GIF]
    frames = _gif_frames(tf.strings.substr(image_bytes, 0, tf.where(is_gif, length, 0)),
                         fields[2:4])
    frames = tf.where(is_gif, frames, 0)
    # VP8X flags (byte 20): 2 is the animation flag
    animated = matches[_VP8X] & tf.not_equal(tf.bitwise.bitwise_and(header[20], 2), 0)
    return pixels, frames, animated


#: What TensorFlow says before the message of an image `decode_image` refuses (see `_refuse`);
#: `imgclf.serving.manager.clean_tf_message` and the data sets' verdicts leave it out.
REFUSAL_PREFIX = "StringToNumberOp could not correctly convert string: "


def _refuse(rules):
    """An op that raises `InvalidArgumentError` for the first of `rules`, `(broken, parts)`, that
    is broken, its message reading "assertion failed: [part] [part] ..." as an Assert op's would
    (parts are strings, or int64 scalars shown as numbers), after `REFUSAL_PREFIX`.

    Not an Assert op: in a tf.data map an Assert (or CheckNumerics) costs about 100 microseconds
    per image, a tenth of decoding one, where a number conversion that fails costs nothing.
    """
    messages = []
    for _, parts in rules:
        texts = [part if isinstance(part, str) else tf.strings.as_string(part) for part in parts]
        pieces = ["assertion failed: ["]
        for index, text in enumerate(texts):
            pieces += ([] if index == 0 else ["] ["]) + [text]
        messages.append(tf.strings.join(pieces + ["]"]))
    broken = tf.stack([rule for rule, _ in rules])
    message = tf.gather(tf.stack(messages), tf.argmax(broken, output_type=tf.int32))
    return tf.strings.to_number(tf.where(tf.reduce_any(broken), message, "0"))


def decode_image(image_bytes, image_size, max_pixels=MAX_IMAGE_PIXELS):
    """Decode one encoded image (PNG, JPEG, BMP, GIF, WebP) into float32 `[height, width, 3]`, 0-255.

    Grayscale, RGBA, palette and 16-bit images become 8-bit RGB; an animated GIF or WebP gives its
    first frame. Raises `InvalidArgumentError` for bytes that are not an image of `IMAGE_FORMATS`
    (JPEG XL included), for a truncated image, for one that declares more than `max_pixels`
    pixels, for an animated WebP and for a GIF whose frames may add up to more than
    `MAX_GIF_DECODED_PIXELS`: the first of these rules an image breaks is named.

    It runs for every image of every epoch, in a tf.data map, so it has no control flow (see
    `_header_facts`) and no Assert op (see `_refuse`). It is `decode_checked_image` of the bytes
    `check_image_bytes` lets through.
    """
    return decode_checked_image(check_image_bytes(image_bytes, max_pixels), image_size)


def check_image_bytes(image_bytes, max_pixels=MAX_IMAGE_PIXELS):
    """The encoded image `image_bytes` after `decode_image`'s header checks: the same bytes, or an
    `InvalidArgumentError` naming the first rule they break (see `decode_image`).

    Only bytes that went through it may be given to `decode_checked_image`, or bytes identical to
    bytes that did (`imgclf.data.checked.CheckedImages` remembers which).
    """
    pixels, frames, animated = _header_facts(image_bytes)
    refused = _refuse([
        (pixels < 0, [UNKNOWN_FORMAT_MESSAGE]),
        (animated, [ANIMATED_WEBP_MESSAGE]),
        (pixels > max_pixels,
         ["image declares", pixels, f"pixels, more than the limit of] [{max_pixels}"]),
        (frames * pixels > MAX_GIF_DECODED_PIXELS,
         ["GIF may hold", frames, "frames of", pixels,
          f"pixels, more than the limit of] [{MAX_GIF_DECODED_PIXELS}] [decoded pixels"]),
    ])
    # The bytes go on through the refusal (a control dependency on an op that is not stateful may
    # be pruned): no refused image is ever decoded.
    return tf.where(tf.equal(refused, 0), image_bytes, "")


def decode_checked_image(checked_bytes, image_size):
    """`decode_image` of bytes that passed `check_image_bytes` (it does not check them again)."""
    # The channels the file has: TensorFlow's WebP decoder cannot turn RGBA (alpha, animations)
    # into RGB, and choosing a decoder per format would be a branch. Every format gives the
    # pixels `channels=3` gives once the channels are picked below.
    image = tf.io.decode_image(checked_bytes, dtype=tf.uint8, expand_animations=False)
    # Resizing float32 costs a tenth less than resizing uint8 (the same pixels).
    image = tf.image.resize(tf.cast(image, tf.float32), image_size, method="bilinear")
    # Gray (and gray + alpha) to RGB, alpha dropped, after resizing (fewer pixels): the first
    # three channels (for RGB a slice that is the whole image, which costs nothing) or the
    # first one broadcast (a gather would cost half as much as the decoding).
    kept = tf.where(tf.shape(image)[2] >= 3, 3, 1)
    return tf.broadcast_to(image[:, :, :kept], [*image_size, 3])


def decode_image_batch(image_bytes, image_size, max_pixels=MAX_IMAGE_PIXELS):
    """Decode a scalar or a 1-D batch of encoded images into float32 `[N, height, width, 3]`."""
    image_bytes = tf.reshape(image_bytes, [-1])
    height, width = image_size
    return tf.map_fn(
        lambda one: decode_image(one, image_size, max_pixels),
        image_bytes,
        fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32),
    )
