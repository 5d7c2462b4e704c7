"""`predict_files`: label every image of some inputs with a model, as rows or into a file.

    >>> for row in predict_files("models/LenetModel", ["photos/"]):       # rows, streamed
    ...     print(row["path"], row["class"], row["probability"], row["error"])
    >>> summary = predict_files("models/LenetModel", ["photos/", "list.txt"],
    ...                         output="labels.parquet", max_errors=0.05)
    >>> print(summary)
    20000 files, 3 errors in 110.4 s: 181.2 images/s; wrote labels.parquet

The inputs (`imgclf.prediction.inputs`) are listed twice, streaming: once to count them and
fingerprint their list, once to predict them (`Predictor.predict_sources`: parallel decoding in
`tf.data`, the model's compiled function). Written to a file, the rows are committed in parts
that a killed run resumes (`imgclf.prediction.outputs`); `max_errors` stops a run whose data is
clearly wrong; `imgclf.prediction.progress` shows how far it is.
"""

import dataclasses
import hashlib

from imgclf.prediction import columns as col
from imgclf.prediction.inputs import Inputs
from imgclf.prediction.outputs import PartStore, output_format
from imgclf.prediction.predictor import DEFAULT_BATCH_SIZE, DEFAULT_TOP_K, Predictor
from imgclf.prediction.progress import Progress

#: Inputs per committed part: what a killed run may have to redo.
DEFAULT_PART_SIZE = 1000

#: A fraction `max_errors` is judged once this many files (or all) have been read.
MIN_FILES_FOR_FRACTION = 100

#: How many errors the message of a stopped run quotes.
QUOTED_ERRORS = 3


class TooManyErrors(RuntimeError):
    """A run stopped by `max_errors`. Its committed parts are kept; the message says how far it
    went and quotes the first errors."""


@dataclasses.dataclass
class Summary:
    """What a run did: `files` in the output (`resumed` of them from earlier runs), `errors`
    among them, `seconds` and `images_per_second` of this run, the `output` written."""

    files: int
    errors: int
    resumed: int
    seconds: float
    images_per_second: float
    output: str
    line: str

    def __str__(self):
        return self.line


def predict_files(model, inputs, output=None, top_k=DEFAULT_TOP_K, batch_size=DEFAULT_BATCH_SIZE,
                  embeddings=False, resume=False, max_errors=None, part_size=DEFAULT_PART_SIZE,
                  progress=True, log_every=30.0):
    """Predict every image of `inputs` with `model`.

    Args:
        model: a `Predictor`, or the path `Predictor.load` takes (SavedModel folder, model base
            path, `.keras` file).
        inputs: folders, globs, file lists, TFRecord directories or images (`Inputs`).
        output: None to return a generator of rows (dicts of `columns.output_columns`), or a
            `.csv`, `.jsonl`/`.ndjson` or `.parquet` path to write them to (resumably); then a
            `Summary` is returned.
        top_k: how many classes `top_classes` holds.
        embeddings: add the penultimate layer's `embedding` column.
        resume: refuse (`ValueError`) to replace the parts of another run at `output`; without
            it, they are replaced. Parts of the same run are resumed either way.
        max_errors: stop with `TooManyErrors` after more than this many unreadable files (an
            int), or when more than this fraction of the files read so far are unreadable (a
            float in (0, 1)); None never stops.
        part_size: inputs per committed part.
        progress: show progress on stderr (a bar on a terminal, else a line every `log_every`
            seconds).
    """
    if output is not None:
        output_format(output)
    max_errors = check_max_errors(max_errors)
    part_size = _positive_int("part_size", part_size)
    inputs = inputs if isinstance(inputs, Inputs) else Inputs(inputs)
    predictor = model if isinstance(model, Predictor) else Predictor.load(model)
    predictor._check(top_k, embeddings)
    total, fingerprint = count_inputs(inputs)
    if total == 0:
        raise ValueError(f"no images found in {', '.join(repr(s) for s in inputs.specs)}")
    options = dict(top_k=top_k, embeddings=embeddings, batch_size=batch_size)
    if output is None:
        return _rows(predictor, inputs, total, options, progress, log_every)
    store = PartStore(output, {
        "model_fingerprint": predictor.fingerprint,
        "inputs_fingerprint": fingerprint,
        "num_inputs": total,
        "top_k": top_k,
        "embeddings": bool(embeddings),
    }, part_size)
    committed = store.open(resume=resume)
    start = min(committed * part_size, total)
    _, errors = store.committed_errors(committed)
    meter = Progress(total, done=start, errors=errors, show=progress, log_every=log_every)
    part, rows, quoted = committed, [], []
    try:
        for row in _counted(predictor.predict_sources(inputs.sources(start), **options), meter):
            rows.append(row)
            if row[col.ERROR]:
                if len(quoted) < QUOTED_ERRORS:
                    quoted.append(f"{row[col.PATH]}: {row[col.ERROR]}")
                _stop_if_too_many(meter, max_errors, quoted, store)
            if len(rows) == part_size:
                store.write_part(part, rows, embeddings)
                part, rows = part + 1, []
        if rows:
            store.write_part(part, rows, embeddings)
    finally:
        meter.close()
    if meter.resumed + meter.predicted != total:
        raise ValueError(
            f"the inputs changed while they were predicted: {total} files were listed, then "
            f"{meter.resumed + meter.predicted}; run again to predict the new list"
        )
    store.finish(embeddings)
    return Summary(total, meter.errors, meter.resumed, meter.seconds, meter.images_per_second,
                   store.output, meter.summary(store.output))


def _rows(predictor, inputs, total, options, progress, log_every):
    meter = Progress(total, show=progress, log_every=log_every)
    try:
        yield from _counted(predictor.predict_sources(inputs.sources(), **options), meter)
    finally:
        meter.close()


def _counted(rows, meter, every=64):
    """`rows`, counted into `meter` (in groups: a tqdm update per row would cost)."""
    images = errors = 0
    for row in rows:
        images += 1
        errors += bool(row[col.ERROR])
        if images == every or row[col.ERROR]:
            meter.update(images, errors)
            images = errors = 0
        yield row
    meter.update(images, errors)


def count_inputs(inputs):
    """`(count, "sha256:...")` of the list of input paths, in order, streamed."""
    digest = hashlib.sha256()
    count = 0
    for path in inputs.paths():
        digest.update(path.encode("utf-8", "surrogateescape") + b"\n")
        count += 1
    return count, f"sha256:{digest.hexdigest()}"


def check_max_errors(max_errors):
    """None, an int >= 0 or a float in (0, 1); `ValueError` naming anything else."""
    if max_errors is None:
        return None
    if isinstance(max_errors, bool) or not isinstance(max_errors, (int, float)) or (
        isinstance(max_errors, int) and max_errors < 0
    ) or (isinstance(max_errors, float) and not 0 < max_errors < 1):
        raise ValueError(
            "max_errors must be a count (an integer >= 0) or a fraction (a number between 0 and "
            f"1); received {max_errors!r}"
        )
    return max_errors


def _stop_if_too_many(meter, max_errors, quoted, store):
    if max_errors is None:
        return
    read = meter.resumed + meter.predicted
    if isinstance(max_errors, int):
        if meter.errors <= max_errors:
            return
        limit = f"more than max_errors {max_errors}"
    else:
        if read < min(meter.total, MIN_FILES_FOR_FRACTION) or meter.errors <= max_errors * read:
            return
        limit = f"{meter.errors / read:.0%} of them, more than max_errors {max_errors}"
    raise TooManyErrors(
        f"stopped after {read} of {meter.total} files: {meter.errors} could not be read ({limit}); "
        f"first errors: {'; '.join(quoted)}. The parts committed so far stay in "
        f"{store.parts_dir}: the same command resumes them"
    )


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; received {value!r}")
    return value
