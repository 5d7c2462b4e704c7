"""imgclf: train image classifiers with TensorFlow the object-oriented way; serve them with
TensorFlow Serving.

    >>> from imgclf import LenetModel
    >>> model = LenetModel(input_shape=(28, 28, 3), num_classes=10)
    >>> model.save("models/LenetModel/1")     # a SavedModel TF Serving loads as it is
"""

from imgclf import models
from imgclf.models import (
    ImageClassifierModel,
    LenetModel,
    ResnetModel,
    available_models,
    create_model,
    get_model_class,
    register_model,
)

__version__ = "0.1.0"

# The public face is the models package's: the classes and their registry.
__all__ = list(models.__all__)
