"""Data for training and evaluation: folder or TFRecord data sets as `tf.data` pipelines, the
folder-to-TFRecord converter, and sample data.

The names below and the submodules are imported on first use, so that
`python -m imgclf.data.tfrecord` (the converter) runs its module once, not after importing it
through this package (which made Python warn that the module was already imported).
"""

from imgclf._lazy import lazy_names

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
__getattr__, __dir__ = lazy_names(__name__, _HOMES, submodules=True)
