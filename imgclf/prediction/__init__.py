"""Offline prediction: label a folder, a list or a million image files with a saved model.

    >>> from imgclf.prediction import Predictor, predict_files
    >>> for row in predict_files("models/LenetModel", ["photos/"]):
    ...     print(row["path"], row["class"], row["probability"], row["error"])
    >>> predict_files("models/LenetModel", ["photos/"], output="labels.parquet")

`Predictor` (`predictor`) loads a SavedModel or a `.keras` file and predicts batches of encoded
images exactly as the served model does; `predict_files` (`files`) streams the inputs
(`inputs`), writes resumable parts (`outputs`) and shows progress (`progress`). The command
`imgclf-predict` (`imgclf.cli.predict`) is the same on the command line; `imgclf.spark` runs the
same predictions on Spark. The output's columns are in `columns`.
"""

import importlib

__all__ = ["Predictor", "TooManyErrors", "predict_files"]

_HOMES = {
    "Predictor": "imgclf.prediction.predictor",
    "TooManyErrors": "imgclf.prediction.files",
    "predict_files": "imgclf.prediction.files",
}


def __getattr__(name):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'imgclf.prediction' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
