import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image


def encode_image(pixels, image_format="PNG", mode=None):
    """Encode a uint8 array `[H, W, 3]` (or `[H, W]`) as image bytes with Pillow."""
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
