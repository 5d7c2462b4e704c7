"""train_model.py and eval_model.py, run in-process through main(argv) on generated data."""

import json
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf

import eval_model
import train_model
from imgclf.data.sample_data import write_sample_dataset


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    write_sample_dataset(folder, num_classes=3, image_size=32, train_per_class=24, test_per_class=6)
    return folder


@pytest.fixture(scope="module")
def trained(sample_data, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    status = train_model.main([
        "--train_dataset_path", str(sample_data / "train"),
        "--test_dataset_path", str(sample_data / "test"),
        "--model_folder_path", str(models), "--model_name", "LenetModel",
        "--model_version", "3", "--input_width", "16", "--input_height", "16",
        "--batch_size", "16", "--num_epochs", "2", "--patience", "1",
    ])
    assert status == 0
    return models


def test_train_writes_servable_version_checkpoint_and_logs(trained, capsys):
    run = trained / "LenetModel"
    assert sorted(p.name for p in run.iterdir()) == ["3", "checkpoints", "logs"]
    loaded = tf.saved_model.load(str(run / "3"))
    assert sorted(loaded.signatures) == ["serving_bytes", "serving_default", "serving_labels"]
    assert (run / "checkpoints" / "best" / "saved_model.pb").exists()
    assert any((run / "logs").rglob("events.out.tfevents*"))


def test_eval_prints_accuracy_report_and_writes_json(trained, sample_data, tmp_path, capsys):
    metrics = tmp_path / "metrics.json"
    status = eval_model.main([
        "--test_dataset_path", str(sample_data / "test"),
        "--model_path", str(trained / "LenetModel" / "3"), "--metrics_json", str(metrics),
    ])
    out = capsys.readouterr().out
    assert status == 0
    report = json.loads(metrics.read_text())
    assert out.startswith(f"accuracy: {report['accuracy']:.4f}\n")
    assert "serving_bytes agrees with serving_default on 16/16 sample images" in out
    assert report["class_names"] == ["circle", "square", "triangle"]
    assert report["num_images"] == 18
    matrix = np.array(report["confusion_matrix"])
    assert matrix.sum() == 18 and matrix.sum(axis=1).tolist() == [6, 6, 6]
    assert report["accuracy"] == pytest.approx(np.trace(matrix) / 18)
    assert "confusion matrix (rows: true class, columns: predicted class)" in out


def test_eval_on_a_tfrecord_test_set_equals_the_folder_and_checks_the_records_bytes(
        trained, sample_data, tmp_path, capsys):
    from imgclf.data import convert_folder

    records = tmp_path / "records"
    convert_folder(sample_data / "test", records, num_shards=2)
    model = str(trained / "LenetModel" / "3")
    assert eval_model.main(["--test_dataset_path", str(records), "--model_path", model,
                            "--metrics_json", str(tmp_path / "records.json"),
                            "--report", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "serving_bytes agrees with serving_default on 16/16 sample images" in out
    assert {p.name for p in (tmp_path / "report").iterdir()} >= {"metrics.json", "misclassified.png"}
    # The report's tiles come from the records themselves: record i is the image of file_paths[i].
    from imgclf.evaluation import evaluate_saved_model

    _, predictions = evaluate_saved_model(model, records, return_predictions=True)
    assert predictions.encoded_images([0, 17, 5]) == [
        (sample_data / "test" / predictions.file_paths[i]).read_bytes() for i in (0, 17, 5)]
    assert eval_model.main(["--test_dataset_path", str(sample_data / "test"), "--model_path", model,
                            "--metrics_json", str(tmp_path / "folder.json")]) == 0
    from_records = json.loads((tmp_path / "records.json").read_text())
    from_folder = json.loads((tmp_path / "folder.json").read_text())
    assert from_records["num_images"] == 18
    for key in ("accuracy", "class_names", "precision", "recall"):
        assert from_records[key] == pytest.approx(from_folder[key]), key
    assert np.array(from_records["confusion_matrix"]).sum(axis=1).tolist() == [6, 6, 6]


def test_eval_refuses_test_classes_that_differ_from_the_model(trained, sample_data, tmp_path, capsys):
    shutil.copytree(sample_data / "test", tmp_path / "test")
    shutil.rmtree(tmp_path / "test" / "square")
    status = eval_model.main([
        "--test_dataset_path", str(tmp_path / "test"), "--model_path", str(trained / "LenetModel" / "3"),
    ])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("eval_model.py: error: ") and err.count("\n") == 1 and "square" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--test_dataset_path", "x"], "train_model.py: error: the following arguments are required: --train_dataset_path\n"),
        (["--train_dataset_path", "a", "--test_dataset_path", "b", "--batch_size", "many"],
         "train_model.py: error: argument --batch_size: invalid int value: 'many'\n"),
        (["--train_dataset_path", "a", "--test_dataset_path", "b", "--model_type", "Nope"],
         "train_model.py: error: unknown model type 'Nope': expected one of ConvNeXtTinyModel, "
         "EfficientNetV2B0Model, LenetModel, MobileNetV2Model, MobileNetV3SmallModel, ResnetModel, "
         "or 'package.module:ClassName'\n"),
    ],
)
def test_train_usage_errors_are_one_line_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        status = train_model.main(argv)
        raise SystemExit(status)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == message


def test_train_missing_dataset_folder_is_one_line(tmp_path, capsys):
    status = train_model.main(["--train_dataset_path", str(tmp_path / "nope"), "--test_dataset_path", str(tmp_path)])
    assert status == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "nope") in err


def test_eval_model_path_that_is_not_imgclf(tmp_path, sample_data, capsys):
    status = eval_model.main(["--test_dataset_path", str(sample_data / "test"), "--model_path", str(tmp_path)])
    assert status == 2
    assert capsys.readouterr().err == (
        f"eval_model.py: error: {tmp_path} is not an imgclf SavedModel: assets.extra/imgclf.json is missing\n"
    )


def test_train_a_user_model_by_module_path(sample_data, tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "import keras\n"
        "from imgclf import ImageClassifierModel\n"
        "class Tiny(ImageClassifierModel):\n"
        "    def create_model_io(self, input_shape, num_classes):\n"
        "        inputs = keras.Input(shape=input_shape)\n"
        "        x = keras.layers.Rescaling(1 / 255)(inputs)\n"
        "        x = keras.layers.GlobalAveragePooling2D()(x)\n"
        "        return inputs, keras.layers.Dense(num_classes)(x)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    status = train_model.main([
        "--train_dataset_path", str(sample_data / "train"), "--test_dataset_path", str(sample_data / "test"),
        "--model_folder_path", str(tmp_path / "models"), "--model_type", "my_models:Tiny",
        "--input_width", "16", "--input_height", "16", "--num_epochs", "1",
    ])
    sys.modules.pop("my_models", None)
    assert status == 0
    assert (tmp_path / "models" / "Tiny" / "1" / "saved_model.pb").exists()
