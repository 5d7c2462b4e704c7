"""Keras 3 `fit` and `evaluate` under `MultiWorkerMirroredStrategy`.

Keras 3 cannot train under `tf.distribute.MultiWorkerMirroredStrategy` (keras-team/keras#20585,
tensorflow/tensorflow#72388; reproduced with TensorFlow 2.21.0 and Keras 3.15.1, two workers on
loopback). Two places in `keras/src/backend/tensorflow/trainer.py` break:

1. `_maybe_symbolic_build` averages the first input batch across workers with
   `strategy.reduce("MEAN", batch, axis=None)` to build the model's state symbolically; with
   collective all-reduce that fails: "Attempt to convert a value (PerReplica...) to a Tensor".
2. `reduce_per_replica` reduces the step's scalar metrics with
   `strategy.reduce("MEAN", value, axis=0)` when in multi-worker mode: "Invalid reduction
   dimension 0 for input with 0 dimensions".

imgclf fixes both for `ImageClassifierModel`, which every imgclf model is: its `train_step`,
`test_step` and `_maybe_symbolic_build` hand over to `train_step`, `test_step` and
`symbolic_build` here, which use:

- `symbolic_build_batch`: the symbolic build gets this worker's own first batch (the local
  replica's part of it). Only shapes and dtypes are used, so nothing needs to cross the network.
- `rank1_logs`: `train_step` and `test_step` return their scalar logs as shape `[1]` when in
  multi-worker mode, so that Keras' `reduce(..., axis=0)` is valid and averages one value per
  replica back into a scalar. The values are already global (Keras' metric variables sum
  across replicas when read), so the average is the value itself.

A third override, `call`, is not about Keras: with more than one replica, tf.distribute splits
every global batch into the replicas' parts, and the last global batch of a data set that does
not fill it (a validation set of 113 images in global batches of 16 leaves 1 image for 2
replicas) gives some replica an empty part, shape `[0, height, width, 3]`. TensorFlow's CPU
convolution (the oneDNN kernel, on by default; TensorFlow 2.21) returns such an empty input
unchanged instead of `[0, height', width', filters]` (`tf.nn.conv2d(tf.zeros([0, 16, 16, 3]),
tf.zeros([5, 5, 3, 6]), 1, "SAME")` has shape `[0, 16, 16, 3]`), so the next convolution fails:
"input depth must be evenly divisible by filter depth: 3 vs 6". `replica_call` runs the network
only on a part that holds images and gives an empty part empty logits `[0, num_classes]`, so
that replica adds nothing to the metrics or the gradients and every image still counts once.
Outside a multi-replica step (a single process, export, the serving functions) it is Keras'
own `call`.

Why these overrides and not imgclf's own training loop: they keep `fit` itself, with its
callbacks, `validation_data`, `initial_epoch`, History and whatever later Keras versions add, and
they touch Keras at its documented override points (`train_step`, `test_step`) plus one private
method, `_maybe_symbolic_build`, which has had the same signature from Keras 3.10 to 3.15. The
supported range, `keras>=3.13,<3.16`, is pinned in requirements.txt and setup.cfg and was tested
with 3.13.2, 3.14.1 and 3.15.1. Our own loop would have had to re-implement `fit`'s contract
(callbacks, logs, early stopping, the data adapters) and follow it through every Keras minor
version: the larger and less visible risk. Not `tf_keras` (Keras 2) either: imgclf's models,
saving and serving signatures are Keras 3, and Keras 2 only gets maintenance. Outside
multi-worker mode (one process, `MirroredStrategy`, no strategy) the Keras overrides do nothing
(`call`'s guard works wherever several replicas share a batch, `MirroredStrategy` too). If a
Keras release fixes the bug, the overrides should stay harmless (a valid batch for the symbolic
build; a `[1]`-shaped log that averages to the same scalar), and the tests say so either way.
`predict` is left to Keras: its multi-worker path gathers and concatenates, and works (the
test confusion matrix `train` logs runs it; `call`'s guard covers its empty parts too).

`tests/test_distributed_keras_bug.py` shows, with two real worker processes on loopback, that a
plain `keras.Model` still fails in both places and an imgclf model trains;
`tests/test_distributed_training.py` trains through `train_model.py`. To try another Keras
version: `pip install --no-deps --target /tmp/k keras==3.N.*` then
`PYTHONPATH=/tmp/k pytest tests/test_distributed_keras_bug.py tests/test_distributed_training.py`.
"""

import tensorflow as tf


def in_multi_worker_mode(strategy):
    """True when `strategy` all-reduces across more than one worker process.

    The same condition under which Keras' `reduce_per_replica` takes its multi-worker path.

        >>> in_multi_worker_mode(tf.distribute.get_strategy())
        False
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return count_workers(strategy) > 1


def count_workers(strategy):
    """How many worker processes (chief included) `strategy` spans; 1 for one-machine strategies."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(1, len(cluster.get("chief", ())) + len(cluster.get("worker", ())))


def symbolic_build_batch(strategy, iterator):
    """This worker's part of the first batch of a Keras epoch iterator, as plain tensors.

    `iterator` is what Keras passes to `_maybe_symbolic_build`: its items end with a data
    iterator (`(step, iterator)` or `(begin, end, iterator)`, depending on the Keras version).
    Keras resets the epoch iterator after the build, so taking one batch loses nothing.
    """
    for item in iterator:
        batch = next(item[-1])
        break
    else:
        return None

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return tf.nest.map_structure(local, batch)


def rank1_logs(strategy, logs):
    """`logs` with each scalar reshaped to `[1]` in multi-worker mode; unchanged otherwise."""
    if not in_multi_worker_mode(strategy):
        return logs

    def rank1(value):
        if isinstance(value, (tf.Tensor, tf.Variable)) and value.shape.rank == 0:
            return tf.reshape(value, [1])
        return value

    return tf.nest.map_structure(rank1, logs)


def train_step(model, keras_train_step, data):
    """`model`'s training step: Keras' own (`keras_train_step`), its logs made reducible."""
    return rank1_logs(model.distribute_strategy, keras_train_step(data))


def test_step(model, keras_test_step, data):
    """`model`'s evaluation step: Keras' own (`keras_test_step`), its logs made reducible."""
    return rank1_logs(model.distribute_strategy, keras_test_step(data))


def symbolic_build(model, keras_symbolic_build, iterator=None, data_batch=None):
    """Keras' `_maybe_symbolic_build`, given this worker's own first batch in multi-worker mode
    (Keras would average the batch across workers, which fails there)."""
    strategy = model.distribute_strategy
    if iterator is not None and in_multi_worker_mode(strategy):
        iterator, data_batch = None, symbolic_build_batch(strategy, iterator)
    return keras_symbolic_build(iterator=iterator, data_batch=data_batch)


def replica_call(model, keras_call, inputs, **kwargs):
    """`model`'s forward pass (Keras' own, `keras_call`); on a replica's empty part of a global
    batch, empty outputs without running the network (see the module docstring).

    The guard is chosen when the step is traced: only inside a step that runs on each of several
    replicas (`strategy.run`), so exported graphs and single-process steps stay unchanged.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync < 2:
        return keras_call(inputs, **kwargs)
    images = tf.nest.flatten(inputs)[0]

    def empty_outputs():
        return tf.nest.map_structure(
            lambda output: tf.zeros([0, *output.shape[1:]], dtype=output.dtype),
            model.outputs[0] if len(model.outputs) == 1 else model.outputs,
        )

    return tf.cond(tf.shape(images)[0] > 0, lambda: keras_call(inputs, **kwargs), empty_outputs)
