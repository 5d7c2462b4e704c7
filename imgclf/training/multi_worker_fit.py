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

Why these overrides and not imgclf's own training loop: they keep `fit` itself, with its
callbacks, `validation_data`, `initial_epoch`, History and whatever later Keras versions add, and
they touch Keras at its documented override points (`train_step`, `test_step`) plus one private
method, `_maybe_symbolic_build`, which has had the same signature from Keras 3.10 to 3.15. The
supported range, `keras>=3.13,<3.16`, is pinned in requirements.txt and setup.cfg and was tested
with 3.13.2, 3.14.1 and 3.15.1. Our own loop would have had to re-implement `fit`'s contract
(callbacks, logs, early stopping, the data adapters) and follow it through every Keras minor
version: the larger and less visible risk. Not `tf_keras` (Keras 2) either: imgclf's models,
saving and serving signatures are Keras 3, and Keras 2 only gets maintenance. Outside
multi-worker mode (one process, `MirroredStrategy`, no strategy) the overrides do nothing. If a
Keras release fixes the bug, the overrides should stay harmless (a valid batch for the symbolic
build; a `[1]`-shaped log that averages to the same scalar), and the tests say so either way.
`predict` is left to Keras: its multi-worker path gathers and concatenates, and works (the
test confusion matrix `train` logs runs it).

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
