"""The data sets a model trains and is evaluated on, from either layout imgclf reads.

A path is a folder of `<class>/<image>` files (`imgclf.data.folders`) or a directory of TFRecord
shards written by `python -m imgclf.data.tfrecord` (`imgclf.data.records`, recognised by its
`tfrecords.json`). Both give the same batches, the same split and the same arguments:

    >>> train_ds, val_ds = create_train_val_datasets("data/train", (224, 224), 32, cache="memory")
    >>> test_ds = create_test_dataset("records/test", (224, 224), 32, train_ds.class_names)
"""

import os

from imgclf.data import folders, records
from imgclf.data.tfrecord import is_tfrecord_dataset


def _layout(path):
    return records if is_tfrecord_dataset(os.fspath(path)) else folders


def create_train_val_datasets(path, image_shape, batch_size, split_ratio=0.8, seed=42,
                              cache=None, input_context=None, writer=True):
    """See `imgclf.data.folders.create_train_val_datasets`; `path` may be a TFRecord directory."""
    return _layout(path).create_train_val_datasets(
        path, image_shape, batch_size, split_ratio=split_ratio, seed=seed, cache=cache,
        input_context=input_context, writer=writer,
    )


def create_test_dataset(path, image_shape, batch_size, class_names=None, cache=None, writer=True):
    """See `imgclf.data.folders.create_test_dataset`; `path` may be a TFRecord directory."""
    return _layout(path).create_test_dataset(
        path, image_shape, batch_size, class_names=class_names, cache=cache, writer=writer
    )


def list_labels(path):
    """The label of every image of a folder or TFRecord data set (for class weights), unread."""
    if is_tfrecord_dataset(os.fspath(path)):
        layout = records.read_layout(path)
        return [label for name, label in zip(layout["files"], layout["labels"]) if name is not None]
    return folders.list_image_files(path)[1]


def encoded_images(path, positions):
    """The encoded bytes of the images at `positions` of a data set, counted in the order its
    test set reads them: files of a folder, records of a TFRecord directory (shard by shard).
    Positions past the end are left out.

        >>> encoded_images("records/test", range(2))
        [b'\\x89PNG...', b'\\xff\\xd8...']
    """
    positions = list(positions)
    if is_tfrecord_dataset(os.fspath(path)):
        return records.encoded_records(path, positions)
    paths = folders.list_image_files(path)[0]
    encoded = []
    for position in positions:
        if position < len(paths):
            with open(paths[position], "rb") as file:
                encoded.append(file.read())
    return encoded
