"""Evaluation of a saved model through its serving signatures, as a server would run it.

    >>> from imgclf.evaluation import evaluate_saved_model
    >>> report = evaluate_saved_model("models/LenetModel/1", "data/test")
    >>> report.accuracy, report.confusion_matrix
"""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from imgclf.data import create_test_dataset
from imgclf.data.datasets import encoded_images
from imgclf.data.pipeline import check_image_shape, image_decoder
from imgclf.export.metadata import read_model_metadata


@dataclasses.dataclass
class EvaluationReport:
    """Accuracy, per-class precision and recall and the confusion matrix of a model on a test set.

    `confusion_matrix[i][j]` counts images of class `i` predicted as class `j`.
    `bytes_agreement` is `(agreeing, checked)`: on how many of the sample images `serving_bytes`
    (fed the files' own bytes) gave the same class as `serving_default`.
    """

    accuracy: float
    class_names: list
    precision: list
    recall: list
    confusion_matrix: list
    num_images: int
    bytes_agreement: tuple

    def to_dict(self):
        return dataclasses.asdict(self)

    def format(self):
        """The report as text, the way `eval_model.py` prints it."""
        width = max(len(name) for name in self.class_names + ["class"])
        lines = [
            f"accuracy: {self.accuracy:.4f}",
            f"images: {self.num_images}",
            "serving_bytes agrees with serving_default on "
            f"{self.bytes_agreement[0]}/{self.bytes_agreement[1]} sample images",
            "",
            f"{'class':<{width}}  precision  recall",
        ]
        for name, precision, recall in zip(self.class_names, self.precision, self.recall):
            lines.append(f"{name:<{width}}  {precision:9.4f}  {recall:6.4f}")
        lines += ["", "confusion matrix (rows: true class, columns: predicted class)"]
        cell = max(len(str(n)) for row in self.confusion_matrix for n in row) + 1
        lines.append(" " * width + "".join(f"{i:>{cell}}" for i in range(len(self.class_names))))
        for i, (name, row) in enumerate(zip(self.class_names, self.confusion_matrix)):
            lines.append(f"{name:<{width}}" + "".join(f"{n:>{cell}}" for n in row))
        return "\n".join(lines)


def confusion_matrix(labels, predictions, num_classes):
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def model_confusion_matrix(model, test_ds):
    """The confusion matrix of a Keras classifier (`num_classes`) on a labelled data set.

    Predicted with `model.predict`, which is collective under a multi-worker strategy: there,
    every worker calls it.
    """
    from imgclf.data import first_pass_errors

    labels = np.concatenate([batch_labels.numpy() for _, batch_labels in test_ds])
    with first_pass_errors(test_ds):  # no "ran out of data" warning for a set of unknown length
        predictions = model.predict(test_ds, verbose=0).argmax(axis=1)
    return confusion_matrix(labels, predictions, model.num_classes)


def classification_report(labels, predictions, class_names, bytes_agreement=(0, 0)):
    """An `EvaluationReport` from true and predicted class indices."""
    matrix = confusion_matrix(labels, predictions, len(class_names))
    true_positives = np.diag(matrix).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(true_positives / matrix.sum(axis=0))
        recall = np.nan_to_num(true_positives / matrix.sum(axis=1))
    return EvaluationReport(
        accuracy=float(true_positives.sum() / max(matrix.sum(), 1)),
        class_names=list(class_names),
        precision=[float(p) for p in precision],
        recall=[float(r) for r in recall],
        confusion_matrix=matrix.tolist(),
        num_images=int(matrix.sum()),
        bytes_agreement=tuple(bytes_agreement),
    )


@dataclasses.dataclass
class EvaluationPredictions:
    """A model's logits for each image of a test folder, for reports that show images.

    `logits[i]` is the model's output for `file_paths[i]`, whose true class is `labels[i]`.
    """

    file_paths: list
    labels: np.ndarray
    logits: np.ndarray
    class_names: list
    #: The test set (a folder or TFRecord directory) the images are read back from, if known.
    dataset_path: str = None

    @property
    def predictions(self):
        return self.logits.argmax(axis=1)

    def encoded_images(self, indices):
        """The encoded bytes of the images at `indices`: from the data set (a TFRecord's records
        too), else from `file_paths`."""
        if self.dataset_path is not None:
            return encoded_images(self.dataset_path, indices)
        encoded = []
        for index in indices:
            with open(self.file_paths[index], "rb") as file:
                encoded.append(file.read())
        return encoded


def predict_saved_model(model_path, test_dataset_path, batch_size=32):
    """`(EvaluationPredictions, loaded SavedModel)` of `serving_default` on the folder `test_dataset_path`."""
    metadata = read_model_metadata(model_path)
    loaded = tf.saved_model.load(os.fspath(model_path))
    serving_default = loaded.signatures["serving_default"]
    test_ds = create_test_dataset(
        test_dataset_path, metadata["input_shape"], batch_size, class_names=metadata["class_names"]
    )
    labels, logits = [], []
    for images, batch_labels in test_ds:
        logits.append(serving_default(input_tensor=images)["output_0"].numpy())
        labels.append(batch_labels.numpy())
    predictions = EvaluationPredictions(
        file_paths=list(test_ds.file_paths),
        labels=np.concatenate(labels),
        logits=np.concatenate(logits),
        class_names=list(metadata["class_names"]),
        dataset_path=os.fspath(test_dataset_path),
    )
    return predictions, loaded


def evaluate_saved_model(model_path, test_dataset_path, batch_size=32, bytes_samples=16,
                         return_predictions=False):
    """Evaluate the imgclf SavedModel at `model_path` on `test_dataset_path`, a folder of
    `<class>/<image>` or a TFRecord directory.

    Accuracy comes from the `serving_default` signature on the decoded test images; then
    `serving_bytes` is fed the encoded bytes of the first `bytes_samples` images (files, or the
    records' own bytes) and must agree with `serving_default` on the same images decoded.
    With `return_predictions`, returns `(report, EvaluationPredictions)` for `imgclf.reports`.
    """
    predictions, loaded = predict_saved_model(model_path, test_dataset_path, batch_size)
    image_shape = read_model_metadata(model_path)["input_shape"]
    agreement = bytes_agreement(loaded, test_dataset_path, image_shape, bytes_samples)
    report = classification_report(
        predictions.labels, predictions.predictions, predictions.class_names, agreement,
    )
    return (report, predictions) if return_predictions else report


def bytes_agreement(loaded, test_dataset_path, image_shape, bytes_samples):
    """`(agreeing, checked)`: on how many of the first `bytes_samples` images of the data set
    `serving_bytes` of the loaded SavedModel (fed the encoded bytes) gives the class
    `serving_default` gives to the image decoded as the data sets decode it (to `image_shape`).
    Images that do not decode are not checked."""
    decode = image_decoder(check_image_shape(image_shape))
    encoded, decoded = [], []
    for image_bytes in encoded_images(test_dataset_path, range(bytes_samples)):
        try:
            decoded.append(decode(tf.constant(image_bytes)))
        except tf.errors.OpError:
            continue  # the data set skips it too, with a warning
        encoded.append(image_bytes)
    if not encoded:
        return (0, 0)
    from_bytes = loaded.signatures["serving_bytes"](image_bytes_string=tf.constant(encoded))
    from_pixels = loaded.signatures["serving_default"](input_tensor=tf.stack(decoded))
    agreeing = (from_bytes["output_0"].numpy().argmax(axis=1)
                == from_pixels["output_0"].numpy().argmax(axis=1))
    return (int(agreeing.sum()), len(encoded))


def write_metrics_json(report, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(report.to_dict(), file, indent=2)
