"""Helpers shared by the offline prediction tests (`tests/test_prediction_*.py`, and the Spark
ones): one tiny trained model per test process, and folders of real image files.

    >>> paths = trained_model()          # {"savedmodel": base path, "version": .../1, "keras": ....keras}
    >>> files = write_images(tmp_path / "images", count=6)
"""

import atexit
import io
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

CLASS_NAMES = ["red", "green", "blue"]
IMAGE_SIZE = 16
#: Pillow's names of the formats `write_images` cycles through, with their suffixes.
FORMATS = [("PNG", ".png"), ("JPEG", ".jpg"), ("BMP", ".bmp"), ("GIF", ".gif"), ("WEBP", ".webp")]

_trained = {}


def coloured_pixels(label, size, rng):
    """An image whose dominant channel is class `label` (red, green, blue), with noise."""
    pixels = rng.integers(0, 90, size=(*size, 3))
    pixels[..., label] += 150
    return pixels.astype(np.uint8)


def encode(pixels, image_format="PNG"):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def trained_model():
    """A LeNet (16 x 16, classes red/green/blue) trained a little, saved once per process as a
    SavedModel (`savedmodel`: its base path, `version`: its folder 1) and a `.keras` file."""
    if not _trained:
        import keras

        from imgclf import LenetModel

        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        labels = np.arange(96) % 3
        images = np.stack([coloured_pixels(label, (IMAGE_SIZE, IMAGE_SIZE), rng)
                           for label in labels]).astype("float32")
        model = LenetModel(input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), num_classes=3,
                           class_names=CLASS_NAMES)
        model.compile(optimizer="adam",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(images, labels, epochs=3, batch_size=16, verbose=0)
        folder = tempfile.mkdtemp(prefix="imgclf-prediction-model-")
        atexit.register(shutil.rmtree, folder, True)  # one per test process, gone with it
        base = os.path.join(folder, "LenetModel")
        model.save(os.path.join(base, "1"))
        model.save(os.path.join(folder, "lenet.keras"))
        _trained.update(savedmodel=base, version=os.path.join(base, "1"),
                        keras=os.path.join(folder, "lenet.keras"))
    return dict(_trained)


def write_images(folder, count, seed=0, formats=FORMATS):
    """Write `count` images of random sizes (12-40 px), cycling through `formats`, into
    `folder` and sub-folders; return their paths in the order written."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        image_format, suffix = formats[i % len(formats)]
        size = tuple(int(d) for d in rng.integers(12, 40, size=2))
        sub = os.path.join(folder, f"sub{i % 2}")
        os.makedirs(sub, exist_ok=True)
        path = os.path.join(sub, f"image{i:04d}{suffix}")
        with open(path, "wb") as file:
            file.write(encode(coloured_pixels(i % 3, size, rng), image_format))
        paths.append(path)
    return paths


def bad_images():
    """`{name: bytes}` of images that cannot be read, with a part of the error each gives."""
    good = encode(coloured_pixels(0, (20, 20), np.random.default_rng(1)))
    bomb = bytearray(good)
    bomb[16:24] = (30000).to_bytes(4, "big") * 2  # a PNG header declaring 30000 x 30000
    return {
        "empty.png": (b"", "Input is empty"),
        "text.png": (b"hello, not an image", "Unknown image file format"),
        "truncated.png": (good[: len(good) // 2], "PNG"),
        "bomb.png": (bytes(bomb), "more than the limit"),
        "tiff.jpg": (b"II*\x00" + b"\x00" * 64, "Unknown image file format"),
    }
