"""Predictions for a Spark DataFrame of encoded images: the rows `imgclf-predict` writes, computed
on every executor.

    >>> from imgclf.spark import predict
    >>> images = spark.read.format("binaryFile").load("gs://bucket/images/")
    >>> predictions = predict(images, "gs://bucket/models/flowers")   # its highest version
    >>> predictions.write.parquet("gs://bucket/predictions/")

The result has the columns of `imgclf.prediction.columns` (`path`, `class`, `probability`,
`top_classes`, `top_probabilities`, `logits`, optionally `embedding`, and `error`), one row per
input row, computed by the one-machine `Predictor` (the decode and resize of `serving_bytes`), so
Spark and `imgclf-predict --engine local` give the same predictions. An image that cannot be read
is a row with its `error`, never a failed task.

How it runs: Spark's own `pyspark.ml.functions.predict_batch_udf` hands the image column to
Python workers in batches of `batch_size`, each predicted by `Predictor.predict_encoded` (one
`tf.data` pipeline decoding in parallel, one forward pass). Chosen by measurement: on 2,000
JPEGs at 224 px in `local[2]` it ran at 0.96-0.98 (LeNet) and 1.07 (MobileNetV3) of the
one-machine engine, `mapInArrow` at 0.43-0.62 and 0.76, `mapInPandas` at 0.57-0.83
(bench/RESULTS.md, "Issue 13 §3: prediction on Spark"). Each Python worker loads the model once and keeps it for the tasks that follow
(`_WorkerModels`, keyed by model path and fingerprint as pyspark's `ModelCache` keys by UUID); this
relies on `spark.python.worker.reuse`, Spark's default. The driver resolves the model (a base path
to its highest version) and reads its fingerprint once, so every executor predicts with the same
version even if a new one is written during the job.
"""

import collections
import functools
import threading

from imgclf.prediction import columns
from imgclf.spark.session import require_pyspark

#: Images per call of the model on a worker (Arrow batches from Spark are cut to this size).
DEFAULT_BATCH_SIZE = 64


def predict(df, model_path, image_col="content", path_col="path", top_k=5,
            batch_size=DEFAULT_BATCH_SIZE, embeddings=False):
    """Predict the images of a Spark DataFrame; return a DataFrame of predictions, one row each.

    Args:
        df: a DataFrame with a binary column of encoded images (PNG, JPEG, BMP, GIF, WebP), e.g.
            `spark.read.format("binaryFile").load(folder)`.
        model_path: an imgclf SavedModel version folder, a model base path (its highest version)
            or a `.keras` file, on storage every executor reads (HDFS, gs://, s3a://, a shared
            mount; a local path only for a local master).
        image_col: the column of image bytes.
        path_col: the string column copied into the output's `path` (a file's path, an id).
        top_k: how many classes `top_classes` / `top_probabilities` hold.
        batch_size: images per call of the model on a worker.
        embeddings: add the `embedding` column (the penultimate layer's output).

    Returns:
        A DataFrame with the columns of `imgclf.prediction.columns.output_columns(embeddings)`.
        It is lazy, like any DataFrame: the model runs when it is written or collected.

    The driver loads the model once to check it (and `top_k`, `embeddings`) before any task
    starts, and to pin the version and fingerprint the executors must load.
    """
    require_pyspark()
    _check_columns(df, image_col, path_col)
    batch_size = _positive_int("batch_size", batch_size)
    predictor = _driver_predictor(model_path)
    top_k = predictor._check(top_k, embeddings)
    return _predictions(df, predictor, image_col, path_col, top_k, batch_size, bool(embeddings))


def _check_columns(df, image_col, path_col):
    from pyspark.sql.types import BinaryType, StringType

    fields = {field.name: field.dataType for field in df.schema.fields}
    for argument, name, kind, wanted in (
        ("image_col", image_col, "binary (encoded image bytes)", BinaryType),
        ("path_col", path_col, "string", StringType),
    ):
        if name not in fields:
            raise ValueError(
                f"{argument} '{name}' is not a column of the DataFrame; its columns are {list(fields)}"
            )
        if not isinstance(fields[name], wanted):
            raise ValueError(
                f"{argument} '{name}' must be a {kind} column; received {fields[name].simpleString()}"
            )


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; received {value!r}")
    return value


def _driver_predictor(model_path):
    from imgclf.prediction.predictor import Predictor

    return Predictor.load(model_path)


def _predictions(df, predictor, image_col, path_col, top_k, batch_size, embeddings):
    """The lazy prediction DataFrame of `df` for a predictor the driver loaded: Spark's
    `predict_batch_udf` over the image column, its struct spread into the output's columns."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema
    from pyspark.sql.types import StructType

    schema = from_arrow_schema(columns.output_schema(embeddings))
    predicted = StructType([field for field in schema.fields if field.name != columns.PATH])
    udf = predict_batch_udf(
        functools.partial(_make_predict_fn, predictor.model_path, predictor.fingerprint, top_k,
                          embeddings),
        return_type=predicted, batch_size=batch_size,
    )
    result = df.select(F.col(path_col).alias(columns.PATH), udf(image_col).alias("_imgclf"))
    read = F.col("_imgclf.error") == ""

    def column(name):
        value = F.col(f"_imgclf.`{name}`")
        # An unread image's class and probability travel as "" and NaN (see _make_predict_fn).
        return (F.when(read, value) if name in (columns.CLASS, columns.PROBABILITY) else value).alias(name)

    return result.select(columns.PATH, *[column(name) for name in predicted.names])


class _WorkerModels:
    """The predictors loaded in this Python process, keyed by `(model path, fingerprint)`.

    A Python worker that Spark reuses (`spark.python.worker.reuse`, the default) keeps its
    predictors from task to task, so a model is loaded once per worker rather than per task or
    batch. At most `capacity` models are kept, least recently used dropped first (pyspark's
    `ModelCache` keeps 3 too): a notebook that predicts with a few models in turn does not grow
    a worker's memory without bound. `loads` counts loads per key, for tests and logs.
    """

    capacity = 3

    def __init__(self):
        self._predictors = collections.OrderedDict()
        self._lock = threading.Lock()
        self.loads = collections.Counter()

    def get(self, model_path, fingerprint):
        key = (model_path, fingerprint)
        with self._lock:
            predictor = self._predictors.get(key)
            if predictor is None:
                predictor = _load_predictor(model_path, fingerprint)
                self.loads[key] += 1
                self._predictors[key] = predictor
                while len(self._predictors) > self.capacity:
                    self._predictors.popitem(last=False)
            self._predictors.move_to_end(key)
            return predictor


def _load_predictor(model_path, fingerprint):
    from imgclf.tensorflow_import import import_tensorflow

    import_tensorflow()  # a Python worker's first model: TensorFlow without Keras' pyplot
    from imgclf.prediction.predictor import Predictor

    predictor = Predictor.load(model_path)
    if predictor.fingerprint != fingerprint:
        # The model was replaced between the driver's look and this worker's: predicting with it
        # would mix two models in one output.
        raise RuntimeError(
            f"the model at {model_path} changed while the Spark job ran: a worker loaded "
            f"fingerprint {predictor.fingerprint}, the driver saw {fingerprint}; write a new "
            "model version instead of replacing one that a job is reading"
        )
    return predictor


#: This Python process's models (a worker's, or the driver's in a local master).
worker_models = _WorkerModels()


def _make_predict_fn(model_path, fingerprint, top_k, embeddings):
    """`predict_batch_udf`'s `make_predict_fn`: this worker's predictor (loaded once, see
    `_WorkerModels`) as a function of a batch of image bytes, giving a row dict per image.

    `predict_batch_udf` checks that the first row's scalars are scalars, so an unread image's
    class and probability (None) travel as "" and NaN, and are made null again by `_predictions`.
    """
    import numpy as np

    predictor = worker_models.get(model_path, fingerprint)
    names = columns.output_columns(embeddings)[1:]
    placeholders = {columns.CLASS: "", columns.PROBABILITY: np.nan}

    def predict(contents):
        # A null image is None here, which predict_encoded reads as empty.
        predicted = predictor.predict_encoded(list(contents), top_k=top_k, embeddings=embeddings)
        rows = []
        for i in range(len(contents)):
            row = {}
            for name in names:
                value = predicted[name][i]
                if isinstance(value, list):
                    value = np.asarray(value)
                elif value is None:
                    value = placeholders[name]
                row[name] = value
            rows.append(row)
        return rows

    return predict
