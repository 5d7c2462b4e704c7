"""imgclf's programs import TensorFlow without the pandas and pyplot Keras would load for nothing
(`imgclf.tensorflow_import`), and both still import afterwards for what needs them."""

import subprocess
import sys
import threading

import pytest
import tensorflow as tf

from imgclf.tensorflow_import import _Absent, import_tensorflow

PROGRAM = """
import sys
from imgclf.tensorflow_import import import_tensorflow
tf = import_tensorflow()
import keras
from keras.src.trainers.data_adapters import array_slicing
from keras.src.visualization import plot_image_gallery
print(sorted(name for name in ("pandas", "matplotlib") if name in sys.modules))
print(array_slicing.pandas, plot_image_gallery.plt, tf.constant(2.0).numpy() * 2)
import pandas, matplotlib.pyplot  # afterwards, as Spark and the reports import them
print(pandas.DataFrame({"a": [1]}).shape, matplotlib.pyplot.figure().number)
"""


def test_tensorflow_imports_without_pandas_and_pyplot_which_import_afterwards():
    result = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                            env={"TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["[]", "None None 4.0", "(1, 1) 1"]


def test_where_tensorflow_is_imported_it_is_returned_as_it_is():
    finders = list(sys.meta_path)
    assert import_tensorflow() is tf
    assert sys.meta_path == finders


def test_the_spark_jobs_modules_import_no_tensorflow():
    """Spark's Python workers import these modules for the jobs' functions; TensorFlow comes
    later, through `import_tensorflow`, where a job needs it."""
    code = ("import sys, imgclf.spark.files, imgclf.spark.prediction, imgclf.spark.records; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_only_the_importing_thread_sees_the_extras_absent():
    finder = _Absent(("pandas",))
    with pytest.raises(ModuleNotFoundError, match="No module named 'pandas.core'"):
        finder.find_spec("pandas.core")
    assert finder.find_spec("numpy") is None
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(finder.find_spec("pandas")))
    thread.start()
    thread.join()
    assert elsewhere == [None]
