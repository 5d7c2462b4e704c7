"""Data for training and evaluation: folder or TFRecord data sets as `tf.data` pipelines, the
folder-to-TFRecord converter, and sample data.

The names below and the submodules are imported on first use, so that
`python -m imgclf.data.tfrecord` (the converter) runs its module once, not after importing it
through this package (which made Python warn that the module was already imported).
"""

import importlib

#: Public names and the submodule each lives in.
_HOMES = {
    "convert_folder": "imgclf.data.tfrecord",
    "create_test_dataset": "imgclf.data.datasets",
    "create_train_val_datasets": "imgclf.data.datasets",
    "first_pass_errors": "imgclf.data.pipeline",
    "list_image_files": "imgclf.data.folders",
    "list_labels": "imgclf.data.datasets",
}

__all__ = sorted(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    try:  # a submodule, as `import imgclf.data` made them all attributes before
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_HOMES))
