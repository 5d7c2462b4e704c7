"""Helpers shared by the serving tests (`tests/test_serving_*.py`): test SavedModels and images.

Building and saving a LeNet takes seconds, so one is saved per test process and copied wherever a
test needs a version folder.
"""

import io
import os
import shutil
import tempfile

import numpy as np

CLASS_NAMES = ["a", "b", "c"]
IMAGE_SIZE = 16

_saved = {}


def saved_model_copy(target, seed=0):
    """Copy a saved LeNet (16 x 16 x 3, classes a/b/c) to folder `target`; return `target`.

    Models with different `seed`s have different weights, so their answers tell them apart.
    """
    if seed not in _saved:
        import keras

        from imgclf import LenetModel

        keras.utils.set_random_seed(seed)
        folder = os.path.join(tempfile.mkdtemp(prefix="imgclf-serving-model-"), "1")
        LenetModel(input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), num_classes=3,
                   class_names=CLASS_NAMES).save(folder)
        _saved[seed] = folder
    shutil.copytree(_saved[seed], target)
    return str(target)


def png_bytes(height=IMAGE_SIZE, width=IMAGE_SIZE, seed=0):
    """An RGB PNG of random pixels."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def random_images(count, size=IMAGE_SIZE, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)
