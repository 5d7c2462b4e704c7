"""Helpers shared by the serving tests (`tests/test_serving_*.py`): test SavedModels and images,
and a server the modules that need nothing else share.

Building and saving a LeNet takes seconds, so one is saved per test process and copied wherever a
test needs a version folder. A server process costs 8-10 CPU s to start (TensorFlow's import, the
model's load and warm-up), so the modules in `SHARED_SERVER_MODULES` use one
(`shared_lenet_server`), started on first use in a test process and stopped when its session
ends (`stop_shared_lenet_server`, called by `tests/conftest.py`, which also runs those modules in
one test process).
"""

import io
import os
import shutil
import tempfile

import numpy as np

CLASS_NAMES = ["a", "b", "c"]
IMAGE_SIZE = 16

#: The modules that use `shared_lenet_server` (tests/conftest.py keeps them in one process).
SHARED_SERVER_MODULES = ("test_serving_basic", "test_serving_errors", "test_serving_json_properties")
#: The shared server's --max_request_bytes.
SHARED_MAX_REQUEST_BYTES = 1 << 20

_saved = {}
_shared = []


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


def shared_lenet_server():
    """The test process's server of model `lenet` (`saved_model_copy`, seed 0, version 1) with
    batching, `--max_request_bytes SHARED_MAX_REQUEST_BYTES` and no polling of its folder
    (`--file_system_poll_wait_seconds 0`). Its `model_dir` attribute is the model's folder.

    Tests may send it anything but change nothing of it: the other modules' tests use it too.
    """
    if not _shared:
        from imgclf.serving import ServerProcess

        model_dir = os.path.join(tempfile.mkdtemp(prefix="imgclf-shared-server-"), "lenet")
        saved_model_copy(os.path.join(model_dir, "1"))
        server = ServerProcess(["--model_name", "lenet", "--model_base_path", model_dir,
                                "--enable_batching", "--max_request_bytes", SHARED_MAX_REQUEST_BYTES,
                                "--file_system_poll_wait_seconds", "0"])
        server.start()
        server.model_dir = model_dir
        _shared.append(server)
    return _shared[0]


def stop_shared_lenet_server():
    """Stop the shared server, if this process started one."""
    while _shared:
        _shared.pop().stop()
