"""Image classification data sets read from folders, as `tf.data` pipelines.

A data set folder holds one sub-folder per class, named for it, with that class's images inside
(PNG, JPEG, BMP or GIF, also in nested folders):

    train/cat/0001.png
    train/dog/0001.jpg

    >>> train_ds, val_ds = create_train_val_datasets("data/train", (32, 32, 3), batch_size=32)
    >>> train_ds.class_names
    ['cat', 'dog']
    >>> images, labels = next(iter(train_ds))   # float32 [32, 32, 32, 3] 0-255, int32 [32]
    >>> test_ds = create_test_dataset("data/test", (32, 32), 32, class_names=train_ds.class_names)

Images are decoded and resized by `imgclf.images.decode_image`, the function the serving
signatures use, so a model is trained and evaluated on exactly the pixels it gets when served.
Making a data set decodes nothing: files that cannot be decoded are found while the first epoch
decodes them, each named in a warning of the `imgclf.data` logger at the end of that epoch and
left out from then on (see `imgclf.data.pipeline`). The verdicts are remembered beside the data
(`imgclf.data.verdicts`), so later data sets from the same folder leave those files out, with a
warning each, before anything is decoded.
"""

import hashlib
import logging
import os

import numpy as np
import tensorflow as tf

from imgclf.data.pipeline import (
    FirstPassCheck,
    check_batch_size,
    check_cache,
    check_image_shape,
    data_error,
    decoded_batches,
    explain_file,
    worker_cache,
)
from imgclf.data.epochs import EpochCounter, shuffle_by_epoch
from imgclf.data.one_device import one_device_functions
from imgclf.data.split import check_split_ratio, shard, stratified_split
from imgclf.data.verdicts import VerdictStore
from imgclf.images import IMAGE_EXTENSIONS

logger = logging.getLogger("imgclf.data")

_EXTENSIONS_TEXT = ", ".join(IMAGE_EXTENSIONS)


def list_image_files(folder, class_names=None):
    """The image files of a `folder/<class>/<image>` data set, with their labels.

    Args:
        folder: the data set folder, with one sub-folder per class.
        class_names: the classes a model was trained on, when reading data to evaluate it. The
            folder must have a sub-folder for each of them and no other; labels are indices into
            `class_names`, in its order.

    Returns:
        `(paths, labels, class_names)`: the image paths (`str`, sorted within each class, classes
        in order), their labels (`int` indices into `class_names`) and the class names (sorted
        sub-folder names unless given).

    Image files are recognised by their extension (any case) from `imgclf.images.IMAGE_EXTENSIONS`;
    hidden files and folders (".name") are ignored. Files are listed, not decoded.

        >>> paths, labels, class_names = list_image_files("data/test", ["cat", "dog"])
    """
    folder = os.fspath(folder)
    if not os.path.exists(folder):
        raise FileNotFoundError(f"dataset folder '{folder}' does not exist")
    if not os.path.isdir(folder):
        raise ValueError(f"dataset folder '{folder}' is not a directory")
    found_classes = sorted(
        name
        for name in os.listdir(folder)
        if not name.startswith(".") and os.path.isdir(os.path.join(folder, name))
    )
    if not found_classes:
        raise ValueError(
            f"dataset folder '{folder}' has no class sub-folders; "
            f"expected images in '{os.path.join(folder, '<class name>')}'"
        )
    if class_names is None:
        class_names = found_classes
    else:
        class_names = [str(name) for name in class_names]
        missing = sorted(set(class_names) - set(found_classes))
        extra = sorted(set(found_classes) - set(class_names))
        if missing or extra:
            raise ValueError(
                f"class folders in '{folder}' do not match the model's classes: "
                f"missing {missing}, unexpected {extra}"
            )

    paths, labels, empty_folders = [], [], []
    for label, class_name in enumerate(class_names):
        class_paths = _image_files_under(os.path.join(folder, class_name))
        if not class_paths:
            empty_folders.append(os.path.join(folder, class_name))
        paths.extend(class_paths)
        labels.extend([label] * len(class_paths))
    if not paths:
        raise ValueError(f"no images ({_EXTENSIONS_TEXT}) under '{folder}'")
    if empty_folders:
        raise ValueError(
            f"no images ({_EXTENSIONS_TEXT}) in class folder "
            + ", ".join(f"'{path}'" for path in empty_folders)
        )
    return paths, labels, list(class_names)


@one_device_functions()
def create_train_val_datasets(folder, image_shape, batch_size, split_ratio=0.8, seed=42,
                              cache=None, input_context=None, writer=True):
    """A training and a validation data set split from the images of one folder.

    Each image goes to training or validation by itself, from a hash of its path relative to
    `folder` and `seed` (`imgclf.data.split`): about a `split_ratio` fraction of each class goes
    to training; a class of one image goes to training, and a larger class keeps at least one
    image on each side. Adding, removing or losing (found unreadable) an image moves no other
    image to the other side; the same files and seed give the same split. The training set is
    shuffled again each epoch (also from `seed`); the validation set keeps the order of the files.

    Args:
        folder: a `folder/<class>/<image>` data set (see `list_image_files`).
        image_shape: `(height, width, 3)` or `(height, width)` the images are resized to.
        batch_size: images per batch; the last batch may be smaller.
        split_ratio: the fraction of each class used for training, between 0 and 1 (exclusive).
        seed: the seed of the split and of the shuffling.
        cache: None, "memory" or a directory: keep the decoded images (as uint8) after the first
            epoch instead of decoding every epoch (see `imgclf.data.pipeline.decoded_batches`).
        input_context: a `tf.distribute.InputContext`: the training set then holds only this
            input pipeline's share of the training files (every n-th), for multi-worker training.
        writer: whether this process writes the state shared beside the data (the verdicts on
            unreadable files) and in a `cache` directory: in a multi-worker run, the chief only
            (`imgclf.data.pipeline.worker_cache` says what the others cache).

    Returns:
        `(train_ds, val_ds)`, each yielding `(images, labels)`: float32 `[batch, height, width, 3]`
        0-255 pixels and int32 `[batch]` labels, with `.class_names` and `.file_paths` (the files
        of the data set; for the training set, not in the order of its batches).

        >>> train_ds, val_ds = create_train_val_datasets("data/train", (32, 32, 3), 32, 0.8)
    """
    image_size = check_image_shape(image_shape)
    batch_size = check_batch_size(batch_size)
    check_split_ratio(split_ratio)
    paths, labels, class_names = list_image_files(folder)
    cache = check_cache(cache, len(paths), image_size)
    store = VerdictStore(folder, writer=writer)
    readable = _known_readable(folder, store, paths, labels, class_names)

    # Split every listed file, then drop the unreadable ones from each side: finding a file
    # unreadable moves no other file (imgclf.data.split).
    keys = [_relative(path, folder) for path in paths]
    train_positions, val_positions = (
        [i for i in side if readable[i]]
        for side in stratified_split(keys, labels, len(class_names), split_ratio, seed)
    )
    if not val_positions:
        raise ValueError(
            f"the validation set would be empty: every class under '{folder}' has a single "
            "readable image; a class needs two to give one to validation"
            if np.bincount(labels, minlength=len(class_names)).max() < 2 else
            f"the validation set would be empty: every image of '{folder}' that the split puts "
            "in validation is unreadable"
        )
    train_positions = shard(train_positions, input_context=input_context)

    def subset(positions, role, shuffle_seed=None):
        return _folder_dataset(
            folder, store, [paths[i] for i in positions], [labels[i] for i in positions],
            class_names, image_size, batch_size, role, shuffle_seed,
            worker_cache(cache, writer, len(positions), image_size),
        )

    return subset(train_positions, "train", shuffle_seed=seed), subset(val_positions, "validation")


@one_device_functions()
def create_test_dataset(folder, image_shape, batch_size, class_names=None, cache=None,
                        writer=True):
    """A data set of all the images of a folder, in a fixed order, to evaluate a model.

    Args:
        folder: a `folder/<class>/<image>` data set (see `list_image_files`).
        image_shape: `(height, width, 3)` or `(height, width)` the images are resized to.
        batch_size: images per batch; the last batch may be smaller.
        class_names: the classes the model was trained on (its `class_names`); the folder must
            have exactly these classes, and labels follow their order. By default the sorted
            sub-folder names.
        cache: None, "memory" or a directory, as for `create_train_val_datasets`.
        writer: as for `create_train_val_datasets`.

    Returns:
        A data set yielding `(images, labels)`: float32 `[batch, height, width, 3]` 0-255 pixels
        and int32 `[batch]` labels, not shuffled, with `.class_names` and `.file_paths` (the files
        in the order of the batches, without those found unreadable once a pass has named them).

        >>> test_ds = create_test_dataset("data/test", (32, 32, 3), 32, model.class_names)
    """
    image_size = check_image_shape(image_shape)
    batch_size = check_batch_size(batch_size)
    paths, labels, class_names = list_image_files(folder, class_names)
    cache = check_cache(cache, len(paths), image_size)
    store = VerdictStore(folder, writer=writer)
    readable = _known_readable(folder, store, paths, labels, class_names)
    paths = [path for path, ok in zip(paths, readable) if ok]
    labels = [label for label, ok in zip(labels, readable) if ok]
    return _folder_dataset(
        folder, store, paths, labels, class_names, image_size, batch_size, "test", None,
        worker_cache(cache, writer, len(paths), image_size),
    )


def _image_files_under(class_folder):
    """Sorted paths of the image files in `class_folder` and below it, hidden ones left out."""
    paths = []
    for directory, subdirectories, files in os.walk(class_folder):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        paths.extend(
            os.path.join(directory, name)
            for name in files
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)
        )
    return sorted(paths)


def _class_place(folder, class_names):
    return lambda label: f"class folder '{os.path.join(folder, class_names[label])}'"


def _all_unreadable(folder, count):
    return f"none of the {count} images under '{folder}' can be read; see the warnings for each file"


def _relative(path, folder):
    """A file's key in the split: its path relative to the data set folder, with "/"."""
    return os.path.relpath(path, folder).replace(os.sep, "/")


def _known_readable(folder, store, paths, labels, class_names):
    """Whether each of `paths` is not remembered as unreadable (a bool array); each remembered one
    is named in a warning, and a class left with no readable file is an error."""
    known = store.unreadable(paths)
    readable = np.array([path not in known for path in paths], dtype=bool)
    if not known:
        return readable
    for path in paths:
        if path in known:
            logger.warning("skipping unreadable image '%s': %s", path, known[path])
    error = data_error(
        labels, readable, _class_place(folder, class_names), _all_unreadable(folder, len(paths)),
        num_classes=len(class_names),
    )
    if error:
        raise ValueError(error)
    return readable


def _folder_dataset(folder, store, paths, labels, class_names, image_size, batch_size, role,
                    shuffle_seed=None, cache=None):
    file_paths = list(paths)
    check = FirstPassCheck(
        ids=range(len(paths)),
        labels=labels,
        describe=lambda i: f"image '{paths[i]}'",
        explain=lambda ids: {i: explain_file(paths[i], image_size) for i in ids},
        remember=lambda bad: store.remember({paths[i]: reason for i, reason in bad.items()}),
        class_place=_class_place(folder, class_names),
        all_unreadable=_all_unreadable(folder, len(paths)),
        file_paths=file_paths,
        path_of=lambda i: paths[i],
    )
    elements = tf.data.Dataset.from_tensor_slices((
        tf.range(len(paths), dtype=tf.int64),
        tf.constant(paths, dtype=tf.string),
        tf.constant(labels, dtype=tf.int32),
    ))
    counter = EpochCounter()
    if shuffle_seed is not None:
        # Shuffling the file names, not the images, makes a full shuffle buffer cheap. The order
        # is a function of (seed, epoch): a resumed run does not replay epoch 0's.
        elements = shuffle_by_epoch(elements, len(paths), shuffle_seed, counter)
    dataset = decoded_batches(
        elements, tf.io.read_file, image_size, batch_size, check,
        shuffle_seed=shuffle_seed, cache=cache,
        cache_name=_cache_name(role, paths, image_size) if cache not in (None, "memory") else role,
    )
    dataset.class_names = list(class_names)
    dataset.file_paths = file_paths
    dataset.first_pass_check = check
    dataset.start_epoch = counter.start
    return dataset


def _cache_name(role, paths, image_size):
    """A cache file name that changes when any file, the list of files or the size changes."""
    digest = hashlib.sha256(repr(tuple(image_size)).encode())
    for path in paths:
        status = os.stat(path)
        digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\0".encode())
    return f"{role}-{digest.hexdigest()[:20]}"
