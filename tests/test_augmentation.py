"""Training-set augmentation in tf.data: seeded, 0-255 float32, new draws every epoch."""

import numpy as np
import pytest
import tensorflow as tf

from imgclf.data.augmentation import AUGMENT_LEVELS, augment_dataset, random_resized_crop


def batches(rng, count=8, size=24):
    pixels = rng.integers(0, 256, size=(count, size, size, 3)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((pixels, np.arange(count, dtype=np.int32))).batch(4)
    dataset.class_names = ["a", "b"]
    return pixels, dataset


def epochs(dataset, count=2):
    runs = []
    for _ in range(count):
        images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
        runs.append((np.concatenate(images), np.concatenate(labels)))
    return runs


@pytest.mark.parametrize("level", ["light", "standard"])
def test_augmentation_is_seeded_keeps_pixels_and_labels_and_changes_each_epoch(level, rng):
    pixels, dataset = batches(rng)
    first, second = epochs(augment_dataset(dataset, level, seed=7))
    again, _ = epochs(augment_dataset(dataset, level, seed=7))
    other, _ = epochs(augment_dataset(dataset, level, seed=8))

    images, labels = first
    assert images.dtype == np.float32 and images.shape == pixels.shape
    assert images.min() >= 0.0 and images.max() <= 255.0
    np.testing.assert_array_equal(labels, np.arange(8))
    assert not np.allclose(images, pixels, atol=1.0)   # it augments
    np.testing.assert_array_equal(images, again[0])     # the same seed repeats it
    assert not np.allclose(images, second[0])           # every epoch draws anew
    assert not np.allclose(images, other[0])            # another seed, other images


def test_none_returns_the_dataset_and_an_unknown_level_is_refused(rng):
    _, dataset = batches(rng)
    assert augment_dataset(dataset, "none", seed=1) is dataset
    assert augment_dataset(dataset, "light", seed=1).class_names == ["a", "b"]
    with pytest.raises(ValueError) as error:
        augment_dataset(dataset, "heavy")
    assert str(error.value) == "augment must be one of none, light, standard; received 'heavy'"
    assert list(AUGMENT_LEVELS) == ["none", "light", "standard"]


def test_random_resized_crop_magnifies_a_part_of_each_image():
    # A left-to-right ramp: a crop of part of it, resized back, has a smaller range of values and
    # every image of the batch gets a box of its own.
    ramp = np.tile(np.linspace(0, 255, 32, dtype=np.float32)[None, :, None], (32, 1, 3))
    images = tf.constant(np.stack([ramp] * 6))
    cropped = random_resized_crop(images, tf.random.Generator.from_seed(3), min_area=0.25).numpy()
    assert cropped.shape == images.shape
    spans = cropped[:, 16, -1, 0] - cropped[:, 16, 0, 0]
    assert np.all(spans < 255.0) and np.all(spans > 0)
    assert len(set(np.round(spans, 3))) == 6


def test_an_epochs_draws_depend_on_the_epoch_not_on_earlier_epochs(rng):
    """A run resumed at epoch 3 draws epoch 3's augmentation, not epoch 0's (issue 12 §3)."""
    _, dataset = batches(rng)
    unkilled = augment_dataset(dataset, "light", seed=7)
    drawn = []
    for epoch in range(4):
        unkilled.start_epoch(epoch)
        drawn.append(epochs(unkilled, 1)[0][0])
    resumed = augment_dataset(dataset, "light", seed=7)
    resumed.start_epoch(3)
    np.testing.assert_array_equal(epochs(resumed, 1)[0][0], drawn[3])
    assert not np.allclose(drawn[3], drawn[0])
