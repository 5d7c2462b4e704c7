"""A killed and resumed two-phase run ends as the same run never killed (issue 12 §3).

A child process trains a tiny pretrained backbone (phase 1 frozen, phase 2 fine-tuned, light
augmentation, dropout in the head, patience 1) and hard-exits in the middle of a chosen epoch,
once in phase 1 and once in phase 2; the run is then resumed in this process and compared with
an unkilled run: the same history, phase epochs (early-stopping decisions), final weights,
best checkpoint and version, within float tolerance.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from distributed_models import TinyBackboneModel
from imgclf.data.sample_data import write_sample_dataset
from imgclf.training import train

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

CHILD = textwrap.dedent("""
    import json, os, sys
    from imgclf.tensorflow_import import import_tensorflow
    import_tensorflow()  # as train_model.py does
    import keras
    from imgclf.training import train

    class ExitMidEpoch(keras.callbacks.Callback):
        # Stands for SIGKILL: os._exit runs no cleanup, and the epoch's first step is lost.
        def __init__(self, epoch):
            super().__init__()
            self.epoch, self.current = epoch, None

        def on_epoch_begin(self, epoch, logs=None):
            self.current = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.current == self.epoch:
                os._exit(137)

    args = json.loads(sys.argv[1])
    train(*args["paths"], callbacks=[ExitMidEpoch(args["exit_epoch"])], **args["options"])
    sys.exit(3)  # never reached: the run must die in the chosen epoch
""")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    write_sample_dataset(folder / "data", num_classes=2, image_size=32, train_per_class=12,
                         test_per_class=2)
    weights = TinyBackboneModel.save_backbone_weights(str(folder / "backbone.weights.h5"))
    options = dict(model_kwargs={"weights": weights}, batch_size=8, num_epochs=3,
                   fine_tune_epochs=3, patience=1, augment="light", verbose=0)
    return folder, options


def run(setup, models, **extra):
    folder, options = setup
    return train("distributed_models:TinyBackboneModel", str(folder / "data" / "train"),
                 str(folder / "data" / "test"), str(models), **options, **extra)


@pytest.fixture(scope="module")
def unkilled(setup, tmp_path_factory):
    return run(setup, tmp_path_factory.mktemp("unkilled") / "models")


def kill_in_epoch(setup, models, epoch):
    folder, options = setup
    args = {"paths": ["distributed_models:TinyBackboneModel", str(folder / "data" / "train"),
                      str(folder / "data" / "test"), str(models)],
            "options": options, "exit_epoch": epoch}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, TESTS]), "TF_CPP_MIN_LOG_LEVEL": "3"}
    child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], env=env,
                           capture_output=True, text=True, timeout=600)
    assert child.returncode == 137, child.stderr[-3000:]


def serve(saved_model_path, images):
    return tf.saved_model.load(saved_model_path).signatures["serving_default"](
        tf.constant(images))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("phase", ["train", "fine_tune"])
def test_a_run_killed_in_either_phase_resumes_as_if_never_killed(setup, unkilled, tmp_path,
                                                                 phase):
    phase_1, phase_2 = unkilled.phase_epochs
    assert phase_1 >= 2 and phase_2 >= 2, unkilled.phase_epochs  # a kill mid-phase is possible
    # The second epoch of the phase: its first epoch is backed up, its second half-done.
    exit_epoch = 1 if phase == "train" else phase_1 + 1
    models = tmp_path / "models"
    kill_in_epoch(setup, models, exit_epoch)
    backup = models / "TinyBackboneModel" / "backup"
    with open(backup / phase / "state.json") as file:
        assert json.load(file)["epoch"] == exit_epoch

    resumed = run(setup, models)

    assert resumed.phase_epochs == unkilled.phase_epochs
    assert resumed.history.keys() == unkilled.history.keys()
    for key, values in unkilled.history.items():
        np.testing.assert_allclose(resumed.history[key], values, rtol=1e-4, atol=1e-6, err_msg=key)
    for a, b in zip(resumed.model.get_weights(), unkilled.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert os.path.basename(resumed.export_path) == os.path.basename(unkilled.export_path) == "1"
    # The best checkpoint is the unkilled run's best epoch, not the first one after the resume.
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    unkilled_best = os.path.join(os.path.dirname(unkilled.export_path), "checkpoints", "best")
    resumed_best = models / "TinyBackboneModel" / "checkpoints" / "best"
    for key, value in serve(unkilled_best, images).items():
        np.testing.assert_allclose(serve(str(resumed_best), images)[key], value, rtol=1e-4,
                                   atol=1e-5)
    assert not os.path.exists(backup)
