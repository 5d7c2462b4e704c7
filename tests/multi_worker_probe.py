"""One worker of a two-worker `fit` on loopback, for tests/test_distributed_keras_bug.py.

    python tests/multi_worker_probe.py INDEX PORT0,PORT1 keras|symbolic_build_only|imgclf
    python tests/multi_worker_probe.py 0 - one_process
    python tests/multi_worker_probe.py - - keras|imgclf     # TF_CONFIG already set (a Spark task)

`keras`: a plain `keras.Model` (fails: keras-team/keras#20585); `symbolic_build_only`: with only
imgclf's symbolic-build override (fails at the second place); `imgclf`: an
`ImageClassifierModel`, all overrides (works); `one_process`: the same model, data, seed and
global batch in one process without a cluster, what `imgclf` must equal. Prints `RESULT {...}`
on success.
"""

import json
import os
import sys

mode = sys.argv[3]
if sys.argv[1] != "-" and mode != "one_process":
    index, ports = int(sys.argv[1]), sys.argv[2].split(",")
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
        "task": {"type": "worker", "index": index},
    })

from imgclf.tensorflow_import import import_tensorflow  # noqa: E402

import_tensorflow()  # as imgclf's programs do: Keras without pandas and pyplot, 1.6 CPU s less
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from imgclf.models.base import ImageClassifierModel  # noqa: E402
from imgclf.training import multi_worker_fit  # noqa: E402


class SymbolicBuildOnly(keras.Model):
    """imgclf's first override alone (the same code as ImageClassifierModel's)."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self.distribute_strategy
        if iterator is not None and multi_worker_fit.in_multi_worker_mode(strategy):
            iterator, data_batch = None, multi_worker_fit.symbolic_build_batch(strategy, iterator)
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


class TinyModel(ImageClassifierModel):
    def create_model_io(self, input_shape, num_classes):
        inputs = keras.Input(shape=input_shape)
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
        return inputs, keras.layers.Dense(num_classes)(x)


if mode == "one_process":
    strategy = tf.distribute.get_strategy()
else:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
keras.utils.set_random_seed(0)  # the same initial weights in every mode
rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (32, 4, 4, 3)).astype("float32")
labels = (images.mean(axis=(1, 2, 3)) > 127).astype("int32")
data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
with strategy.scope():
    if mode in ("imgclf", "one_process"):
        model = TinyModel(input_shape=(4, 4, 3), num_classes=2)
    else:
        inputs = keras.Input((4, 4, 3))
        outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs))
        model = (keras.Model if mode == "keras" else SymbolicBuildOnly)(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
history = model.fit(data, validation_data=data, epochs=2, verbose=0).history
evaluation = model.evaluate(data, verbose=0, return_dict=True)
print("RESULT " + json.dumps({
    "history": {key: [float(v) for v in values] for key, values in history.items()},
    "evaluation": {key: float(value) for key, value in evaluation.items()},
    "weights_sum": float(sum(float(np.sum(w)) for w in model.get_weights())),
}), flush=True)
