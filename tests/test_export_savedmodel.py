"""A servable version: weights and signatures only, numbered versions, metadata of how it was made."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from imgclf import LenetModel
from imgclf.data.sample_data import write_sample_dataset
from imgclf.export import read_model_metadata
from imgclf.export.metadata import dataset_summary, training_metadata
from imgclf.export.savedmodel import save_servable
from imgclf.export.versions import choose_version, existing_versions, next_version
from imgclf.training import compile_model


def trained_lenet(rng):
    model = LenetModel(input_shape=(16, 16, 3), num_classes=3, class_names=["a", "b", "c"])
    compile_model(model)
    pixels = rng.integers(0, 256, size=(6, 16, 16, 3)).astype(np.float32)
    model.fit(pixels, np.array([0, 1, 2, 0, 1, 2]), batch_size=6, epochs=1, verbose=0)
    return model, pixels


def test_saved_model_holds_weights_and_signatures_but_no_optimizer_state(tmp_path, rng):
    model, pixels = trained_lenet(rng)
    assert model.optimizer.variables  # Adam's slots exist and must stay out of the SavedModel
    path = model.save(tmp_path / "1")

    saved = tf.train.list_variables(os.path.join(path, "variables", "variables"))
    saved_names = [name for name, _ in saved if "/.ATTRIBUTES/VARIABLE_VALUE" in name]
    assert len(saved_names) == len(model.variables)
    assert not [name for name in saved_names if "optimizer" in name.lower()]
    saved_values = sum(int(np.prod(shape)) for name, shape in saved if name in saved_names)
    assert saved_values == sum(int(np.prod(v.shape)) for v in model.variables)

    loaded = tf.saved_model.load(path)
    np.testing.assert_allclose(
        loaded.signatures["serving_default"](input_tensor=pixels)["output_0"].numpy(),
        model(pixels, training=False).numpy(), rtol=1e-5, atol=1e-5,
    )


def test_versions_are_numbered_folders_and_the_next_is_free(tmp_path):
    assert existing_versions(tmp_path / "missing") == []
    assert next_version(tmp_path / "missing") == 1
    for name in ["1", "3", "checkpoints", "logs", ".4.saving-abcd1234"]:
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert existing_versions(tmp_path) == [1, 3]
    assert next_version(tmp_path) == 4
    assert choose_version(tmp_path) == 4
    assert choose_version(tmp_path, 2) == 2
    assert choose_version(tmp_path, 3, overwrite=True) == 3


def test_an_existing_version_is_refused_without_overwrite(tmp_path):
    (tmp_path / "3").mkdir()
    with pytest.raises(FileExistsError) as error:
        choose_version(tmp_path, 3)
    assert str(error.value) == (
        f"version 3 exists at {tmp_path / '3'}; pass overwrite=True (--overwrite) to replace it, "
        "or leave the version out to write version 4"
    )
    with pytest.raises(ValueError, match=r"model_version must be a non-negative integer; received -1"):
        choose_version(tmp_path, -1)


def test_with_a_litert_export_the_next_version_is_past_every_litert_file(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "3.tflite").write_bytes(b"x")
    (tmp_path / "4.labels.txt").write_text("a\n")
    assert choose_version(tmp_path) == 2  # a SavedModel alone: folders only, as TF Serving
    assert choose_version(tmp_path, litert=True) == 5
    assert choose_version(tmp_path, 3) == 3
    with pytest.raises(FileExistsError, match="version 4 exists at .*4.labels.txt"):
        choose_version(tmp_path, 4, litert=True)
    assert choose_version(tmp_path, 4, overwrite=True, litert=True) == 4


def test_metadata_records_model_data_metrics_and_libraries(tmp_path, rng):
    write_sample_dataset(tmp_path / "data", num_classes=3, image_size=16, train_per_class=4,
                         test_per_class=2)
    model, _ = trained_lenet(rng)
    extra = training_metadata(
        {"batch_size": 6, "augment": "light", "input_shape": (16, 16, 3)},
        datasets={"train": tmp_path / "data" / "train", "test": tmp_path / "data" / "test"},
        validation_metrics={"accuracy": np.float32(0.5), "loss": 1.25},
        test_metrics={"accuracy": 0.75},
    )
    path = save_servable(model, tmp_path / "models" / "1", metadata=extra)
    metadata = read_model_metadata(path)

    assert metadata["model_class"] == "LenetModel"
    assert metadata["model_arguments"] == {"input_shape": [16, 16, 3], "num_classes": 3}
    assert metadata["class_names"] == ["a", "b", "c"]
    assert set(metadata["library_versions"]) == {"python", "imgclf", "tensorflow", "keras", "numpy"}
    assert metadata["library_versions"]["tensorflow"] == tf.__version__
    assert metadata["created_at"].endswith("Z")
    training = metadata["training"]
    assert training["flags"] == {"batch_size": 6, "augment": "light", "input_shape": [16, 16, 3]}
    assert training["validation_metrics"] == {"accuracy": 0.5, "loss": 1.25}
    assert training["test_metrics"] == {"accuracy": 0.75}
    train_set = training["datasets"]["train"]
    assert train_set["class_counts"] == {"circle": 4, "square": 4, "triangle": 4}
    assert train_set["num_images"] == 12
    assert training["datasets"]["test"]["class_counts"] == {"circle": 2, "square": 2, "triangle": 2}
    json.dumps(metadata)  # all of it JSON


def test_the_file_list_fingerprint_changes_with_the_files(tmp_path):
    write_sample_dataset(tmp_path, num_classes=3, image_size=16, train_per_class=3, test_per_class=1)
    folder = tmp_path / "train"
    first = dataset_summary(folder)["fingerprint"]
    assert first.startswith("sha256:") and dataset_summary(folder)["fingerprint"] == first
    image = sorted((folder / "circle").iterdir())[0]
    image.rename(image.with_name("renamed" + image.suffix))
    renamed = dataset_summary(folder)["fingerprint"]
    assert renamed != first
    (folder / "circle" / ("copy" + image.suffix)).write_bytes(
        (folder / "circle" / ("renamed" + image.suffix)).read_bytes()
    )
    assert dataset_summary(folder)["fingerprint"] not in (first, renamed)
    assert dataset_summary(folder)["class_counts"]["circle"] == 4


def test_saved_without_custom_gradient_functions_unless_options_ask(tmp_path):
    """Swish has a custom gradient: tracing it into a SavedModel took 18 of the 24 s of saving an
    EfficientNetV2B0. The served outputs are the same; only gradients through a reloaded model
    need `options=tf.saved_model.SaveOptions()`."""
    import keras

    from imgclf import ImageClassifierModel

    class SwishModel(ImageClassifierModel):
        def create_model_io(self, input_shape, num_classes):
            inputs = keras.Input(shape=input_shape)
            hidden = keras.layers.Dense(4, activation="silu")(keras.layers.Flatten()(inputs))
            return inputs, keras.layers.Dense(num_classes, name="logits")(hidden)

    model = SwishModel(input_shape=(8, 8, 3), num_classes=2)
    pixels = tf.random.uniform([2, 8, 8, 3], 0, 255, seed=1)
    for options, gradients in ((None, False), (tf.saved_model.SaveOptions(), True)):
        loaded = tf.saved_model.load(
            save_servable(model, tmp_path / str(gradients), options=options))
        serve = loaded.signatures["serving_default"]
        np.testing.assert_allclose(serve(input_tensor=pixels)["output_0"], model(pixels),
                                   rtol=1e-5, atol=1e-5)
        with tf.GradientTape() as tape:
            tape.watch(pixels)
            logits = serve(input_tensor=pixels)["output_0"]
        if gradients:
            assert tape.gradient(logits, pixels).shape == pixels.shape
        else:
            with pytest.raises(TypeError, match="out of scope"):
                tape.gradient(logits, pixels)


def test_a_save_traces_the_network_once(tmp_path, rng, monkeypatch):
    """`tf.saved_model.save` traces again, in its own context, every `tf.function` it is handed:
    a save handed the serving methods traced the network four times (seconds each for a large
    backbone), and one handed their concrete functions three times (images, bytes,
    embeddings). Every serving function calls one shared forward pass: one trace, and the
    reloaded object still calls each of them."""
    model, pixels = trained_lenet(rng)
    traced = []
    head = model.get_layer("logits")
    call = head.call
    monkeypatch.setattr(head, "call",
                        lambda *args, **kwargs: traced.append(1) or call(*args, **kwargs))
    loaded = tf.saved_model.load(model.save(tmp_path / "1"))
    assert len(traced) == 1
    expected = model(pixels, training=False)
    np.testing.assert_allclose(loaded.predict_numpy_image(pixels), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loaded.predict_embeddings(pixels)["logits"], expected,
                               rtol=1e-5, atol=1e-5)
