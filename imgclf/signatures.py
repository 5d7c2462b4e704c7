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

import json
import os
import shutil
import uuid

import numpy as np
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


#: Where TF Serving looks for requests to replay before a version turns AVAILABLE.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
#: imgclf's description of the model (class names, input shape) for clients that want it.
METADATA_FILE = os.path.join("assets.extra", "imgclf.json")


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
        write_warmup_requests(staging, model.image_shape)
        _write_json(os.path.join(staging, METADATA_FILE), model_metadata(model))
        _replace_directory(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def model_metadata(model):
    """What a client may want to know of a saved model without running it."""
    return {
        "model_class": type(model).__name__,
        "input_shape": list(model.image_shape),
        "class_names": list(model.class_names),
        "signatures": sorted(SIGNATURE_FUNCTIONS),
    }


def read_model_metadata(saved_model_path):
    """The `model_metadata` saved with an imgclf SavedModel at `saved_model_path`."""
    path = os.path.join(os.fspath(saved_model_path), METADATA_FILE)
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{saved_model_path!s} is not an imgclf SavedModel: {METADATA_FILE} is missing"
        ) from None


def warmup_requests(image_shape):
    """One TF Serving `PredictionLog` a signature, each with a blank image of `image_shape`."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    blank = np.zeros((1, *image_shape), dtype=np.float32)
    # A batch of one, not a scalar: TF Serving with --enable_batching refuses rank-0 inputs, and
    # a warm-up request that fails makes the version fail to load.
    png = np.array([tf.io.encode_png(tf.zeros(image_shape, dtype=tf.uint8)).numpy()], dtype=object)
    inputs = {
        "serving_default": {INPUT_TENSOR_SPEC.name: blank},
        "serving_bytes": {IMAGE_BYTES_SPEC.name: png},
        "serving_labels": {IMAGE_BYTES_SPEC.name: png},
    }
    logs = []
    for signature_name, tensors in inputs.items():
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(signature_name=signature_name)
        )
        for name, value in tensors.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        logs.append(
            prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        )
    return logs


def write_warmup_requests(saved_model_path, image_shape):
    """Write TF Serving's warm-up file into a SavedModel, so servers start with traced graphs."""
    path = os.path.join(saved_model_path, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_requests(image_shape):
            writer.write(log.SerializeToString())


def _write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(value, file, indent=2)


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
