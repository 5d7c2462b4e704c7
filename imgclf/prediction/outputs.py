"""Prediction outputs: resumable parts committed by rename, then one CSV, JSON Lines or Parquet file.

    >>> store = PartStore("labels.parquet", key={"model": "sha256:...", "inputs": "sha256:..."},
    ...                   part_size=1000)
    >>> done = store.open(resume=False)          # parts already committed by a killed run
    >>> store.write_part(done, rows)             # rows done..: part-00000.parquet, ...
    >>> store.finish(embeddings=False)           # labels.parquet, written beside and renamed

While a run goes, its rows are committed in parts of `part_size` inputs to `<output>.parts/`
(Parquet, each written beside and renamed, so a part is all there or not at all), with a
`manifest.json` saying what they belong to: the model's fingerprint, the input list's
fingerprint and the options that change a row. A run that finds parts of the same job goes on
after the last one; parts of another job are refused with `--resume` and replaced without it.
At the end the parts are joined, in order, into the output (written beside it and renamed), and
the parts folder is removed. Every input is in the output exactly once, whenever the runs before
were killed.

The output's format is chosen by its suffix (`OUTPUT_FORMATS`). Lists are JSON arrays in CSV.
"""

import csv
import io
import json
import os
import uuid

import tensorflow as tf

from imgclf.prediction import columns as col

#: Output suffix -> format.
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}

PARTS_SUFFIX = ".parts"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "imgclf-prediction-parts-1"


def output_format(path):
    """The format of an output path, from its suffix; `ValueError` for any other suffix."""
    path = os.fspath(path)
    for suffix, name in OUTPUT_FORMATS.items():
        if path.lower().endswith(suffix):
            return name
    raise ValueError(
        f"the output must end in {', '.join(OUTPUT_FORMATS)}; received '{path}'"
    )


class PartStore:
    """The parts of one prediction output (see the module)."""

    def __init__(self, output, key, part_size):
        self.output = os.fspath(output)
        self.format = output_format(self.output)
        self.key = dict(key)
        self.part_size = int(part_size)
        self.parts_dir = self.output + PARTS_SUFFIX

    def part_path(self, index):
        return os.path.join(self.parts_dir, f"part-{index:05d}.parquet")

    def open(self, resume=False):
        """Prepare the parts folder; return how many parts are committed already (0 for a new
        job). Parts of another job: `ValueError` with `resume`, else they are removed."""
        self._remove_abandoned_outputs()
        manifest = {"format": MANIFEST_FORMAT, "part_size": self.part_size, **self.key}
        manifest_path = os.path.join(self.parts_dir, MANIFEST_FILE)
        if tf.io.gfile.exists(manifest_path):
            with tf.io.gfile.GFile(manifest_path, "r") as file:
                found = json.load(file)
            if found == manifest:
                self._remove_partial_writes()
                return self._committed()
            differences = [
                f"{name} {found.get(name)!r}, not {value!r}" for name, value in manifest.items()
                if found.get(name) != value
            ]
            if resume:
                raise ValueError(
                    f"--resume: {self.parts_dir} holds the parts of another run ("
                    + "; ".join(differences)
                    + "); run without --resume to replace them, or choose another --output"
                )
            tf.io.gfile.rmtree(self.parts_dir)
        elif tf.io.gfile.exists(self.parts_dir):
            tf.io.gfile.rmtree(self.parts_dir)  # a killed run before its manifest was committed
        tf.io.gfile.makedirs(self.parts_dir)
        _write_atomically(manifest_path, json.dumps(manifest, indent=2).encode("utf-8"))
        return 0

    def _committed(self):
        """How many parts 0, 1, ... are committed (a run commits them in order)."""
        count = 0
        while tf.io.gfile.exists(self.part_path(count)):
            count += 1
        return count

    def _remove_partial_writes(self):
        for name in tf.io.gfile.listdir(self.parts_dir):
            if ".writing-" in name:
                tf.io.gfile.remove(os.path.join(self.parts_dir, name))

    def _remove_abandoned_outputs(self):
        """Remove outputs a run killed while joining the parts left beside the output."""
        directory, name = os.path.split(self.output)
        if not tf.io.gfile.isdir(directory or "."):
            return
        for entry in tf.io.gfile.listdir(directory or "."):
            if entry.startswith(f".{name}.writing-"):
                tf.io.gfile.remove(os.path.join(directory, entry))

    def committed_errors(self, count):
        """`(rows, errors)` in the first `count` committed parts (for a resumed run's totals)."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        rows = errors = 0
        for index in range(count):
            table = pq.read_table(_read_bytes(self.part_path(index)), columns=[col.ERROR])
            rows += table.num_rows
            errors += pc.sum(pc.not_equal(table[col.ERROR], "")).as_py() or 0
        return rows, errors

    def write_part(self, index, rows, embeddings=False):
        """Commit the rows of part `index` (written beside, then renamed)."""
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(col.rows_to_table(rows, embeddings), buffer)
        _write_atomically(self.part_path(index), buffer.getvalue())

    def finish(self, embeddings=False):
        """Join the committed parts into the output, atomically, and remove the parts folder."""
        count = self._committed()
        temporary = _beside(self.output)
        try:
            with tf.io.gfile.GFile(temporary, "wb") as file:
                write = {"csv": _write_csv, "jsonl": _write_jsonl, "parquet": _write_parquet}
                write[self.format](file, (self.part_path(i) for i in range(count)), embeddings)
            tf.io.gfile.rename(temporary, self.output, overwrite=True)
        finally:
            if tf.io.gfile.exists(temporary):
                tf.io.gfile.remove(temporary)
        tf.io.gfile.rmtree(self.parts_dir)
        return self.output


def _parts(paths):
    import pyarrow.parquet as pq

    for path in paths:
        yield pq.read_table(_read_bytes(path))


def _write_parquet(file, part_paths, embeddings):
    import pyarrow.parquet as pq

    with pq.ParquetWriter(_Writable(file), col.output_schema(embeddings)) as writer:
        for table in _parts(part_paths):
            writer.write_table(table)


def _write_jsonl(file, part_paths, embeddings):
    for table in _parts(part_paths):
        lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in table.to_pylist()]
        file.write("".join(lines).encode("utf-8"))


def _write_csv(file, part_paths, embeddings):
    names = col.output_columns(embeddings)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(names)
    for table in _parts(part_paths):
        for row in table.to_pylist():
            writer.writerow([
                json.dumps(row[name], ensure_ascii=False) if name in col.LIST_COLUMNS
                else "" if row[name] is None else row[name]
                for name in names
            ])
        file.write(text.getvalue().encode("utf-8"))
        text.seek(0)
        text.truncate()
    file.write(text.getvalue().encode("utf-8"))


def _beside(path):
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.writing-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _write_atomically(path, data):
    temporary = _beside(path)
    with tf.io.gfile.GFile(temporary, "wb") as file:
        file.write(data)
    tf.io.gfile.rename(temporary, path, overwrite=True)


def _read_bytes(path):
    """A part's bytes, for pyarrow (which cannot read a `GFile`); parts are small."""
    import pyarrow as pa

    with tf.io.gfile.GFile(path, "rb") as file:
        return pa.BufferReader(file.read())


class _Writable(io.RawIOBase):
    """A `GFile` opened for writing, as the file object pyarrow's writers take."""

    def __init__(self, file):
        self._file = file

    def writable(self):
        return True

    def write(self, data):
        self._file.write(bytes(data))
        return len(data)

    def tell(self):
        return self._file.tell()
