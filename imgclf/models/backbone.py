"""`BackboneModel`: the generic base of models built on a `keras.applications` backbone.

A registered subclass names its application and says how its pixels are preprocessed, its
default input size and its minimum; the base builds `preprocessing -> backbone (global average
pooled) -> dropout -> dense logits`, loads the backbone's weights and freezes or unfreezes the
backbone for the two phases of fine-tuning (Keras' transfer-learning guide):

    >>> model = MobileNetV2Model(num_classes=5, weights="imagenet")   # 224 x 224 by default
    >>> model.freeze_backbone()          # phase 1: only the head trains (what train() does)
    >>> model.unfreeze_backbone(20)      # phase 2: the top 20 layers too; BN stays frozen

A user's own backbone is a subclass that overrides `create_backbone`:

    >>> @register_model
    ... class MyBackboneModel(BackboneModel):
    ...     def create_backbone(self, input_shape, weights):
    ...         return keras.applications.DenseNet121(
    ...             include_top=False, weights=weights, input_shape=input_shape, pooling="avg")
    ...     def create_preprocessing(self):
    ...         return keras.layers.Normalization(mean=[123.7, 116.3, 103.5],
    ...                                           variance=[58.4**2, 57.1**2, 57.4**2])
"""

import hashlib
import os

import keras

from imgclf.models.base import ImageClassifierModel


class BackboneModel(ImageClassifierModel):
    """A `keras.applications` backbone with global average pooling, dropout and a dense head.

    Args:
        weights: the backbone's weights: `"imagenet"` (downloaded by Keras' own loader and cached
            in `~/.keras/models`), the path of a local weights file of the backbone built with
            `include_top=False` (what `backbone.save_weights("x.weights.h5")` writes), or `None`
            (or `"none"`) for random weights.
        dropout: dropout rate before the head.
        **kwargs: `ImageClassifierModel` arguments (`input_shape`, `num_classes`, `class_names`).

    The model takes raw 0-255 pixels: the subclass's preprocessing is a layer inside it (or
    inside the application, for those built with `include_preprocessing=True`).

    A pretrained backbone (weights not `None`) is trained in two phases by `imgclf.training`:
    frozen behind the new head, then unfrozen (all of it or its top layers) with batch
    normalisation kept in inference mode and a ten times lower learning rate. A backbone with
    random weights trains with the head from the start, in one phase.
    """

    #: The `keras.applications` function building the backbone, e.g. `keras.applications.MobileNetV2`.
    application = None
    #: Keyword arguments the application is built with besides `include_top`, `weights`,
    #: `input_shape` and `pooling`.
    application_kwargs = {}
    default_input_shape = (224, 224, 3)
    # keras.applications refuse smaller images (their five stride-2 stages make 32 px 1 x 1).
    min_input_size = 32
    default_schedule = "cosine"
    #: Epochs of the second phase (backbone unfrozen) when the weights are pretrained.
    default_fine_tune_epochs = 10

    def __init__(self, input_shape=None, num_classes=10, weights="imagenet", dropout=0.2,
                 **kwargs):
        type(self).validate_arguments(weights=weights, dropout=dropout)
        self._backbone_weights = _normalise_weights(weights)
        self._dropout = float(dropout)
        self._backbone_name = None
        self._weights_sha256 = None
        super().__init__(input_shape=input_shape, num_classes=num_classes, **kwargs)

    @classmethod
    def validate_arguments(cls, weights="imagenet", dropout=0.2, **kwargs):
        weights = _normalise_weights(weights)
        if weights not in (None, "imagenet") and not os.path.isfile(weights):
            raise ValueError(
                "weights must be 'imagenet', 'none' or the path of a weights file; received "
                f"{weights!r}, which is not a file"
            )
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not (
            0 <= dropout < 1
        ):
            raise ValueError(f"dropout must be a number in [0, 1); received {dropout!r}")
        super().validate_arguments(**kwargs)

    def create_backbone(self, input_shape, weights):
        """The backbone: a Keras model from `input_shape` images to pooled features `[batch, C]`.

        `weights` is `"imagenet"` or `None`; a weights file is loaded by the caller afterwards.
        """
        if type(self).application is None:
            raise TypeError(
                f"{type(self).__name__} must set `application` or override create_backbone"
            )
        return type(self).application(
            include_top=False, weights=weights, input_shape=input_shape, pooling="avg",
            **self.application_kwargs,
        )

    def create_preprocessing(self):
        """A layer from 0-255 pixels to what the backbone takes, or `None` when the backbone
        preprocesses its input itself."""
        return None

    def create_model_io(self, input_shape, num_classes):
        weights = self._backbone_weights
        backbone = self.create_backbone(input_shape, "imagenet" if weights == "imagenet" else None)
        if weights not in (None, "imagenet"):
            self._weights_sha256 = _sha256(weights)
            try:
                backbone.load_weights(weights)
            except (ValueError, OSError, KeyError) as error:
                raise ValueError(
                    f"cannot load weights file {weights!r} into {backbone.name} (built with "
                    f"include_top=False): {error}"
                ) from None
        self._backbone_name = backbone.name
        inputs = keras.Input(shape=input_shape, name="image")
        preprocessing = self.create_preprocessing()
        x = inputs if preprocessing is None else preprocessing(inputs)
        # No training=False here: Keras 3 passes fit's training=True into nested models anyway;
        # the backbone is frozen with `trainable = False` (see freeze_backbone).
        x = backbone(x)
        x = keras.layers.Dropout(self._dropout, name="dropout")(x)
        outputs = keras.layers.Dense(num_classes, name="logits")(x)
        return inputs, outputs

    @property
    def backbone(self):
        """The backbone model inside this one."""
        return self.get_layer(self._backbone_name)

    @property
    def pretrained(self):
        """Whether the backbone was built with pretrained weights (ImageNet or a file)."""
        return self._backbone_weights is not None

    @property
    def weights_source(self):
        """Where the backbone's starting weights came from, for the model's metadata:
        `"imagenet"`, `{"file": "<name>", "sha256": "<hex>"}` (the file loaded) or None (random).
        """
        weights = self._backbone_weights
        if weights in (None, "imagenet"):
            return weights
        return {"file": os.path.basename(weights), "sha256": self._weights_sha256}

    def freeze_backbone(self):
        """Phase 1: the backbone does not train and runs in inference mode, computing exactly
        what it computes when serving: its batch normalisation uses the moving statistics and
        its dropout and stochastic-depth layers (EfficientNetV2B0 has 15) do not drop, even under
        `fit`. The head's own dropout still drops. Recompile after.

            >>> model.freeze_backbone()
            >>> np.array_equal(model.backbone(x, training=True), model.backbone(x, training=False))
            True
        """
        backbone = self.backbone
        backbone.trainable = False  # a non-trainable BatchNormalization runs in inference mode
        # Dropout has no such rule, and Keras 3 passes fit's training=True down through every
        # nested layer, overriding a training=False given when the model was built: so the
        # backbone's own call is made to pass training=False to its layers.
        _set_inference_only(backbone, True)

    def unfreeze_backbone(self, num_layers=None):
        """Phase 2: the backbone trains, all of it or its top `num_layers` layers, with every
        `BatchNormalization` layer kept frozen (in inference mode). Recompile after.

        Returns how many of the backbone's layers are trainable now.
        """
        if num_layers is not None and (
            isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1
        ):
            raise ValueError(
                f"num_layers must be a positive integer or None; received {num_layers!r}"
            )
        backbone = self.backbone
        backbone.trainable = True
        _set_inference_only(backbone, False)
        layers = backbone.layers
        frozen = layers[: max(len(layers) - num_layers, 0)] if num_layers else []
        for layer in frozen:
            layer.trainable = False
        for layer in _all_layers(backbone):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        return sum(1 for layer in layers if layer.trainable)

    def get_config(self):
        # The trained weights come back from the saved file: a reloaded model must not download.
        return {**super().get_config(), "weights": None, "dropout": self._dropout}


def _set_inference_only(model, inference_only):
    """Make `model`'s calls pass `training=False` to its layers whatever its caller says
    (`inference_only`), or undo that. The override is this instance's own `call`."""
    if not inference_only:
        model.__dict__.pop("call", None)
        return
    call = type(model).call.__get__(model)

    def call_in_inference_mode(*args, training=None, **kwargs):
        return call(*args, training=False, **kwargs)

    model.call = call_in_inference_mode


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _normalise_weights(weights):
    if weights is None:
        return None
    weights = os.fspath(weights)
    if weights.lower() == "none":
        return None
    if weights.lower() == "imagenet":
        return "imagenet"
    return weights


def _all_layers(model):
    """Every layer of `model`, including those of nested models."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
