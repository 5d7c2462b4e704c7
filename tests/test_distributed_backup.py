"""Preemption: a single-process run killed with SIGKILL resumes from its last finished epoch.

The multi-worker case is in `test_distributed_training.py`.
"""

import json
import os

import keras
import numpy as np
import pytest

from conftest_distributed import (
    first_epoch_line, kill_after_epoch, logs, start_training, train_args, wait_all, write_data,
)
from distributed_models import TinyBackboneModel
from imgclf.training.backup import RunBackup


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(str(tmp_path_factory.mktemp("backup") / "data"), train_per_class=40,
                      test_per_class=10)


# Real processes on a shared 2-core machine: generous, for a loaded CI runner.
@pytest.mark.timeout(900)
def test_a_killed_fine_tuning_run_resumes_in_phase_2_and_restart_discards_the_backup(
        data, tmp_path):
    weights = TinyBackboneModel.save_backbone_weights(str(tmp_path / "backbone.weights.h5"))
    models = tmp_path / "models"

    def args(version):
        # 3 epochs with the backbone frozen, then 3 fine-tuning it: epochs 1-3 and 4-6.
        return train_args(data, models, 3, "--model_type", "distributed_models:TinyBackboneModel",
                          "--weights", weights, "--fine_tune_epochs", "3",
                          "--model_version", str(version))

    backup = models / "TinyBackboneModel" / "backup"
    workers = start_training(str(tmp_path), args(3), name="first")
    finished = kill_after_epoch(workers, str(backup / "fine_tune" / "state.json"), epoch=4)
    assert 4 <= finished < 6
    with open(backup / "run.json") as file:
        assert json.load(file)["version"] == 3
    with open(backup / "train" / "state.json") as file:
        assert json.load(file)["done"] is True

    # Run again with another --model_version: refused in one line, before any work (it is
    # never silently ignored).
    workers = start_training(str(tmp_path), args(4), name="refused")
    assert wait_all(workers) == [2], logs(workers)
    with open(workers[0][1], encoding="utf-8") as file:
        assert ("holds an interrupted run with other settings: model_version 3 -> 4; run again "
                "with the original settings to resume it, or with restart=True (--restart)"
                in file.read())

    # With the original flags: phase 1 is not repeated and phase 2 goes on after its last
    # finished epoch.
    workers = start_training(str(tmp_path), args(3), name="again")
    assert wait_all(workers) == [0], logs(workers)
    assert first_epoch_line(workers[0][1]) == f"Epoch {finished + 1}/6"
    assert sorted(os.listdir(models / "TinyBackboneModel")) == ["3", "checkpoints", "logs"]

    # --restart discards a backup: this run starts at the first epoch and writes version 4.
    first = start_training(str(tmp_path), args(4), name="third")
    kill_after_epoch(first, str(backup / "train" / "state.json"), epoch=1)
    workers = start_training(str(tmp_path), [*args(4), "--restart"], name="restarted")
    assert wait_all(workers) == [0], logs(workers)
    assert first_epoch_line(workers[0][1]) == "Epoch 1/3"
    assert sorted(os.listdir(models / "TinyBackboneModel")) == ["3", "4", "checkpoints", "logs"]


def _tiny_model():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(keras.optimizers.Adam(0.1), "mse")
    return model


def test_phase_backup_restores_weights_optimizer_and_epoch(tmp_path):
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 2), "float32")
    model = _tiny_model()
    backup = RunBackup(tmp_path / "backup")
    assert not backup.exists
    assert backup.pin({"model": "m"}, lambda: 7) == 7
    phase = backup.phase("train")
    model.fit(x, y, epochs=3, verbose=0, callbacks=[phase.callback()])
    assert phase.state["epoch"] == 3 and phase.state["weights"] == "epoch-0003.weights.h5"
    assert len(phase.state["history"]["loss"]) == 3
    assert sorted(os.listdir(phase.folder)) == ["epoch-0003.weights.h5", "state.json"]

    again = RunBackup(tmp_path / "backup")
    assert again.pin({"model": "m"}, lambda: 8) == 7  # chosen once, remembered
    restored = _tiny_model()
    assert again.phase("train").restore(restored) == 3
    for a, b in zip(model.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(restored.optimizer.iterations) == int(model.optimizer.iterations) == 3
    assert again.phase("fine_tune").restore(_tiny_model()) == 0

    again.phase("train").finish(restored)
    assert again.phase("train").done
    reader = RunBackup(tmp_path / "backup", writer=False, restart=True)
    assert not reader.exists and reader.phase("train").state == {}
    reader.remove()  # a reader never deletes
    assert os.path.isdir(tmp_path / "backup")
    restarted = RunBackup(tmp_path / "backup", restart=True)
    assert os.path.isdir(tmp_path / "backup")  # kept until the restarted run starts training
    assert restarted.pin({"model": "m"}, lambda: 9) == 9
    assert sorted(os.listdir(tmp_path / "backup")) == ["run.json"]


def test_the_weights_are_on_disk_before_state_json_names_them(tmp_path, monkeypatch):
    """A power cut after `state.json` was replaced must not find it naming unwritten weights."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(source, target):
        events.append(("replace", os.path.basename(target)))
        real_replace(source, target)

    model = _tiny_model()
    backup = RunBackup(tmp_path / "backup")
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    backup.phase("train").save(model, 1, best_weights=model.get_weights())

    state = events.index(("replace", "state.json"))
    for name in ("epoch-0001.weights.h5", "best-0001.npz"):
        renamed = events.index(("replace", name))
        assert ("fsync", ".staging." + name) in events[:renamed]  # the file's bytes
        assert ("fsync", "train") in events[renamed:state]  # its name in the folder
