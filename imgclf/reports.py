"""Evaluation reports people look at: a confusion-matrix picture and the worst mistakes.

    >>> report, predictions = evaluate_saved_model("models/LenetModel/1", "data/test",
    ...                                            return_predictions=True)
    >>> write_report("report", report, predictions)
    {'metrics': 'report/metrics.json', 'confusion_matrix': 'report/confusion_matrix.png',
     'misclassified': 'report/misclassified.png'}

`confusion_matrix.png` colours each cell by the fraction of the true class (row) predicted as the
column's class and writes that fraction and the count in it, class names on both axes.
`misclassified.png` is a grid of the test images the model got wrong most confidently, each with
its true and predicted class. Pictures are drawn with matplotlib's Agg renderer (no display, safe
in threads); `log_confusion_matrix` puts the same picture into TensorBoard.
"""

import io
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

#: Pixels per inch of every picture: a confusion matrix cell is `CELL_INCHES * DPI` pixels wide.
DPI = 100
CELL_INCHES = 0.8
TILE_INCHES = 1.8
COLORMAP = "Blues"
REPORT_FILES = {
    "metrics": "metrics.json",
    "confusion_matrix": "confusion_matrix.png",
    "misclassified": "misclassified.png",
}


def confusion_matrix_figure(matrix, class_names):
    """A matplotlib `Figure` of `matrix` (`[true][predicted]` counts), rows normalised.

    Each cell is coloured by its row's fraction (the colour map runs 0 to 1) and shows the
    fraction and, below it, the count.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    n = len(class_names)
    if matrix.shape != (n, n):
        raise ValueError(
            f"matrix must be {n} x {n}, one row and column per class; received {matrix.shape}"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = np.nan_to_num(matrix / matrix.sum(axis=1, keepdims=True))
    # Room for the tick labels: about 0.075 inch a character, less below where they slant.
    label_inches = 0.075 * max(len(name) for name in class_names)
    left, bottom, side = 0.6 + label_inches, 0.6 + 0.75 * label_inches, n * CELL_INCHES
    figure = Figure(figsize=(max(left + side + 0.9, 3.6), bottom + side + 0.45), dpi=DPI)
    FigureCanvasAgg(figure)
    width, height = figure.get_size_inches()
    axes = figure.add_axes([left / width, bottom / height, side / width, side / height])
    image = axes.imshow(normalised, cmap=COLORMAP, vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(n), labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(range(n), labels=class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    figure.suptitle("confusion matrix: fraction of true class, count", fontsize=9, y=0.99)
    for i in range(n):
        for j in range(n):
            axes.text(j, i, f"{normalised[i, j]:.2f}\n{matrix[i, j]}", ha="center", va="center",
                      fontsize=8, color="white" if normalised[i, j] > 0.5 else "black")
    colorbar_axes = figure.add_axes([(left + side + 0.15) / width, bottom / height, 0.2 / width,
                                     side / height])
    figure.colorbar(image, cax=colorbar_axes)
    return figure


def worst_misclassified(predictions, max_images=16):
    """Indices of the wrongly classified test images, the most confident mistake first."""
    logits = np.asarray(predictions.logits, dtype=np.float64)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != np.asarray(predictions.labels))
    confidence = probabilities[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:max_images].tolist(), probabilities


def misclassified_figure(predictions, max_images=16, columns=4):
    """A `Figure` of the worst mistakes (`worst_misclassified`), one titled tile each.

    Tiles are read from the test set (`predictions.encoded_images`: files, or a TFRecord
    directory's records), left to right, top to bottom, worst first.
    With no mistakes the figure says so.
    """
    indices, probabilities = worst_misclassified(predictions, max_images)
    columns = max(1, min(columns, len(indices)))
    rows = max(1, -(-len(indices) // columns))
    figure = Figure(figsize=(columns * TILE_INCHES, rows * (TILE_INCHES + 0.4)), dpi=DPI)
    FigureCanvasAgg(figure)
    if not indices:
        figure.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        return figure
    names = predictions.class_names
    for tile, (index, encoded) in enumerate(zip(indices, predictions.encoded_images(indices))):
        axes = figure.add_subplot(rows, columns, tile + 1)
        with Image.open(io.BytesIO(encoded)) as image:
            axes.imshow(np.asarray(image.convert("RGB")))
        predicted = int(probabilities[index].argmax())
        axes.set_title(
            f"true: {names[int(predictions.labels[index])]}\n"
            f"predicted: {names[predicted]} ({probabilities[index, predicted]:.2f})",
            fontsize=8,
        )
        axes.axis("off")
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9, wspace=0.1, hspace=0.45)
    return figure


def figure_png(figure):
    """The PNG bytes of a matplotlib `Figure` at `DPI`."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def write_report(report_dir, report, predictions, max_images=16):
    """Write `metrics.json`, `confusion_matrix.png` and `misclassified.png` into `report_dir`.

    `report` is an `imgclf.evaluation.EvaluationReport`, `predictions` the
    `imgclf.evaluation.EvaluationPredictions` it was made from. Returns the files' paths by kind.
    """
    from imgclf.evaluation import write_metrics_json

    os.makedirs(report_dir, exist_ok=True)
    paths = {kind: os.path.join(report_dir, name) for kind, name in REPORT_FILES.items()}
    write_metrics_json(report, paths["metrics"])
    figures = {
        "confusion_matrix": confusion_matrix_figure(report.confusion_matrix, report.class_names),
        "misclassified": misclassified_figure(predictions, max_images),
    }
    for kind, figure in figures.items():
        with open(paths[kind], "wb") as file:
            file.write(figure_png(figure))
    return paths


def log_confusion_matrix(log_dir, matrix, class_names, step=0, name="confusion_matrix"):
    """Write the confusion-matrix picture to TensorBoard's `log_dir` as image summary `name`."""
    import tensorflow as tf

    png = figure_png(confusion_matrix_figure(matrix, class_names))
    image = tf.image.decode_png(png, channels=3)[tf.newaxis]
    writer = tf.summary.create_file_writer(os.fspath(log_dir))
    with writer.as_default():
        tf.summary.image(name, image, step=step)
    writer.close()

