"""The SavedModel contract with TensorFlow Serving: signature names, their inputs, and saving.

An imgclf SavedModel has three signatures, all fed by the same forward pass:

=================  =======================  =========================================================
signature          input                    outputs
=================  =======================  =========================================================
serving_default    ``input_tensor``         ``output_0``: logits float32 ``[-1, num_classes]``
                   float32 ``[-1,-1,-1,3]``
serving_bytes      ``image_bytes_string``   ``output_0``: logits float32 ``[-1, num_classes]``
                   string, scalar or 1-D
serving_labels     ``image_bytes_string``   ``classes`` (string), ``class_ids`` (int64),
                                            ``probabilities`` (float32), each ``[-1, k]``
=================  =======================  =========================================================

    >>> loaded = tf.saved_model.load("models/LenetModel/1")
    >>> loaded.signatures["serving_labels"](image_bytes_string=tf.constant(png_bytes))["classes"]
"""

import os
import shutil
import uuid

import tensorflow as tf

INPUT_TENSOR_SPEC = tf.TensorSpec([None, None, None, 3], tf.float32, name="input_tensor")
IMAGE_BYTES_SPEC = tf.TensorSpec(None, tf.string, name="image_bytes_string")
TOP_K = 5

#: Signature key -> the model's `tf.function` that serves it.
SIGNATURE_FUNCTIONS = {
    "serving_default": "predict_numpy_image",
    "serving_bytes": "predict_bytes_image",
    "serving_labels": "predict_labels",
}


def servable_signatures(model):
    """The concrete functions of `model`'s serving methods, keyed by signature name."""
    return {
        key: getattr(model, method).get_concrete_function()
        for key, method in SIGNATURE_FUNCTIONS.items()
    }


def save_servable(model, path, overwrite=True, options=None):
    """Write `model` as a SavedModel with its serving signatures at directory `path`, atomically.

    The SavedModel is written into a hidden directory beside `path` and renamed into place, so a
    reader (TensorFlow Serving polling a model base path) sees either nothing or all of it.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{name}.saving-{uuid.uuid4().hex[:8]}")
    try:
        tf.saved_model.save(model, staging, signatures=servable_signatures(model), options=options)
        _replace_directory(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _replace_directory(source, target):
    """Rename directory `source` to `target`, replacing a `target` that exists."""
    if not os.path.exists(target):
        os.rename(source, target)
        return
    retired = f"{target}.replaced-{uuid.uuid4().hex[:8]}"
    os.rename(target, retired)
    try:
        os.rename(source, target)
    except OSError:
        os.rename(retired, target)
        raise
    shutil.rmtree(retired, ignore_errors=True)
