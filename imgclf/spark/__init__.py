"""imgclf on Apache Spark: predict a DataFrame of images, write training records, train in a
barrier stage. An optional extra: `pip install imgclf[spark]`.

    >>> from imgclf.spark import spark_session
    >>> spark = spark_session("local[2]")      # or the session of spark-submit / a notebook
    >>> images = spark.read.format("binaryFile").load("gs://bucket/images/")

The modules import pyspark; `import imgclf` and its other parts never do.
"""

from imgclf._lazy import lazy_names

#: Names imported on first use (they import pyspark, TensorFlow). `predict` lives in
#: `imgclf.spark.prediction`: a module named `predict` would shadow the function once imported.
_HOMES = {
    "predict": "imgclf.spark.prediction",
    "predict_files_cli": "imgclf.spark.files",  # imgclf-predict --engine spark
    "labels_from_paths": "imgclf.spark.records",
    "read_image_folder": "imgclf.spark.records",
    "write_tfrecords": "imgclf.spark.records",
    "train": "imgclf.spark.training",
    "SparkTrainingError": "imgclf.spark.training",
    "SparkTrainingResult": "imgclf.spark.training",
}
__all__ = ["SparkTrainingError", "SparkTrainingResult", "labels_from_paths", "predict",
           "read_image_folder", "train", "write_tfrecords"]
__getattr__, __dir__ = lazy_names(__name__, _HOMES)
