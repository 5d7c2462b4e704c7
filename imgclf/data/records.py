"""Image classification data sets read from TFRecord shards written by `imgclf.data.tfrecord`.

    >>> train_ds, val_ds = create_train_val_datasets("records/train", (224, 224), 32)
    >>> test_ds = create_test_dataset("records/test", (224, 224), 32, train_ds.class_names)

They yield what the folder loader's data sets yield (`imgclf.data.folders`): float32 0-255
images and int32 labels, with `.class_names`, and the same train/validation split of the same
files. Each shard file is read whole and its images are cut out of it where the layout says
they lie (`spans`): no record is parsed, and a validation record costs the training set no more
than its share of one read. The training set reads up to `SHARDS_IN_FLIGHT` shards at a time
(no more than the machine has cores, fewer when they are large: `SHARDS_IN_FLIGHT_BYTES`), in
parallel, each epoch in an order drawn from (seed, epoch): the shards and each shard's
records; it takes the records of up to `SHARDS_MIXED` shards in turn, one from each (fewer
when they are large: `SHARDS_MIXED_BYTES`), so that every batch holds records of that many.
Validation and test sets read the shards in order. `.file_paths` holds the records' original
paths relative to the converted folder (in the order of the batches for a test set);
`.opened_shard_files` the shard files this process has opened so far.

With `input_context` (`tf.distribute.InputContext`) the training set reads only its input
pipeline's shard files (every n-th), the "shard by file" of multi-worker training: convert with
at least as many shards as workers (`--num_shards`). Its `.records_per_pipeline` then lists
how many training records each input pipeline reads (bad ones included).

A record whose image does not decode is found during the first epoch and named in a warning of
the `imgclf.data` logger, like a bad file: `skipping unreadable record 'cat/7.jpg' in
'records/train/data-00000-of-00002.tfrecord': Input is empty.`
"""

import hashlib
import logging
import os

import numpy as np
import tensorflow as tf

from imgclf.data.pipeline import (
    FirstPassCheck,
    check_batch_size,
    check_cache,
    check_image_shape,
    decode_error,
    decoded_batches,
    image_decoder,
    worker_cache,
)
from imgclf.data.epochs import EpochCounter, by_epoch, seed_tensor
from imgclf.data.one_device import one_device_functions
from imgclf.data.split import check_split_ratio, shard, stratified_split
from imgclf.data.tfrecord import read_layout, scan_spans

logger = logging.getLogger("imgclf.data")

#: Shard files a training set reads at a time, at most: each is held in memory while it is read.
#: No more than the machine has cores either: from the page cache a read is CPU work, taken from
#: the decoding (on 2 cores, 2 at a time ran at 0.92 of the folder's speed, 8 at 0.87).
SHARDS_IN_FLIGHT = 8

#: Memory the shard files a training set reads at a time may take, about (parallel reads hold
#: the next ones too).
SHARDS_IN_FLIGHT_BYTES = 1 << 30

#: Shards a training set mixes at a time, at most: it takes their records in turn, one from each.
SHARDS_MIXED = 8

#: Memory the records of the shards a training set mixes may take, about: with large shards it
#: mixes fewer (but always two, if it has two), and an epoch's first batch waits for them all.
SHARDS_MIXED_BYTES = 256 << 20

_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/index": tf.io.FixedLenFeature([], tf.int64),
}


@one_device_functions()
def create_train_val_datasets(directory, image_shape, batch_size, split_ratio=0.8, seed=42,
                              cache=None, input_context=None, writer=True):
    """A training and a validation data set from TFRecord shards, split as the folder would be.

    Arguments and results as `imgclf.data.folders.create_train_val_datasets`. A record's key in
    the split is the path relative to the converted folder it holds (`image/filename`), so the
    records split as the folder's files do.
    """
    image_size = check_image_shape(image_shape)
    batch_size = check_batch_size(batch_size)
    check_split_ratio(split_ratio)
    directory = os.fspath(directory)
    layout = read_layout(directory)
    class_names = layout["class_names"]
    files = _split_keys(layout)
    cache = check_cache(cache, len(files), image_size)
    # Every file the folder listed takes part, also those the converter left out as unreadable,
    # as in the folder's split; records of those files do not exist and drop out.
    train_positions, val_positions = (
        [i for i in side if layout["files"][i] is not None]
        for side in stratified_split(files, layout["labels"], len(class_names), split_ratio, seed)
    )
    if not val_positions:
        raise ValueError(
            f"the validation set would be empty: every class in '{directory}' has a single "
            "record; a class needs two to give one to validation"
        )
    shards = layout["shards"]
    if input_context is not None:
        if len(shards) < input_context.num_input_pipelines:
            raise ValueError(
                f"'{directory}' has {len(shards)} shard files, fewer than the "
                f"{input_context.num_input_pipelines} input pipelines; convert it again with "
                f"--num_shards {input_context.num_input_pipelines} or more"
            )
        all_shards = shards
        shards = shard(shards, input_context=input_context)
    train_ids_all = train_positions
    in_my_shards = {i for entry in shards for i in entry["indices"]}
    train_ids = [i for i in train_ids_all if i in in_my_shards]
    val_ids = val_positions
    train_ds = _record_dataset(
        directory, layout, shards, train_ids, image_size, batch_size, "train", seed,
        worker_cache(cache, writer, len(train_ids), image_size, own_share=input_context is not None),
    )
    if input_context is not None:
        # Every pipeline's share, known to each worker without asking the others: what a
        # multi-worker run needs to agree on a number of steps (`imgclf.training.train`).
        wanted = set(train_ids_all)
        train_ds.records_per_pipeline = [
            sum(i in wanted for entry in shard(all_shards, input_context.num_input_pipelines, k)
                for i in entry["indices"])
            for k in range(input_context.num_input_pipelines)
        ]
    val_ds = _record_dataset(directory, layout, layout["shards"], val_ids, image_size, batch_size,
                             "validation", None, worker_cache(cache, writer, len(val_ids), image_size))
    return train_ds, val_ds


@one_device_functions()
def create_test_dataset(directory, image_shape, batch_size, class_names=None, cache=None,
                        writer=True):
    """A data set of all the records of a TFRecord directory, in shard order, to evaluate a model.

    Arguments and results as `imgclf.data.folders.create_test_dataset`; `class_names` must equal
    the converted folder's classes.
    """
    image_size = check_image_shape(image_shape)
    batch_size = check_batch_size(batch_size)
    directory = os.fspath(directory)
    layout = read_layout(directory)
    if class_names is not None and [str(name) for name in class_names] != layout["class_names"]:
        raise ValueError(
            f"the classes of '{directory}' do not match the model's classes: "
            f"{layout['class_names']} != {list(class_names)}"
        )
    ids = [i for entry in layout["shards"] for i in entry["indices"]]
    cache = worker_cache(check_cache(cache, len(ids), image_size), writer, len(ids), image_size)
    return _record_dataset(directory, layout, layout["shards"], ids, image_size, batch_size,
                           "test", None, cache)


def encoded_records(directory, positions):
    """The encoded images of the records at `positions` of a TFRecord directory, counted in
    shard order (the order of its test set); the shards are read once, up to the last one.
    Positions past the end are left out."""
    directory = os.fspath(directory)
    wanted = {position: None for position in positions}
    last = max(wanted, default=-1)
    position = 0
    for entry in read_layout(directory)["shards"]:
        if position > last:
            break
        for record in tf.data.TFRecordDataset(os.path.join(directory, entry["file"])):
            if position > last:
                break
            if position in wanted:
                wanted[position] = tf.io.parse_single_example(record, _FEATURES)["image/encoded"].numpy()
            position += 1
    return [wanted[position] for position in positions if wanted[position] is not None]


def _split_keys(layout):
    """Every listed file's relative path, by listing position, those left out included (layouts
    written before `left_out` was recorded give their position instead, a key only they use)."""
    keys = list(layout["files"])
    for index, name in layout.get("left_out", []):
        keys[index] = name
    return [key if key is not None else f"\0left out {i}" for i, key in enumerate(keys)]


def _record_dataset(directory, layout, shards, ids, image_size, batch_size, role,
                    shuffle_seed=None, cache=None):
    files, all_labels, class_names = layout["files"], layout["labels"], layout["class_names"]
    shard_of = {i: os.path.join(directory, entry["file"]) for entry in shards
                for i in entry["indices"]}
    wanted = set(ids)
    # In the order the shards are read in (what a test set yields).
    ids = [i for entry in shards for i in entry["indices"] if i in wanted]
    file_paths = [files[i] for i in ids]
    check = FirstPassCheck(
        ids=ids,
        labels=[all_labels[i] for i in ids],
        describe=lambda i: f"record '{files[i]}' in '{shard_of[i]}'",
        explain=lambda missing: _explain(missing, shard_of, image_size),
        class_place=lambda label: f"class '{class_names[label]}' of '{directory}'",
        all_unreadable=(f"none of the {len(ids)} records in '{directory}' can be read; "
                        "see the warnings for each record"),
        file_paths=file_paths,
        path_of=lambda i: files[i],
        reports_attempts=True,
    )
    shard_paths = [os.path.join(directory, entry["file"]) for entry in shards]
    # Per shard, its records of this data set in file order: id, image bytes' span, label.
    rows = []
    for entry, path in zip(shards, shard_paths):
        spans = _image_spans(entry, path) if wanted.intersection(entry["indices"]) else []
        rows.append([(i, start, length, all_labels[i])
                     for i, (start, length) in zip(entry["indices"], spans) if i in wanted])
    ids_in_shard = {path: np.array([row[0] for row in shard_rows], dtype=np.int64)
                    for path, shard_rows in zip(shard_paths, rows)}
    # Only the shards that hold records of this data set are read. Each is an element of
    # `shard_files`: its position, its path and its records' rows, so that the function that
    # reads it slices nothing. That function is made anew each time an epoch opens the data set
    # (it runs inside the epoch's `flat_map`): the fewer its ops, the sooner the first batch.
    read_shards = [k for k, shard_rows in enumerate(rows) if shard_rows]
    records_of_shards = tf.RaggedTensor.from_row_lengths(
        tf.constant(np.array([row for k in read_shards for row in rows[k]],
                             dtype=np.int64).reshape(-1, 4)),
        [len(rows[k]) for k in read_shards])
    shard_files = tf.data.Dataset.from_tensor_slices((
        tf.constant(read_shards, tf.int64),
        tf.constant([shard_paths[k] for k in read_shards], tf.string),
        records_of_shards,
    ))

    opened = set()

    def attempt(path):
        path_name = path.numpy().decode("utf-8")
        opened.add(path_name)  # which shard files this process really read (tests, logs)
        check.attempt(ids_in_shard[path_name])
        return path

    @tf.autograph.experimental.do_not_convert
    def shard_elements(k, path, records, seed=None):
        # One shard file read whole, and the image bytes of this data set's records (rows of
        # id, start, length, label) cut out of it: no record is parsed, and of the records only
        # those bytes are copied. A training set takes them in an order drawn from `seed`.
        path = tf.ensure_shape(tf.py_function(attempt, [path], tf.string), [])
        contents = tf.io.read_file(path)
        if seed is not None:
            records = tf.random.experimental.stateless_shuffle(records, tf.stack([seed, k]))
        return (records[:, 0], tf.strings.substr(contents, records[:, 1], records[:, 2]),
                tf.cast(records[:, 3], tf.int32))

    @tf.autograph.experimental.do_not_convert
    def shard_records(*shard):
        return tf.data.Dataset.from_tensor_slices(shard)

    counter = EpochCounter()
    in_flight = _shards_in_flight([shards[k] for k in read_shards])
    if shuffle_seed is not None:
        # Shards in an order from (seed, epoch), as for folders (`imgclf.data.epochs`), each
        # shard's records too, and the records of `mixed` shards at a time taken in turn, one
        # from each (shards written by Spark hold what its partitions held, maybe of one class
        # each): every batch holds records of as many shards. Taking them in turn costs nothing
        # per record; a shuffle buffer of the images cost 4-6 % of a later epoch's CPU.
        mixed = _shards_mixed([shards[k] for k in read_shards])

        @tf.autograph.experimental.do_not_convert
        def one_epoch(epoch):
            seed = seed_tensor(shuffle_seed, epoch)
            return (
                shard_files.shuffle(max(1, len(read_shards)), seed=seed)
                .map(lambda k, path, records: shard_elements(k, path, records, seed),
                     num_parallel_calls=in_flight)
                .interleave(shard_records, cycle_length=mixed, block_length=1)
            )

        elements = by_epoch(counter, one_epoch)
    else:
        elements = shard_files.map(shard_elements, num_parallel_calls=in_flight).unbatch()
    cache_name = role
    if cache not in (None, "memory"):
        digest = hashlib.sha256(repr((tuple(image_size), ids)).encode())
        for path in shard_paths:
            status = os.stat(path)
            digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\0".encode())
        cache_name = f"{role}-{digest.hexdigest()[:20]}"
    dataset = decoded_batches(
        elements, tf.identity, image_size, batch_size,
        check, shuffle_seed=shuffle_seed, cache=cache, cache_name=cache_name,
    )
    dataset.class_names = list(class_names)
    dataset.file_paths = file_paths
    dataset.first_pass_check = check
    dataset.opened_shard_files = opened
    dataset.start_epoch = counter.start
    return dataset


def _explain(missing, shard_of, image_size):
    """`{id: reason}` for records that did not decode: each of their shards is read once."""
    reasons = {}
    missing = set(missing)
    for shard_path in sorted({shard_of[i] for i in missing}):
        for record in tf.data.TFRecordDataset(shard_path):
            example = tf.io.parse_single_example(record, _FEATURES)
            index = int(example["image/index"])
            if index in missing:
                reasons[index] = decode_error(image_decoder(image_size), example["image/encoded"])
    return reasons


def _image_spans(entry, path):
    """A shard's `spans` (`imgclf.data.tfrecord`), checked against its file. For a layout written
    without them they are read from the records once, and kept in `entry` with the file's size
    (the in-memory layout the training and validation sets share)."""
    try:
        size = tf.io.gfile.stat(path).length
    except tf.errors.NotFoundError:
        raise FileNotFoundError(
            f"shard file '{path}' of the TFRecord data set is missing") from None
    if "spans" not in entry:
        logger.info("finding the images in '%s' (its layout does not say where they are; a "
                    "conversion with this imgclf does)", path)
        spans = entry["spans"] = scan_spans(path)
        entry["bytes"] = size
    elif size != entry.get("bytes"):
        raise ValueError(
            f"shard file '{path}' has {size} bytes, its layout says {entry.get('bytes')}: it "
            "changed since it was written; convert the data set again"
        )
    else:
        spans = entry["spans"]
    if len(spans) != len(entry["indices"]):
        raise ValueError(
            f"shard file '{path}' holds {len(spans)} records, its layout lists "
            f"{len(entry['indices'])}; convert the data set again"
        )
    return spans


def _shards_mixed(shards):
    """How many of `shards` (layout entries, checked by `_image_spans`) a training set mixes at a
    time: it depends on the layout alone, so that an epoch's order does too."""
    return max(1, min(len(shards), SHARDS_MIXED,
                      max(2, SHARDS_MIXED_BYTES // (_largest_bytes(shards) + 1))))


def _shards_in_flight(shards):
    """How many of `shards` (layout entries, checked by `_image_spans`) a data set reads at a
    time."""
    return max(1, min(len(shards), SHARDS_IN_FLIGHT, os.cpu_count() or 1,
                      SHARDS_IN_FLIGHT_BYTES // (2 * _largest_bytes(shards) + 1)))


def _largest_bytes(shards):
    """The size in bytes of the largest of `shards` (layout entries checked by `_image_spans`);
    0 for none."""
    return max((entry["bytes"] for entry in shards), default=0)

