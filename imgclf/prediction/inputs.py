"""What to predict: folders, globs, file lists and TFRecord directories, streamed in a stable order.

    >>> inputs = Inputs(["photos/", "more/*.jpg", "list.txt", "records/test"])
    >>> next(iter(inputs.paths()))
    'photos/a/1.jpg'
    >>> path, content = next(inputs.sources(start=100))   # content: None (read the file) or bytes

Each input is one of:

- a folder: every image below it (recursively; names ending in an extension of
  `imgclf.images.IMAGE_FORMATS`, any case; hidden files and folders left out), sorted;
- a glob (`*`, `?`, `[`): the files it matches, sorted;
- a file list: a `.txt` or `.lst` file of one path a line (blank lines and `#` comments left
  out), or a `.csv` file whose `path` column (else its first column) holds them; relative paths
  are relative to the list's folder;
- an imgclf TFRecord directory (`imgclf.data.tfrecord`): its records in shard order, each named
  by its original relative path (`image/filename`);
- one image file.

Paths go through `tf.io.gfile`, so `gs://...` works where TensorFlow's file systems do. Nothing is
held in memory but one folder's listing at a time: a million paths stream.
"""

import csv
import os

import tensorflow as tf

from imgclf.data.tfrecord import LAYOUT_FILE
from imgclf.images import IMAGE_EXTENSIONS

LIST_SUFFIXES = (".txt", ".lst")
CSV_SUFFIX = ".csv"
_GLOB_CHARACTERS = "*?["


class Inputs:
    """The files of a list of inputs (see the module): checked when made, streamed when read."""

    def __init__(self, inputs):
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        inputs = [os.fspath(spec) for spec in inputs]
        if not inputs:
            raise ValueError("no inputs: give at least one folder, glob, file list, TFRecord "
                             "directory or image")
        self.specs = inputs
        self._kinds = [_kind(spec) for spec in inputs]

    def paths(self):
        """Yield the path of every input, in order, without reading any image."""
        for spec, kind in zip(self.specs, self._kinds):
            if kind == "records":
                yield from _record_paths(spec)
            else:
                yield from _file_paths(spec, kind)

    def sources(self, start=0):
        """Yield `(path, content)` of every input from position `start` on: `content` is None for
        a file (the predictor reads it) and the encoded image for a TFRecord record."""
        position = 0
        for spec, kind in zip(self.specs, self._kinds):
            if kind == "records":
                if position + _record_count(spec) <= start:
                    position += _record_count(spec)
                    continue
                for path, content in _records(spec):
                    if position >= start:
                        yield path, content
                    position += 1
            else:
                for path in _file_paths(spec, kind):
                    if position >= start:
                        yield path, None
                    position += 1


def _kind(spec):
    if not spec:
        raise ValueError("an input is empty; give a folder, glob, file list, TFRecord directory "
                         "or image")
    if any(character in spec for character in _GLOB_CHARACTERS) and not tf.io.gfile.exists(spec):
        return "glob"
    if not tf.io.gfile.exists(spec):
        raise FileNotFoundError(f"input '{spec}' does not exist")
    if tf.io.gfile.isdir(spec):
        return "records" if tf.io.gfile.exists(os.path.join(spec, LAYOUT_FILE)) else "folder"
    lower = spec.lower()
    if lower.endswith(LIST_SUFFIXES):
        return "list"
    if lower.endswith(CSV_SUFFIX):
        return "csv"
    if lower.endswith(IMAGE_EXTENSIONS):
        return "image"
    raise ValueError(
        f"input '{spec}' is a file but neither an image ({', '.join(IMAGE_EXTENSIONS)}) nor a "
        f"file list ({', '.join(LIST_SUFFIXES)}, {CSV_SUFFIX})"
    )


def _file_paths(spec, kind):
    if kind == "image":
        yield spec
    elif kind == "folder":
        yield from _walk(spec)
    elif kind == "glob":
        for path in sorted(tf.io.gfile.glob(spec)):
            if not tf.io.gfile.isdir(path):
                yield path
    else:
        yield from _listed(spec, kind)


def _walk(folder):
    for directory, subdirectories, files in tf.io.gfile.walk(folder):
        # tf.io.gfile.walk descends in the order of this list: sorting it fixes the order.
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                yield os.path.join(directory, name)


def _listed(spec, kind):
    base = os.path.dirname(spec)
    with tf.io.gfile.GFile(spec, "r") as file:
        if kind == "list":
            lines = (line.strip() for line in file)
            paths = (line for line in lines if line and not line.startswith("#"))
        else:
            paths = _csv_paths(spec, file)  # csv joins the lines of a quoted field itself
        for path in paths:
            yield path if "://" in path or os.path.isabs(path) else os.path.join(base, path)


def _csv_paths(spec, text):
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        return
    column = header.index("path") if "path" in header else 0
    if "path" not in header and header and header[0].strip():
        yield header[0].strip()  # no header row: the first row is a path too
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) <= column:
            raise ValueError(f"file list '{spec}' line {line} has no column {column + 1}: {row!r}")
        if row[column].strip():
            yield row[column].strip()


def _layout(directory):
    from imgclf.data.tfrecord import read_layout

    return read_layout(directory)


def _record_count(directory):
    return sum(len(entry["indices"]) for entry in _layout(directory)["shards"])


def _record_paths(directory):
    layout = _layout(directory)
    for entry in layout["shards"]:
        for index in entry["indices"]:
            yield layout["files"][index]


_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def _records(directory):
    layout = _layout(directory)
    for entry in layout["shards"]:
        dataset = tf.data.TFRecordDataset(os.path.join(directory, entry["file"]))
        for record in dataset.map(lambda r: tf.io.parse_single_example(r, _FEATURES)):
            yield (record["image/filename"].numpy().decode("utf-8"),
                   record["image/encoded"].numpy())
