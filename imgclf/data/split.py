"""The stratified, seeded train/validation split that every imgclf data set layout shares.

    >>> train, validation = stratified_split(["a/1.png", "a/2.png", "b/1.png"], [0, 0, 1],
    ...                                      num_classes=2, split_ratio=0.8, seed=42)

Each file decides its side by itself, from its key (its path relative to the data set folder,
"cat/0001.png"; a TFRecord data set stores the same path for each record) and the seed: the
SHA-256 of seed and key, read as a number `u` in [0, 1), sends the file to training when
`u < split_ratio`, else to validation. Adding, removing or losing a file (found unreadable)
therefore moves no other file from one side to the other, so a resumed run, or a run after the
data set grew, never validates on what it trained on. The same keys and seed give the same
split, and a folder and the TFRecord shards converted from it split alike.

"Stratified" means each class is split on its own, each of its files going to training with
probability `split_ratio`: a class's counts follow the ratio closely for large classes and
loosely for small ones (a class of 10 may give 7, 8 or 9 to training). One guarantee is kept
for small classes: a class of one file goes to training, and a class of two or more keeps at
least one file on each side. When the hashes would put all of such a class on one side, the file
with the largest `u` of the class goes to validation (or the one with the smallest `u` to
training): the only case in which a file's side depends on the other files of its class, and
only on the keys of that class.

`stratified_split` takes every listed file, readable or not; callers drop the unreadable ones
from each side afterwards, so finding a file unreadable moves nothing else.
"""

import hashlib

import numpy as np


def check_split_ratio(split_ratio):
    if isinstance(split_ratio, bool) or not isinstance(split_ratio, (int, float)) or not (
        0 < split_ratio < 1
    ):
        raise ValueError(
            "split_ratio must be a number between 0 and 1 (the training fraction); "
            f"received {split_ratio!r}"
        )
    return split_ratio


def split_draw(key, seed):
    """The number in [0, 1) that places the file `key` (its relative path) for `seed`."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def stratified_split(keys, labels, num_classes, split_ratio, seed=42):
    """`(train_positions, validation_positions)`: sorted positions into `keys` and `labels`.

    `keys` are the files' relative paths (unique), `labels` their classes in `range(num_classes)`.
    """
    if len(keys) != len(labels):
        raise ValueError(
            f"keys and labels must have the same length; received {len(keys)} and {len(labels)}"
        )
    draws = np.array([split_draw(key, seed) for key in keys], dtype=np.float64)
    labels = np.asarray(labels)
    to_train = draws < split_ratio
    for label in range(num_classes):
        positions = np.flatnonzero(labels == label)
        if len(positions) == 1:
            to_train[positions] = True
        elif len(positions) >= 2 and to_train[positions].all():
            to_train[positions[np.argmax(draws[positions])]] = False
        elif len(positions) >= 2 and not to_train[positions].any():
            to_train[positions[np.argmin(draws[positions])]] = True
    # Within each side elements keep their order.
    return np.flatnonzero(to_train).tolist(), np.flatnonzero(~to_train).tolist()


def shard(positions, num_shards=1, shard_index=0, input_context=None):
    """The part of `positions` one input pipeline of `num_shards` reads (every num_shards-th).

    `input_context` (a `tf.distribute.InputContext`) gives `num_shards` and `shard_index`.
    """
    if input_context is not None:
        num_shards = input_context.num_input_pipelines
        shard_index = input_context.input_pipeline_id
    if not isinstance(num_shards, int) or num_shards < 1 or not isinstance(shard_index, int) or not (
        0 <= shard_index < num_shards
    ):
        raise ValueError(
            "num_shards must be a positive integer and shard_index in [0, num_shards); "
            f"received num_shards={num_shards!r}, shard_index={shard_index!r}"
        )
    return list(positions)[shard_index::num_shards]
