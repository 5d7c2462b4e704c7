"""The decoding pipeline shared by every data set: remembered verdicts, caches, sharding."""

import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from imgclf.data import create_test_dataset, create_train_val_datasets
from imgclf.data.verdicts import VERDICTS_FILE
from test_data_folders import pixel_levels, write_dataset, write_image


def test_verdicts_are_remembered_and_a_changed_file_is_checked_again(tmp_path, caplog):
    write_dataset(tmp_path, {"a": 2, "b": 2})
    bad = tmp_path / "a" / "zz.png"
    bad.write_bytes(b"")
    warning = f"skipping unreadable image '{bad}': Input is empty."

    with caplog.at_level(logging.WARNING, logger="imgclf.data"):
        first = create_test_dataset(tmp_path, (16, 16), 8)
        assert caplog.messages == []
        assert pixel_levels(first) == [0, 1, 10, 11]
        assert caplog.messages == [warning]
        assert first.file_paths == [str(tmp_path / c / f"0{i}.png") for c in "ab" for i in (0, 1)]
        # A second pass names nothing new.
        assert pixel_levels(first) == [0, 1, 10, 11]
        assert caplog.messages == [warning]

    stored = json.loads((tmp_path / VERDICTS_FILE).read_text())["unreadable"]
    assert list(stored) == ["a/zz.png"]
    assert stored["a/zz.png"]["size"] == 0 and stored["a/zz.png"]["reason"] == "Input is empty."

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="imgclf.data"):
        again = create_test_dataset(tmp_path, (16, 16), 8)
    assert caplog.messages == [warning]  # named as the data set is made, before any decoding
    assert str(bad) not in again.file_paths

    write_image(bad, (5, 5, 5))  # repaired: new size and time, so checked again
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="imgclf.data"):
        repaired = create_test_dataset(tmp_path, (16, 16), 8)
        assert pixel_levels(repaired) == [0, 1, 5, 10, 11]
    assert caplog.messages == []


def remembered(folder):
    path = folder / VERDICTS_FILE
    return sorted(json.loads(path.read_text())["unreadable"]) if path.exists() else []


def test_a_file_that_could_not_be_read_is_tried_again_and_only_bytes_are_remembered(tmp_path,
                                                                                     caplog):
    write_dataset(tmp_path, {"a": 3, "b": 2})
    (tmp_path / "b" / "zz.png").write_bytes(b"")  # its bytes are not an image: remembered
    gone = tmp_path / "a" / "01.png"
    dataset = create_test_dataset(tmp_path, (16, 16), 8)
    pixels = gone.read_bytes()
    gone.unlink()
    gone.mkdir()  # listed as a file, unreadable while the pass reads it (IsADirectoryError)
    with caplog.at_level(logging.WARNING, logger="imgclf.data"):
        assert pixel_levels(dataset) == [0, 2, 10, 11]
    assert f"skipping unreadable image '{gone}': could not be read: Is a directory" in (
        caplog.messages)
    assert remembered(tmp_path) == ["b/zz.png"]

    gone.rmdir()
    gone.write_bytes(pixels)
    assert pixel_levels(create_test_dataset(tmp_path, (16, 16), 8)) == [0, 1, 2, 10, 11]


def test_a_file_that_decodes_when_explained_is_not_remembered(tmp_path, caplog):
    """A pass that lost a file (a read that failed, then worked) names it and leaves it out of
    that pass only: the next data set decodes it again."""
    write_dataset(tmp_path, {"a": 2, "b": 2})
    check = create_test_dataset(tmp_path, (16, 16), 8).first_pass_check
    check.mark([0, 2, 3])  # the pass delivered all but the file a/01.png
    with caplog.at_level(logging.WARNING, logger="imgclf.data"):
        check.finish()
    assert caplog.messages == [
        f"skipping unreadable image '{tmp_path / 'a' / '01.png'}': could not be read "
        "(it decodes now; did it change while being read?)"
    ]
    assert remembered(tmp_path) == []
    assert pixel_levels(create_test_dataset(tmp_path, (16, 16), 8)) == [0, 1, 10, 11]


def _overwrite_keeping_size_and_time(path, colour):
    """Change a PNG's pixels without changing its size or modification time (so that only a
    cache can still give the old pixels)."""
    status = os.stat(path)
    Image.new("RGB", (16, 16), colour).save(path)
    assert os.stat(path).st_size == status.st_size
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))


@pytest.mark.parametrize("cache", ["memory", "directory"])
def test_cache_keeps_decoded_images_as_uint8(tmp_path, cache):
    data = write_dataset(tmp_path / "data", {"a": 3, "b": 2})
    cache = str(tmp_path / "cache") if cache == "directory" else cache
    # 16 px files resized to 20 x 24: bilinear resizing gives fractional pixels on the edges.
    gradient = np.linspace(0, 255, 16 * 16 * 3).reshape(16, 16, 3).astype(np.uint8)
    Image.fromarray(gradient).save(data / "a" / "00.png")
    plain = np.concatenate([images for images, _ in create_test_dataset(data, (20, 24), 2)])
    cached_ds = create_test_dataset(data, (20, 24), 2, cache=cache)
    cached = np.concatenate([images for images, _ in cached_ds])

    assert cached.dtype == np.float32
    np.testing.assert_array_equal(cached, np.round(plain))
    assert np.abs(cached - plain).max() <= 0.5
    assert np.abs(cached - plain).max() > 0  # there was something to round

    _overwrite_keeping_size_and_time(data / "b" / "01.png", (99, 99, 99))
    # Later epochs come from the cache; for a directory, so does a new data set of the same files.
    later = cached_ds if cache == "memory" else create_test_dataset(data, (20, 24), 2, cache=cache)
    assert pixel_levels(later)[-1] == 11
    assert pixel_levels(create_test_dataset(data, (20, 24), 2))[-1] == 99
    if cache != "memory":
        assert any(name.startswith("test-") for name in os.listdir(cache))


def test_cached_training_set_is_reshuffled_each_epoch(tmp_path):
    write_dataset(tmp_path, {"a": 10, "b": 10})
    train_ds, val_ds = create_train_val_datasets(tmp_path, (16, 16), 4, seed=3, cache="memory")
    epochs = [pixel_levels(train_ds) for _ in range(3)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(epochs[2])
    assert epochs[1] != epochs[2]
    assert pixel_levels(val_ds) == sorted(pixel_levels(val_ds))


@pytest.mark.parametrize(
    "cache, message",
    [
        (5, "cache must be None, 'memory' or a directory; received 5"),
        ("", "cache must be None, 'memory' or a directory; received ''"),
    ],
)
def test_bad_cache_argument(tmp_path, cache, message):
    write_dataset(tmp_path, {"a": 1})
    with pytest.raises(ValueError) as error:
        create_test_dataset(tmp_path, (16, 16), 2, cache=cache)
    assert str(error.value) == message


def test_cache_directory_that_is_a_file(tmp_path):
    write_dataset(tmp_path / "data", {"a": 1})
    (tmp_path / "cache").write_text("")
    with pytest.raises(ValueError) as error:
        create_test_dataset(tmp_path / "data", (16, 16), 2, cache=tmp_path / "cache")
    assert str(error.value) == f"cache directory '{tmp_path / 'cache'}' is a file"


def test_input_context_shards_the_training_files(tmp_path):
    write_dataset(tmp_path, {"a": 6, "b": 6})
    full, _ = create_train_val_datasets(tmp_path, (16, 16), 4)
    parts = [
        create_train_val_datasets(
            tmp_path, (16, 16), 4, input_context=tf.distribute.InputContext(2, index, 1)
        )[0]
        for index in range(2)
    ]
    assert sorted(parts[0].file_paths + parts[1].file_paths) == sorted(full.file_paths)
    assert not set(parts[0].file_paths) & set(parts[1].file_paths)
    assert sorted(pixel_levels(parts[0]) + pixel_levels(parts[1])) == sorted(pixel_levels(full))


def test_only_the_writer_writes_verdicts_and_cache_files(tmp_path, caplog):
    """In a multi-worker run every worker but the chief passes writer=False: it names bad files
    and caches, but writes nothing into the folders the workers share."""
    data = write_dataset(tmp_path / "data", {"a": 4, "b": 4})
    (data / "a" / "zz.png").write_bytes(b"")
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="imgclf.data"):
        worker = create_train_val_datasets(data, (16, 16), 4, cache=cache, writer=False)
        worker_test = create_test_dataset(data, (16, 16), 4, cache=cache, writer=False)
        levels = [sorted(pixel_levels(d)) for d in (*worker, worker_test) for _ in range(2)]
    assert levels[4] == levels[5] == [0, 1, 2, 3, 10, 11, 12, 13]
    assert caplog.messages == [f"skipping unreadable image '{data / 'a' / 'zz.png'}': "
                               "Input is empty."] * 2  # by its side of the split, by the test set
    assert not (data / VERDICTS_FILE).exists() and not cache.exists()

    chief = create_train_val_datasets(data, (16, 16), 4, cache=cache)
    assert sorted(pixel_levels(chief[0]) + pixel_levels(chief[1])) == levels[4]
    assert remembered(data) == ["a/zz.png"] and len(os.listdir(cache)) >= 2
