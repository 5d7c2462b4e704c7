"""Tests of imgclf.data.folders on real image files written by Pillow in tmp_path."""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from imgclf.data import create_test_dataset, create_train_val_datasets, list_image_files
from imgclf.data.split import stratified_split

EXTENSIONS = ".png, .jpg, .jpeg, .bmp, .gif, .webp"


def write_image(path, colour=(255, 0, 0), size=16, mode="RGB", **save_options):
    """Write a `size` square image of one `colour` at `path` (its extension picks the format)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, (size, size), colour).save(path, **save_options)
    return str(path)


def write_dataset(folder, counts, size=16):
    """A `folder/<class>/<i>.png` data set with `counts[class]` images per class.

    Each image is one grey level, `10 * class index + i`, so a pixel tells which file it is.
    """
    for label, (class_name, count) in enumerate(sorted(counts.items())):
        for index in range(count):
            level = 10 * label + index
            write_image(folder / class_name / f"{index:02d}.png", (level, level, level), size)
    return folder


def pixel_levels(dataset):
    """The grey level of every image of `dataset`, in order (one level per image)."""
    return [int(level) for images, _ in dataset for level in images[:, 0, 0, 0].numpy()]


# list_image_files


def test_list_image_files_reads_classes_and_sorted_paths(tmp_path):
    write_image(tmp_path / "dog" / "b.JPG")
    write_image(tmp_path / "dog" / "a.png")
    write_image(tmp_path / "cat" / "nested" / "c.bmp")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "README").write_text("top-level files are not classes")
    write_image(tmp_path / "cat" / ".hidden.png")

    paths, labels, class_names = list_image_files(tmp_path)

    assert class_names == ["cat", "dog"]
    assert paths == [
        str(tmp_path / "cat" / "nested" / "c.bmp"),
        str(tmp_path / "dog" / "a.png"),
        str(tmp_path / "dog" / "b.JPG"),
    ]
    assert labels == [0, 1, 1]


def test_list_image_files_follows_given_class_order(tmp_path):
    write_dataset(tmp_path, {"a": 1, "b": 1})
    paths, labels, class_names = list_image_files(tmp_path, class_names=["b", "a"])
    assert class_names == ["b", "a"]
    assert paths == [str(tmp_path / "b" / "00.png"), str(tmp_path / "a" / "00.png")]
    assert labels == [0, 1]


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        list_image_files(tmp_path / "nope")
    assert str(error.value) == f"dataset folder '{tmp_path / 'nope'}' does not exist"


def test_folder_is_a_file(tmp_path):
    path = write_image(tmp_path / "image.png")
    with pytest.raises(ValueError) as error:
        list_image_files(path)
    assert str(error.value) == f"dataset folder '{path}' is not a directory"


def test_no_class_folders(tmp_path):
    write_image(tmp_path / "image.png")
    with pytest.raises(ValueError) as error:
        list_image_files(tmp_path)
    assert str(error.value) == (
        f"dataset folder '{tmp_path}' has no class sub-folders; "
        f"expected images in '{tmp_path / '<class name>'}'"
    )


def test_no_images(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "image.tiff").write_bytes(b"")
    with pytest.raises(ValueError) as error:
        list_image_files(tmp_path)
    assert str(error.value) == f"no images ({EXTENSIONS}) under '{tmp_path}'"


def test_class_folder_without_images(tmp_path):
    write_dataset(tmp_path, {"cat": 1})
    (tmp_path / "dog").mkdir()
    (tmp_path / "emu").mkdir()
    with pytest.raises(ValueError) as error:
        list_image_files(tmp_path)
    assert str(error.value) == (
        f"no images ({EXTENSIONS}) in class folder '{tmp_path / 'dog'}', '{tmp_path / 'emu'}'"
    )


def test_class_names_mismatch(tmp_path):
    write_dataset(tmp_path, {"cat": 1, "dog": 1, "emu": 1})
    with pytest.raises(ValueError) as error:
        create_test_dataset(tmp_path, (16, 16), 2, class_names=["cat", "dog", "fox", "gnu"])
    assert str(error.value) == (
        f"class folders in '{tmp_path}' do not match the model's classes: "
        "missing ['fox', 'gnu'], unexpected ['emu']"
    )


# create_train_val_datasets and create_test_dataset: arguments


@pytest.mark.parametrize("split_ratio", [0, 1, 1.5, -0.2, "0.8", None])
def test_split_ratio_out_of_range(tmp_path, split_ratio):
    write_dataset(tmp_path, {"a": 2, "b": 2})
    with pytest.raises(ValueError) as error:
        create_train_val_datasets(tmp_path, (16, 16, 3), 2, split_ratio=split_ratio)
    assert str(error.value) == (
        "split_ratio must be a number between 0 and 1 (the training fraction); "
        f"received {split_ratio!r}"
    )


@pytest.mark.parametrize(
    "image_shape", [(16, 16, 1), (16,), (16, 16, 3, 1), (0, 16), 16, (16.0, 16)]
)
def test_bad_image_shape(tmp_path, image_shape):
    write_dataset(tmp_path, {"a": 1, "b": 1})
    with pytest.raises(ValueError) as error:
        create_test_dataset(tmp_path, image_shape, 2)
    assert str(error.value) == (
        f"image_shape must be (height, width, 3) or (height, width); received {image_shape!r}"
    )


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True])
def test_bad_batch_size(tmp_path, batch_size):
    write_dataset(tmp_path, {"a": 1, "b": 1})
    with pytest.raises(ValueError) as error:
        create_test_dataset(tmp_path, (16, 16), batch_size)
    assert str(error.value) == f"batch_size must be a positive integer; received {batch_size!r}"


def test_empty_validation_set(tmp_path):
    write_dataset(tmp_path, {"a": 1, "b": 1})
    with pytest.raises(ValueError) as error:
        create_train_val_datasets(tmp_path, (16, 16), 2)
    assert str(error.value) == (
        f"the validation set would be empty: every class under '{tmp_path}' has a single "
        "readable image; a class needs two to give one to validation"
    )


# What the data sets yield


def test_test_dataset_batches(tmp_path):
    write_dataset(tmp_path, {"cat": 3, "dog": 2})
    dataset = create_test_dataset(tmp_path, (20, 24, 3), batch_size=4)

    assert dataset.class_names == ["cat", "dog"]
    assert dataset.file_paths == [
        str(tmp_path / class_name / f"{index:02d}.png")
        for class_name, index in [("cat", 0), ("cat", 1), ("cat", 2), ("dog", 0), ("dog", 1)]
    ]
    assert dataset.element_spec == (
        tf.TensorSpec([None, 20, 24, 3], tf.float32),
        tf.TensorSpec([None], tf.int32),
    )
    batches = list(dataset)
    images, labels = batches[0]
    assert images.shape == (4, 20, 24, 3) and images.dtype == tf.float32
    assert labels.dtype == tf.int32
    assert labels.numpy().tolist() == [0, 0, 0, 1]
    assert batches[1][1].numpy().tolist() == [1]
    # Raw pixels, resized from 16 x 16: one grey level per file, in file order.
    assert pixel_levels(dataset) == [0, 1, 2, 10, 11]
    np.testing.assert_allclose(images[1].numpy(), np.full((20, 24, 3), 1.0), atol=1e-4)


def test_train_val_split_is_stratified_and_complete(tmp_path):
    write_dataset(tmp_path, {"a": 10, "b": 5, "c": 1})
    train_ds, val_ds = create_train_val_datasets(tmp_path, (16, 16), 4, split_ratio=0.8)

    assert train_ds.class_names == val_ds.class_names == ["a", "b", "c"]
    train_levels, val_levels = pixel_levels(train_ds), pixel_levels(val_ds)
    train_labels = [level // 10 for level in train_levels]
    val_labels = [level // 10 for level in val_levels]
    # Every image once; the single "c" in training; "a" and "b" on both sides.
    assert sorted(train_levels + val_levels) == list(range(10)) + list(range(10, 15)) + [20]
    assert train_labels.count(2) == 1 and val_labels.count(2) == 0
    assert {0, 1} <= set(train_labels) and {0, 1} <= set(val_labels)
    # Labels travel with their images; validation keeps file order and file_paths matches it.
    for images, labels in train_ds:
        assert (images[:, 0, 0, 0].numpy() // 10).astype(int).tolist() == labels.numpy().tolist()
    assert val_levels == sorted(val_levels)
    assert len(train_ds.file_paths) == len(train_levels)
    assert val_ds.file_paths == [
        str(tmp_path / "abc"[level // 10] / f"{level % 10:02d}.png") for level in val_levels
    ]


def test_each_class_is_split_at_the_ratio_and_small_classes_keep_both_sides():
    keys = [f"a/{i}.png" for i in range(2000)] + [f"b/{i}.png" for i in range(1000)]
    labels = [0] * 2000 + [1] * 1000
    train, validation = stratified_split(keys, labels, 2, split_ratio=0.7, seed=3)
    assert sorted(train + validation) == list(range(3000))
    train_labels = np.array(labels)[train]
    assert abs((train_labels == 0).sum() / 2000 - 0.7) < 0.03
    assert abs((train_labels == 1).sum() / 1000 - 0.7) < 0.04
    # Two files: one on each side whatever the seed and ratio; one file: training.
    for seed in range(40):
        for ratio in (0.05, 0.5, 0.95):
            train, validation = stratified_split(["x/1", "x/2", "y/1"], [0, 0, 1], 2, ratio, seed)
            assert sorted(train) in ([0, 2], [1, 2]) and len(validation) == 1


def sides(train_ds, val_ds, folder):
    """`{relative path: "train" or "validation"}` of a folder's or TFRecords' data sets."""
    def key(path):
        return os.path.relpath(path, folder) if os.path.isabs(path) else path

    return {**{key(p): "train" for p in train_ds.file_paths},
            **{key(p): "validation" for p in val_ds.file_paths}}


def test_adding_removing_or_losing_a_file_moves_no_other_file(tmp_path):
    write_dataset(tmp_path, {"a": 12, "b": 12})

    def split():
        return sides(*create_train_val_datasets(tmp_path, (16, 16), 32, seed=5), tmp_path)

    before = split()
    assert set(before.values()) == {"train", "validation"}

    (tmp_path / "a" / "03.png").unlink()  # removed
    removed = split()
    assert removed == {k: v for k, v in before.items() if k != "a/03.png"}

    write_image(tmp_path / "b" / "50.png", (60, 60, 60))  # added
    added = split()
    assert {k: v for k, v in added.items() if k != "b/50.png"} == removed
    assert "b/50.png" in added

    # Lost: found unreadable by a pass, remembered, then left out before the split is made.
    (tmp_path / "a" / "07.png").write_bytes(b"not an image")
    train_ds, val_ds = create_train_val_datasets(tmp_path, (16, 16), 32, seed=5)
    pixel_levels(train_ds), pixel_levels(val_ds)  # the first pass finds it
    lost = split()
    assert "a/07.png" not in lost
    assert lost == {k: v for k, v in added.items() if k != "a/07.png"}


def test_split_is_deterministic_for_a_seed(tmp_path):
    write_dataset(tmp_path, {"a": 10, "b": 10})

    def split(seed):
        train_ds, val_ds = create_train_val_datasets(tmp_path, (16, 16), 32, seed=seed)
        return sorted(train_ds.file_paths), val_ds.file_paths, pixel_levels(train_ds)

    first, again, other = split(1), split(1), split(2)
    assert first == again  # same files, same first-epoch order
    assert first[1] != other[1]


def test_train_set_is_reshuffled_each_epoch(tmp_path):
    write_dataset(tmp_path, {"a": 10, "b": 10})
    train_ds, _ = create_train_val_datasets(tmp_path, (16, 16), 32, seed=3)
    first_epoch, second_epoch = pixel_levels(train_ds), pixel_levels(train_ds)
    assert sorted(first_epoch) == sorted(second_epoch)
    assert first_epoch != second_epoch


# Image formats


def test_formats_decode_to_8_bit_rgb(tmp_path):
    (tmp_path / "f").mkdir()
    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([200, 50, 25] * 256)
    palette.save(tmp_path / "f" / "palette.png")
    sixteen_bit = Image.new("I;16", (16, 16))
    sixteen_bit.putdata([51400] * 256)  # 200 * 257: the 16-bit value of 8-bit 200
    sixteen_bit.save(tmp_path / "f" / "sixteen_bit.png")
    assert Image.open(tmp_path / "f" / "sixteen_bit.png").mode == "I;16"
    expected = {
        "grey.png": (write_image(tmp_path / "f" / "grey.png", 100, mode="L"), (100, 100, 100)),
        "rgba.png": (
            write_image(tmp_path / "f" / "rgba.png", (10, 20, 30, 128), mode="RGBA"),
            (10, 20, 30),  # alpha is dropped, not composited
        ),
        "palette.png": (None, (200, 50, 25)),
        "sixteen_bit.png": (None, (200, 200, 200)),
        "cmyk.jpg": (
            write_image(tmp_path / "f" / "cmyk.jpg", (0, 255, 255, 0), mode="CMYK", quality=95),
            (255, 0, 0),  # pure red in CMYK
        ),
        "rgb.jpeg": (
            write_image(tmp_path / "f" / "rgb.jpeg", (0, 0, 255), quality=95),
            (0, 0, 255),
        ),
        "image.bmp": (write_image(tmp_path / "f" / "image.bmp", (1, 2, 3)), (1, 2, 3)),
        "image.gif": (write_image(tmp_path / "f" / "image.gif", (0, 255, 0)), (0, 255, 0)),
    }
    assert Image.open(tmp_path / "f" / "cmyk.jpg").mode == "CMYK"

    dataset = create_test_dataset(tmp_path, (16, 16), batch_size=len(expected))

    images, _ = next(iter(dataset))
    names = [os.path.basename(path) for path in dataset.file_paths]
    assert sorted(names) == sorted(expected)
    for name, image in zip(names, images.numpy()):
        colour = expected[name][1]
        tolerance = 3 if name.endswith((".jpg", ".jpeg")) else 0
        np.testing.assert_allclose(
            image, np.broadcast_to(colour, image.shape), atol=tolerance, err_msg=name
        )


def test_mnist_like_grayscale_pngs(tmp_path):
    """The MNIST-as-PNG layout: digit folders of 28 x 28 grayscale PNGs."""
    rng = np.random.default_rng(0)
    digits = {}
    for digit in range(3):
        for index in range(2):
            path = tmp_path / str(digit) / f"{index}.png"
            path.parent.mkdir(exist_ok=True)
            pixels = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
            assert Image.open(path).mode == "L"
            digits[str(path)] = pixels
    dataset = create_test_dataset(tmp_path, (28, 28), batch_size=6)
    images, labels = next(iter(dataset))
    assert dataset.class_names == ["0", "1", "2"]
    assert labels.numpy().tolist() == [0, 0, 1, 1, 2, 2]
    for path, image in zip(dataset.file_paths, images.numpy()):
        np.testing.assert_array_equal(image, np.repeat(digits[path][..., None], 3, axis=-1))


# Unreadable files


def _bomb_png():
    """A 1 x 1 PNG whose header declares 100000 x 100000 pixels."""
    from io import BytesIO

    data = BytesIO()
    Image.new("L", (1, 1)).save(data, "PNG")
    data = bytearray(data.getvalue())
    data[16:24] = (100000).to_bytes(4, "big") * 2
    return bytes(data)


def _truncated_png():
    from io import BytesIO

    data = BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)).save(
        data, "PNG"
    )
    return data.getvalue()[:200]


UNREADABLE = {
    "empty.png": (b"", "Input is empty."),
    "text.png": (
        b"just text",
        "assertion failed: [Unknown image file format. One of PNG, JPEG, BMP, GIF, WebP required "
        "(JPEG XL is not accepted).]",
    ),
    "truncated.png": (_truncated_png(), "Invalid PNG data, size 200"),
    "bomb.png": (
        _bomb_png(),
        "assertion failed: [image declares] [10000000000] [pixels, more than the limit of] "
        "[33554432]",
    ),
}


def test_unreadable_files_are_skipped_with_a_warning_each(tmp_path, caplog):
    write_dataset(tmp_path, {"a": 3, "b": 3})
    for name, (data, _) in UNREADABLE.items():
        (tmp_path / "a" / name).write_bytes(data)

    with caplog.at_level(logging.WARNING, logger="imgclf.data"):
        dataset = create_test_dataset(tmp_path, (16, 16), batch_size=32)
        assert caplog.records == []  # nothing is decoded before the first pass
        assert len(dataset.file_paths) == 10
        # The first pass names them; the training and validation sets made afterwards know the
        # verdicts (remembered beside the data) and name them as they are made.
        assert pixel_levels(dataset) == [0, 1, 2, 10, 11, 12]
        train_ds, val_ds = create_train_val_datasets(tmp_path, (16, 16), batch_size=32)

    assert not any(name in path for path in dataset.file_paths for name in UNREADABLE)
    assert sorted(pixel_levels(train_ds) + pixel_levels(val_ds)) == [0, 1, 2, 10, 11, 12]
    warnings = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    expected = [
        (
            "imgclf.data",
            logging.WARNING,
            f"skipping unreadable image '{tmp_path / 'a' / name}': {reason}",
        )
        for name, (_, reason) in sorted(UNREADABLE.items())
    ]
    assert warnings == expected * 2  # once per data set made


def test_all_files_unreadable(tmp_path, caplog):
    """Found in the first pass, which then stops with the error; the next data set made from the
    folder knows the verdicts and refuses at once."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"")
    (tmp_path / "b" / "y.jpg").write_bytes(b"nope")
    message = (
        f"none of the 2 images under '{tmp_path}' can be read; see the warnings for each file"
    )
    with caplog.at_level(logging.WARNING, logger="imgclf.data"):
        dataset = create_test_dataset(tmp_path, (16, 16), 2)
        with pytest.raises(tf.errors.OpError) as first_pass:
            list(dataset)
        assert message in str(first_pass.value)
        assert dataset.first_pass_check.error == message
        with pytest.raises(ValueError) as error:
            create_test_dataset(tmp_path, (16, 16), 2)
    assert str(error.value) == message
    assert len(caplog.records) == 4  # each file named by the pass, then again by the second


def test_class_with_only_unreadable_files(tmp_path, caplog):
    write_dataset(tmp_path, {"a": 2})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.png").write_bytes(b"")
    message = f"no readable images in class folder '{tmp_path / 'b'}'"
    with caplog.at_level(logging.WARNING, logger="imgclf.data"):
        with pytest.raises(tf.errors.OpError) as first_pass:
            list(create_test_dataset(tmp_path, (16, 16), 2))
        assert message in str(first_pass.value)
        with pytest.raises(ValueError) as error:
            create_train_val_datasets(tmp_path, (16, 16), 2)
    assert str(error.value) == message
    assert [record.getMessage() for record in caplog.records] == [
        f"skipping unreadable image '{tmp_path / 'b' / 'x.png'}': Input is empty."
    ] * 2


def test_an_epochs_order_depends_on_the_epoch_not_on_earlier_iterations(tmp_path):
    """A run resumed at epoch 2 in a new process must not replay epoch 0's order (issue 12 §3)."""
    write_dataset(tmp_path, {"a": 10, "b": 10})
    unkilled, _ = create_train_val_datasets(tmp_path, (16, 16), 32, seed=3)
    orders = [pixel_levels(unkilled) for _ in range(3)]
    resumed, _ = create_train_val_datasets(tmp_path, (16, 16), 32, seed=3)
    resumed.start_epoch(2)
    assert pixel_levels(resumed) == orders[2] != orders[0]
    resumed.start_epoch(0)
    assert pixel_levels(resumed) == orders[0]
