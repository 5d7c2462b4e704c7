"""Deprecated alias: `ModelCheckpoint` moved to `imgclf.training` (`imgclf.training.callbacks`).

    >>> from imgclf.training import ModelCheckpoint      # not: from imgclf.callbacks import ...
"""

from imgclf._moved import moved_names

__getattr__, __dir__ = moved_names(__name__, "imgclf.training", ["ModelCheckpoint"])
