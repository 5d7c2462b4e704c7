"""Every registered model: build, one training step, save, reload, each signature equals model(x)."""

import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import imgclf
from imgclf import BackboneModel, ImageClassifierModel, LenetModel, ResnetModel
from imgclf.export import WARMUP_FILE, read_model_metadata
from imgclf.models import registry
from imgclf.models.registry import available_models, create_model, get_model_class

from conftest import encode_image

# The smallest input each architecture takes, to keep the suite fast.
SMALL_INPUT = {
    "LenetModel": (16, 16, 3),
    "ResnetModel": (32, 32, 3),
    "MobileNetV2Model": (32, 32, 3),
    "MobileNetV3SmallModel": (32, 32, 3),
    "EfficientNetV2B0Model": (32, 32, 3),
    "ConvNeXtTinyModel": (32, 32, 3),
}
BACKBONES = sorted(set(SMALL_INPUT) - {"LenetModel"})
MODEL_KWARGS = {name: {"weights": None} for name in BACKBONES}
# Each backbone's application and its own documented preprocessing function: 0-255 pixels
# through the model's preprocessing must give what Keras' recipe gives.
APPLICATIONS = {
    "ResnetModel": (keras.applications.ResNet50V2, keras.applications.resnet_v2.preprocess_input),
    "MobileNetV2Model": (keras.applications.MobileNetV2, keras.applications.mobilenet_v2.preprocess_input),
    "MobileNetV3SmallModel": (keras.applications.MobileNetV3Small, keras.applications.mobilenet_v3.preprocess_input),
    "EfficientNetV2B0Model": (keras.applications.EfficientNetV2B0, keras.applications.efficientnet_v2.preprocess_input),
    "ConvNeXtTinyModel": (keras.applications.ConvNeXtTiny, keras.applications.convnext.preprocess_input),
}


def build(model_type, num_classes=3, **kwargs):
    return create_model(
        model_type,
        input_shape=SMALL_INPUT[model_type],
        num_classes=num_classes,
        class_names=[f"class_{i}" for i in range(num_classes)],
        **{**MODEL_KWARGS.get(model_type, {}), **kwargs},
    )


def test_every_library_model_is_covered():
    assert set(SMALL_INPUT) == set(available_models()) == set(APPLICATIONS) | {"LenetModel"}


def backbone_weights_file(model_type, folder):
    """A weights file of the keras.applications backbone (include_top=False), as a user saves
    one, with its random weights; and the backbone itself."""
    application, _ = APPLICATIONS[model_type]
    backbone = application(include_top=False, weights=None, input_shape=SMALL_INPUT[model_type], pooling="avg")
    path = folder / f"{model_type}.weights.h5"
    backbone.save_weights(path)
    return str(path), backbone


@pytest.mark.parametrize("model_type", sorted(SMALL_INPUT))
def test_train_save_reload_signatures_match_model(model_type, tmp_path, rng):
    height, width, _ = SMALL_INPUT[model_type]
    pixels = rng.integers(0, 256, size=(4, height, width, 3)).astype(np.float32)
    if model_type in APPLICATIONS:
        # --weights FILE: the backbone's weights are the file's, and 0-255 pixels reach it
        # preprocessed as Keras' own preprocess_input does.
        weights, reference = backbone_weights_file(model_type, tmp_path)
        model = build(model_type, weights=weights)
        features = keras.Model(model.inputs, model.get_layer("dropout").input)(pixels)
        _, preprocess_input = APPLICATIONS[model_type]
        expected_features = reference(preprocess_input(pixels.copy()))
        np.testing.assert_allclose(features, expected_features, rtol=1e-4, atol=1e-4)
    else:
        model = build(model_type)
    # Eagerly: tracing a backbone's training step costs more than running one.
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    before = [w.copy() for w in model.get_weights()]
    model.fit(pixels, np.array([0, 1, 2, 0]), batch_size=4, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    expected = model(pixels, training=False).numpy()

    path = model.save(tmp_path / "model" / "1")
    loaded = tf.saved_model.load(path)
    assert sorted(loaded.signatures) == ["serving_bytes", "serving_default", "serving_labels"]

    numpy_out = loaded.signatures["serving_default"](input_tensor=tf.constant(pixels))
    assert list(numpy_out) == ["output_0"]
    np.testing.assert_allclose(numpy_out["output_0"].numpy(), expected, rtol=1e-5, atol=1e-5)
    # Callable on the reloaded object too, as the upstream project documents.
    np.testing.assert_allclose(loaded.predict_numpy_image(pixels).numpy(), expected, rtol=1e-5, atol=1e-5)
    # Offline prediction's embeddings: the classifier head's input, from the same forward pass.
    embedded = loaded.predict_embeddings(pixels)
    np.testing.assert_allclose(embedded["logits"].numpy(), expected, rtol=1e-5, atol=1e-5)
    head_input = keras.Model(model.inputs, model.get_layer("logits").input)(pixels)
    np.testing.assert_allclose(embedded["embedding"].numpy(), head_input, rtol=1e-4, atol=1e-4)

    # PNG is lossless: the bytes signatures see exactly the same pixels.
    encoded = [encode_image(p) for p in pixels]
    bytes_out = loaded.signatures["serving_bytes"](image_bytes_string=tf.constant(encoded))
    np.testing.assert_allclose(bytes_out["output_0"].numpy(), expected, rtol=1e-5, atol=1e-5)
    one = loaded.signatures["serving_bytes"](image_bytes_string=tf.constant(encoded[1]))
    np.testing.assert_allclose(one["output_0"].numpy(), expected[1:2], rtol=1e-5, atol=1e-5)

    labels = loaded.signatures["serving_labels"](image_bytes_string=tf.constant(encoded))
    probabilities = tf.nn.softmax(expected).numpy()
    best = probabilities.argmax(axis=1)
    np.testing.assert_array_equal(labels["class_ids"].numpy()[:, 0], best)
    assert [c.decode() for c in labels["classes"].numpy()[:, 0]] == [f"class_{i}" for i in best]
    np.testing.assert_allclose(labels["probabilities"].numpy()[:, 0], probabilities.max(axis=1), rtol=1e-5)

    metadata = read_model_metadata(path)
    assert metadata["class_names"] == ["class_0", "class_1", "class_2"]
    assert metadata["input_shape"] == [height, width, 3]


@pytest.mark.parametrize("model_type", ["LenetModel", "MobileNetV2Model"])
def test_keras_file_round_trip_gives_same_class_and_predictions(model_type, tmp_path, rng):
    model = build(model_type)
    pixels = rng.integers(0, 256, size=(2, *model.image_shape)).astype(np.float32)
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(reloaded) is type(model)
    assert reloaded.class_names == model.class_names
    assert reloaded.image_shape == model.image_shape
    np.testing.assert_allclose(reloaded(pixels).numpy(), model(pixels).numpy(), rtol=1e-6, atol=1e-6)


def test_serving_default_resizes_any_image_size(tmp_path, rng):
    model = LenetModel(input_shape=(16, 16, 3), num_classes=2)
    loaded = tf.saved_model.load(model.save(tmp_path / "1"))
    big = rng.integers(0, 256, size=(3, 40, 24, 3)).astype(np.float32)
    out = loaded.signatures["serving_default"](input_tensor=tf.constant(big))["output_0"]
    expected = model(tf.image.resize(big, (16, 16)), training=False)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_save_replaces_a_version_atomically_and_leaves_nothing_beside(tmp_path):
    model = LenetModel(input_shape=(16, 16, 3), num_classes=2)
    model.save(tmp_path / "1")
    model.save(tmp_path / "1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        model.save(tmp_path / "1", overwrite=False)


def test_warmup_file_holds_one_predict_request_per_signature(tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    path = LenetModel(input_shape=(16, 16, 3), num_classes=2).save(tmp_path / "1")
    loaded = tf.saved_model.load(path)
    records = list(tf.data.TFRecordDataset(f"{path}/{WARMUP_FILE}").as_numpy_iterator())
    names = []
    for record in records:
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        names.append(request.model_spec.signature_name)
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        # Every input has a batch dimension, as TF Serving's batching requires.
        assert all(value.ndim >= 1 and value.shape[0] == 1 for value in inputs.values())
        loaded.signatures[request.model_spec.signature_name](**inputs)  # replays cleanly
    assert sorted(names) == ["serving_bytes", "serving_default", "serving_labels"]


USER_MODULE = textwrap.dedent('''
    import keras
    from imgclf import ImageClassifierModel, register_model

    @register_model
    class TinyUserModel(ImageClassifierModel):
        def create_model_io(self, input_shape, num_classes):
            inputs = keras.Input(shape=input_shape)
            x = keras.layers.Rescaling(1 / 255)(inputs)
            x = keras.layers.GlobalAveragePooling2D()(x)
            return inputs, keras.layers.Dense(num_classes)(x)

    class UnregisteredUserModel(TinyUserModel):
        pass

    class NotAModel:
        pass
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_models"
    sys.modules.pop("user_models", None)
    registry._MODEL_CLASSES.pop("TinyUserModel", None)


@pytest.mark.parametrize("class_name", ["TinyUserModel", "UnregisteredUserModel"])
def test_user_model_from_module_path_round_trips(user_module, class_name, tmp_path, rng):
    cls = get_model_class(f"{user_module}:{class_name}")
    model = cls(input_shape=(16, 16, 3), num_classes=2)
    pixels = rng.integers(0, 256, size=(2, 16, 16, 3)).astype(np.float32)
    model.save(tmp_path / "user.keras")
    reloaded = keras.models.load_model(tmp_path / "user.keras")
    assert type(reloaded) is cls
    np.testing.assert_allclose(reloaded(pixels).numpy(), model(pixels).numpy(), rtol=1e-6)
    loaded = tf.saved_model.load(model.save(tmp_path / "1"))
    out = loaded.signatures["serving_default"](input_tensor=tf.constant(pixels))["output_0"]
    np.testing.assert_allclose(out.numpy(), model(pixels).numpy(), rtol=1e-5, atol=1e-6)


def test_unknown_model_type_lists_what_exists():
    with pytest.raises(ValueError) as error:
        get_model_class("LeNet")
    assert str(error.value) == (
        "unknown model type 'LeNet': expected one of ConvNeXtTinyModel, EfficientNetV2B0Model, "
        "LenetModel, MobileNetV2Model, MobileNetV3SmallModel, ResnetModel, "
        "or 'package.module:ClassName'"
    )


def test_bad_module_paths_say_what_is_wrong(user_module):
    with pytest.raises(ValueError, match="^cannot import module 'no_such_module' for model type"):
        get_model_class("no_such_module:Model")
    with pytest.raises(ValueError, match="^module 'user_models' has no class 'Missing'$"):
        get_model_class("user_models:Missing")
    with pytest.raises(ValueError, match="^'user_models:NotAModel' is not an ImageClassifierModel subclass$"):
        get_model_class("user_models:NotAModel")


def test_abstract_base_cannot_be_built():
    with pytest.raises(TypeError, match="^ImageClassifierModel must implement create_model_io"):
        ImageClassifierModel(input_shape=(16, 16, 3), num_classes=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (28, 28)}, "input_shape must be (height, width, 3); received (28, 28)"),
        ({"input_shape": (28, 28, 1)}, "input_shape must be (height, width, 3); received (28, 28, 1)"),
        ({"num_classes": 1}, "num_classes must be an integer of at least 2; received 1"),
        ({"num_classes": 2, "class_names": ["a"]},
         "class_names must be 2 strings, one per class; received ('a',)"),
        ({"input_shape": (8, 8, 3)},
         "LenetModel needs images of at least 12 x 12; received input_shape (8, 8, 3)"),
    ],
)
def test_invalid_construction_names_what_arrived(kwargs, message):
    kwargs = {"input_shape": (16, 16, 3), "num_classes": 3, **kwargs}
    with pytest.raises(ValueError) as error:
        LenetModel(**kwargs)
    assert str(error.value) == message


def test_backbone_weights_that_are_not_a_file_or_do_not_fit(tmp_path):
    with pytest.raises(ValueError) as error:
        ResnetModel(input_shape=(32, 32, 3), num_classes=2, weights=str(tmp_path / "missing.h5"))
    assert str(error.value) == (
        f"weights must be 'imagenet', 'none' or the path of a weights file; received "
        f"'{tmp_path / 'missing.h5'}', which is not a file"
    )
    other = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35)
    other.save_weights(tmp_path / "mobilenet.weights.h5")
    with pytest.raises(ValueError, match="^cannot load weights file .*mobilenet.weights.h5' into mobilenetv2_1.00_32"):
        create_model("MobileNetV2Model", input_shape=(32, 32, 3), num_classes=2,
                     weights=str(tmp_path / "mobilenet.weights.h5"))


def test_default_input_size_is_the_model_class_own():
    assert LenetModel.default_input_shape == (32, 32, 3)
    assert LenetModel(num_classes=2).image_shape == (32, 32, 3)
    assert all(get_model_class(name).default_input_shape == (224, 224, 3) for name in BACKBONES)
    with pytest.raises(ValueError) as error:
        create_model("MobileNetV3SmallModel", input_shape=(24, 24, 3), num_classes=2, weights=None)
    assert str(error.value) == (
        "MobileNetV3SmallModel needs images of at least 32 x 32; received input_shape (24, 24, 3)"
    )


def test_public_api():
    assert set(imgclf.__all__) >= {"ImageClassifierModel", "BackboneModel", "register_model", *SMALL_INPUT}
    # Every public name resolves, to the same object from imgclf and from imgclf.models.
    assert imgclf.models.__all__ == imgclf.__all__
    assert all(getattr(imgclf, name) is getattr(imgclf.models, name) for name in imgclf.__all__)
    assert set(available_models()) <= set(imgclf.__all__)
    assert all(issubclass(get_model_class(name), BackboneModel) for name in BACKBONES)
