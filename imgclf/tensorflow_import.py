"""How imgclf's own programs import TensorFlow: without the optional extras Keras loads and they
never use.

`import tensorflow` imports Keras, and Keras imports pandas (so that `fit` accepts DataFrames) and
matplotlib's pyplot (for `keras.visualization`) whenever they are installed. They are installed
with imgclf (pandas for Spark, matplotlib for the evaluation reports), and on this project's
2-core machine they took 1.3-1.8 of the 5.5-6.2 CPU s of `import tensorflow`, in every server,
training, prediction and Spark training process. Without them a server with a LeNet is ready
after 6.6-6.8 CPU s instead of 7.4-7.8, and holds 600 MB instead of 694.

The programs (`imgclf-serve`, `imgclf-train`, `imgclf-eval`, `imgclf-predict`, a Spark training
task's child) call `import_tensorflow()` before anything imports TensorFlow, and so do imgclf's
Spark jobs in a Python worker before its first model or TFRecord shard. While TensorFlow and
Keras import, pandas and matplotlib look absent, so Keras goes without its DataFrame support and
`keras.visualization`, which no imgclf program uses; afterwards both import as always, for
whatever needs them (Spark, the reports).

    >>> from imgclf.tensorflow_import import import_tensorflow
    >>> tf = import_tensorflow()
"""

import sys
import threading

#: What Keras imports if it can, and imgclf's programs do not use through Keras.
KERAS_EXTRAS = ("pandas", "matplotlib")


class _Absent:
    """A meta-path finder for which `packages` (and their submodules) are not installed, in the
    thread that made it: other threads (a Spark worker's) import them as always meanwhile."""

    def __init__(self, packages):
        self.packages = packages
        self.thread = threading.get_ident()

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.packages and threading.get_ident() == self.thread:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def import_tensorflow():
    """Import TensorFlow and Keras without `KERAS_EXTRAS`; return the `tensorflow` module.

    Where TensorFlow is already imported, it is returned as it is; an extra already imported is
    left to Keras.
    """
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return sys.modules["tensorflow"]
    finder = _Absent(tuple(name for name in KERAS_EXTRAS if name not in sys.modules))
    sys.meta_path.insert(0, finder)
    try:
        import keras  # noqa: F401  (TensorFlow imports it too; this makes sure of it)
        import tensorflow
    finally:
        sys.meta_path.remove(finder)
    return tensorflow
