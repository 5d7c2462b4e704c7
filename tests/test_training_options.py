"""Training options: seeds, schedules, optimizers, label smoothing, class weights, XLA, and the
checks that run before any image is read."""

import keras
import numpy as np
import pytest

import train_model
from imgclf.data.sample_data import write_sample_dataset
from imgclf.export import read_model_metadata
from imgclf.training import TrainingConfig, plan_training, train
from imgclf.training.losses import SparseCategoricalCrossentropy
from imgclf.training.schedules import create_optimizer, learning_rate_schedule
from imgclf.training.train import balanced_class_weights


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    write_sample_dataset(folder, num_classes=3, image_size=16, train_per_class=8, test_per_class=2)
    return folder


def test_two_runs_with_one_seed_give_identical_weights(sample_data, tmp_path):
    def run(folder):
        return train(
            "LenetModel", sample_data / "train", sample_data / "test", tmp_path / folder,
            input_shape=(16, 16, 3), batch_size=8, num_epochs=2, seed=7, schedule="cosine",
            optimizer="sgd", verbose=0,
        ).model.get_weights()

    first, second = run("a"), run("b")
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    schedule = learning_rate_schedule("cosine", 1e-3, total_steps=101, warmup_steps=9)
    rates = [float(schedule(step)) for step in (0, 9, 55, 101)]
    assert rates[0] == pytest.approx(1e-4)
    assert rates[1] == pytest.approx(1e-3)
    assert rates[2] == pytest.approx(5e-4, rel=1e-3)  # half way down the cosine
    assert rates[3] == pytest.approx(0.0, abs=1e-9)
    assert learning_rate_schedule("constant", 1e-3, total_steps=100) == 1e-3


def test_optimizers_by_name():
    assert type(create_optimizer("adam", 1e-3)) is keras.optimizers.Adam
    assert type(create_optimizer("adamw", 1e-3)) is keras.optimizers.AdamW
    sgd = create_optimizer("sgd", 1e-3)
    assert type(sgd) is keras.optimizers.SGD and sgd.momentum == 0.9


def test_label_smoothing_matches_keras_categorical_crossentropy():
    logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]], dtype=np.float32)
    labels = np.array([0, 2])
    smoothed = SparseCategoricalCrossentropy(label_smoothing=0.1)(labels, logits)
    expected = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(
        np.eye(3)[labels], logits
    )
    assert float(smoothed) == pytest.approx(float(expected))
    plain = SparseCategoricalCrossentropy()(labels, logits)
    assert float(plain) == pytest.approx(
        float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits))
    )


def test_balanced_class_weights_from_counts():
    assert balanced_class_weights([0] * 30 + [1] * 10, 2) == {0: 40 / 60, 1: 2.0}


def test_defaults_follow_the_model_class():
    lenet = plan_training("LenetModel")
    assert lenet.config.input_shape == (32, 32, 3)
    assert (lenet.schedule, lenet.fine_tune_epochs, lenet.learning_rate) == ("constant", 0, 1e-3)
    mobilenet = plan_training("MobileNetV2Model", TrainingConfig(learning_rate=1e-2))
    assert mobilenet.config.input_shape == (224, 224, 3)
    assert (mobilenet.schedule, mobilenet.fine_tune_epochs) == ("cosine", 10)
    assert mobilenet.fine_tune_learning_rate == pytest.approx(1e-3)
    scratch = plan_training("MobileNetV2Model", TrainingConfig(model_kwargs={"weights": "none"}))
    assert scratch.fine_tune_epochs == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model_type", "LenetModel", "--weights", "imagenet"],
         "LenetModel has no pretrained backbone: weights applies only to backbone models "
         "(subclasses of BackboneModel)"),
        (["--model_type", "LenetModel", "--fine_tune_epochs", "3"],
         "LenetModel has no pretrained backbone: fine_tune_epochs applies only to backbone models "
         "(subclasses of BackboneModel)"),
        (["--model_type", "MobileNetV2Model", "--weights", "none", "--fine_tune_epochs", "3"],
         "fine_tune_epochs=3 needs pretrained weights: with weights None the backbone trains from "
         "the first epoch"),
        (["--model_type", "MobileNetV2Model", "--weights", "missing.weights.h5"],
         "weights must be 'imagenet', 'none' or the path of a weights file; received "
         "'missing.weights.h5', which is not a file"),
        (["--model_type", "MobileNetV2Model", "--input_width", "16", "--input_height", "16"],
         "MobileNetV2Model needs images of at least 32 x 32; received input_shape (16, 16, 3)"),
        (["--input_width", "16"],
         "give both --input_width and --input_height, or neither (the model's own size); "
         "received --input_width 16, --input_height None"),
        (["--model_type", "MobileNetV2Model", "--weights", "none", "--unfreeze_layers", "5"],
         "unfreeze_layers=5 applies to phase 2, which needs pretrained weights: with weights None "
         "the backbone trains from the first epoch, in one phase"),
        (["--model_type", "MobileNetV2Model", "--weights", "none", "--fine_tune_learning_rate", "1e-4"],
         "fine_tune_learning_rate=0.0001 applies to phase 2, which needs pretrained weights: with "
         "weights None the backbone trains from the first epoch, in one phase"),
        (["--model_type", "MobileNetV2Model", "--fine_tune_epochs", "0", "--unfreeze_layers", "5"],
         "unfreeze_layers=5 applies to phase 2, which fine_tune_epochs=0 skips"),
        (["--model_type", "MobileNetV2Model", "--fine_tune_epochs", "0", "--fine_tune_learning_rate", "1e-4"],
         "fine_tune_learning_rate=0.0001 applies to phase 2, which fine_tune_epochs=0 skips"),
        (["--model_type", "LenetModel", "--fine_tune_learning_rate", "1e-4"],
         "LenetModel has no pretrained backbone: fine_tune_learning_rate applies only to backbone "
         "models (subclasses of BackboneModel)"),
        (["--label_smoothing", "1.5"], "label_smoothing must be in [0, 1); received 1.5"),
        (["--num_epochs", "0"], "num_epochs must be an integer of at least 1; received 0"),
    ],
)
def test_bad_options_are_refused_before_any_data_is_read(argv, message, capsys):
    # The data set folders do not exist: the option is checked first.
    status = train_model.main(["--train_dataset_path", "nowhere", "--test_dataset_path", "nowhere", *argv])
    assert status == 2
    assert capsys.readouterr().err == f"train_model.py: error: {message}\n"


def test_script_takes_every_training_flag(sample_data, tmp_path, capsys):
    status = train_model.main([
        "--train_dataset_path", str(sample_data / "train"), "--test_dataset_path", str(sample_data / "test"),
        "--model_folder_path", str(tmp_path), "--input_width", "16", "--input_height", "16",
        "--model_version", "4", "--batch_size", "8", "--num_epochs", "1", "--patience", "1",
        "--schedule", "cosine", "--optimizer", "adamw", "--learning_rate", "0.002",
        "--label_smoothing", "0.1", "--class_weight", "balanced", "--split_ratio", "0.75",
        "--augment", "standard", "--seed", "3", "--mixed_precision", "--jit_compile",
        "--cache", "memory", "--distribution", "none",
    ])
    assert status == 0
    assert "test accuracy: " in capsys.readouterr().out
    # Each flag took effect: the run recorded what it ran with.
    metadata = read_model_metadata(tmp_path / "LenetModel" / "4")
    flags = metadata["training"]["flags"]
    assert {key: flags[key] for key in (
        "model_version", "batch_size", "num_epochs", "patience", "schedule", "optimizer",
        "learning_rate", "label_smoothing", "class_weight", "split_ratio", "augment", "seed",
        "mixed_precision", "jit_compile", "cache", "distribution", "input_shape", "fine_tune_epochs",
    )} == {
        "model_version": 4, "batch_size": 8, "num_epochs": 1, "patience": 1, "schedule": "cosine",
        "optimizer": "adamw", "learning_rate": 0.002, "label_smoothing": 0.1,
        "class_weight": "balanced", "split_ratio": 0.75, "augment": "standard", "seed": 3,
        "mixed_precision": True, "jit_compile": True, "cache": "memory", "distribution": "none",
        "input_shape": [16, 16, 3], "fine_tune_epochs": 0,
    }
    assert flags["fine_tune_learning_rate"] is None  # LeNet has no phase 2
    assert metadata["training"]["distribution"]["learning_rate"] == 0.002  # one replica
    assert metadata["model_arguments"]["input_shape"] == [16, 16, 3]
