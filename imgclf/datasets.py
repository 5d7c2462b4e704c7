"""Deprecated alias: the data set functions moved to `imgclf.data`.

    >>> from imgclf.data import create_train_val_datasets   # not: from imgclf.datasets import ...
"""

from imgclf._moved import moved_names

__getattr__, __dir__ = moved_names(
    __name__, "imgclf.data",
    ["create_test_dataset", "create_train_val_datasets", "list_image_files"],
)
