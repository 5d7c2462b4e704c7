"""What train_model.py writes: the next free version, its metadata, a LiteRT file, the confusion
matrix in TensorBoard, and augmentation that stays out of the served graph."""

import time
import warnings

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import train_model
from imgclf.data.augmentation import ImageAugmenter
from imgclf.data.sample_data import write_sample_dataset
from imgclf.export import read_model_metadata


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    write_sample_dataset(folder, num_classes=3, image_size=16, train_per_class=8, test_per_class=3)
    return folder


def train(sample_data, models, *flags):
    return train_model.main([
        "--train_dataset_path", str(sample_data / "train"),
        "--test_dataset_path", str(sample_data / "test"), "--model_folder_path", str(models),
        "--model_type", "LenetModel", "--input_width", "16", "--input_height", "16",
        "--batch_size", "8", "--num_epochs", "1", "--patience", "1", *flags,
    ])


@pytest.fixture(scope="module")
def runs(sample_data, tmp_path_factory):
    """Two runs into one folder: version 1 not augmented, version 2 augmented with a LiteRT file;
    and the warnings they gave."""
    models = tmp_path_factory.mktemp("models")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train(sample_data, models, "--augment", "none") == 0
        assert train(sample_data, models, "--augment", "standard", "--export_litert") == 0
    return models / "LenetModel", [str(warning.message) for warning in caught]


@pytest.fixture(scope="module")
def models(runs):
    return runs[0]


def graph_ops(path):
    """Every op type in a SavedModel's graph and function library."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    graph = saved_model.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
    return ops


def test_runs_write_the_next_free_version_and_never_replace_one(models, sample_data, capsys):
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == ["1", "2", "checkpoints", "logs"]
    before = (models / "1" / "saved_model.pb").read_bytes()
    capsys.readouterr()
    assert train(sample_data, models.parent, "--model_version", "1") == 2
    assert capsys.readouterr().err == (
        f"train_model.py: error: version 1 exists at {models / '1'}; pass overwrite=True "
        "(--overwrite) to replace it, or leave the version out to write version 3\n"
    )
    assert (models / "1" / "saved_model.pb").read_bytes() == before

    created = read_model_metadata(models / "1")["created_at"]
    time.sleep(1)  # created_at has whole seconds
    assert train(sample_data, models.parent, "--model_version", "1", "--overwrite") == 0
    assert read_model_metadata(models / "1")["created_at"] > created
    assert not (models / "3").exists()


def test_the_version_records_how_it_was_made(models, sample_data):
    metadata = read_model_metadata(models / "2")
    training = metadata["training"]
    assert metadata["model_class"] == "LenetModel"
    assert training["flags"]["augment"] == "standard"
    assert training["flags"]["batch_size"] == 8
    assert training["datasets"]["train"]["class_counts"] == {"circle": 8, "square": 8, "triangle": 8}
    assert training["datasets"]["test"]["num_images"] == 9
    assert set(training["validation_metrics"]) >= {"accuracy", "loss"}
    assert set(training["test_metrics"]) >= {"accuracy", "loss"}
    assert read_model_metadata(models / "1")["training"]["flags"]["augment"] == "none"


#: Ops only the augmenter's transforms and random draws make (`imgclf.data.augmentation`).
AUGMENTATION_OPS = {"CropAndResize", "ImageProjectiveTransformV3", "StatelessRandomUniformV2",
                    "RngReadAndSkip"}


def test_augmentation_ops_would_show_in_a_saved_graph(tmp_path):
    """The control for the test below: a SavedModel that augments what it serves has these ops."""
    augmenter = ImageAugmenter("standard", seed=1)
    module = tf.Module()
    module.augmenter_state = [augmenter.generator] + [
        variable.value for layer in augmenter.layers.values() for variable in layer.variables
    ]
    module.serve = tf.function(augmenter, input_signature=[tf.TensorSpec([None, 16, 16, 3])])
    tf.saved_model.save(module, str(tmp_path), signatures=module.serve)
    assert AUGMENTATION_OPS <= graph_ops(tmp_path)


def test_augmentation_never_enters_the_served_graph(models, sample_data):
    plain, augmented = (tf.saved_model.load(str(models / v)) for v in ("1", "2"))
    for key in ("serving_default", "serving_bytes", "serving_labels"):
        a, b = plain.signatures[key], augmented.signatures[key]
        assert a.structured_input_signature == b.structured_input_signature
        assert a.structured_outputs == b.structured_outputs
    ops = graph_ops(models / "2")
    assert ops == graph_ops(models / "1")
    assert not ops & AUGMENTATION_OPS
    # What it serves is a function of the image alone.
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)), tf.float32)
    serve = augmented.signatures["serving_default"]
    first, again = serve(images), serve(images)
    for name in first:
        np.testing.assert_array_equal(first[name].numpy(), again[name].numpy())
    image = sorted((sample_data / "test").glob("*/*"))[0].read_bytes()
    outputs = [augmented.signatures["serving_bytes"](tf.constant([image])) for _ in range(3)]
    for name in outputs[0]:
        assert all(np.array_equal(o[name].numpy(), outputs[0][name].numpy()) for o in outputs)


def test_export_litert_writes_a_flatbuffer_and_labels_next_to_the_version(models):
    assert (models / "2.labels.txt").read_text() == "circle\nsquare\ntriangle\n"
    assert (models / "2.tflite").stat().st_size > 10_000
    assert not (models / "1.tflite").exists()


def test_train_logs_the_test_confusion_matrix_to_tensorboard(models):
    tags = set()
    for events in (models / "logs" / "test").glob("events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            tags |= {value.tag for value in event.summary.value}
    assert "confusion_matrix" in tags


def test_a_litert_file_is_never_replaced_without_overwrite(sample_data, tmp_path, capsys):
    run = tmp_path / "LenetModel"
    run.mkdir()
    (run / "1.tflite").write_bytes(b"a LiteRT file an app ships")
    # Refused before any training, as an existing version folder is.
    assert train(sample_data, tmp_path, "--model_version", "1", "--export_litert") == 2
    assert capsys.readouterr().err == (
        f"train_model.py: error: version 1 exists at {run / '1.tflite'}; pass overwrite=True "
        "(--overwrite) to replace it, or leave the version out to write version 2\n"
    )
    assert not (run / "1").exists()
    assert (run / "1.tflite").read_bytes() == b"a LiteRT file an app ships"


def test_evaluation_after_training_gives_no_ran_out_of_data_warning(runs):
    # Every imgclf data set has an unknown length; Keras' warning about it is noise.
    assert not [message for message in runs[1] if "ran out of data" in message]
