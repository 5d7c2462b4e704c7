"""`imgclf-predict --engine spark`: predict folders, globs and file lists of images on Spark and
write a Parquet directory.

    >>> summary = predict_files("gs://bucket/models/flowers", ["gs://bucket/photos/"],
    ...                         "gs://bucket/labels.parquet", master=None)   # spark-submit's master
    >>> print(summary)
    120000 files, 31 errors in 412.0 s: 291.3 images/s; wrote gs://bucket/labels.parquet

The inputs are read by Spark's `binaryFile` source, so listing and reading happen on the
executors' file systems (HDFS, gs://, s3a://, a shared mount): a folder recursively (names ending
in an extension of `imgclf.images.IMAGE_FORMATS`, any case), a glob as Hadoop expands it, an image
file, or a `.txt`/`.csv` file list (read on the driver). imgclf TFRecord directories are for
`--engine local`. Spark's file sources leave out names starting with `_` or `.`, and skip empty
files: those get their row with the error the local engine gives ("Input is empty."), so every
listed file has exactly one row.

The output is a directory of Parquet part files (Spark's partitions) committed by Spark's output
committer, then `_SUCCESS` and `_imgclf_prediction.json`, the key of the job (model fingerprint,
inputs, options). Running the same command again on a complete output does nothing; an output of
another job is replaced, or refused with `resume=True` (`--resume`); a killed job left no key
and is run again. Readers should wait for `_SUCCESS`.
"""

import contextlib
import hashlib
import json
import os
import time
import urllib.parse
import uuid

from imgclf.prediction import columns
from imgclf.spark.prediction import (DEFAULT_BATCH_SIZE, _driver_predictor, _positive_int,
                                     _predictions)
from imgclf.spark.session import spark_session

KEY_FILE = "_imgclf_prediction.json"
KEY_FORMAT = "imgclf-spark-predictions-1"
OUTPUT_SUFFIX = ".parquet"
LIST_SUFFIXES = (".txt", ".lst", ".csv")
_GLOB_CHARACTERS = "*?[{"
#: Spark settings for the prediction job, made for images rather than Spark's usual rows.
JOB_CONF = {
    # Rows per Arrow batch sent to a Python worker: Spark's default of 10,000 is about 500 MB of
    # 224-500 px JPEGs.
    "spark.sql.execution.arrow.maxRecordsPerBatch": "256",
    # What opening a file counts as, in bytes read, when files are packed into tasks: Spark's
    # 4 MB packs 32 JPEGs of 50 KB into a task, and each task starts a tf.data pipeline (about
    # a second); 64 KB makes tasks of thousands of images, up to spark.sql.files.maxPartitionBytes
    # (measured: bench/RESULTS.md, "Issue 13 §3: prediction on Spark").
    "spark.sql.files.openCostInBytes": str(64 * 1024),
}


def image_glob():
    """A Hadoop glob matching the image extensions of `IMAGE_FORMATS` in any case:
    `*.{[pP][nN][gG],...}` (`pathGlobFilter` is case-sensitive)."""
    from imgclf.images import IMAGE_FORMATS  # here: importing this module (as Spark's Python
    # workers do for its functions) imports no TensorFlow

    extensions = sorted({extension.lstrip(".") for values in IMAGE_FORMATS.values() for extension in values})
    classes = ("".join(f"[{c.lower()}{c.upper()}]" for c in extension) for extension in extensions)
    return "*.{" + ",".join(classes) + "}"


def read_image_files(spark, folders):
    """A `binaryFile` DataFrame of the image files under `folders` (a path or a list): listed
    recursively by Spark's file index, for names `image_glob` matches."""
    return (spark.read.format("binaryFile").option("recursiveFileLookup", "true")
            .option("pathGlobFilter", image_glob()).load(folders))


def predict_files(model, inputs, output, master=None, top_k=5, batch_size=DEFAULT_BATCH_SIZE,
                  embeddings=False, resume=False):
    """Predict every image of `inputs` on Spark and write the rows to the Parquet directory
    `output`; return a one-line summary (files, errors, images/s, output).

    Args:
        model: a SavedModel version folder, a model base path or a `.keras` file, readable by
            the driver and every executor.
        inputs: folders, globs, image files and `.txt`/`.csv` file lists (see the module).
        output: a directory ending in `.parquet`.
        master: a Spark master URL; None: the active session, spark-submit's master, or
            `local[*]` (`imgclf.spark.session.spark_session`).
        resume: refuse to replace the output of another job.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [os.fspath(spec) for spec in inputs]
    output = os.fspath(output).rstrip("/")
    if not output.lower().endswith(OUTPUT_SUFFIX):
        raise ValueError(
            f"--engine spark writes a Parquet directory: the output must end in {OUTPUT_SUFFIX}; "
            f"received '{output}'"
        )
    if not inputs:
        raise ValueError("no inputs: give at least one folder, glob, file list or image")
    batch_size = _positive_int("batch_size", batch_size)
    predictor = _driver_predictor(model)
    top_k = predictor._check(top_k, embeddings)
    spark = spark_session(master)
    storage = _Storage(spark)
    images = _read_images(spark, storage, inputs)
    listed = sorted(_hadoop_path_string(uri) for uri in images.inputFiles())
    if not listed:
        raise ValueError(f"no images found in {', '.join(repr(spec) for spec in inputs)}")
    key = {
        "format": KEY_FORMAT,
        "model_fingerprint": predictor.fingerprint,
        "inputs": inputs,
        "inputs_fingerprint": "sha256:" + hashlib.sha256("\n".join(listed).encode()).hexdigest(),
        "num_inputs": len(listed),
        "top_k": top_k,
        "embeddings": bool(embeddings),
    }
    previous = storage.read_json(f"{output}/{KEY_FILE}")
    if previous == key and storage.exists(f"{output}/_SUCCESS"):
        return f"{len(listed)} files: already predicted by the same job; kept {output}"
    if previous is not None and previous != key and resume:
        raise ValueError(
            f"output '{output}' holds the predictions of another job (model "
            f"{previous.get('model_fingerprint')}, {previous.get('num_inputs')} inputs); "
            "remove it or drop --resume to replace it"
        )

    rows = _predictions(images, predictor, "content", "path", top_k, batch_size, bool(embeddings))
    skipped = _skipped_rows(spark, images, listed, predictor, embeddings)
    started = time.monotonic()
    with job_conf(spark):
        rows.unionByName(skipped).write.mode("overwrite").parquet(output)
    seconds = time.monotonic() - started
    written = spark.read.parquet(output)
    count, errors = written.selectExpr("count(*)", f"count_if({columns.ERROR} != '')").first()
    if count != len(listed):
        # No key: the same command runs the job again.
        raise ValueError(
            f"the inputs changed while they were predicted: {len(listed)} files were listed, "
            f"{count} rows written to {output}; run again to predict the new list"
        )
    storage.write_json(f"{output}/{KEY_FILE}", key)
    return (f"{count} files, {errors} errors in {seconds:.1f} s: {count / seconds:.1f} images/s; "
            f"wrote {output}")


def predict_files_cli(args):
    """`imgclf-predict --engine spark`'s work, from the parsed arguments of `imgclf.cli.predict`;
    returns the exit status."""
    if args.max_errors is not None:
        raise ValueError("--max_errors is for --engine local: a Spark job predicts every file; "
                         "count the error column of its output")
    print(predict_files(args.model_path, args.inputs, args.output, master=args.master,
                        top_k=args.top_k, batch_size=args.batch_size, embeddings=args.embeddings,
                        resume=args.resume))
    return 0


@contextlib.contextmanager
def job_conf(spark):
    """Apply the settings of `JOB_CONF` that the session leaves at Spark's defaults (a user's
    own value wins) for a job, and unset them afterwards."""
    applied = [key for key in JOB_CONF if spark.conf.get(key, None) is None]
    for key in applied:
        spark.conf.set(key, JOB_CONF[key])
    try:
        yield
    finally:
        for key in applied:
            spark.conf.unset(key)


def _read_images(spark, storage, inputs):
    """One `binaryFile` DataFrame of every input: folders recursively with the image-name
    filter, globs, images and the paths of file lists as they are."""
    from imgclf.data.tfrecord import LAYOUT_FILE
    from imgclf.prediction.inputs import Inputs

    folders, files = [], []
    for spec in inputs:
        if any(character in spec for character in _GLOB_CHARACTERS) and not storage.exists(spec):
            files.append(spec)
        elif not storage.exists(spec):
            raise FileNotFoundError(f"input '{spec}' does not exist")
        elif storage.is_directory(spec):
            if storage.exists(f"{spec.rstrip('/')}/{LAYOUT_FILE}"):
                raise ValueError(f"input '{spec}' is an imgclf TFRecord directory; predict it "
                                 "with --engine local")
            folders.append(spec)
        elif spec.lower().endswith(LIST_SUFFIXES):
            files.extend(Inputs([spec]).paths())
        else:
            files.append(spec)
    parts = []
    if folders:
        parts.append(read_image_files(spark, folders))
    if files:
        # A reader of its own: `option` changes the reader it is called on.
        parts.append(spark.read.format("binaryFile").load(files))
    images = parts[0]
    for part in parts[1:]:
        images = images.unionByName(part)
    return images


def _skipped_rows(spark, images, listed, predictor, embeddings):
    """Error rows for the listed files Spark's scan leaves out (empty files), with the error the
    predictor gives an empty image."""
    message = predictor.predict_encoded([b""], embeddings=embeddings)[columns.ERROR][0]
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    schema = from_arrow_schema(columns.output_schema(embeddings))
    listed_paths = spark.createDataFrame([(path,) for path in listed], "path string")
    missing = listed_paths.join(images.select("path"), "path", "left_anti")
    error = columns.error_row(message, embeddings)
    return missing.select(*[
        F.col("path") if field.name == columns.PATH
        else F.lit(error[field.name]).cast(field.dataType).alias(field.name)
        for field in schema.fields
    ])


def _hadoop_path_string(uri):
    """A path as `binaryFile`'s `path` column writes it (Hadoop `Path.toString`), from the URI
    `DataFrame.inputFiles` gives (`file:///a%20b.png` -> `file:/a b.png`)."""
    parts = urllib.parse.urlsplit(uri)
    path = urllib.parse.unquote(parts.path)
    return f"{parts.scheme}://{parts.netloc}{path}" if parts.netloc else f"{parts.scheme}:{path}"


class _Storage:
    """Files on any file system Spark reads (HDFS, gs://, s3a://, local), through Hadoop's
    FileSystem in the driver's JVM."""

    def __init__(self, spark):
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _fs(self, path):
        jpath = self._jvm.org.apache.hadoop.fs.Path(path)
        return jpath.getFileSystem(self._conf), jpath

    def qualified(self, path):
        """`path` as the file system names it (`/a` -> `file:/a`), as `binaryFile` writes paths."""
        fs, jpath = self._fs(path)
        return fs.makeQualified(jpath).toString()

    def exists(self, path):
        fs, jpath = self._fs(path)
        return fs.exists(jpath)

    def is_directory(self, path):
        fs, jpath = self._fs(path)
        return fs.getFileStatus(jpath).isDirectory()

    def read_json(self, path):
        """The JSON object at `path`, or None if there is none (or it is not JSON)."""
        fs, jpath = self._fs(path)
        if not fs.exists(jpath):
            return None
        stream = fs.open(jpath)
        try:
            text = self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()
        try:
            return json.loads(text)
        except ValueError:
            return None

    def write_json(self, path, value):
        """Write `value` to `path` beside it and rename it into place."""
        fs, jpath = self._fs(path)
        staging = self._jvm.org.apache.hadoop.fs.Path(f"{path}.{uuid.uuid4().hex[:8]}.tmp")
        stream = fs.create(staging, True)
        try:
            stream.write(bytearray(json.dumps(value, indent=1).encode("utf-8")))
        finally:
            stream.close()
        fs.delete(jpath, False)
        if not fs.rename(staging, jpath):
            raise OSError(f"could not rename {staging.toString()} to {path}")
