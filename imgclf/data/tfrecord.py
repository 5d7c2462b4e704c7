"""Convert a folder data set into sharded TFRecord files, the layout for large or remote data.

    $ python -m imgclf.data.tfrecord data/train records/train --shard_size_mb 100

    >>> convert_folder("data/train", "records/train")
    {'class_names': ['cat', 'dog'], 'num_examples': 25000, 'shards': [...], ...}

Each record is a `tf.train.Example` holding the image file's own encoded bytes (`image/encoded`,
not decoded: the loader decodes it with `imgclf.images.decode_image`), its label
(`image/class/label`), its path relative to the folder (`image/filename`) and its position in the
folder's listing (`image/index`, which lets a folder and its records split alike). The files are
shuffled (with `seed`) and dealt into shards `data-00000-of-00008.tfrecord`, ... of at least
`shard_size_mb` (or into exactly `num_shards`: for multi-worker training, at least one shard per
worker). `tfrecords.json` beside the shards keeps the class names and what each shard holds:
its records' indices, its size in bytes (`bytes`) and where in the file each record's image bytes
lie (`spans`, `[offset, length]`), so that a reader can take the images straight out of the
file without parsing a record (`imgclf.data.records`).
Files already known to be unreadable (`imgclf.data.verdicts`) are left out with a warning; other
bad files are found when the records are read, and named there.

`imgclf.data.records` reads the layout; `create_train_val_datasets` and `create_test_dataset` of
`imgclf.data` take either a folder or a TFRecord directory.
"""

import json
import logging
import os
import struct
import sys

import numpy as np
import tensorflow as tf

from imgclf.data.folders import list_image_files
from imgclf.data.verdicts import VerdictStore

logger = logging.getLogger("imgclf.data")

#: The description of a TFRecord data set, beside its shards.
LAYOUT_FILE = "tfrecords.json"
LAYOUT_FORMAT = "imgclf-tfrecord-1"
DEFAULT_SHARD_SIZE_MB = 100


def is_tfrecord_dataset(path):
    """Whether `path` is a directory written by `convert_folder`."""
    return os.path.isfile(os.path.join(os.fspath(path), LAYOUT_FILE))


def read_layout(directory):
    """The `tfrecords.json` of a TFRecord data set directory, checked."""
    path = os.path.join(os.fspath(directory), LAYOUT_FILE)
    try:
        with open(path, encoding="utf-8") as file:
            layout = json.load(file)
    except FileNotFoundError:
        raise FileNotFoundError(f"'{directory}' is not a TFRecord data set: no {LAYOUT_FILE}")
    except ValueError as error:
        raise ValueError(f"'{path}' is not valid JSON: {error}") from None
    if not isinstance(layout, dict) or layout.get("format") != LAYOUT_FORMAT:
        raise ValueError(f"'{path}' is not an imgclf TFRecord layout ({LAYOUT_FORMAT})")
    return layout


def convert_folder(folder, output_dir, shard_size_mb=DEFAULT_SHARD_SIZE_MB, num_shards=None,
                   seed=0):
    """Write the images of `folder/<class>/<image>` as TFRecord shards in `output_dir`.

    Returns the layout written to `output_dir/tfrecords.json`. `output_dir` must not hold a data
    set already. The shards are written under temporary names and renamed when all are complete.
    """
    if isinstance(shard_size_mb, bool) or not isinstance(shard_size_mb, (int, float)) or (
        shard_size_mb <= 0
    ):
        raise ValueError(f"shard_size_mb must be a positive number; received {shard_size_mb!r}")
    if num_shards is not None and (
        isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1
    ):
        raise ValueError(f"num_shards must be a positive integer; received {num_shards!r}")
    folder, output_dir = os.fspath(folder), os.fspath(output_dir)
    paths, labels, class_names = list_image_files(folder)
    known = VerdictStore(folder).unreadable(paths)
    for path in paths:
        if path in known:
            logger.warning("skipping unreadable image '%s': %s", path, known[path])
    if os.path.exists(output_dir) and os.listdir(output_dir):
        raise FileExistsError(f"output directory '{output_dir}' is not empty")

    positions = [i for i, path in enumerate(paths) if path not in known]
    total_bytes = sum(os.path.getsize(paths[i]) for i in positions)
    if num_shards is None:
        # At least shard_size_mb each: never more shards than full ones.
        num_shards = max(1, int(total_bytes // (shard_size_mb * 2**20)))
    members_of = deal_into_shards(positions, num_shards, seed)
    names = shard_file_names(len(members_of))
    os.makedirs(output_dir, exist_ok=True)
    shards = []
    for name, members in zip(names, members_of):
        with ShardWriter(os.path.join(output_dir, name + ".partial")) as writer:
            for i in members:
                with open(paths[i], "rb") as file:
                    encoded = file.read()
                writer.write(encoded, labels[i], _relative(paths[i], folder), i)
        shards.append({"file": name, "indices": members, **writer.entry()})
    for name in names:
        os.replace(os.path.join(output_dir, name + ".partial"), os.path.join(output_dir, name))
    # By listing position: the folder's relative paths (null where left out) and labels.
    files = [_relative(path, folder) if path not in known else None for path in paths]
    # [position, relative path] of the files left out: they still take part in the split, so
    # that the records split as the folder does (imgclf.data.split).
    left_out = [[i, _relative(path, folder)] for i, path in enumerate(paths) if path in known]
    return write_layout(output_dir, class_names, files, labels, shards, left_out=left_out)


def deal_into_shards(positions, num_shards, seed=0):
    """The members of each shard: `positions` shuffled with `seed`, dealt like cards.

    At most one shard per position (and at least one). The same positions, count and seed give
    the same shards.

        >>> deal_into_shards([0, 1, 2, 3, 4], 2, seed=0)
        [[2, 3, 1], [4, 0]]
    """
    num_shards = min(num_shards, max(1, len(positions)))
    order = np.random.default_rng(seed).permutation(np.asarray(positions, dtype=np.int64))
    return [[int(i) for i in order[shard_index::num_shards]] for shard_index in range(num_shards)]


def shard_file_names(num_shards):
    """`data-00000-of-00008.tfrecord`, ...: the names of a data set's `num_shards` shard files."""
    return [f"data-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]


def write_layout(output_dir, class_names, files, labels, shards, **extra):
    """Write `tfrecords.json` into `output_dir` (beside, then renamed) and return the layout.

    Args:
        class_names: the class names, in label order.
        files, labels: by record index: each record's relative path (None for an image left
            out) and label.
        shards: `[{"file": name, "indices": [record indices, in the file's order], "bytes":
            file size, "spans": [[offset, length] of each record's image bytes]}, ...]`
            (`ShardWriter.entry()` gives the last two).
        extra: more JSON entries (e.g. the images found unreadable and why).

    The layout also counts the records written per class (`class_counts`).
    """
    counts = {name: 0 for name in class_names}
    for entry in shards:
        for i in entry["indices"]:
            counts[class_names[labels[i]]] += 1
    layout = {
        "format": LAYOUT_FORMAT,
        "class_names": list(class_names),
        "num_examples": sum(len(entry["indices"]) for entry in shards),
        "class_counts": counts,
        "files": list(files),
        "labels": [int(label) for label in labels],
        "shards": shards,
        **extra,
    }
    path = os.path.join(os.fspath(output_dir), LAYOUT_FILE)
    with open(path + ".partial", "w", encoding="utf-8") as file:
        json.dump(layout, file)
    os.replace(path + ".partial", path)
    return layout


def _relative(path, folder):
    return os.path.relpath(path, folder).replace(os.sep, "/")


#: Bytes before an uncompressed TFRecord record's data (its length, 8, and the length's
#: checksum, 4) and after it (the data's checksum).
RECORD_HEADER_BYTES, RECORD_FOOTER_BYTES = 12, 4


class ShardWriter:
    """Writes one shard file of records (`encode_record`) and notes where each record's image
    bytes lie in it, for the layout's shard entry (`entry()`).

        >>> with ShardWriter("records/data-00000-of-00001.tfrecord") as writer:
        ...     writer.write(encoded, label=0, filename="cat/1.jpg", index=0)
        >>> writer.entry()
        {'bytes': 51234, 'spans': [[47, 51160]]}
    """

    def __init__(self, path):
        self._writer = tf.io.TFRecordWriter(os.fspath(path))
        self.size = 0
        self.spans = []

    def write(self, encoded, label, filename, index):
        record = encode_record(encoded, label, filename, index)
        # The image bytes are stored as they are; any copy of them in the record is as good.
        start = self.size + RECORD_HEADER_BYTES + record.find(encoded)
        self._writer.write(record)
        self.spans.append([start, len(encoded)])
        self.size += RECORD_HEADER_BYTES + len(record) + RECORD_FOOTER_BYTES

    def entry(self):
        """The shard's `bytes` and `spans` for the layout."""
        return {"bytes": self.size, "spans": self.spans}

    def close(self):
        self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def scan_spans(path):
    """`[[offset, length], ...]`: where each record's image bytes lie in the shard file `path`,
    read from the records themselves (for layouts written without `spans`).

    Raises ValueError if the file is not a whole uncompressed TFRecord file of image records.
    """
    with tf.io.gfile.GFile(os.fspath(path), "rb") as file:
        data = file.read()
    spans, position = [], 0
    while position < len(data):
        start = position + RECORD_HEADER_BYTES
        if start > len(data):
            raise ValueError(f"'{path}' ends inside a record header at byte {position}")
        (length,) = struct.unpack_from("<Q", data, position)
        end = start + length
        if end + RECORD_FOOTER_BYTES > len(data):
            raise ValueError(f"'{path}' ends inside the record at byte {position}")
        try:
            feature = tf.train.Example.FromString(data[start:end]).features.feature
            encoded = feature["image/encoded"].bytes_list.value[0]
        except Exception as error:  # DecodeError, a missing feature or value
            raise ValueError(
                f"the record at byte {position} of '{path}' is not an image record: {error!r}"
            ) from None
        spans.append([data.find(encoded, start, end), len(encoded)])
        position = end + RECORD_FOOTER_BYTES
    return spans


def encode_record(encoded, label, filename, index):
    """One record of the layout: a serialized `tf.train.Example` of an image file's bytes.

    Args:
        encoded: the image file's own bytes (not decoded).
        label: its class index; filename: its path relative to the data set (`"cat/1.png"`);
        index: its position in the layout's `files` and `labels`.
    """
    def bytes_feature(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def int_feature(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": bytes_feature(encoded),
        "image/class/label": int_feature(int(label)),
        "image/filename": bytes_feature(filename.encode("utf-8")),
        "image/index": int_feature(int(index)),
    })).SerializeToString()


def main(argv=None):
    from imgclf import cli

    parser = cli.ArgumentParser(
        prog="python -m imgclf.data.tfrecord",
        description="Convert a folder of <class>/<image> into sharded TFRecord files.",
    )
    parser.add_argument("folder", help="the data set folder, one sub-folder per class")
    parser.add_argument("output_dir", help="where the shards and tfrecords.json are written")
    parser.add_argument("--shard_size_mb", type=float, default=DEFAULT_SHARD_SIZE_MB,
                        help=f"smallest shard size in MB (default: {DEFAULT_SHARD_SIZE_MB})")
    parser.add_argument("--num_shards", type=int, default=None,
                        help="exactly this many shards instead (at least one per worker)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffling (default: 0)")
    args = parser.parse_args(argv)

    def work():
        layout = convert_folder(args.folder, args.output_dir, args.shard_size_mb,
                                args.num_shards, args.seed)
        print(f"wrote {layout['num_examples']} images of {len(layout['class_names'])} classes "
              f"into {len(layout['shards'])} shards in '{args.output_dir}'")

    return cli.run(parser, work)


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
