"""`ResnetModel`: fine-tunes a ResNet50V2 backbone with a new classification head."""

import os

import keras

from imgclf.models.base import ImageClassifierModel
from imgclf.models.registry import register_model


@register_model
class ResnetModel(ImageClassifierModel):
    """ResNet50V2 backbone, global average pooling, dropout and a new dense head.

    Args:
        weights: backbone weights: `"imagenet"` (downloaded by Keras' own loader and cached in
            `~/.keras/models`), the path of a local weights file for
            `keras.applications.ResNet50V2(include_top=False)`, or `None` for random weights.
        dropout: dropout rate before the head.
        **kwargs: `ImageClassifierModel` arguments (`input_shape`, `num_classes`, `class_names`).

    Pixels are scaled to [-1, 1] inside the model, as ResNet50V2 expects, by a `Rescaling` layer.
    The backbone's batch normalisation runs in inference mode so fine-tuning on small batches
    does not wreck its statistics. Needs images of at least 32 x 32.

        >>> model = ResnetModel(input_shape=(224, 224, 3), num_classes=5, weights="imagenet")
    """

    # Fine-tuning a pretrained backbone wants small steps.
    default_learning_rate = 1e-4

    def __init__(self, input_shape=(224, 224, 3), num_classes=10, weights="imagenet", dropout=0.2,
                 **kwargs):
        if weights not in (None, "imagenet") and not os.path.isfile(os.fspath(weights)):
            raise ValueError(
                f"weights must be 'imagenet', None or the path of a weights file; received "
                f"{weights!r}, which is not a file"
            )
        self._backbone_weights = weights
        self._dropout = float(dropout)
        super().__init__(input_shape=input_shape, num_classes=num_classes, **kwargs)

    def create_model_io(self, input_shape, num_classes):
        if min(input_shape[:2]) < 32:
            raise ValueError(
                f"ResnetModel needs images of at least 32 x 32; received input_shape {input_shape}"
            )
        backbone = keras.applications.ResNet50V2(
            include_top=False,
            weights=self._backbone_weights,
            input_shape=input_shape,
            pooling="avg",
        )
        inputs = keras.Input(shape=input_shape, name="image")
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(inputs)
        x = backbone(x, training=False)
        x = keras.layers.Dropout(self._dropout)(x)
        outputs = keras.layers.Dense(num_classes, name="logits")(x)
        return inputs, outputs

    def get_config(self):
        # The trained weights come back from the saved file: a reloaded model must not download.
        return {**super().get_config(), "weights": None, "dropout": self._dropout}
