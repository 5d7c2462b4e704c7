"""Training-set augmentation in tf.data: seeded, 0-255 float32, new draws every epoch."""

import numpy as np
import pytest
import tensorflow as tf

import train_model
from imgclf.data.augmentation import AUGMENT_LEVELS, ImageAugmenter, augment_dataset
from imgclf.data.sample_data import write_sample_dataset
from imgclf.images import decode_image
from imgclf.models.lenet import LenetModel


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


def test_the_augmenter_crops_a_box_of_its_own_per_image_and_magnifies_it():
    """The crop the augmenter draws (`draw`) and applies (`apply`), the other transforms left out:
    on a left-to-right ramp a magnified part has a smaller range, different for each image."""
    ramp = np.tile(np.linspace(0, 255, 32, dtype=np.float32)[None, :, None], (32, 1, 3))
    images = tf.constant(np.stack([ramp] * 6))
    augmenter = ImageAugmenter("standard", seed=3)
    augmenter.layers = {}  # only the crop
    transforms = augmenter.draw(images)
    boxes = transforms["crop"].numpy()
    heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert np.all(boxes >= 0) and np.all(boxes <= 1)
    assert np.all(heights * widths >= 0.25 - 1e-6) and np.all(heights * widths <= 1 + 1e-6)
    cropped = augmenter.apply(images, transforms).numpy()
    assert cropped.shape == images.shape
    spans = cropped[:, 16, -1, 0] - cropped[:, 16, 0, 0]
    assert np.all(spans < 254.0) and np.all(spans > 0)
    np.testing.assert_allclose(spans, 255 * widths, rtol=0.1)
    assert len(set(np.round(spans, 3))) == 6


class BatchRecordingModel(LenetModel):
    """LeNet that keeps a copy of every batch `fit` trains on and evaluates (validation, test)."""

    batches = {"train": [], "evaluate": []}

    def _record(self, kind, images):
        def keep(batch):
            self.batches[kind].append(batch.numpy())
            return np.int32(0)

        return tf.py_function(keep, [images], tf.int32)

    def train_step(self, data):
        with tf.control_dependencies([self._record("train", data[0])]):
            return super().train_step(data)

    def test_step(self, data):
        with tf.control_dependencies([self._record("evaluate", data[0])]):
            return super().test_step(data)


def test_training_batches_are_augmented_and_evaluated_batches_are_not(tmp_path):
    write_sample_dataset(tmp_path / "data", num_classes=2, image_size=16, train_per_class=6,
                         test_per_class=2)
    assert train_model.main([
        "--train_dataset_path", str(tmp_path / "data" / "train"),
        "--test_dataset_path", str(tmp_path / "data" / "test"),
        "--model_folder_path", str(tmp_path / "models"),
        "--model_type", "test_augmentation:BatchRecordingModel", "--input_width", "16",
        "--input_height", "16", "--batch_size", "4", "--num_epochs", "1", "--patience", "1",
        "--augment", "standard", "--seed", "1",
    ]) == 0
    files = {
        decode_image(tf.io.read_file(str(path)), (16, 16)).numpy().tobytes()
        for path in (tmp_path / "data").glob("*/*/*.*")
    }
    trained = [image for batch in BatchRecordingModel.batches["train"] for image in batch]
    evaluated = [image for batch in BatchRecordingModel.batches["evaluate"] for image in batch]
    assert len(trained) >= 8 and len(evaluated) >= 4
    assert all(image.tobytes() in files for image in evaluated)   # as decoded
    assert not any(image.tobytes() in files for image in trained)  # every one augmented

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
