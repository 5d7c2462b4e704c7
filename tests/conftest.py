import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image

import conftest_serving
from conftest_serving import SHARED_SERVER_MODULES
from imgclf.tensorflow_import import import_tensorflow

# The test processes import TensorFlow as imgclf's programs do: without the pandas and pyplot
# Keras would load for nothing (1.3-1.8 CPU s each); Spark's tests import pandas afterwards.
import_tensorflow()


def encode_image(pixels, image_format="PNG", mode=None):
    """Encode a uint8 array `[H, W, 3]` (or `[H, W]`) as image bytes with Pillow."""
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.fixture
def rng():
    return np.random.default_rng(0)



# `make test` runs the suite in four processes (`-n 4 --dist loadfile`, pytest-xdist) on two cores.
# Many tests wait on processes of their own (servers starting, training workers talking over
# loopback), which the other test processes fill: with four, no core was idle in any 30 s of a
# run (/proc/stat), and the suite took 9:29-10:47 against 10:17 with three. How the tests are
# shared out:
# - each module runs whole in one process, so its module-scoped fixtures (a trained model, a
#   started server) are made once, not once per process;
# - the modules that run several training processes at once form one unit, run one after the
#   other (two at once would be four TensorFlow processes on two cores, each waiting for every
#   worker at every step); the other Spark modules join it, so that one Spark JVM serves them
#   all (each JVM costs 10-15 CPU s to start and warm up);
# - the serving modules that share one server (`conftest_serving.SHARED_SERVER_MODULES`) form
#   another unit, so that one server serves them all;
# - the longest units start first (measured with --durations), so the processes end at about
#   the same time.
# (xdist's own `xdist_group` marks do not work with pytest 9.2: xdist 3.8 renames test ids
# through `item._nodeid`, which pytest no longer reads; hence a scheduler of our own.)
#: Modules whose tests start several training processes each (TF_CONFIG clusters on loopback).
MULTI_PROCESS_TRAINING = ("test_distributed_training", "test_distributed_backup",
                          "test_distributed_keras_bug", "test_spark_training")
#: The other modules that use Spark (`tests/conftest_spark.py`): in the same unit, one JVM.
SPARK_MODULES = ("test_spark_records", "test_spark_predict", "test_spark_session")
#: Modules that take longest, longest first (they train, or build every backbone, or start
#: several servers); the others follow in collection order.
LONGEST_FIRST = (*MULTI_PROCESS_TRAINING, "test_models", "test_training_finetune",
                 "test_training_options", "test_export_training", "test_training_identity",
                 "test_training_resume", "test_spark_predict", "test_serving_json_dense",
                 "test_serving_versions", "test_prediction_files", "test_scripts",
                 "test_data_benchmarks", "test_spark_records", "test_eval_model_serving",
                 "test_serving_reload_config", "test_data_folders")


def _module_name(nodeid):
    return os.path.splitext(os.path.basename(nodeid.split("::", 1)[0]))[0]


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile`, with the multi-process training modules as one unit, in the order
    the workers collected the tests (longest first, see `pytest_collection_modifyitems`)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid):
            if _module_name(nodeid) in MULTI_PROCESS_TRAINING + SPARK_MODULES:
                return "multi-process training"
            if _module_name(nodeid) in SHARED_SERVER_MODULES:
                return "shared server"
            return super()._split_scope(nodeid)

    config.option.loadscopereorder = False  # xdist would order the units by their test count
    return Scheduling(config, log)


def pytest_collection_modifyitems(config, items):
    if not hasattr(config, "workerinput"):  # not an xdist worker: collection order as always
        return
    rank = {module: index for index, module in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_module_name(item.nodeid), len(rank)))  # stable


#: How much lower the priority of test processes is while they run other modules than the
#: multi-process training unit (see `pytest_runtest_setup`): the lowest. At 5 the unit took 450 s
#: of a 10:17-11:21 suite; at 19, 377-398 s, and the suite 9:29-10:47.
OTHER_TESTS_NICENESS = 19


def pytest_runtest_setup(item):
    """In `make test`, the multi-process training unit is the critical path: its two training
    processes wait for each other at every step, and each step they lose to another test process
    is lost twice. The test processes running other modules (and what they start) lower their
    priority once, so they take the cores the unit leaves idle rather than share them with it;
    the unit's tests and their workers keep the normal priority. A process that ran another test
    first never runs the unit (it is scheduled first, to one process, `pytest_xdist_make_scheduler`),
    and a priority can only be lowered."""
    config = item.config
    if not hasattr(config, "workerinput") or getattr(config, "_imgclf_niced", False):
        return
    if _module_name(item.nodeid) not in MULTI_PROCESS_TRAINING:
        os.nice(OTHER_TESTS_NICENESS)
        config._imgclf_niced = True


def pytest_sessionfinish(session):
    """Stop the server the serving modules shared, if this process started one."""
    conftest_serving.stop_shared_lenet_server()
