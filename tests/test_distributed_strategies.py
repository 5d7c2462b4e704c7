"""Choosing the distribution strategy; batch and learning-rate scaling; the chief."""

import json
import os

import pytest
import tensorflow as tf

from conftest_distributed import IMAGE_SIZE, train_args, write_data
from imgclf.cli.train import main as train_main
from imgclf.training import TrainingConfig, plan_training, strategies
from imgclf.training.config import scaled_learning_rates
from imgclf.training.multi_worker_fit import in_multi_worker_mode, rank1_logs

CLUSTER = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}}


def test_auto_picks_multi_worker_when_tf_config_names_a_cluster(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps(CLUSTER))
    assert strategies.auto_distribution() == "multi_worker"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"task": {"type": "worker", "index": 0}}))
    assert strategies.auto_distribution() == "none"  # no cluster, and no GPU here
    monkeypatch.delenv("TF_CONFIG")
    assert strategies.auto_distribution() == "none"


def test_strategy_errors_name_what_arrived(monkeypatch):
    with pytest.raises(ValueError) as error:
        strategies.create_strategy("horovod")
    assert str(error.value) == (
        "distribution must be one of auto, none, mirrored, multi_worker; received 'horovod'"
    )
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError) as error:
        strategies.create_strategy("multi_worker")
    assert str(error.value).endswith("TF_CONFIG is not set")
    monkeypatch.setenv("TF_CONFIG", "{cluster")
    with pytest.raises(ValueError) as error:
        strategies.cluster_from_tf_config()
    assert str(error.value).startswith("TF_CONFIG is not JSON (") and "received '{cluster'" in str(
        error.value)


def test_the_chief_is_the_chief_task_or_worker_0_without_one(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps(CLUSTER))
    assert strategies.is_chief("worker", 0) and not strategies.is_chief("worker", 1)
    with_chief = {"cluster": {"chief": ["a:1"], "worker": ["b:1"]}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(with_chief))
    assert strategies.is_chief("chief", 0) and not strategies.is_chief("worker", 0)


def test_one_process_plan_batch_and_learning_rate_and_logs_untouched(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = strategies.create_strategy("none")
    plan = strategies.describe_strategy(strategy, batch_size=16)
    assert (plan.num_replicas, plan.num_workers, plan.global_batch_size) == (1, 1, 16)
    assert (plan.is_chief, plan.task_type, plan.task_index) == (True, "worker", 0)
    assert not in_multi_worker_mode(strategy)
    logs = {"loss": tf.constant(1.0)}
    assert rank1_logs(strategy, logs) is logs


@pytest.mark.parametrize("optimizer, scale", [("sgd", 8), ("adam", 8 ** 0.5), ("adamw", 8 ** 0.5)])
def test_learning_rates_scale_linearly_for_sgd_by_the_square_root_for_adam(optimizer, scale, caplog):
    caplog.set_level("INFO", "imgclf.training")
    plan = plan_training("MobileNetV2Model", TrainingConfig(
        optimizer=optimizer, learning_rate=1e-3, fine_tune_learning_rate=2e-4))
    scaled = scaled_learning_rates(plan, 8)
    assert scaled.learning_rate == pytest.approx(1e-3 * scale)
    assert scaled.fine_tune_learning_rate == pytest.approx(2e-4 * scale)
    assert (scaled.learning_rate_scale, scaled.num_replicas) == (pytest.approx(scale), 8)
    assert scaled.per_replica_learning_rates == (1e-3, 2e-4)  # recorded as given, unrounded
    assert strategies.learning_rate_scale(optimizer, 1) == 1  # one replica: as given
    rule = "8 replicas" if optimizer == "sgd" else "sqrt(8 replicas)"
    assert f"learning rate {1e-3 * scale:g}: 0.001 per replica x {rule} ({optimizer})" in caplog.text


def test_train_model_with_mirrored_strategy(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    caplog.set_level("INFO", "imgclf.training")
    data = write_data(str(tmp_path / "data"), train_per_class=20, test_per_class=5)
    models = tmp_path / "models"
    assert train_main(train_args(data, models, 2, "--distribution", "mirrored")) == 0
    out = capsys.readouterr()
    assert "saved model: " in out.out
    assert "MirroredStrategy: 1 replica(s) on 1 worker(s), this is worker 0 (chief); batch 8 " \
        "per replica, 8 global" in caplog.text
    assert "learning rate 0.001: 0.001 per replica x sqrt(1 replicas) (adam)" in caplog.text
    assert sorted(os.listdir(models / "LenetModel")) == ["1", "checkpoints", "logs"]
    loaded = tf.saved_model.load(str(models / "LenetModel" / "1"))
    assert loaded.signatures["serving_default"](
        input_tensor=tf.zeros([1, IMAGE_SIZE, IMAGE_SIZE, 3]))["output_0"].shape == (1, 3)


def test_distribution_flag_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        train_main(["--train_dataset_path", "a", "--test_dataset_path", "b",
                    "--distribution", "tpu"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.endswith(
        "error: argument --distribution: invalid choice: 'tpu' (choose from 'auto', 'none', "
        "'mirrored', 'multi_worker', 'spark')\n")


def test_tfrecord_training_is_sharded_by_file_only_with_a_shard_file_per_worker(
        tmp_path, monkeypatch, caplog):
    import dataclasses

    from imgclf.data import convert_folder
    from imgclf.training.distributed import file_shard_context

    folder = write_data(str(tmp_path / "data"), train_per_class=2, test_per_class=1)
    records = str(tmp_path / "records")
    convert_folder(os.path.join(folder, "train"), records, num_shards=2)
    alone = strategies.describe_strategy(tf.distribute.get_strategy(), 8)
    assert file_shard_context(alone, records) is None  # one process: nothing to split
    # Worker 0 beside a separate chief is the second input pipeline (tf.distribute's order).
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]},
        "task": {"type": "worker", "index": 0}}))
    worker = dataclasses.replace(alone, num_workers=2, num_replicas=2, is_chief=False)
    context = file_shard_context(worker, records)
    assert (context.num_input_pipelines, context.input_pipeline_id,
            context.num_replicas_in_sync) == (2, 1, 2)
    chief = dataclasses.replace(worker, task_type="chief", is_chief=True)
    assert file_shard_context(chief, records).input_pipeline_id == 0
    assert file_shard_context(worker, os.path.join(folder, "train")) is None  # a folder: by data
    caplog.set_level("INFO", "imgclf.training")
    three = dataclasses.replace(worker, num_workers=3, num_replicas=3)
    assert file_shard_context(three, records) is None
    assert f"input sharded by data: '{records}' has 2 shard file(s) for 3 workers; convert it " \
        "with --num_shards 3 or more to shard it by file" in caplog.text
