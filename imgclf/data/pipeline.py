"""The decoding half of every imgclf data set, whatever the files are stored in.

A source (a folder of images, `imgclf.data.folders`; TFRecord shards, `imgclf.data.records`)
yields `(id, source, label)` elements in the order it wants them decoded; `decoded_batches`
turns them into the batches a model trains on: decoded in parallel by
`imgclf.images.decode_image` (the function the serving signatures use; once a pass has checked
every element's header, the next ones skip the checks for bytes that did not change:
`imgclf.data.checked`), optionally kept decoded
as uint8 in memory or on disk (`cache`), batched as float32 0-255 images and int32 labels, and
prefetched.

Bad files cost nothing up front: they are found while the first epoch decodes them. The decoder
drops an element that fails (`ignore_errors`), every batch reports the ids it holds, and at the
end of each pass `FirstPassCheck` names each id that was handed to the decoder but never arrived
in a warning (with the decoder's reason), hands the verdicts to the source to remember, and stops
the pass with an error if a class (or everything) turned out unreadable. A TFRecord source
reports which shard files a pass opened, so that records only another worker reads are never
taken for unreadable; a strategy's sharding by data (what tf.data's AUTO policy falls back to on
these data sets) happens after the check, and multi-worker training shards TFRecord training
sets by file itself (`imgclf.training.distributed`).

    >>> check = FirstPassCheck(ids, labels, describe=..., explain=..., ...)
    >>> dataset = decoded_batches(elements, tf.io.read_file, (224, 224), 32, check, cache="memory")
"""

import contextlib
import functools
import logging
import os
import re
import threading
import warnings

import numpy as np
import tensorflow as tf

from imgclf.cpus import usable_cpus
from imgclf.data.checked import CheckedImages
from imgclf.images import REFUSAL_PREFIX, decode_image

logger = logging.getLogger("imgclf.data")


class FirstPassCheck:
    """Names the elements of a data set that do not decode, at the end of each pass over it.

    Args:
        ids: the element ids (int) one pass yields.
        labels: their labels, in the same order.
        describe: `describe(id)` names an element in messages, e.g. `"image 'data/a/1.png'"`.
        explain: `explain(ids)` returns `{id: reason}`, why each of them does not decode.
        remember: `remember({id: reason})` keeps the verdicts for later data sets (or None).
        class_place: `class_place(label)` names a class in an error, e.g. `"class folder 'x'"`.
        all_unreadable: the error when no element decodes.
        file_paths: a list (the data set's `.file_paths`) whose entries for unreadable elements
            are removed in place; `path_of(id)` gives an element's entry.
        reports_attempts: the source calls `attempt(ids)` with the ids each pass hands to the
            decoder; otherwise a pass hands it every id.
    """

    def __init__(self, ids, labels, describe, explain, class_place, all_unreadable,
                 remember=None, file_paths=None, path_of=None, reports_attempts=False):
        self.ids = np.asarray(ids, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.describe = describe
        self.explain = explain
        self.remember = remember
        self.class_place = class_place
        self.all_unreadable = all_unreadable
        self.file_paths = file_paths
        self.path_of = path_of
        self.reports_attempts = reports_attempts
        size = int(self.ids.max()) + 1 if len(self.ids) else 0
        self.attempted = np.zeros(size, dtype=bool)
        self.seen = np.zeros(size, dtype=bool)
        self.unreadable = {}
        #: `{id: reason}` of the elements that went missing for the first time in the last pass.
        self.last_missing = {}
        #: Whether every element the last pass handed to the decoder arrived.
        self.all_arrived = False
        #: The message of the data error that stopped a pass, if any.
        self.error = None
        self._lock = threading.Lock()

    def attempt(self, ids):
        """Called with the ids about to be decoded."""
        self.attempted[ids] = True

    def mark(self, ids):
        """Called with the ids of every batch."""
        self.seen[ids] = True

    def finish(self, seen=None):
        """Called at the end of every complete pass: names what never arrived (the ids marked,
        or those `seen`, a bool array over ids, holds true)."""
        with self._lock:
            if seen is not None:
                self.seen[:] = seen
            arrived = self.seen[self.ids]
            attempted = (self.attempted[self.ids] if self.reports_attempts
                         else np.ones(len(self.ids), dtype=bool))
            self.attempted[:] = False
            self.seen[:] = False
            self.all_arrived = bool(arrived[attempted].all())
            missing = [
                int(i) for i in self.ids[attempted & ~arrived] if int(i) not in self.unreadable
            ]
            self.last_missing = {}
            if missing:
                reasons = self.explain(missing)
                for element_id in missing:
                    reason = reasons.get(element_id, ReadFailure("could not be read"))
                    logger.warning("skipping unreadable %s: %s", self.describe(element_id), reason)
                    if not isinstance(reason, DecodesNow):
                        self.unreadable[element_id] = reason
                    self.last_missing[element_id] = reason
                if self.remember is not None:
                    # Only verdicts on the bytes outlive the pass: a read that failed (an I/O
                    # error, a vanished file) may succeed next time.
                    self.remember({i: reason for i, reason in reasons.items()
                                   if i in missing and not isinstance(reason, ReadFailure)})
                if self.file_paths is not None:
                    gone = {self.path_of(i) for i in missing if i in self.unreadable}
                    self.file_paths[:] = [path for path in self.file_paths if path not in gone]
            self.error = None
            if attempted.all():  # a shard of the data set may lack classes; the whole may not
                readable = np.array([int(i) not in self.unreadable for i in self.ids], dtype=bool)
                self.error = data_error(
                    self.labels, readable, self.class_place, self.all_unreadable
                )
        if self.error:
            raise tf.errors.InvalidArgumentError(None, None, self.error)


class ReadFailure(str):
    """A reason an element did not arrive that is not about its bytes: it could not be read (an
    I/O error, permission denied, a vanished file) or it decodes now. Named in the warning like any
    reason, but never remembered (`FirstPassCheck`'s `remember` gets only verdicts on the bytes).

        >>> ReadFailure("could not be read: Permission denied")
    """


class DecodesNow(ReadFailure):
    """The `ReadFailure` of an element that decodes now: the read failed, its bytes changed while
    the pass read them, or the pass lost it with another element's batch. Named in the warning,
    but not counted as unreadable: it stays in `file_paths` and in its class.
    """


def check_image_shape(image_shape):
    """`(height, width)` from an `image_shape` of `(height, width, 3)` or `(height, width)`."""
    try:
        shape = tuple(image_shape)
        valid = all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1 for d in shape
        )
    except TypeError:
        valid = False
    if not valid or len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 3):
        raise ValueError(
            f"image_shape must be (height, width, 3) or (height, width); received {image_shape!r}"
        )
    return int(shape[0]), int(shape[1])


def check_batch_size(batch_size):
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer; received {batch_size!r}")
    return int(batch_size)


def data_error(labels, readable, class_place, all_unreadable, num_classes=None):
    """The error message when nothing, or no image of some class, is readable; else None."""
    labels = np.asarray(labels)
    if len(labels) and not readable.any():
        return all_unreadable
    classes = range(num_classes) if num_classes is not None else np.unique(labels)
    empty = sorted(set(int(c) for c in classes) - set(int(c) for c in labels[readable]))
    if empty:
        return "no readable images in " + ", ".join(class_place(c) for c in empty)
    return None


def decode_error(decoder, element):
    """Why one element does not decode: the decoder's message without TensorFlow's node details.

    `decoder` is an `image_decoder` (a traced graph, like the pipeline's, so that messages, an
    Assert's in particular, read the same), `element` what it takes (a path or encoded bytes).
    """
    try:
        decoder(tf.constant(element))
    except tf.errors.OpError as error:
        lines = [line.strip() for line in error.message.splitlines()]
        message = next(line for line in reversed(lines) if line and not line.startswith("[["))
        message = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*$", "", message)
        message = message.replace(REFUSAL_PREFIX, "")
        return message.strip()
    # Decoded fine now: the read failed, or the file changed while the pass read it.
    return DecodesNow("could not be read (it decodes now; did it change while being read?)")


def explain_file(path, image_size):
    """Why the image file `path` did not decode: a `ReadFailure` when it cannot be read (or decodes
    now), else the decoder's verdict on its bytes (see `decode_error`)."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        return ReadFailure(f"could not be read: {error.strerror or error}")
    return decode_error(image_decoder(image_size), data)


def check_cache(cache, num_images, image_size):
    """Validate a `cache` argument: None, "memory" (if the images fit) or a directory path."""
    if cache is None:
        return None
    if not isinstance(cache, (str, os.PathLike)) or not os.fspath(cache):
        raise ValueError(f"cache must be None, 'memory' or a directory; received {cache!r}")
    cache = os.fspath(cache)
    if cache == "memory":
        needed, available = _memory_needed(num_images, image_size), _available_memory()
        if available is not None and needed > 0.8 * available:
            raise ValueError(
                f"cache='memory' needs {needed / 2**30:.1f} GiB for {num_images} images of "
                f"{image_size[0]}x{image_size[1]}, more than the {available / 2**30:.1f} GiB of "
                "memory available; cache to a directory instead"
            )
        return cache
    if os.path.exists(cache) and not os.path.isdir(cache):
        raise ValueError(f"cache directory '{cache}' is a file")
    return cache


def worker_cache(cache, writer, num_images, image_size, own_share=False):
    """The cache of one data set in this process, from a checked `cache` argument.

    Only the `writer` (the chief of a multi-worker run) writes cache files into a cache
    directory, which the workers share: two processes writing one cache file break it. Another
    worker keeps its decoded images in memory instead when they fit (else does not cache them),
    unless the data set is its `own_share` of the files (a TFRecord training set sharded by
    file), whose cache file no other worker writes.

        >>> cache = worker_cache("/cache", writer=False, num_images=500, image_size=(224, 224))
    """
    if writer or own_share or cache in (None, "memory"):
        return cache
    available = _available_memory()
    if available is not None and _memory_needed(num_images, image_size) > 0.4 * available:
        logger.info("not caching %d images: cache directory '%s' is written by the chief only, "
                    "and they need too much memory", num_images, cache)
        return None
    return "memory"


def _memory_needed(num_images, image_size):
    return num_images * image_size[0] * image_size[1] * 3


def _available_memory():
    try:
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=None)
def image_decoder(image_size, read_file=False):
    """`imgclf.images.decode_image` for `image_size` as a `tf.function`, traced once and shared
    by the verdicts on single files, evaluation and prediction. With `read_file`, it takes a path
    and reads the file first. The data sets trace `decode_image`'s parts into their own maps
    instead (`decoded_batches`: a nested function call would run outside the single-threaded
    executor).

        >>> image = image_decoder((224, 224), read_file=True)(tf.constant("cat.jpg"))
    """
    def decode(source):
        return decode_image(tf.io.read_file(source) if read_file else source, image_size)

    # decode_image has no Python control flow on tensors: AutoGraph would only cost time.
    return tf.function(decode, input_signature=[tf.TensorSpec([], tf.string)], autograph=False)


def inline_parallel_map(dataset, function):
    """`dataset.map(function, num_parallel_calls=AUTOTUNE)` whose calls each run all their ops in
    the thread that makes the call (TensorFlow's single-threaded executor).

    By default a map's function hands each op that TensorFlow deems expensive (decoding,
    resizing, reading a JPEG's header, a string conversion...) to the inter-op thread pool and
    waits for it; with `decode_image`'s few dozen ops per image, the hand-offs and the pool's
    spinning threads cost a tenth of the CPU of decoding. The calls already run in parallel, one
    per image: each one needs no threads of its own. `function` must have no control flow
    (`decode_image` has none); without the private map class this needs, a plain map.
    """
    try:
        from tensorflow.python.data.ops.map_op import _ParallelMapDataset
    except ImportError:  # another TensorFlow: the public map, slower
        return dataset.map(function, num_parallel_calls=tf.data.AUTOTUNE)
    return _ParallelMapDataset(
        dataset, function, num_parallel_calls=tf.data.AUTOTUNE, deterministic=None,
        use_inter_op_parallelism=False, preserve_cardinality=True,
    )


def without_autotuning():
    """`tf.data.Options` for a pipeline whose every parallel stage runs on all the cores, with
    tf.data's autotuning (its model thread) off.

    Closing an autotuned iterator waits for the rest of the model thread's optimisation period:
    the cancellation wakes the thread before it reads as cancelled (TensorFlow's
    `Model::OptimizeLoop`), so the thread goes back to sleep. The period doubles from 10 ms up
    to 60 s while an iterator lives, and Keras closes each epoch's iterators: 0.25-0.35 s after
    half of the one-second epochs of bench/input_pipeline_bench.py, 8.5 s after a 12 s one. A
    data set that decodes images is CPU-bound: every core decoding is what autotuning would
    choose, and each parallel stage here gets that many calls at once.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    options.autotune.initial_parallelism = usable_cpus()
    return options


#: How many cached images a training set reshuffles at a time, when it is cached.
CACHED_SHUFFLE_WINDOW = 2048


def decoded_batches(elements, read, image_size, batch_size, check, shuffle_seed=None,
                    cache=None, cache_name="images"):
    """Batches `(float32 [batch, h, w, 3] 0-255, int32 [batch])` from `(id, source, label)`.

    Args:
        elements: a data set of `(id, source, label)`; `read(source)` gives the encoded image
            (`tf.io.read_file` of a path, or the bytes themselves), decoded and resized as
            `imgclf.images.decode_image` does. Without a cache, the passes after one that
            checked every element's header decode the bytes it checked without checking them
            again (`imgclf.data.checked`).
        check: the data set's `FirstPassCheck`.
        shuffle_seed: for a training set whose `elements` are shuffled: with a cache, cached
            epochs replay the first epoch's order reshuffled `CACHED_SHUFFLE_WINDOW` at a time.
        cache: None, "memory" or a directory: decoded images are kept as uint8 (a quarter of
            float32) after the first epoch, in memory or in `<cache>/<cache_name>.*` files.
            Rounding to uint8 moves a resized pixel by at most 0.5; images already of the
            model's size are exact.
    """
    height, width = image_size

    def decoding(pass_elements, decode):
        # `decode(element_id, encoded, image_size)` gives the image, or `(image, known)`: traced
        # into the map's own function. Elements are `(id, image, label, known)`.
        @tf.autograph.experimental.do_not_convert
        def load_element(element_id, source, label):
            decoded = decode(element_id, read(source), image_size)
            image, known = decoded if isinstance(decoded, tuple) else (decoded, tf.constant(True))
            image = tf.ensure_shape(image, [height, width, 3])
            if cache is not None:
                image = tf.cast(tf.round(image), tf.uint8)
            return element_id, image, label, known

        return inline_parallel_map(pass_elements, load_element)

    checked = None
    if cache is not None:
        # Decoded once, then read from the cache: a bad file dropped instead of ending the pass.
        dataset = decoding(elements, lambda element_id, encoded, size: decode_image(encoded, size))
        dataset = dataset.ignore_errors()
        if cache == "memory":
            dataset = dataset.cache()
        else:
            os.makedirs(cache, exist_ok=True)
            dataset = dataset.cache(os.path.join(cache, cache_name))
        if shuffle_seed is not None:
            dataset = dataset.shuffle(
                CACHED_SHUFFLE_WINDOW, seed=shuffle_seed, reshuffle_each_iteration=True
            )
        dataset = dataset.batch(batch_size)
    else:
        # Each pass either checks every element (the first, and any after bytes changed) or
        # trusts the bytes a check let through (`imgclf.data.checked`); only one of the two
        # yields. A checking pass drops a bad file instead of ending; a trusting pass decodes
        # straight into its batches (tf.data fuses the map and the batching, which saves a copy
        # of every image; its decoding never raises for bytes) and its images not `known` are
        # left out below; a batch with a file that cannot be read any more is dropped, and its
        # images named at the end of the pass.
        checked = CheckedImages(len(check.seen))
        trusting = decoding(checked.on_passes(elements, trusting=True), checked.trust)
        checking = decoding(elements, checked.check).ignore_errors().batch(batch_size)
        dataset = (
            trusting.batch(batch_size)
            .ignore_errors()
            .concatenate(checked.on_passes(checking, trusting=False))
        )

    # Which ids arrived is carried through the pass in the graph (a `scan` over the batches), not
    # reported batch by batch to Python: a `py_function` per batch waits for the GIL, which the
    # training loop's thread holds, and stalled the pipeline. Python hears once, at the end.
    # Every stage with a function costs 2-5 ms each time a pass opens the data set (an epoch of
    # 2,000 images lasts about a second), so one function does it all.
    def finish(seen):
        try:
            check.finish(seen)
        finally:
            if checked is not None:
                missing = check.last_missing
                checked.end_pass(list(missing), transient=any(
                    isinstance(reason, ReadFailure) for reason in missing.values()),
                    all_arrived=check.all_arrived)

    def seldom(seen, images, labels, known):
        # In Python, for the few batches that need it: a batch with images a trusting pass did
        # not decode (bytes changed since they were checked) loses them, and the batch that ends
        # the pass (label -1) runs the check. A branch with these ops in the graph would cost
        # 10 ms more each time a pass opens the data set.
        images, labels, known = images.numpy(), labels.numpy(), known.numpy()
        if labels.min(initial=0) < 0:
            finish(seen.numpy())
            return images[:0], labels[:0]
        return images[known], labels[known]

    @tf.autograph.experimental.do_not_convert
    def step(seen, batch):
        ids, images, labels, known = batch
        seen = tf.tensor_scatter_nd_update(seen, ids[:, None], known)

        def rare():
            kept_images, kept_labels = tf.py_function(
                seldom, [seen, images, labels, known], [images.dtype, tf.int32],
                name="imgclf_pass_bookkeeping")
            return tf.ensure_shape(kept_images, images.shape), tf.ensure_shape(kept_labels, [None])

        images, labels = tf.cond(tf.reduce_all(known) & tf.reduce_all(labels >= 0),
                                 lambda: (images, labels), rare)
        return seen, (tf.cast(images, tf.float32), labels)

    # After the last batch, one that ends the pass (no image, the label -1): it runs the check,
    # then is dropped with any batch left empty.
    end = tf.data.Dataset.from_tensors((
        tf.zeros([0], tf.int64), tf.zeros([0, height, width, 3], dataset.element_spec[1].dtype),
        tf.constant([-1], tf.int32), tf.zeros([0], tf.bool),
    ))
    batches = (
        dataset.concatenate(end)
        .scan(tf.zeros([len(check.seen)], tf.bool), step)
        .filter(tf.autograph.experimental.do_not_convert(
            lambda images, labels: tf.shape(images)[0] > 0))
        .prefetch(tf.data.AUTOTUNE)
        .with_options(without_autotuning())
    )
    #: Which bytes passed the checks, and whether the next pass trusts them (None with a cache).
    batches.checked_images = checked
    return batches


#: What an imgclf data set carries besides its elements (see `keep_attributes`).
DATASET_ATTRIBUTES = ("checked_images", "class_names", "file_paths", "first_pass_check",
                      "opened_shard_files", "records_per_pipeline", "start_epoch")


def keep_attributes(source, derived):
    """`derived`, a transformation of the imgclf data set `source` (`map`, `with_options`...),
    given `source`'s `DATASET_ATTRIBUTES`, so it still names its classes and files and still
    reports its first pass's data errors.

        >>> augmented = keep_attributes(train_ds, train_ds.map(augment))
    """
    for name in DATASET_ATTRIBUTES:
        if hasattr(source, name):
            setattr(derived, name, getattr(source, name))
    return derived


@contextlib.contextmanager
def first_pass_errors(*datasets):
    """Around training or evaluation on imgclf data sets: a data error found by a first pass
    (a class, or everything, unreadable) is raised as the `ValueError` it is, not as
    TensorFlow's wrapped error; and Keras' warning that a data set of unknown length "ran out of
    data" in its first epoch (how every first pass ends) is not shown.

        >>> with first_pass_errors(train_ds, val_ds):
        ...     model.fit(train_ds, validation_data=val_ds)
    """
    checks = [getattr(d, "first_pass_check", None) for d in datasets]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        try:
            yield
        except tf.errors.OpError:
            for check in checks:
                if check is not None and check.error:
                    raise ValueError(check.error) from None
            raise
