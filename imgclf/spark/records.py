"""Write a Spark DataFrame of images as imgclf's TFRecord layout, in parallel on the executors.

    >>> images = spark.read.format("binaryFile").load("/mnt/data/train/*/*")  # <class>/<image>
    >>> layout = write_tfrecords(labels_from_paths(images), "/mnt/records/train", num_shards=16)
    >>> layout["class_names"], layout["class_counts"], layout["unreadable"]
    (['cat', 'dog'], {'cat': 12499, 'dog': 12500}, {'cat/666.jpg': 'Input is empty.'})

The result is what `python -m imgclf.data.tfrecord` writes (`imgclf.data.tfrecord`: the same
`tfrecords.json`, the same record features, records dealt into shards the same way), so
`imgclf.training.train` and `imgclf.spark.train` read it like any TFRecord directory; a folder
converted both ways gives the same shards. `output_dir` must be a path the driver and every
executor see (a shared or mounted file system: NFS, `/dbfs/...`, a gcsfuse mount), like the
training that reads it.

How: a first, light pass reads only the name and label columns to the driver, which orders the
records as the converter would (by class, then name), numbers them and deals them into shards
with `seed`. The second pass joins each image to its shard, shuffles the images to one Spark
partition per shard (in the JVM, not through Python) and each task writes its shard. Every
image is decoded on its executor by `imgclf.images.decode_image`, the training's own decoder:
one that does not decode is left out, counted and named with the reason in the layout's
`unreadable`, never fatal. Everything is written into a hidden folder beside `output_dir` and
renamed to it when complete, so a failed, killed or concurrent run never leaves a half layout
where training reads (a crashed driver may leave a `.<name>.partial-*` folder to delete).
"""

import os
import shutil
import uuid

from imgclf.spark.session import require_pyspark

#: The size images are decoded to when checked (the check is whether they decode at all).
_CHECK_SIZE = (8, 8)


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
                    class_names=None, num_shards=None, seed=0, check_images=True):
    """Write the images of `df` as a TFRecord data set in `output_dir`; return its layout.

    Args:
        df: a DataFrame with the encoded images (`image_col`, binary: a `binaryFile` read's
            `content`), their class (`label_col`, a string) and a unique name for each
            (`key_col`, e.g. `<class>/<image>` from `labels_from_paths`).
        output_dir: the TFRecord directory to create; it must not exist or be empty.
        class_names: the classes in label order (a test set's must be its training set's);
            by default the labels found, sorted. A label not in it is refused.
        num_shards: shard files to write, one Spark task each (at least one per training
            worker); by default as many as `df` has partitions, at most one per image.
        seed: seeds how records are dealt into shards (as the converter's `--seed`).
        check_images: decode every image on its executor and leave out those that fail.

    Returns the layout written to `output_dir/tfrecords.json`, with `unreadable`
    (`{name: reason}`) and `class_counts` (records written per class).
    """
    require_pyspark()
    from pyspark.sql import functions as F
    from pyspark.sql.types import BinaryType

    from imgclf.data.tfrecord import deal_into_shards, shard_file_names, write_layout

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
    rows = df.select(F.col(key_col).cast("string"), F.col(label_col).cast("string")).collect()
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
    files = [key for _, key in records]
    labels = [label for label, _ in records]
    if num_shards is None:
        num_shards = df.rdd.getNumPartitions()
    members_of = deal_into_shards(range(len(files)), num_shards, seed)

    spark = df.sparkSession
    buckets = _partition_keys(spark, len(members_of))
    plan = spark.createDataFrame(
        [(files[i], i, labels[i], shard, buckets[shard], position)
         for shard, members in enumerate(members_of) for position, i in enumerate(members)],
        "key string, index long, label int, shard int, bucket long, position int",
    )
    images = df.select(F.col(key_col).cast("string").alias("key"), F.col(image_col).alias("image"))
    # One partition per shard, its images in the shard's order: each task writes one file.
    ordered = (images.join(F.broadcast(plan), "key")
               .repartition(len(members_of), "bucket")
               .sortWithinPartitions("shard", "position")
               .select("shard", "index", "label", "key", "image"))

    parent, name = os.path.split(output_dir)
    staging = os.path.join(parent, f".{name}.partial-{uuid.uuid4().hex[:12]}")
    os.makedirs(staging)
    try:
        written = ordered.rdd.mapPartitions(
            _shard_writer(staging, check_images)
        ).collect()
        by_shard = {shard: (indices, bad) for shard, indices, bad in written}
        missing = sorted(set(range(len(members_of))) - set(by_shard))
        if missing:
            raise RuntimeError(
                f"shards {missing} were not written: did the DataFrame change between its two "
                "reads? (cache it, or write it to Parquet first)"
            )
        names = shard_file_names(len(members_of))
        for shard, final in enumerate(names):
            os.replace(os.path.join(staging, _staged_name(shard)), os.path.join(staging, final))
        for leftover in set(os.listdir(staging)) - set(names):  # failed task attempts' files
            os.remove(os.path.join(staging, leftover))
        unreadable, left_out = {}, []
        for shard in range(len(members_of)):
            for index, reason in by_shard[shard][1]:
                unreadable[files[index]] = reason
                # Still keyed in the split (`left_out`), as the converter's left-out files are.
                left_out.append([index, files[index]])
                files[index] = None
        layout = write_layout(
            staging, class_names, files, labels,
            [{"file": names[shard], "indices": by_shard[shard][0]}
             for shard in range(len(members_of))],
            left_out=sorted(left_out), unreadable=unreadable,
        )
        if os.path.isdir(output_dir):
            os.rmdir(output_dir)  # empty (checked above); a rename replaces no full folder
        os.rename(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return layout


def _shard_writer(staging, check_images):
    """The function each task runs over its rows `(shard, index, label, key, image)`."""

    def write(rows):
        import tensorflow as tf
        from pyspark import TaskContext

        from imgclf.data.tfrecord import encode_record

        reason_of = _image_checker() if check_images else (lambda image: None)
        attempt = TaskContext.get().taskAttemptId()
        shard, writer, indices, bad, partial = None, None, [], [], None

        def finish():
            writer.close()
            os.replace(partial, os.path.join(staging, _staged_name(shard)))
            return shard, indices, bad

        for row_shard, index, label, key, image in rows:
            if row_shard != shard:
                if writer is not None:
                    yield finish()
                shard, indices, bad = row_shard, [], []
                partial = os.path.join(staging, f"{_staged_name(shard)}.attempt-{attempt}")
                writer = tf.io.TFRecordWriter(partial)
            reason = reason_of(image)
            if reason is not None:
                bad.append((index, reason))
                continue
            writer.write(encode_record(bytes(image), label, key, index))
            indices.append(index)
        if writer is not None:
            yield finish()

    return write


def _image_checker():
    """`reason(image_bytes)`: None if the image decodes as training will decode it, else why."""
    import tensorflow as tf

    from imgclf.data.pipeline import decode_error, image_decoder

    decoder = image_decoder(_CHECK_SIZE)

    def reason(image):
        if image is None:
            return "no image bytes (null)"
        image = bytes(image)
        try:
            decoder(tf.constant(image))
        except tf.errors.OpError:
            return decode_error(decoder, image)
        return None

    return reason


def _staged_name(shard):
    return f"shard-{shard:05d}.tfrecord"


def _partition_keys(spark, count):
    """For each partition p of `count`, a number that `repartition(count, column)` sends to p.

    Spark places a row by the Murmur3 hash of the column; asking Spark for the hash of a few
    candidates gives each shard its own partition, where hashing shard numbers would put some
    shards together and leave other tasks idle.
    """
    from pyspark.sql import functions as F

    found = {}
    for row in spark.range(0, 64 * count).select(
        "id", F.pmod(F.hash("id"), F.lit(count)).alias("partition")
    ).collect():
        found.setdefault(row["partition"], row["id"])
    return [found[p] for p in range(count)]


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
