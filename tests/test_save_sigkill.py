"""SIGKILL while `save` writes a version: the previous version intact, no half version visible.

A real process saves version 2 again and again (each save replaces the last) while version 1 sits
beside it; it is killed with SIGKILL in the middle of a save, and what a server would see is
checked: version 1 byte for byte as it was, version 2 a complete SavedModel, nothing else.
"""

import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import tensorflow as tf
from conftest_serving import IMAGE_SIZE, saved_model_copy

from imgclf.serving.manager import ModelManager
from imgclf.serving import config

CHILD = textwrap.dedent("""
    import sys
    from imgclf.tensorflow_import import import_tensorflow
    import_tensorflow()  # as imgclf's programs do
    import keras
    from imgclf import LenetModel

    keras.utils.set_random_seed(1)
    model = LenetModel(input_shape=({size}, {size}, 3), num_classes=3, class_names=["a", "b", "c"])
    saves = 0
    while True:
        model.save(sys.argv[1])
        saves += 1
        print(saves, flush=True)
""")


def digest(folder):
    """Hash of every file's path and content under `folder`."""
    result = hashlib.sha256()
    for directory, subdirectories, files in sorted(os.walk(folder)):
        subdirectories.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            result.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                result.update(f.read())
    return result.hexdigest()


def test_sigkill_during_save_leaves_whole_versions(tmp_path):
    base = tmp_path / "lenet"
    saved_model_copy(base / "1")
    before = digest(base / "1")
    log = open(tmp_path / "child.log", "w+")
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(size=IMAGE_SIZE), str(base / "2")],
                             stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        deadline = time.monotonic() + 120
        # Kill during the second save: version 2 exists and its replacement is being written.
        while not (os.path.isdir(base / "2")
                   and any(name.startswith(".2.saving-") for name in os.listdir(base))):
            assert child.poll() is None, open(tmp_path / "child.log").read()
            assert time.monotonic() < deadline, "the child never started its second save"
            time.sleep(0.002)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        child.kill()
        log.close()
    assert child.returncode == -signal.SIGKILL
    # Killed mid-save: the hidden staging folder of the unfinished save is still there.
    assert any(name.startswith(".2.saving-") for name in os.listdir(base))
    assert digest(base / "1") == before
    visible = sorted(name for name in os.listdir(base) if not name.startswith("."))
    assert visible == ["1", "2"]
    loaded = tf.saved_model.load(str(base / "2"))
    logits = loaded.signatures["serving_default"](
        input_tensor=tf.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)))["output_0"].numpy()
    assert logits.shape == (1, 3) and np.isfinite(logits).all()
    # The server's scan sees both versions, complete; the half-written one is hidden.
    options = config.parse_args(["--model_name", "lenet", "--model_base_path", str(base)])
    manager = ModelManager(config.model_server_config(options))
    assert sorted(manager._scan(manager.models["lenet"])) == [1, 2]


def test_the_next_save_removes_what_a_killed_save_left(tmp_path):
    from imgclf import LenetModel
    from imgclf.export.savedmodel import remove_abandoned_saves

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    host = socket.gethostname()
    left = {
        "dead": tmp_path / f".2.saving-{host}-{dead_pid}-0123abcd",
        "dead swap": tmp_path / f".2.replaced-{host}-{dead_pid}-89abcdef",
        "alive": tmp_path / f".2.saving-{host}-{os.getpid()}-0123abcd",
        "other host": tmp_path / f".2.saving-elsewhere.example-{dead_pid}-0123abcd",
        "other version": tmp_path / f".3.saving-{host}-{dead_pid}-0123abcd",
        "old naming": tmp_path / ".2.saving-0123abcd",
    }
    for folder in left.values():
        folder.mkdir()
        (folder / "saved_model.pb").write_bytes(b"half")
    model = LenetModel(input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), num_classes=2)
    model.save(str(tmp_path / "2"))
    remaining = {key for key, folder in left.items() if folder.exists()}
    assert remaining == {"alive", "other host", "other version", "old naming"}
    assert tf.saved_model.load(str(tmp_path / "2")) is not None
    assert remove_abandoned_saves(str(tmp_path), "2") == []
