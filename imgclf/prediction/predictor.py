"""`Predictor`: a saved model loaded for offline prediction, giving what the served model gives.

    >>> predictor = Predictor.load("models/LenetModel")        # its highest version
    >>> predictor.class_names, predictor.image_size
    (['circle', 'square', 'triangle'], (32, 32))
    >>> columns = predictor.predict_encoded([png_bytes, b"not an image"], top_k=2)
    >>> columns["class"], columns["error"]
    (['circle', None], ['', 'Unknown image file format. One of PNG, JPEG, BMP, GIF, WebP required (JPEG XL is not accepted).'])

Images are decoded by `imgclf.images.decode_image` (the function of `serving_bytes` and
`serving_labels`, traced once by `imgclf.data.pipeline.image_decoder`) in parallel in `tf.data`,
batched, and run through the model's own compiled serving function (`predict_numpy_image`, or
`predict_embeddings` for embeddings): the classes and probabilities are those of
`serving_labels`. An image that does not decode is dropped from its batch by `ignore_errors`
and given back as a row with its error, so one bad image never fails the others.
"""

import collections
import concurrent.futures
import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from imgclf.data.pipeline import decode_error, image_decoder
from imgclf.export.metadata import METADATA_FILE
from imgclf.prediction import columns as col

#: Images per forward pass when none is given: large enough to amortise the per-call cost of a
#: batch on a CPU, small enough to keep a batch of 224 px float32 images (600 KB each) modest.
DEFAULT_BATCH_SIZE = 64

#: How many classes `top_classes` holds when none is given (`serving_labels` gives 5 too).
DEFAULT_TOP_K = 5

KERAS_SUFFIX = ".keras"

#: Sources the pipeline takes from Python at a time.
SOURCE_CHUNK = 256

#: Decoded batches waiting for the model.
PREFETCH_BATCHES = 2


class Predictor:
    """A model ready to label images: its classes, its input size, and one forward pass.

    Make one with `Predictor.load(model_path)`. Attributes:
        model_path: the resolved model (a SavedModel version folder or a `.keras` file).
        class_names: the model's classes, in the order of its logits.
        image_size: `(height, width)` the model takes; images are resized to it.
        fingerprint: `"sha256:..."` of the model's graph and weights files: what prediction
            outputs are keyed by, so that parts of one model are never resumed with another.
        has_embeddings: whether `embeddings=True` is possible.
    """

    def __init__(self, model_path, class_names, image_size, fingerprint, predict_logits,
                 predict_embeddings=None):
        self.model_path = model_path
        self.class_names = list(class_names)
        self.image_size = tuple(int(d) for d in image_size)
        self.fingerprint = fingerprint
        self._predict_logits = predict_logits
        self._predict_embeddings = predict_embeddings
        self._names = np.array(self.class_names, dtype=object)
        self._pool = None

    @property
    def has_embeddings(self):
        return self._predict_embeddings is not None

    @classmethod
    def load(cls, model_path):
        """Load a SavedModel version folder, a model base path (its highest version) or a
        `.keras` file. Raises `FileNotFoundError` or `ValueError` naming the path and what is
        there when it is none of them."""
        path, kind = resolve_model_path(model_path)
        if kind == "keras":
            import keras

            import imgclf.models  # noqa: F401  (registers imgclf's classes with Keras)
            from imgclf.models.base import ImageClassifierModel

            model = keras.models.load_model(path, compile=False)
            if not isinstance(model, ImageClassifierModel):
                raise ValueError(
                    f"model_path '{path}' holds a {type(model).__name__}, not an imgclf "
                    "ImageClassifierModel"
                )
            predictor = cls(path, model.class_names, model.image_size, file_fingerprint([path]),
                            model.predict_numpy_image, model.predict_embeddings)
            # A tf.function method holds its model weakly: the predictor keeps the model alive.
            predictor._loaded = model
            return predictor
        metadata_path = os.path.join(path, METADATA_FILE)
        if not tf.io.gfile.exists(metadata_path):
            raise ValueError(
                f"model_path '{path}' is a SavedModel but not an imgclf one: {METADATA_FILE} is "
                "missing"
            )
        with tf.io.gfile.GFile(metadata_path, "r") as file:
            metadata = json.load(file)
        loaded = tf.saved_model.load(path)
        if not hasattr(loaded, "predict_numpy_image"):
            raise ValueError(
                f"model_path '{path}' has no predict_numpy_image function; save it with "
                "ImageClassifierModel.save"
            )
        fingerprint = file_fingerprint([
            os.path.join(path, "saved_model.pb"),
            os.path.join(path, "variables", "variables.index"),
        ])
        predictor = cls(path, metadata["class_names"], metadata["input_shape"][:2], fingerprint,
                        loaded.predict_numpy_image, getattr(loaded, "predict_embeddings", None))
        predictor._loaded = loaded  # the functions' variables live as long as the predictor
        return predictor

    def predict_encoded(self, contents, paths=None, top_k=DEFAULT_TOP_K, embeddings=False):
        """Predict a batch of encoded images (a list of `bytes`; None counts as empty).

        Returns `{column: list}` aligned with `contents`: the columns of
        `imgclf.prediction.columns` (`path` when `paths` is given, `embedding` only with
        `embeddings`). A bad image (unreadable, truncated, empty, a bomb, an unsupported format)
        gets its `error` and empty predictions.
        """
        contents = [b"" if content is None else bytes(content) for content in contents]
        if paths is not None and len(paths) != len(contents):
            raise ValueError(
                f"paths must have one entry per image; received {len(paths)} paths for "
                f"{len(contents)} images"
            )
        top_k = self._check(top_k, embeddings)
        # A tf.data pipeline costs about a second to start (its functions are instantiated
        # and optimised per iterator): too much per batch. Threads calling the traced decoder
        # (which releases the GIL) decode a batch in parallel instead.
        decoded = list(self._threads().map(self._decode_or_error, contents))
        good = [j for j, (image, _) in enumerate(decoded) if image is not None]
        rows = [col.error_row(reason, embeddings) for _, reason in decoded]
        if good:
            images = np.stack([decoded[j][0] for j in good])
            for j, row in zip(good, self._rows(images, top_k, embeddings)):
                rows[j] = row
        names = [*col.PREDICTION_COLUMNS, *((col.EMBEDDING,) if embeddings else ()), col.ERROR]
        result = col.rows_to_columns(rows, names)
        if paths is not None:
            result = {col.PATH: [str(path) for path in paths], **result}
        return result

    def _decode_or_error(self, content):
        decode = image_decoder(self.image_size)
        try:
            return decode(tf.constant(content)).numpy(), ""
        except tf.errors.OpError:
            return None, _clean(decode_error(decode, content))

    def _threads(self):
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=os.cpu_count() or 1, thread_name_prefix="imgclf-decode"
            )
        return self._pool

    def _check(self, top_k, embeddings):
        if embeddings and not self.has_embeddings:
            raise ValueError(
                f"model_path '{self.model_path}' has no predict_embeddings function (saved by "
                "an imgclf without it, or a network with no layer before its logits); save it "
                "again with ImageClassifierModel.save, or use its .keras file"
            )
        return _check_positive_int("top_k", top_k)

    def predict_sources(self, sources, top_k=DEFAULT_TOP_K, embeddings=False,
                        batch_size=DEFAULT_BATCH_SIZE):
        """Yield one row (a dict of `columns.output_columns`) per source, in order, streaming.

        `sources` is an iterable of `(path, content)`: `content` is the encoded image, or None to
        read it from `path` (through `tf.io.gfile`). For Spark, one call per partition keeps one
        pipeline per partition (starting one costs about a second; see `predict_encoded`).

        Sources are read and decoded in parallel in `tf.data` (AUTOTUNE) a few batches ahead,
        never all at once, so memory does not grow with their number.
        """
        top_k = self._check(top_k, embeddings)
        batch_size = _check_positive_int("batch_size", batch_size)
        height, width = self.image_size
        decode_bytes = image_decoder(self.image_size)
        decode_file = image_decoder(self.image_size, read_file=True)
        # What has gone into the pipeline and not yet come out: an id missing from the batches
        # is a source that did not decode. Bounded by the pipeline's read-ahead.
        pending = collections.deque()

        def generate():
            # In chunks: a Python generator costs per element it yields, a chunk is unbatched
            # by tf.data.
            chunk = []
            for element in enumerate(sources):
                chunk.append(element)
                if len(chunk) == SOURCE_CHUNK:
                    yield _chunk(chunk, pending)
                    chunk = []
            if chunk:
                yield _chunk(chunk, pending)

        @tf.autograph.experimental.do_not_convert
        def load(element_id, path, content, has_content):
            image = tf.cond(has_content, lambda: decode_bytes(content), lambda: decode_file(path))
            return element_id, tf.ensure_shape(image, [height, width, 3])

        batches = (
            tf.data.Dataset.from_generator(generate, output_signature=(
                tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.string),
                tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.bool),
            ))
            .unbatch()
            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .ignore_errors()
            .batch(batch_size)
            # Two batches ahead keep the model busy; AUTOTUNE may grow the buffer towards its
            # RAM budget (half the machine's memory) for no speed.
            .prefetch(PREFETCH_BATCHES)
        )

        def failed(element):
            _, path, content = element
            if content is None:
                reason = decode_error(decode_file, str(path))
            else:
                reason = decode_error(decode_bytes, content)
            return {col.PATH: _name(path), **col.error_row(_clean(reason), embeddings)}

        for ids, images in batches:
            for element_id, row in zip(ids.numpy(), self._rows(images, top_k, embeddings)):
                while pending[0][0] < element_id:
                    yield failed(pending.popleft())
                yield {col.PATH: _name(pending.popleft()[1]), **row}
        while pending:
            yield failed(pending.popleft())

    def _rows(self, images, top_k, embeddings):
        """The prediction rows of a batch of decoded images: one forward pass."""
        if embeddings:
            outputs = self._predict_embeddings(images)
            logits, embedding = outputs["logits"], outputs["embedding"].numpy()
        else:
            logits, embedding = self._predict_logits(images), None
        # As serving_labels: softmax, then the top k, in TensorFlow's float32.
        top = tf.math.top_k(tf.nn.softmax(logits, axis=-1), k=min(top_k, len(self.class_names)))
        indices, values, logits = top.indices.numpy(), top.values.numpy(), logits.numpy()
        for j in range(len(logits)):
            row = {
                col.CLASS: self.class_names[indices[j, 0]],
                col.PROBABILITY: float(values[j, 0]),
                col.TOP_CLASSES: self._names[indices[j]].tolist(),
                col.TOP_PROBABILITIES: values[j].tolist(),
                col.LOGITS: logits[j].tolist(),
            }
            if embeddings:
                row[col.EMBEDDING] = embedding[j].tolist()
            row[col.ERROR] = ""
            yield row


def resolve_model_path(model_path):
    """`(path, kind)` of a model: kind "savedmodel" (a version folder, or the highest version
    under a base path) or "keras" (a `.keras` file). Paths go through `tf.io.gfile`."""
    path = os.fspath(model_path)
    if not path:
        raise ValueError("model_path must name a SavedModel or a .keras file; received ''")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"model_path '{path}' does not exist")
    if path.endswith(KERAS_SUFFIX) and not tf.io.gfile.isdir(path):
        return path, "keras"
    if not tf.io.gfile.isdir(path):
        raise ValueError(
            f"model_path '{path}' is a file but not a {KERAS_SUFFIX} file; give a SavedModel "
            "folder, a model base path or a .keras file"
        )
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path, "savedmodel"
    entries = sorted(name.rstrip("/") for name in tf.io.gfile.listdir(path))
    versions = sorted(
        int(name) for name in entries
        if name.isdigit() and tf.io.gfile.exists(os.path.join(path, name, "saved_model.pb"))
    )
    if versions:
        return os.path.join(path, str(versions[-1])), "savedmodel"
    found = ", ".join(entries[:8]) + (", ..." if len(entries) > 8 else "") if entries else "nothing"
    raise ValueError(
        f"model_path '{path}' is neither a SavedModel (no saved_model.pb) nor a model base path "
        f"(no numbered version folder holding one); found: {found}"
    )


def file_fingerprint(paths):
    """`"sha256:..."` of the contents of `paths` (read through `tf.io.gfile`), in order."""
    digest = hashlib.sha256()
    for path in paths:
        with tf.io.gfile.GFile(path, "rb") as file:
            while True:
                chunk = file.read(1 << 20)
                if not chunk:
                    break
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _chunk(elements, pending):
    """The arrays `from_generator` yields for `[(id, (path, content)), ...]`; each element is
    also put in `pending`, the ids and sources in flight."""
    ids, paths, contents, has_content = [], [], [], []
    for element_id, (path, content) in elements:
        pending.append((element_id, path, content))
        ids.append(element_id)
        paths.append("" if path is None else str(path))
        contents.append(b"" if content is None else content)
        has_content.append(content is not None)
    return (np.array(ids, dtype=np.int64), np.array(paths, dtype=object),
            np.array(contents, dtype=object), np.array(has_content, dtype=bool))


def _name(path):
    return "" if path is None else str(path)


def _clean(reason):
    from imgclf.serving.manager import clean_tf_message

    return clean_tf_message(reason)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; received {value!r}")
    return int(value)
