"""imgclf's `tf.data` functions made for the iterator's own device, so an epoch does not wait for
Grappler before its first batch.

Keras opens a training set's iterator anew every epoch, and an iterator makes (instantiates)
every function of its data set again. TensorFlow makes a `tf.data` function as a multi-device
function unless told otherwise (`CapturedFunction`): each time, Grappler optimises its graph and
oneDNN's layout pass looks up the kernels of each of its ops (`mkl_op_registry::IsMklOp`), about
half a millisecond per op. On the bench's one-second epochs, making the iterator took 39-47 ms
of an imgclf training set's 77-98 ms to its first batch (TFRecord: 144-165 ms, with functions
made again inside each epoch's `flat_map`). Made for one device, the iterator took 4 ms, the
first batch 27 ms (TFRecord 71).

A function whose definition carries `experimental_ints_on_device` is made for the iterator's
device alone: what `tf.data` functions run on anyway, the host's CPU. imgclf's data set functions
read only host resources (their variables are made by `host_variable`), which is what a
one-device function needs. The attribute has no public door: every function handed to a
`tf.data` transformation is traced by `StructuredFunctionWrapper`, which takes attributes in
`defun_kwargs`, and no transformation passes any. While `one_device_functions()` is active in
a thread, the wrappers made in that thread get the attribute; other threads' data sets (Keras'
loader, a user's) are left as they are. With another TensorFlow, where the wrapper is not
found, it does nothing.

    >>> with one_device_functions():
    ...     dataset = tf.data.Dataset.range(3).map(lambda x: x + 1)

    >>> @one_device_functions()
    ... def create_dataset(...): ...
"""

import contextlib
import functools
import threading

import tensorflow as tf
from tensorflow.python.ops import resource_variable_ops

#: The function attribute that turns multi-device instantiation off (TensorFlow's
#: `FunctionLibraryDefinition::kIntsOnDeviceAttr`).
ONE_DEVICE_ATTRIBUTE = "experimental_ints_on_device"

_active = threading.local()
_install_lock = threading.Lock()
_installed = False


def _install():
    """Wrap `StructuredFunctionWrapper.__init__` once: the attribute is added while the calling
    thread is inside `one_device_functions()`. Nothing if the wrapper is not there."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
        try:
            from tensorflow.python.data.ops.structured_function import StructuredFunctionWrapper
        except ImportError:
            return
        original = StructuredFunctionWrapper.__init__

        @functools.wraps(original)
        def __init__(self, *args, **kwargs):
            if getattr(_active, "depth", 0) and not kwargs.get("use_legacy_function", False):
                kwargs["defun_kwargs"] = {**(kwargs.get("defun_kwargs") or {}),
                                          ONE_DEVICE_ATTRIBUTE: True}
            original(self, *args, **kwargs)

        StructuredFunctionWrapper.__init__ = __init__


@contextlib.contextmanager
def one_device_functions():
    """Within it, the functions this thread hands to `tf.data` are made for one device (see the
    module's docstring). Nests; usable as a decorator."""
    _install()
    _active.depth = getattr(_active, "depth", 0) + 1
    try:
        yield
    finally:
        _active.depth -= 1


def host_variable(initial_value, name):
    """A variable a data set's functions read and write: on the host's CPU, where `tf.data` runs
    them (one-device functions can read nothing else), and made directly, not through
    `tf.Variable`, so that a distribution strategy's scope does not make it a distributed
    variable (one per replica) that a data set cannot read. Not trainable."""
    with tf.init_scope(), tf.device("/device:CPU:0"):
        return resource_variable_ops.ResourceVariable(initial_value, trainable=False, name=name)
