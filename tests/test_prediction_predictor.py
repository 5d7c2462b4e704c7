"""`imgclf.prediction.Predictor`: the served model's predictions, bad images as rows."""

import numpy as np
import pytest
import tensorflow as tf

from imgclf.prediction import Predictor
from imgclf.prediction.columns import output_columns

from conftest_prediction import CLASS_NAMES, bad_images, trained_model, write_images


@pytest.fixture(scope="session")
def model_paths():
    return trained_model()


def serving_labels(version_folder, contents):
    loaded = tf.saved_model.load(version_folder)
    outputs = loaded.signatures["serving_labels"](image_bytes_string=tf.constant(contents))
    return ([[c.decode() for c in row] for row in outputs["classes"].numpy()],
            outputs["probabilities"].numpy())


@pytest.mark.parametrize("kind", ["savedmodel", "version", "keras"])
def test_predictions_equal_serving_labels(model_paths, tmp_path, kind):
    paths = write_images(tmp_path, 10)
    contents = [open(path, "rb").read() for path in paths]
    predictor = Predictor.load(model_paths[kind])
    assert predictor.class_names == CLASS_NAMES and predictor.image_size == (16, 16)
    columns = predictor.predict_encoded(contents, paths=paths, top_k=3)
    classes, probabilities = serving_labels(model_paths["version"], contents)
    assert columns["path"] == paths
    assert columns["top_classes"] == classes
    assert columns["class"] == [row[0] for row in classes]
    np.testing.assert_allclose(columns["top_probabilities"], probabilities, atol=1e-5)
    np.testing.assert_allclose(columns["probability"], probabilities[:, 0], atol=1e-5)
    assert columns["error"] == [""] * len(paths)
    # A trained model: the classes are not all one.
    assert len(set(columns["class"])) > 1


def test_bad_images_are_rows_and_never_fail_the_batch(model_paths, tmp_path):
    predictor = Predictor.load(model_paths["version"])
    bad = bad_images()
    good = [open(path, "rb").read() for path in write_images(tmp_path, 2)]
    contents = [content for content, _ in bad.values()]
    columns = predictor.predict_encoded([good[0], *contents, None, good[1]], top_k=2,
                                        embeddings=True)
    assert columns["error"][0] == columns["error"][-1] == ""
    assert len(columns["embedding"][0]) == 84 and columns["top_classes"][0][0] in CLASS_NAMES
    columns = {name: values[1:-1] for name, values in columns.items()}
    assert set(columns) == set(output_columns(embeddings=True)) - {"path"}
    for (name, (_, expected)), error in zip(bad.items(), columns["error"]):
        assert expected in error, name
    assert columns["error"][-1] == "Input is empty."
    assert columns["class"] == [None] * 6 and columns["probability"] == [None] * 6
    assert columns["top_classes"] == [[]] * 6 and columns["embedding"] == [[]] * 6


def test_embeddings_are_the_penultimate_layer(model_paths, tmp_path):
    import keras

    contents = [open(p, "rb").read() for p in write_images(tmp_path, 3)]
    saved = Predictor.load(model_paths["version"]).predict_encoded(contents, embeddings=True)
    from_keras = Predictor.load(model_paths["keras"]).predict_encoded(contents, embeddings=True)
    model = keras.models.load_model(model_paths["keras"])
    penultimate = keras.Model(model.inputs, model.layers[-2].output)
    images = np.stack([_decoded(content) for content in contents])
    expected = penultimate(images).numpy()
    assert np.asarray(saved["embedding"]).shape == (3, 84)
    np.testing.assert_allclose(saved["embedding"], expected, atol=1e-4)
    np.testing.assert_allclose(from_keras["embedding"], expected, atol=1e-4)


def _decoded(content):
    from imgclf.images import decode_image

    return decode_image(tf.constant(content), (16, 16)).numpy()


def test_model_path_errors_name_what_was_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"model_path '{tmp_path}/nothing' does not exist"):
        Predictor.load(tmp_path / "nothing")
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ValueError) as caught:
        Predictor.load(tmp_path)
    assert str(caught.value) == (
        f"model_path '{tmp_path}' is neither a SavedModel (no saved_model.pb) nor a model base "
        "path (no numbered version folder holding one); found: checkpoints"
    )
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file but not a .keras file"):
        Predictor.load(tmp_path / "notes.txt")


def test_highest_version_and_fingerprint(model_paths, tmp_path):
    import shutil

    shutil.copytree(model_paths["version"], tmp_path / "1")
    shutil.copytree(model_paths["version"], tmp_path / "7")
    (tmp_path / "10-not-a-version").mkdir()
    predictor = Predictor.load(tmp_path)
    assert predictor.model_path == str(tmp_path / "7")
    assert predictor.fingerprint == Predictor.load(model_paths["version"]).fingerprint
    assert predictor.fingerprint.startswith("sha256:")
    assert Predictor.load(model_paths["keras"]).fingerprint != predictor.fingerprint
