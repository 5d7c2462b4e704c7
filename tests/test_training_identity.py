"""A run has an identity: a backup is resumed only by the run it belongs to (issue 12 §1).

Each case of the issue, with real training in this process: a run that failed before training
leaves nothing behind; a re-run with other flags, another version or other classes is refused
before any work with one line naming what differs and `--restart`; a second run while one holds
the model folder (a real other process) is refused without touching the first one's state.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import pytest

from imgclf.data.sample_data import write_sample_dataset
from imgclf.training import train
from imgclf.training.backup import RunBusyError
from imgclf.training.identity import RunMismatchError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = dict(input_shape=(16, 16, 3), batch_size=8, num_epochs=2, verbose=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("identity")
    write_sample_dataset(folder / "two", num_classes=2, image_size=16, train_per_class=6,
                         test_per_class=2)
    write_sample_dataset(folder / "three", num_classes=3, image_size=16, train_per_class=6,
                         test_per_class=2)
    return folder


class Crash(Exception):
    pass


class CrashAtEpoch(keras.callbacks.Callback):
    """Stands for a kill once `epoch` epochs are finished and backed up."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Crash(f"killed before epoch {epoch + 1}")


def crashed_run(data, models, **options):
    with pytest.raises(Crash):
        train("LenetModel", data / "two" / "train", data / "two" / "test", models,
              callbacks=[CrashAtEpoch(1)], **{**OPTIONS, **options})
    return models / "LenetModel" / "backup"


def snapshot(folder):
    """Every file under `folder` with its bytes."""
    files = {}
    for directory, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(directory, name), "rb") as file:
                files[os.path.relpath(os.path.join(directory, name), folder)] = file.read()
    return files


def test_a_run_that_fails_before_training_pins_nothing(data, tmp_path):
    models = tmp_path / "models"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train("LenetModel", data / "two" / "train", data / "two" / "tset", models, **OPTIONS)
    assert not os.path.exists(models / "LenetModel")

    result = train("LenetModel", data / "two" / "train", data / "two" / "test", models,
                   model_version=3, **OPTIONS)
    assert result.export_path == str(models / "LenetModel" / "3")
    assert sorted(os.listdir(models / "LenetModel")) == ["3", "checkpoints", "logs"]


def test_a_rerun_with_other_flags_or_version_is_refused_before_any_work(data, tmp_path):
    models = tmp_path / "models"
    backup = crashed_run(data, models)
    with open(backup / "run.json") as file:
        assert json.load(file)["version"] == 1
    before = snapshot(models)

    with pytest.raises(RunMismatchError) as refused:
        train("LenetModel", data / "two" / "train", data / "two" / "test", models,
              model_version=7, learning_rate=0.05, seed=1, **OPTIONS)
    assert str(refused.value) == (
        f"{backup} holds an interrupted run with other settings: learning_rate 0.001 -> 0.05, "
        "seed 42 -> 1, model_version 1 -> 7; run again with the original settings to resume it, "
        "or with restart=True (--restart) to discard it and start afresh"
    )
    # Only the version differs: refused too, never silently ignored.
    with pytest.raises(RunMismatchError, match=r"settings: model_version 1 -> 7;"):
        train("LenetModel", data / "two" / "train", data / "two" / "test", models,
              model_version=7, **OPTIONS)
    assert snapshot(models) == before

    # --restart discards it and writes the version it asks for (the original flags would
    # resume it: test_a_concurrent_run_...).
    restarted = train("LenetModel", data / "two" / "train", data / "two" / "test", models,
                      model_version=7, learning_rate=0.05, seed=1, restart=True, **OPTIONS)
    assert restarted.export_path == str(models / "LenetModel" / "7")
    assert restarted.phase_epochs == [2]
    assert sorted(os.listdir(models / "LenetModel")) == ["7", "checkpoints", "logs"]


def test_a_rerun_on_data_with_other_classes_names_restart(data, tmp_path):
    models = tmp_path / "models"
    backup = crashed_run(data, models)
    with pytest.raises(RunMismatchError) as refused:
        train("LenetModel", data / "three" / "train", data / "three" / "test", models, **OPTIONS)
    assert str(refused.value) == (
        f"{backup} holds an interrupted run with other settings: training classes "
        "['circle', 'square'] -> ['circle', 'square', 'triangle']; run again with the original "
        "settings to resume it, or with restart=True (--restart) to discard it and start afresh"
    )


HOLDER = textwrap.dedent("""
    import sys, time
    from imgclf.tensorflow_import import import_tensorflow
    import_tensorflow()  # as train_model.py does
    from imgclf.training.backup import RunBackup
    backup = RunBackup(sys.argv[1])  # kept: the lock lives as long as its file object
    backup.lock()
    print("locked", flush=True)
    time.sleep(600)
""")


def test_a_concurrent_run_in_the_same_model_folder_is_refused_and_destroys_nothing(
        data, tmp_path):
    models = tmp_path / "models"
    backup = crashed_run(data, models)  # the other run's state, which must survive
    before = snapshot(models)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(backup)],
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": REPO})
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(RunBusyError) as refused:
            train("LenetModel", data / "two" / "train", data / "two" / "test", models,
                  restart=True, **OPTIONS)
        assert str(refused.value) == (
            f"another training run (pid {holder.pid} on {os.uname().nodename}, since "
            f"{str(refused.value).split('since ')[1].split(')')[0]}) is using "
            f"{models / 'LenetModel'}: wait for it to end, or give this run its own model "
            "folder (--model_folder_path)"
        )
        after = snapshot(models)
        assert after.pop("LenetModel/.backup.lock").startswith(b"pid ")
        assert after == before
    finally:
        holder.kill()
        holder.wait()
    # The holder died (as a SIGKILLed run does): its lock went with it.
    resumed = train("LenetModel", data / "two" / "train", data / "two" / "test", models,
                    **OPTIONS)
    assert resumed.export_path == str(models / "LenetModel" / "1")
    assert resumed.phase_epochs == [2]  # the epoch before the crash counts
    assert not os.path.exists(models / "LenetModel" / ".backup.lock")
