"""`imgclf.spark.train`: imgclf's multi-worker training as the tasks of a Spark barrier stage.

Everything real, in the shared `local[2]` session: a DataFrame of the sample images written to
TFRecords by Spark, two barrier tasks whose child processes form one MultiWorkerMirroredStrategy
cluster on loopback, the chief's SavedModel reloaded and predicted through `imgclf.spark.predict`,
a worker's child killed with SIGKILL, and the re-run resuming from the backup in the same session.
"""

import contextlib
import io
import json
import os
import signal
import sys
import threading
import time

import pytest
import tensorflow as tf

from conftest_spark import shared_spark_session

from imgclf.spark.records import read_image_folder, write_tfrecords
from imgclf.spark.training import SparkTrainingError, run_workers, train

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multi_worker_probe.py")
TRAINING = dict(input_shape=(32, 32, 3), batch_size=8, seed=3)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Sample images (3 classes, 32 px) read by Spark and written to TFRecords by Spark."""
    from imgclf.data.sample_data import write_sample_dataset

    root = tmp_path_factory.mktemp("spark-training")
    write_sample_dataset(str(root / "data"), num_classes=3, image_size=32, train_per_class=100,
                         test_per_class=20)
    spark = shared_spark_session()
    layouts = {}
    for role in ("train", "test"):
        images = read_image_folder(root / "data" / role, spark)
        # One shard: each worker reads every record and keeps its share of each batch.
        layouts[role] = write_tfrecords(images, str(root / "records" / role), num_shards=1)
    assert layouts["train"]["num_examples"] == 300 and layouts["train"]["unreadable"] == {}
    return root


def _parent(pid):
    with open(f"/proc/{pid}/stat") as file:
        return int(file.read().rsplit(")", 1)[1].split()[1])


def _descends_from_this_test(pid):
    try:
        while pid > 1:
            pid = _parent(pid)
            if pid == os.getpid():
                return True
    except OSError:
        pass
    return False


def _training_children():
    """PIDs of this test's processes running a worker's training (`-m imgclf.spark.training`):
    below this process, through Spark's JVM and its Python workers (others may train too)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                argv = file.read().split(b"\0")
        except OSError:
            continue
        if b"imgclf.spark.training" in argv and b"-m" in argv and _descends_from_this_test(int(pid)):
            found.append(int(pid))
    return found


def _worker_index(pid):
    with open(f"/proc/{pid}/environ", "rb") as file:
        env = dict(item.split(b"=", 1) for item in file.read().split(b"\0") if b"=" in item)
    return json.loads(env[b"TF_CONFIG"])["task"]["index"]


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_until_gone(pids=(), timeout=30):
    """The processes of `pids` still alive, and this test's training children, after waiting
    for them to end (a child orphaned by its task's death would no longer be below this test)."""
    deadline = time.monotonic() + timeout

    def running():
        return sorted({pid for pid in pids if _alive(pid)} | set(_training_children()))

    while running() and time.monotonic() < deadline:
        time.sleep(0.2)
    return running()


@pytest.fixture(scope="module")
def killed_and_rerun(records, tmp_path_factory):
    """A 6-epoch training on two barrier workers whose worker 1 is SIGKILLed once the first
    epoch is backed up, then the same `train` call again in the same session. One killed run and
    one whole two-worker run for the two tests below: each stage starts two child processes
    that import TensorFlow and trace the multi-worker steps, most of what a stage costs."""
    spark = shared_spark_session()
    models = tmp_path_factory.mktemp("spark-killed") / "models"
    args = ("LenetModel", records / "records" / "train", records / "records" / "test", models)
    options = dict(num_workers=2, spark=spark, num_epochs=6, patience=6, **TRAINING)
    state = models / "LenetModel" / "backup" / "train" / "state.json"
    outcome = {}

    def run():
        try:
            outcome["result"] = train(*args, **options)
        except BaseException as error:  # noqa: BLE001 - the test inspects it
            outcome["error"] = error

    driver = threading.Thread(target=run)
    driver.start()
    deadline = time.monotonic() + 600
    while not state.exists() and driver.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state.exists(), outcome
    children = _training_children()
    victims = [pid for pid in children if _worker_index(pid) == 1]
    assert len(children) == 2 and len(victims) == 1
    os.kill(victims[0], signal.SIGKILL)
    driver.join(timeout=300)
    outcome["left_running"] = _wait_until_gone(children)
    with open(state) as file:
        outcome["finished"] = json.load(file)["epoch"]

    # A second job in the same session resumes the run at its next epoch; the workers' output
    # reaches the driver's stderr (pyspark's log server writes it there).
    rerun_err = io.StringIO()
    with contextlib.redirect_stderr(rerun_err):
        outcome["rerun"] = train(*args, **options)
    outcome["rerun_err"] = rerun_err.getvalue()
    outcome["models"] = models
    return outcome


@pytest.mark.timeout(1800)
def test_two_barrier_workers_train_a_servable_version_that_spark_predicts(records,
                                                                         killed_and_rerun):
    # The rerun of the killed run: a whole two-worker stage that resumes epochs 2-6 (the
    # unkilled run's).
    spark = shared_spark_session()
    result, err = killed_and_rerun["rerun"], killed_and_rerun["rerun_err"]
    run_folder = killed_and_rerun["models"] / "LenetModel"
    assert result.export_path == str(run_folder / "1") and result.num_workers == 2
    assert result.test_metrics["accuracy"] >= 0.6, result
    assert len(result.history["val_accuracy"]) == result.phase_epochs[0] >= 1
    # The chief alone wrote, and left no backup; no child is left running.
    assert sorted(os.listdir(run_folder)) == ["1", "checkpoints", "logs"]
    assert _wait_until_gone(timeout=5) == []
    # Both workers' output reached the driver.
    assert "[worker 0] imgclf.training: distribution: MultiWorkerMirroredStrategy: 2 replica(s) " \
        "on 2 worker(s), this is worker 0 (chief)" in err
    assert "[worker 1] worker done: the chief saved the model" in err

    loaded = tf.saved_model.load(result.export_path)
    assert set(loaded.signatures) == {"serving_default", "serving_bytes", "serving_labels"}
    with open(run_folder / "1" / "assets.extra" / "imgclf.json") as file:
        metadata = json.load(file)
    assert metadata["training"]["launcher"] == {
        "name": "spark", "num_workers": 2, "master": "local[2]", "spark_version": spark.version,
    }
    assert metadata["class_names"] == ["circle", "square", "triangle"]

    from imgclf.spark import predict

    images = read_image_folder(records / "data" / "test", spark)
    rows = predict(images, result.export_path).select("path", "class", "error").collect()
    assert len(rows) == 60 and not any(row["error"] for row in rows)  # "" when none
    right = sum(row["class"] == row["path"].split("/")[-2] for row in rows)
    assert right / len(rows) == pytest.approx(result.test_metrics["accuracy"], abs=0.02)


@pytest.mark.timeout(1800)
def test_a_killed_worker_fails_the_stage_with_its_error_and_the_rerun_resumes(killed_and_rerun):
    error = killed_and_rerun.get("error")
    assert isinstance(error, SparkTrainingError), killed_and_rerun
    message = str(error)
    assert message.startswith("imgclf worker 1 of 2 was killed by signal 9 (SIGKILL); its last "
                              "lines:\n"), message[:500]
    assert "imgclf.training: distribution: MultiWorkerMirroredStrategy" in message
    assert "\nEpoch 1/6\n" in message and message.endswith("\n--- end of worker 1's output ---")
    # Spark ended the other task, and its child with it: nothing ran any more.
    assert killed_and_rerun["left_running"] == []

    # The second job in the same session resumed the run at its next epoch.
    finished, err = killed_and_rerun["finished"], killed_and_rerun["rerun_err"]
    assert f"[worker 0] Epoch {finished + 1}/6" in err and "[worker 0] Epoch 1/6" not in err
    models = killed_and_rerun["models"]
    assert killed_and_rerun["rerun"].export_path == str(models / "LenetModel" / "1")
    assert sorted(os.listdir(models / "LenetModel")) == ["1", "checkpoints", "logs"]


@pytest.mark.timeout(1200)
def test_plain_keras_fit_fails_in_the_barrier_stage_where_imgclf_trains():
    spark = shared_spark_session()
    with pytest.raises(SparkTrainingError) as failure:
        run_workers([sys.executable, PROBE, "-", "-", "keras"], 2, spark)
    assert "failed with exit code 1" in str(failure.value)
    assert "values.PerReplica'>) to a Tensor." in str(failure.value)  # keras-team/keras#20585
    assert _wait_until_gone() == []

    assert run_workers([sys.executable, PROBE, "-", "-", "imgclf"], 2, spark) == [None, None]


def test_usage_errors_are_found_before_any_task_starts(tmp_path):
    with pytest.raises(ValueError, match=r"^num_workers must be a positive integer; received 0$"):
        train("LenetModel", tmp_path, tmp_path, tmp_path, num_workers=0)
    with pytest.raises(ValueError, match=r"^distribution must be 'auto' or 'multi_worker' on Spark"):
        train("LenetModel", tmp_path, tmp_path, tmp_path, distribution="mirrored")
    with pytest.raises(ValueError, match=r"^batch_size must be an integer of at least 1"):
        train("LenetModel", tmp_path, tmp_path, tmp_path, batch_size=0)


def test_the_command_line_asks_for_spark_to_take_num_workers(capsys):
    from imgclf.cli.train import main

    with pytest.raises(SystemExit) as exit_:
        main(["--train_dataset_path", "a", "--test_dataset_path", "b", "--num_workers", "2"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.endswith(
        "error: --num_workers applies only with --distribution spark\n")
