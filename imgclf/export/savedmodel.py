"""Writing a model as a servable SavedModel, atomically.

    >>> save_servable(model, "models/LenetModel/1")   # what `ImageClassifierModel.save` calls

The SavedModel holds the model's weights and its serving signatures (`imgclf.export.signatures`),
TF Serving's warm-up file (`imgclf.export.warmup`) and imgclf's metadata
(`imgclf.export.metadata`). It holds no optimizer state: a compiled, trained model saved as it is
carries its optimizer's slots (Adam: two per weight), which makes a version about 3x its weights
for nothing a server uses. Resumable training state belongs to a training checkpoint instead.
"""

import ctypes
import errno
import os
import re
import shutil
import socket
import logging
import uuid

import tensorflow as tf

from imgclf.export.metadata import model_metadata, write_model_metadata
from imgclf.export.signatures import MODULE_FUNCTIONS, SIGNATURE_FUNCTIONS, servable_signatures
from imgclf.export.warmup import write_warmup_requests

logger = logging.getLogger("imgclf.export")


#: How `save_servable` saves by default. TensorFlow traces a gradient function for each
#: custom-gradient op (swish, in EfficientNetV2) and matches its captures one by one with
#: `list.index`: 18 of the 24 s of saving an EfficientNetV2B0. Serving computes no gradient; imgclf
#: resumes training from Keras weights, never from a SavedModel; pass
#: `options=tf.saved_model.SaveOptions()` to take gradients through a reloaded one.
SERVING_SAVE_OPTIONS = tf.saved_model.SaveOptions(experimental_custom_gradients=False)


def save_servable(model, path, overwrite=True, options=None, metadata=None):
    """Write `model` as a SavedModel with its serving signatures at directory `path`, atomically.

    The SavedModel is written into a hidden directory beside `path` and renamed into place, so a
    reader (TensorFlow Serving polling a model base path) sees either nothing or all of it.
    `metadata` (a JSON-able dict, e.g. `imgclf.export.metadata.training_metadata(...)`) is added
    to the model's own description in `assets.extra/imgclf.json`.

    `options` (`tf.saved_model.SaveOptions`) defaults to `SERVING_SAVE_OPTIONS`: a SavedModel is
    for serving, so the gradient functions of custom-gradient ops are not traced into it.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    remove_abandoned_saves(parent, name)
    staging = os.path.join(parent, f".{name}.saving-{_owner()}-{uuid.uuid4().hex[:8]}")
    try:
        tf.saved_model.save(
            servable_module(model), staging, signatures=servable_signatures(model),
            options=SERVING_SAVE_OPTIONS if options is None else options,
        )
        write_warmup_requests(staging, model.image_shape)
        write_model_metadata(staging, {**model_metadata(model), **(metadata or {})})
        _replace_directory(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def remove_abandoned_saves(parent, name):
    """Delete the hidden folders that killed saves of `parent/name` left behind.

    A save writes `.NAME.saving-HOST-PID-XXXXXXXX` (and, where the atomic swap is missing,
    `.NAME.replaced-HOST-PID-XXXXXXXX`); a process killed part way leaves it there, hidden from
    TF Serving but taking disk. One whose process is gone on this host is removed; one of a live
    process, of another host (a shared file system) or of an older naming is left alone.
    Returns the paths removed.
    """
    pattern = re.compile(rf"\.{re.escape(name)}\.(?:saving|replaced)-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{{8}}")
    removed = []
    for entry in os.listdir(parent):
        match = pattern.fullmatch(entry)
        if match and match["host"] == socket.gethostname() and not _alive(int(match["pid"])):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
            removed.append(os.path.join(parent, entry))
    return removed


def _owner():
    """`HOST-PID` of this process, for the names of its temporary folders."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def servable_module(model):
    """What a SavedModel of `model` should hold: its variables and serving functions, nothing else.

    Saving the Keras model itself would also save whatever it tracks, its optimizer first. This
    module tracks only the model's own variables (as Keras' `ExportArchive` does) and the
    concrete functions of its serving `tf.function`s, which stay callable on the reloaded
    object: `tf.saved_model.load(path).predict_numpy_image(images)`. (Handed the `tf.function`s,
    `tf.saved_model.save` would trace each again in its own context. Their concrete functions
    share the model's one traced forward pass, `ImageClassifierModel._serving_forward`.)
    """
    module = tf.Module()
    module.model_variables = list(model.variables)
    for method in SIGNATURE_FUNCTIONS.values():
        setattr(module, method, getattr(model, method).get_concrete_function())
    for method in MODULE_FUNCTIONS:
        try:
            function = getattr(model, method).get_concrete_function()
        except (AttributeError, IndexError, TypeError, ValueError) as error:
            # An extra (embeddings) must never stop a save: a network whose classifier head
            # cannot be found is saved without it, and offline prediction says so if asked.
            logger.warning("saving %s without %s: %s", type(model).__name__, method, error)
            continue
        setattr(module, method, function)
    return module


def _replace_directory(source, target):
    """Rename directory `source` to `target`, replacing a `target` that exists.

    On Linux the two are swapped in one atomic step, so a process killed at any moment leaves
    `target` old or new, never missing; `source` then holds the old copy, for the caller to delete.
    """
    if not os.path.exists(target):
        os.rename(source, target)
        return
    if _exchange(source, target):
        return
    retired = os.path.join(os.path.dirname(target),
                           f".{os.path.basename(target)}.replaced-{_owner()}-{uuid.uuid4().hex[:8]}")
    os.rename(target, retired)
    try:
        os.rename(source, target)
    except OSError:
        os.rename(retired, target)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _exchange(first, second):
    """Swap two paths atomically with Linux's renameat2(RENAME_EXCHANGE); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # old kernel, or the file system
        return False
    raise OSError(code, os.strerror(code), first, None, second)
