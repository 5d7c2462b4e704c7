"""TFRecord shards against the folder they were converted from, at the size users train on.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/tfrecord_bench.py \
        --num_images 8000 --rounds 6 --cold --results bench/RESULTS.md

`input_pipeline_bench.py` measures every pipeline on 2,000 images cut into 8 shards of 12 MB:
an epoch of a second, of which a TFRecord epoch spends its first tenth reading the shards it
mixes before its first batch. Here the data set is as large as users' (by default 8,000 JPEGs
of 224-500 px, about 400 MB, 6,400 of them in the training split) and converted with the
converter's defaults (`imgclf.data.tfrecord.convert_folder`: shards of about 100 MB, what
`python -m imgclf.data.tfrecord` writes unless told otherwise).

Each round runs, in one process, in a rotated order, two epochs of each of: the imgclf training
set of the folder, the imgclf training set of its TFRecord shards, and Keras'
`image_dataset_from_directory` on the same folder (its own training split, prefetched); the
second epoch of each is measured, an epoch after one of its own as in training. Rates of one
round are divided (TFRecord over the folder, the folder over Keras' loader, TFRecord over Keras'
loader): on this shared machine a ratio of neighbouring epochs holds where a rate does not.
With `--cold` (Linux, root), the same again with every file's cached pages dropped before each
epoch: read from the disk, as a data set larger than the memory is every epoch.
"""

import argparse
import datetime
import os
import platform
import shutil
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import input_pipeline_bench as pipeline_bench  # noqa: E402  (bench/ is not a package)

FOLDER, TFRECORD, KERAS = "folder", "tfrecord", "keras"
LABELS = {
    FOLDER: "imgclf training set of the folder",
    TFRECORD: "imgclf training set of the TFRecord shards",
    KERAS: "keras image_dataset_from_directory",
}
#: (numerator, denominator, row label) of each ratio reported.
RATIOS = (
    (TFRECORD, FOLDER, "TFRecord over the folder"),
    (FOLDER, KERAS, "the folder over Keras' loader"),
    (TFRECORD, KERAS, "TFRecord over Keras' loader"),
)


def run(args):
    """Per kind (page cache, from disk), per pipeline, the `(wall, CPU)` rates of its measured
    epochs, round by round; and the number of training images."""
    import keras
    import tensorflow as tf

    from imgclf.data import create_train_val_datasets

    size = (args.image_size, args.image_size)
    train_dir = os.path.join(args.data, "train")
    records = os.path.join(args.data, "records")
    pipeline_bench.forget_verdicts(args.data)
    sets = {
        FOLDER: create_train_val_datasets(train_dir, size, args.batch_size)[0],
        TFRECORD: create_train_val_datasets(records, size, args.batch_size)[0],
        KERAS: keras.utils.image_dataset_from_directory(
            train_dir, image_size=size, batch_size=args.batch_size, validation_split=0.2,
            subset="training", seed=42, verbose=False,
        ).prefetch(tf.data.AUTOTUNE),
    }
    for dataset in sets.values():  # first passes: headers checked, tf.data functions made
        pipeline_bench.count(dataset)

    def epoch(name, cold):
        if cold:
            pipeline_bench.drop_page_cache()
        wall, cpu, images = pipeline_bench.cpu_timed(lambda: pipeline_bench.count(sets[name]))
        return images / wall, images / cpu

    kinds = [False] + ([True] if args.cold else [])
    rates = {cold: {name: [] for name in sets} for cold in kinds}
    names = list(sets)
    for index in range(args.rounds):
        order = names[index % len(names):] + names[:index % len(names)]
        for cold in kinds:
            for name in order:
                epoch(name, cold)
                rates[cold][name].append(epoch(name, cold))
        print(f"round {index + 1}: " + "; ".join(
            f"{name}{', cold' if cold else ''} {rates[cold][name][-1][0]:.0f}/s"
            for cold in kinds for name in names), flush=True)
    return rates, len(sets[FOLDER].file_paths)


def quartiles(values):
    """Median and the first and third quartiles (a single value is all three)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    first, median, third = statistics.quantiles(values, n=4)
    return statistics.median(values), first, third


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=8000)
    parser.add_argument("--num_classes", type=int, default=5)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--shard_size_mb", type=int, default=None,
                        help="the converter's shard size (default: its own default)")
    parser.add_argument("--cold", action="store_true",
                        help="also measure with the page cache dropped before each epoch "
                             "(Linux, root)")
    parser.add_argument("--data", default="/tmp/imgclf_tfrecord_bench")
    parser.add_argument("--results", default=None, help="append a Markdown section to this file")
    args = parser.parse_args(argv)

    if args.cold and not pipeline_bench.can_drop_page_cache():
        parser.error("--cold drops the page cache: it needs Linux and root")
    pipeline_bench.ensure_data(args.data, args.num_images, args.num_classes)
    from imgclf.data.tfrecord import DEFAULT_SHARD_SIZE_MB, convert_folder, read_layout

    shard_size_mb = args.shard_size_mb or DEFAULT_SHARD_SIZE_MB
    records = os.path.join(args.data, "records")
    marker = os.path.join(records, f".converted-{shard_size_mb}mb")
    if not os.path.exists(marker):  # converting 8,000 images takes minutes: done once
        shutil.rmtree(records, ignore_errors=True)
        convert_seconds, _ = pipeline_bench.timed(lambda: convert_folder(
            os.path.join(args.data, "train"), records, shard_size_mb=shard_size_mb))
        open(marker, "w").close()
    else:
        convert_seconds = None
    shards = read_layout(records)["shards"]
    shard_mb = [os.path.getsize(os.path.join(records, entry["file"])) / 2**20 for entry in shards]
    rates, num_train = run(args)

    rows, rounds_lines = [], []
    for cold, per_name in rates.items():
        where = "from disk" if cold else "page cache"
        for numerator, denominator, label in RATIOS:
            wall, cpu = ([a[part] / b[part] for a, b in zip(per_name[numerator],
                                                            per_name[denominator])]
                         for part in (0, 1))
            cells = []
            for values in (wall, cpu):
                median, first, third = quartiles(values)
                cells.append(f"**{median:.2f}** ({first:.2f}-{third:.2f}), best {max(values):.2f}")
            rows.append(f"| {label}, {where} | {cells[0]} | {cells[1]} |")
            rounds_lines.append(f"- {label}, {where}: wall "
                                f"{', '.join(f'{x:.2f}' for x in wall)}; CPU "
                                f"{', '.join(f'{x:.2f}' for x in cpu)}")
        for name, label in LABELS.items():
            wall, cpu = ([rate[part] for rate in per_name[name]] for part in (0, 1))
            rounds_lines.append(f"- {label}, {where}: median {statistics.median(wall):.0f} "
                                f"images/s, {statistics.median(cpu):.0f} per CPU s")
    commit = pipeline_bench.current_commit()
    converted = (f"converted in {convert_seconds:.0f} s" if convert_seconds is not None
                 else "converted by an earlier run")
    section = "\n".join([
        "",
        f"## TFRecord against the folder, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}",
        "",
        "```",
        "TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/tfrecord_bench.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "```",
        "",
        f"{args.num_images} training JPEGs of 224-500 px, {args.num_classes} classes, resized "
        f"to {args.image_size} px, batch {args.batch_size}; {num_train} images in the training "
        f"split. TFRecord: {len(shards)} shard(s) of {min(shard_mb):.0f}-{max(shard_mb):.0f} MB "
        f"(shard size {shard_size_mb} MB), {converted}. {args.rounds} rounds, each running two "
        "epochs of each pipeline in a rotated order and measuring the second; the ratios are of "
        f"rates of one round: median (quartiles), best. {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| ratio of later epochs | wall | CPU |",
        "|---|---|---|",
        *rows,
        "",
        "Round by round:",
        "",
        *rounds_lines,
        "",
    ])
    pipeline_bench.publish(section, args.results)


if __name__ == "__main__":
    main()
