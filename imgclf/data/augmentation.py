"""Training-set augmentation in `tf.data`: random resized crop, flip, rotation, brightness, contrast.

    >>> train_ds, val_ds = create_train_val_datasets("data/train", (224, 224, 3), 32)
    >>> train_ds = augment_dataset(train_ds, "light", seed=42)

It runs in the input pipeline, on the CPU, before batches reach the model: the training step
(XLA-compiled or on a GPU) and the served graph never see it, and validation and test images are
never augmented. Images stay float32 0-255 pixels at their size.

=========  ==========================  =====  ==============  ==========  ========
level      random resized crop (area)  flip   rotation        brightness  contrast
=========  ==========================  =====  ==============  ==========  ========
none       -                           -      -               -           -
light      60-100 %, aspect 3/4-4/3    left-  up to +-9 deg   +-10 %      +-10 %
                                       right
standard   25-100 %, aspect 3/4-4/3    left-  up to +-18 deg  +-20 %      +-20 %
                                       right
=========  ==========================  =====  ==============  ==========  ========

With a `seed` the augmented batches repeat from run to run; every epoch draws new ones, from
(seed, epoch) once training calls `dataset.start_epoch(epoch)` (a resumed run does not replay). The random
choices are drawn batch after batch; the transforms themselves run in parallel.
"""

import dataclasses
import math

import keras
import tensorflow as tf

from imgclf.data.epochs import epoch_seed, reseed_layers
from imgclf.data.pipeline import keep_attributes


@dataclasses.dataclass(frozen=True)
class AugmentPolicy:
    """How strongly a level augments; see the module's table."""

    min_crop_area: float
    rotation: float  # a fraction of a full turn, as keras.layers.RandomRotation takes it
    brightness: float
    contrast: float


#: `--augment` levels. `None` means no augmentation.
AUGMENT_LEVELS = {
    "none": None,
    "light": AugmentPolicy(min_crop_area=0.6, rotation=0.025, brightness=0.1, contrast=0.1),
    "standard": AugmentPolicy(min_crop_area=0.25, rotation=0.05, brightness=0.2, contrast=0.2),
}

_ASPECT_RATIOS = (3 / 4, 4 / 3)


def augment_dataset(dataset, level="light", seed=None):
    """`dataset` of `(images, labels)` batches with its images augmented at `level`.

    Args:
        dataset: a `tf.data.Dataset` of float32 0-255 images `[batch, height, width, 3]` and
            labels; its attributes (`class_names`, `file_paths`...) are kept.
        level: one of `AUGMENT_LEVELS` (`"none"` returns `dataset` itself).
        seed: an integer for repeatable augmentation, or None.
    """
    augmenter = ImageAugmenter(level, seed)
    if augmenter.policy is None:
        return dataset
    # Two maps: the random draws (cheap) one batch after another, so that a seed gives the same
    # draws in the same order; the image transforms (the costly part) in parallel, in order.
    # Neither has Python control flow on tensors: AutoGraph would only cost time.
    drawn = dataset.map(tf.autograph.experimental.do_not_convert(
        lambda images, labels: (images, labels, augmenter.draw(images))))
    augmented = drawn.map(
        tf.autograph.experimental.do_not_convert(
            lambda images, labels, transforms: (augmenter.apply(images, transforms), labels)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
    )
    augmented = keep_attributes(dataset, augmented.prefetch(tf.data.AUTOTUNE))
    if seed is not None:
        augmented.start_epoch = _starting_both(getattr(dataset, "start_epoch", None), augmenter)
    return augmented


def _starting_both(start_data_epoch, augmenter):
    def start_epoch(epoch):
        if start_data_epoch is not None:
            start_data_epoch(epoch)
        augmenter.start_epoch(epoch)

    return start_epoch


class ImageAugmenter:
    """Augments float32 0-255 batches `[batch, height, width, 3]` at a level of `AUGMENT_LEVELS`.

        >>> augmenter = ImageAugmenter("light", seed=1)
        >>> augmented = augmenter(images)        # = augmenter.apply(images, augmenter.draw(images))

    `draw` makes the random choices of a batch (stateful: call it in a fixed order for repeatable
    results); `apply` transforms the images with them (stateless: run it in parallel). The flip,
    rotation, brightness and contrast are Keras' preprocessing layers, used through their
    `get_random_transformation` / `transform_images` halves.
    """

    def __init__(self, level, seed=None):
        if level not in AUGMENT_LEVELS:
            raise ValueError(
                f"augment must be one of {', '.join(AUGMENT_LEVELS)}; received {level!r}"
            )
        self.policy = policy = AUGMENT_LEVELS[level]
        if policy is None:
            return
        self.generator = (
            tf.random.Generator.from_non_deterministic_state() if seed is None
            else tf.random.Generator.from_seed(seed)
        )
        self.seed = seed
        seeds = [None if seed is None else seed + i for i in range(1, 5)]
        self.layers = {
            "flip": keras.layers.RandomFlip("horizontal", seed=seeds[0]),
            "rotation": keras.layers.RandomRotation(policy.rotation, fill_mode="reflect",
                                                    seed=seeds[1]),
            "brightness": keras.layers.RandomBrightness(policy.brightness, value_range=(0, 255),
                                                        seed=seeds[2]),
            "contrast": keras.layers.RandomContrast(policy.contrast, value_range=(0, 255),
                                                    seed=seeds[3]),
        }

    def start_epoch(self, epoch):
        """Draw epoch `epoch`'s choices from now on: a function of (seed, epoch) only, so a run
        resumed at `epoch` draws what it would have drawn unkilled (`imgclf.data.epochs`).

        Only with a seed; call it before the epoch's batches are drawn."""
        if self.policy is None or self.seed is None:
            return
        self.generator.reset_from_seed(epoch_seed(self.seed, epoch, "crop"))
        reseed_layers(self.layers.values(), self.seed, epoch, "augment")

    def draw(self, images):
        """The random choices for a batch: crop boxes and each layer's transformation."""
        transforms = {"crop": random_crop_boxes(tf.shape(images)[0], self.generator,
                                                self.policy.min_crop_area)}
        for name, layer in self.layers.items():
            transforms[name] = layer.get_random_transformation(images, training=True)
        return transforms

    def apply(self, images, transforms):
        """`images` transformed with the choices of `draw`, clipped to 0-255 float32."""
        shape = tf.shape(images)
        images = tf.image.crop_and_resize(
            images, transforms["crop"], tf.range(shape[0]), crop_size=shape[1:3]
        )
        for name, layer in self.layers.items():
            images = layer.transform_images(images, transforms[name], training=True)
        return tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0)

    def __call__(self, images):
        return images if self.policy is None else self.apply(images, self.draw(images))


def random_crop_boxes(batch, generator, min_area, aspect_ratios=_ASPECT_RATIOS):
    """`[batch, 4]` boxes `(top, left, bottom, right)` in [0, 1] for an Inception-style crop.

    Each box covers `min_area` to all of the image's area, with an aspect ratio between
    `aspect_ratios`, at a random place; `generator` is a `tf.random.Generator`.
    """
    area = generator.uniform([batch], min_area, 1.0)
    log_ratio = generator.uniform([batch], math.log(aspect_ratios[0]), math.log(aspect_ratios[1]))
    ratio = tf.exp(log_ratio)
    height = tf.minimum(tf.sqrt(area / ratio), 1.0)
    width = tf.minimum(tf.sqrt(area * ratio), 1.0)
    top = generator.uniform([batch]) * (1.0 - height)
    left = generator.uniform([batch]) * (1.0 - width)
    return tf.stack([top, left, top + height, left + width], axis=1)


def random_resized_crop(images, generator, min_area, aspect_ratios=_ASPECT_RATIOS):
    """Crop each image to a random box (`random_crop_boxes`), resized back to the batch's size."""
    shape = tf.shape(images)
    boxes = random_crop_boxes(shape[0], generator, min_area, aspect_ratios)
    return tf.image.crop_and_resize(images, boxes, tf.range(shape[0]), crop_size=shape[1:3])
