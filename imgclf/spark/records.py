"""Write a Spark DataFrame of images as imgclf's TFRecord layout, in parallel on the executors.

    >>> images = read_image_folder("gs://bucket/data/train")          # <class>/<image>
    >>> layout = write_tfrecords(images, "/mnt/records/train", num_shards=16)
    >>> layout["class_names"], layout["class_counts"], layout["unreadable"]
    (['cat', 'dog'], {'cat': 12500, 'dog': 12499}, {'dog/11702.jpg': 'Unknown image file format. ...'})

The result is the layout `python -m imgclf.data.tfrecord` writes (`imgclf.data.tfrecord`: the
same `tfrecords.json`, the same record features, the same record numbers, class names and
labels), so `imgclf.training.train` and `imgclf.spark.train` read it like any TFRecord
directory, and it splits into training and validation exactly as the folder does. Only which
shard holds which record differs: each Spark task writes the records of its own partition.
`output_dir` must be a path the driver and every executor see (a shared or mounted file system:
NFS, `/dbfs/...`, a gcsfuse mount), like the training that reads it.

How: a first, light pass reads only the name and label columns to the driver (a `binaryFile`
read then opens no image), which numbers the records as the converter would (by class, then
name) and broadcasts name -> number. The second pass runs one task per partition: it writes its
partition's records, with their numbers, into shard file(s) of its own, so the image bytes go
from the reader to the writer in the task, never through a Spark shuffle. Every image is decoded
on its executor by `imgclf.images.decode_image`, the training's own decoder: one that does not
decode is left out, counted and named with the reason in the layout's `unreadable`, never
fatal. Everything is written into a hidden folder beside `output_dir` and renamed to it when
complete, so a failed, killed or concurrent run never leaves a half layout where training reads
(a crashed driver may leave a `.<name>.partial-*` folder to delete).

A shard holds its records in the order of its partition (for a `binaryFile` read: by file size),
not shuffled across the data set as the converter's: training mixes them by taking the records
of up to 8 shards in turn, one from each, in a new order each epoch (`imgclf.data.records`).
A DataFrame sorted by class should be repartitioned first (one shuffle, yours to choose) or
written with more shards than training mixes at once.
"""

import os
import shutil
import uuid

from imgclf.spark.session import require_pyspark

#: The size images are decoded to when checked (the check is whether they decode at all).
_CHECK_SIZE = (8, 8)

_CHANGED = ("did the DataFrame change between its two reads? (cache it, or write it to Parquet "
            "first)")


def read_image_folder(folder, spark=None, label_col="label", key_col="key"):
    """A `binaryFile` DataFrame of the images of a `folder/<class>/...` data set, labelled as the
    converter labels them: `label_col` is the class folder under `folder`, `key_col` the image's
    path relative to `folder` (`<class>/<image>`, or `<class>/<sub>/<image>` for images in
    sub-folders of a class folder). The columns `write_tfrecords` takes.

    `folder` is any path Spark reads (`gs://`, `s3a://`, `hdfs://`, local). It is listed
    recursively by Spark's file index, for image names only (`imgclf.images.IMAGE_FORMATS`'
    extensions, any case); files directly in `folder` are left out, as are names Spark's file
    sources skip (starting with `_` or `.`, and empty files).

    Why not `binaryFile` with a `folder/*/*` glob: Spark lists each path a glob matches as a
    root of its own, with a listing job of one task per file when there are more than 32
    (3,000 files: 6-11 s on local[2], against 0.3 s for the recursive listing; bench/RESULTS.md).

        >>> images = read_image_folder("gs://bucket/flowers/train")
        >>> images.select("key", "label").first()
        Row(key='daisy/0001.jpg', label='daisy')
    """
    require_pyspark()
    from pyspark.sql import functions as F

    from imgclf.spark.files import _Storage, read_image_files
    from imgclf.spark.session import spark_session

    spark = spark or spark_session()
    folder = os.fspath(folder)
    storage = _Storage(spark)
    if not storage.exists(folder):
        raise FileNotFoundError(f"dataset folder '{folder}' does not exist")
    if not storage.is_directory(folder):
        raise ValueError(f"dataset folder '{folder}' is not a directory")
    root = storage.qualified(folder).rstrip("/") + "/"
    images = read_image_files(spark, folder)
    # `path` holds the file's qualified Hadoop path, under the qualified root.
    key = F.expr(f"substring(path, {len(root) + 1})")
    return (images.withColumn(key_col, key)
            .where(F.col("path").startswith(root) & F.col(key_col).contains("/"))
            .withColumn(label_col, F.substring_index(F.col(key_col), "/", 1)))


def labels_from_paths(df, path_col="path", label_col="label", key_col="key"):
    """`df` with each image's class and record name taken from its path `.../<class>/<image>`.

    For a `binaryFile` DataFrame of a folder of class folders: `label_col` is the folder the
    image is in, `key_col` (the name the record keeps, as the converter's relative path) is
    `<class>/<image>`.

        >>> images = spark.read.format("binaryFile").load("gs://bucket/train/*/*")
        >>> labels_from_paths(images).select("key", "label").first()
        Row(key='cat/0001.jpg', label='cat')
    """
    require_pyspark()
    from pyspark.sql import functions as F

    _require_columns(df, [path_col])
    parts = F.split(F.col(path_col), "/")
    label = F.element_at(parts, -2)
    return df.withColumn(label_col, label).withColumn(
        key_col, F.concat_ws("/", label, F.element_at(parts, -1))
    )


def write_tfrecords(df, output_dir, image_col="content", label_col="label", key_col="key",
                    class_names=None, num_shards=None, check_images=True):
    """Write the images of `df` as a TFRecord data set in `output_dir`; return its layout.

    Args:
        df: a DataFrame with the encoded images (`image_col`, binary: a `binaryFile` read's
            `content`), their class (`label_col`, a string) and a unique name for each
            (`key_col`, e.g. `<class>/<image>` from `labels_from_paths`).
        output_dir: the TFRecord directory to create; it must not exist or be empty.
        class_names: the classes in label order (a test set's must be its training set's);
            by default the labels found, sorted. A label not in it is refused.
        num_shards: how many shard files to write, at most: exactly that many when every
            partition holds enough images. Fewer than `df`'s partitions merges neighbouring
            partitions (`coalesce`: fewer tasks, no shuffle); more splits each partition's
            records among several files of its task. By default one shard per non-empty
            partition. For multi-worker training, write at least one shard per worker.
        check_images: decode every image on its executor and leave out those that fail.

    Returns the layout written to `output_dir/tfrecords.json`, with `unreadable`
    (`{name: reason}`) and `class_counts` (records written per class).

        >>> write_tfrecords(images.repartition(64), "/mnt/records/train")   # 64 shards
    """
    require_pyspark()
    from pyspark.sql import functions as F
    from pyspark.sql.types import BinaryType

    from imgclf.data.tfrecord import shard_file_names, write_layout

    output_dir = os.path.abspath(os.fspath(output_dir))
    _require_columns(df, [image_col, label_col, key_col])
    if not isinstance(df.schema[image_col].dataType, BinaryType):
        raise ValueError(
            f"image_col '{image_col}' must hold the encoded images (binary); received "
            f"{df.schema[image_col].dataType.simpleString()}"
        )
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        raise FileExistsError(f"output directory '{output_dir}' is not empty")
    if num_shards is not None and (
        isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1
    ):
        raise ValueError(f"num_shards must be a positive integer; received {num_shards!r}")

    # Pass 1, names and labels only (a binaryFile read then opens no image).
    key, label = F.col(key_col).cast("string"), F.col(label_col).cast("string")
    rows = df.select(key, label).collect()
    keys = [row[0] for row in rows]
    labels_text = [row[1] for row in rows]
    _check_names(keys, labels_text, key_col, label_col)
    if class_names is None:
        class_names = sorted(set(labels_text))
    class_names = [str(name) for name in class_names]
    unknown = sorted(set(labels_text) - set(class_names))
    if unknown:
        raise ValueError(f"labels {unknown} are not in class_names {class_names}")
    label_of = {name: i for i, name in enumerate(class_names)}
    # The converter's order: by class, then by name (its sorted listing); index = position.
    records = sorted(zip((label_of[text] for text in labels_text), keys))
    files = [name for _, name in records]
    labels = [label for label, _ in records]

    # Pass 2: each task writes its own partition; no image goes through a shuffle.
    images = df.select(key, label, F.col(image_col))
    partitions = images.rdd.getNumPartitions()
    if num_shards is not None and num_shards < partitions:
        images, partitions = images.coalesce(num_shards), num_shards
    files_per_partition = [1] * partitions if num_shards is None or num_shards <= partitions else [
        num_shards // partitions + (p < num_shards % partitions) for p in range(partitions)
    ]
    spark = df.sparkSession
    numbering = spark.sparkContext.broadcast(
        {name: (index, label) for index, (label, name) in enumerate(records)}
    )

    parent, name = os.path.split(output_dir)
    staging = os.path.join(parent, f".{name}.partial-{uuid.uuid4().hex[:12]}")
    os.makedirs(staging)
    try:
        written = images.rdd.mapPartitionsWithIndex(
            _partition_writer(staging, numbering, class_names, files_per_partition, check_images)
        ).collect()
        shards, bad = [], []
        for _, partition_shards, partition_bad in sorted(written):
            shards += partition_shards
            bad += partition_bad
        reported = sorted([i for _, indices, _ in shards for i in indices] + [i for i, _ in bad])
        if reported != list(range(len(files))):
            raise RuntimeError(
                f"the second read of the DataFrame gave {len(reported)} images with "
                f"{len(set(reported))} of the {len(files)} names of the first: {_CHANGED}"
            )
        names = shard_file_names(len(shards))
        for (staged, _, _), final in zip(shards, names):
            os.replace(os.path.join(staging, staged), os.path.join(staging, final))
        for leftover in set(os.listdir(staging)) - set(names):  # failed task attempts' files
            os.remove(os.path.join(staging, leftover))
        unreadable, left_out = {}, []
        for index, reason in sorted(bad):
            unreadable[files[index]] = reason
            # Still keyed in the split (`left_out`), as the converter's left-out files are.
            left_out.append([index, files[index]])
            files[index] = None
        layout = write_layout(
            staging, class_names, files, labels,
            [{"file": final, "indices": indices, **entry}
             for final, (_, indices, entry) in zip(names, shards)],
            left_out=left_out, unreadable=unreadable,
        )
        if os.path.isdir(output_dir):
            os.rmdir(output_dir)  # empty (checked above); a rename replaces no full folder
        os.rename(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        numbering.unpersist()
    return layout


def _partition_writer(staging, numbering, class_names, files_per_partition, check_images):
    """The function each task runs over its partition's rows `(key, label, image)`.

    It deals the partition's good records among its files (`files_per_partition`, opened only
    when a record comes for them) and returns `(partition, [(staged file, indices, its
    `ShardWriter.entry()`)], [(index, reason), ...])`. Each attempt writes under its own name,
    renamed when complete.
    """

    def write(partition, rows):
        from pyspark import TaskContext

        from imgclf.tensorflow_import import import_tensorflow

        import_tensorflow()  # in a Python worker: TensorFlow without Keras' pyplot
        from imgclf.data.tfrecord import ShardWriter

        number_of = numbering.value
        reason_of = _image_checker() if check_images else (lambda image: None)
        attempt = TaskContext.get().taskAttemptId()
        count = files_per_partition[partition]
        writers, indices, bad, good = [None] * count, [[] for _ in range(count)], [], 0
        staged = [f"part-{partition:05d}-{j:05d}.tfrecord" for j in range(count)]
        try:
            for key, label, image in rows:
                if key not in number_of:
                    raise RuntimeError(f"image '{key}' was not in the first read: {_CHANGED}")
                index, label_index = number_of[key]
                if label != class_names[label_index]:
                    raise RuntimeError(
                        f"image '{key}' has label '{label}', '{class_names[label_index]}' in the "
                        f"first read: {_CHANGED}"
                    )
                reason = reason_of(image)
                if reason is not None:
                    bad.append((index, reason))
                    continue
                j, good = good % count, good + 1
                if writers[j] is None:
                    writers[j] = ShardWriter(
                        os.path.join(staging, f"{staged[j]}.attempt-{attempt}"))
                writers[j].write(bytes(image), label_index, key, index)
                indices[j].append(index)
        finally:
            for writer in writers:
                if writer is not None:
                    writer.close()
        for j in range(count):
            if writers[j] is not None:
                os.replace(os.path.join(staging, f"{staged[j]}.attempt-{attempt}"),
                           os.path.join(staging, staged[j]))
        yield partition, [(staged[j], indices[j], writers[j].entry())
                          for j in range(count) if indices[j]], bad

    return write


def _image_checker():
    """`reason(image_bytes)`: None if the image decodes as training will decode it, else why."""
    from imgclf.data.pipeline import ReadFailure, decode_error, image_decoder

    decoder = image_decoder(_CHECK_SIZE)

    def reason(image):
        if image is None:
            return "no image bytes (null)"
        verdict = decode_error(decoder, bytes(image))
        return None if isinstance(verdict, ReadFailure) else verdict  # ReadFailure: it decodes

    return reason


def _check_names(keys, labels, key_col, label_col):
    for values, column in ((keys, key_col), (labels, label_col)):
        nulls = [i for i, value in enumerate(values) if value is None]
        if nulls:
            raise ValueError(f"{len(nulls)} rows have no {column} (null)")
    seen, duplicates = set(), set()
    for key in keys:
        (duplicates if key in seen else seen).add(key)
    if duplicates:
        raise ValueError(
            f"{key_col} must name each image once; {len(duplicates)} names repeat, e.g. "
            f"{sorted(duplicates)[:3]}"
        )


def _require_columns(df, columns):
    missing = [column for column in columns if column not in df.columns]
    if missing:
        raise ValueError(f"the DataFrame has no column {missing[0]!r}; its columns: {df.columns}")
