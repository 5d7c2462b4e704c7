"""Remembered verdicts on unreadable image files, so that a data set starts without a decoding pass.

Which files of a data set do not decode is learnt while the first epoch decodes them (see
`imgclf.data.pipeline`); the verdicts are then kept in `.imgclf-verdicts.json` beside the data
(a hidden file, so it is never taken for a class or an image), keyed by the file's path relative
to the data set folder, its size and its modification time. The next data set made from that
folder afterwards (`eval_model.py`, the next training run) leaves those files out before any
decoding and names each in a warning again. A file that was changed since gets a new verdict.
Only verdicts on a file's bytes are stored (it is not an image, truncated, too large): a file
that could not be read (an I/O error, permission denied, gone) or that decodes when checked again
is left out of that pass only, and tried again by the next data set. Only unreadable files are
stored, so the file stays small however large the data set is. In a multi-worker run only the
chief writes it (`writer`).

When the data folder cannot be written to, the verdicts go to
`$XDG_CACHE_HOME/imgclf/verdicts/` (default `~/.cache/imgclf/verdicts/`) instead.

    >>> store = VerdictStore("data/train")
    >>> store.unreadable(["data/train/cat/empty.png", "data/train/cat/ok.png"])
    {'data/train/cat/empty.png': 'Input is empty.'}
    >>> store.remember({"data/train/dog/cut.jpg": "Invalid JPEG data or crop window"})
"""

import hashlib
import json
import logging
import os
import tempfile

import tensorflow as tf

from imgclf.images import MAX_IMAGE_PIXELS

logger = logging.getLogger("imgclf.data")

#: The file, in a data set folder, that keeps the verdicts on its unreadable files.
VERDICTS_FILE = ".imgclf-verdicts.json"


def _decoder_identity():
    """What a verdict depends on besides the file: a new decoder or limit re-checks every file.
    `verdicts` 2: only verdicts on a file's bytes are kept (version 1 kept read errors too)."""
    return {"tensorflow": tf.__version__, "max_image_pixels": MAX_IMAGE_PIXELS, "verdicts": 2}


class VerdictStore:
    """The remembered unreadable files of the data set folder `folder`.

    Paths given to and returned by the methods are the paths the loader uses (`folder/...`).
    With `writer=False` (every worker of a multi-worker run but the chief) the store is read but
    never written, so that one process writes the shared file.
    """

    def __init__(self, folder, writer=True):
        self.folder = os.path.abspath(os.fspath(folder))
        self.path = _store_path(self.folder)
        self.writer = writer

    def _read(self):
        try:
            with open(self.path, encoding="utf-8") as file:
                content = json.load(file)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            logger.info("ignoring unreadable verdicts file '%s': %s", self.path, error)
            return {}
        if not isinstance(content, dict) or content.get("decoder") != _decoder_identity():
            return {}
        unreadable = content.get("unreadable")
        return unreadable if isinstance(unreadable, dict) else {}

    def unreadable(self, paths):
        """`{path: reason}` for those of `paths` remembered as unreadable and not changed since."""
        remembered = self._read()
        if not remembered:
            return {}
        found = {}
        for path in paths:
            entry = remembered.get(self._key(path))
            if entry and _signature(path) == [entry.get("size"), entry.get("mtime_ns")]:
                found[path] = entry.get("reason", "")
        return found

    def remember(self, unreadable):
        """Add `{path: reason}` to the remembered verdicts (written atomically; a failure to write
        only costs a later run the check). Verdicts on a file's bytes only: a read error may not
        happen again. Does nothing unless this store is the `writer`."""
        if not unreadable or not self.writer:
            return
        remembered = self._read()
        for path, reason in unreadable.items():
            signature = _signature(path)
            if signature is not None:
                size, mtime_ns = signature
                remembered[self._key(path)] = {"size": size, "mtime_ns": mtime_ns, "reason": reason}
        content = {"decoder": _decoder_identity(), "unreadable": remembered}
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            # Written beside and renamed, so a reader never sees half a file.
            handle, temporary = tempfile.mkstemp(dir=os.path.dirname(self.path), suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(content, file, indent=1, sort_keys=True)
            os.replace(temporary, self.path)
        except OSError as error:
            logger.info("could not remember unreadable images in '%s': %s", self.path, error)

    def _key(self, path):
        return os.path.relpath(os.path.abspath(path), self.folder).replace(os.sep, "/")


def _signature(path):
    try:
        status = os.stat(path)
    except OSError:
        return None
    return [status.st_size, status.st_mtime_ns]


def _store_path(folder):
    if os.access(folder, os.W_OK):
        return os.path.join(folder, VERDICTS_FILE)
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = hashlib.sha256(folder.encode("utf-8")).hexdigest()[:20]
    return os.path.join(cache_home, "imgclf", "verdicts", f"{digest}.json")
