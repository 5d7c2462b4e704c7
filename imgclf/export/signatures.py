"""The SavedModel contract with TensorFlow Serving: signature names and their inputs.

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

#: The model's `tf.function`s a SavedModel keeps besides its signatures: callable on the object
#: `tf.saved_model.load` returns, invisible to TF Serving. `predict_embeddings` serves offline
#: prediction's embeddings (`imgclf.prediction`) without widening the serving contract.
MODULE_FUNCTIONS = ("predict_embeddings",)


def servable_signatures(model):
    """The concrete functions of `model`'s serving methods, keyed by signature name."""
    return {
        key: getattr(model, method).get_concrete_function()
        for key, method in SIGNATURE_FUNCTIONS.items()
    }
