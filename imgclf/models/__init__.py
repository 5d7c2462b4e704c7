"""Image classifier models: the abstract base, the library's architectures and their registry."""

from imgclf.models.base import ImageClassifierModel
from imgclf.models.registry import available_models, create_model, get_model_class, register_model
from imgclf.models.lenet import LenetModel
from imgclf.models.resnet import ResnetModel

__all__ = [
    "ImageClassifierModel",
    "LenetModel",
    "ResnetModel",
    "available_models",
    "create_model",
    "get_model_class",
    "register_model",
]
