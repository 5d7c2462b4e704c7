"""Header checks once per data set (imgclf.data.checked): later passes decode the bytes the first
one checked, and bytes that changed since are checked again before any decoder sees them."""

import logging

import numpy as np
import tensorflow as tf

from hostile_images import bomb_message, png_declaring
from imgclf.data import create_test_dataset
from imgclf.images import decode_image
from test_data_folders import pixel_levels, write_dataset, write_image


def _checked(dataset):
    """The data set's `CheckedImages` (whether its next pass trusts the checked bytes)."""
    return bool(dataset.checked_images.trusted.numpy())


def test_later_passes_trust_the_checked_bytes_and_decode_the_same_pixels(tmp_path):
    write_dataset(tmp_path, {"a": 2, "b": 2})
    write_image(tmp_path / "b" / "zz.jpg", (200, 30, 90), size=23)  # resized, three channels
    dataset = create_test_dataset(tmp_path, (16, 16), 8)
    assert not _checked(dataset)
    first = np.concatenate([images.numpy() for images, _ in dataset])
    assert _checked(dataset)
    second = np.concatenate([images.numpy() for images, _ in dataset])
    expected = np.stack([decode_image(tf.io.read_file(path), (16, 16)).numpy()
                         for path in dataset.file_paths])
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)


def test_a_file_changed_after_the_check_is_checked_again_before_it_is_decoded(tmp_path, caplog):
    write_dataset(tmp_path, {"a": 2, "b": 2})
    changed = tmp_path / "a" / "01.png"
    dataset = create_test_dataset(tmp_path, (16, 16), 8)
    assert pixel_levels(dataset) == [0, 1, 10, 11]
    assert _checked(dataset)

    write_image(changed, (7, 7, 7))  # another image under the same name: not decoded unchecked
    with caplog.at_level(logging.WARNING, logger="imgclf.data"):
        assert pixel_levels(dataset) == [0, 10, 11]
    assert caplog.messages == [f"skipping unreadable image '{changed}': could not be read "
                               "(it decodes now; did it change while being read?)"]
    assert not _checked(dataset)  # so the next pass checks every file again, and decodes it
    assert pixel_levels(dataset) == [0, 7, 10, 11]
    assert _checked(dataset)


def test_a_file_swapped_for_a_decompression_bomb_is_refused_not_decoded(tmp_path, caplog):
    write_dataset(tmp_path, {"a": 2, "b": 2})
    swapped = tmp_path / "b" / "00.png"
    dataset = create_test_dataset(tmp_path, (16, 16), 8)
    assert pixel_levels(dataset) == [0, 1, 10, 11]

    swapped.write_bytes(png_declaring(60000, 60000))
    with caplog.at_level(logging.WARNING, logger="imgclf.data"):
        assert pixel_levels(dataset) == [0, 1, 11]  # trusting: refused (not the checked bytes)
        assert pixel_levels(dataset) == [0, 1, 11]  # checking: refused by the header check
    assert caplog.messages == [
        f"skipping unreadable image '{swapped}': assertion failed: [{bomb_message(60000, 60000)}"
    ]
    assert _checked(dataset)  # the bomb is known now, and left out before decoding
    assert pixel_levels(dataset) == [0, 1, 11]


def test_a_file_that_cannot_be_read_on_a_trusting_pass_costs_that_pass_its_batch(tmp_path, caplog):
    write_dataset(tmp_path, {"a": 2, "b": 2})
    gone = tmp_path / "a" / "01.png"
    dataset = create_test_dataset(tmp_path, (16, 16), 2)  # batches: a/00 + a/01, b/00 + b/01
    assert pixel_levels(dataset) == [0, 1, 10, 11]

    gone.unlink()
    gone.mkdir()  # listed as a file, unreadable (IsADirectoryError)
    with caplog.at_level(logging.WARNING, logger="imgclf.data"):
        assert pixel_levels(dataset) == [10, 11]  # decoding is fused with batching
    assert caplog.messages == [
        f"skipping unreadable image '{tmp_path / 'a' / '00.png'}': could not be read "
        "(it decodes now; did it change while being read?)",
        f"skipping unreadable image '{gone}': could not be read: Is a directory",
    ]
    assert not _checked(dataset)
    assert pixel_levels(dataset) == [0, 10, 11]  # the next pass checks, and loses only the file
    assert _checked(dataset) and str(tmp_path / "a" / "00.png") in dataset.file_paths
    assert pixel_levels(dataset) == [0, 10, 11]  # trusting again: the file is left out before
    assert len(caplog.messages) == 2  # named once
