"""imgclf: train image classifiers with TensorFlow the object-oriented way; serve them with
TensorFlow Serving.

    >>> from imgclf import LenetModel
    >>> model = LenetModel(input_shape=(28, 28, 3), num_classes=10)
    >>> model.save("models/LenetModel/1")     # a SavedModel TF Serving loads as it is

The names below come from `imgclf.models` and are imported on first use, so that importing a
part that needs no TensorFlow (`imgclf.serving.client`, the command lines' argument parsing) stays
light.
"""

from imgclf._lazy import lazy_names

__version__ = "0.1.0"

# The public face is the models package's: the classes and their registry (imgclf.models
# exports this same list).
__all__ = [
    "BackboneModel",
    "ConvNeXtTinyModel",
    "EfficientNetV2B0Model",
    "ImageClassifierModel",
    "LenetModel",
    "MobileNetV2Model",
    "MobileNetV3SmallModel",
    "ResnetModel",
    "available_models",
    "create_model",
    "get_model_class",
    "register_model",
]
__getattr__, __dir__ = lazy_names(__name__, dict.fromkeys(__all__, "imgclf.models"))
