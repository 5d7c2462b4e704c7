"""The registry of model classes behind `--model_type`.

Library models are registered by name; a user's model is named `package.module:ClassName` and
imported on demand, or registered with the `register_model` decorator:

    >>> @register_model          # also makes it loadable from .keras files
    ... class MyModel(ImageClassifierModel): ...
    >>> get_model_class("MyModel") is MyModel
    True
    >>> get_model_class("my_package.models:MyModel")
"""

import importlib

import keras

_MODEL_CLASSES = {}


def register_model(cls):
    """Register an `ImageClassifierModel` subclass by its class name, with imgclf and Keras.

    Keras' registration lets `keras.models.load_model` rebuild it from a `.keras` file without
    `custom_objects`. Use it as a class decorator.
    """
    from imgclf.models.base import ImageClassifierModel

    if not (isinstance(cls, type) and issubclass(cls, ImageClassifierModel)):
        raise TypeError(f"register_model takes an ImageClassifierModel subclass; received {cls!r}")
    package = "imgclf" if cls.__module__.startswith("imgclf.") else cls.__module__
    keras.saving.register_keras_serializable(package=package)(cls)
    _MODEL_CLASSES[cls.__name__] = cls
    return cls


def available_models():
    """Names of the registered model classes, sorted."""
    return sorted(_MODEL_CLASSES)


def get_model_class(model_type):
    """The model class named `model_type`: a registered name or `package.module:ClassName`."""
    from imgclf.models.base import ImageClassifierModel

    if not isinstance(model_type, str) or not model_type:
        raise ValueError(f"model type must be a non-empty string; received {model_type!r}")
    if ":" not in model_type:
        try:
            return _MODEL_CLASSES[model_type]
        except KeyError:
            raise ValueError(
                f"unknown model type {model_type!r}: expected one of "
                f"{', '.join(available_models())}, or 'package.module:ClassName'"
            ) from None
    module_name, _, class_name = model_type.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import module {module_name!r} for model type {model_type!r}: {error}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"module {module_name!r} has no class {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, ImageClassifierModel)):
        raise ValueError(f"{model_type!r} is not an ImageClassifierModel subclass")
    # Known to Keras, so its .keras files load without custom_objects; not added to the names.
    keras.saving.register_keras_serializable(package=cls.__module__)(cls)
    return cls


def create_model(model_type, **kwargs):
    """An instance of the model class named `model_type`, built with `kwargs`."""
    return get_model_class(model_type)(**kwargs)
