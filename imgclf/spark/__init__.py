"""imgclf on Apache Spark: predict a DataFrame of images, write training records, train in a
barrier stage. An optional extra: `pip install imgclf[spark]`.

    >>> from imgclf.spark import spark_session
    >>> spark = spark_session("local[2]")      # or the session of spark-submit / a notebook
    >>> images = spark.read.format("binaryFile").load("gs://bucket/images/")

The modules import pyspark; `import imgclf` and its other parts never do.
"""

import importlib

#: Public names, imported from their module on first use (pyspark is imported only then).
_EXPORTS = {
    "labels_from_paths": "imgclf.spark.records",
    "write_tfrecords": "imgclf.spark.records",
    "train": "imgclf.spark.training",
    "SparkTrainingError": "imgclf.spark.training",
    "SparkTrainingResult": "imgclf.spark.training",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'imgclf.spark' has no attribute {name!r}")
