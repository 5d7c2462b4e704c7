"""A training set's random draws as a function of (seed, epoch), so a resumed run does not replay.

A `tf.data` shuffle with `reshuffle_each_iteration=True` draws its order from how many times
the data set was iterated: a run resumed at epoch 5 in a new process would replay epoch 0's
order, and its augmentation epoch 0's draws. Here each training set carries an epoch counter
(`EpochCounter`), and its order and draws come from `(seed, epoch)` alone; training tells the
data set which epoch begins (`dataset.start_epoch(epoch)`, called by
`imgclf.training.callbacks.EpochSeeds` before Keras opens the epoch's iterator).

    >>> counter = EpochCounter()
    >>> elements = shuffle_by_epoch(elements, len(paths), seed=42, counter=counter)
    >>> counter.start(5)          # the next iteration yields epoch 5's order, in any process
"""

import hashlib

import tensorflow as tf

from imgclf.data.one_device import host_variable


def epoch_seed(seed, epoch, salt=""):
    """A 31-bit seed for the draws `salt` of `epoch` in a run seeded with `seed`.

        >>> epoch_seed(42, 3, "flip") == epoch_seed(42, 3, "flip") != epoch_seed(42, 4, "flip")
        True
    """
    digest = hashlib.sha256(f"{int(seed)}/{int(epoch)}/{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class EpochCounter:
    """Which epoch a training set is in: a variable its pipeline reads when an epoch begins."""

    def __init__(self):
        self.variable = host_variable(tf.constant(0, tf.int64), "data_epoch")

    def start(self, epoch):
        """The next iteration of the data set is epoch `epoch` (0-based, counted across phases);
        without a call, each iteration is the epoch after the previous one."""
        self.variable.assign(int(epoch))


def by_epoch(counter, make):
    """A data set whose every iteration is `make(epoch)`: `epoch` (an int64 tensor) is `counter`'s
    epoch when the iteration starts, and the next iteration is the epoch after."""

    @tf.autograph.experimental.do_not_convert
    def one_epoch(_):
        # Mixed in the graph (a hash would need the value in Python).
        epoch = counter.variable.assign_add(1) - 1
        # TensorFlow pairs an op seed with the graph's global seed and then tests the pair
        # against (0, 0) in Python: with a global seed of 0 (`keras.utils.set_random_seed(0)`,
        # `--seed 0`) that test reads the tensor as a bool and fails. This function's graph
        # (and those made inside it) drops the global seed, so draws depend on their own seeds.
        tf.compat.v1.get_default_graph().seed = None
        return make(epoch)

    return tf.data.Dataset.from_tensors(0).flat_map(one_epoch)


def seed_tensor(seed, epoch):
    """An int64 seed for `epoch` (a tensor) of a run seeded with `seed`: distinct for distinct
    (seed, epoch)."""
    return tf.constant(int(seed) * 1_000_003 % 2**31, tf.int64) + epoch


def shuffle_by_epoch(elements, buffer_size, seed, counter):
    """`elements` shuffled (with `buffer_size`) in an order that depends only on the seed and
    `counter`'s epoch when an iteration starts, not on how many iterations came before."""
    return by_epoch(counter, lambda epoch: elements.shuffle(
        buffer_size, seed=seed_tensor(seed, epoch), reshuffle_each_iteration=False))


def reseed_layers(layers, seed, epoch, salt=""):
    """Set the state of every Keras seed generator of `layers` from (seed, epoch, its place).

    Keras' random layers (Dropout, RandomFlip...) draw from a `SeedGenerator` whose state moves on
    with every call and is not among the weights a backup saves; reseeding each at the start of
    every epoch makes the epoch's draws the same in a resumed run as in an unkilled one.
    (`_seed_generators` is Keras 3's list of a layer's own generators.)
    """
    for i, layer in enumerate(layers):
        for j, generator in enumerate(getattr(layer, "_seed_generators", ())):
            generator.state.assign([epoch_seed(seed, epoch, f"{salt}/{i}/{j}"), 0])
