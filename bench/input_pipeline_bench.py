"""Input pipeline benchmark: imgclf's data sets against Keras' loader and plain TensorFlow.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/input_pipeline_bench.py \
        --num_images 3000 --rounds 5 --results bench/RESULTS.md

Generates `--num_images` training JPEGs (and a test set a quarter as large) of random sizes
between 224 and 500 px with Pillow into `--data` (not committed), then measures side by side,
in one process, on the same files and cores, `--rounds` times in a rotated order (every rate is
also given as a ratio to Keras' loader in the same round, which holds on a shared machine):

- `keras.utils.image_dataset_from_directory` on the same files (its own training split): what
  a user would pick instead, and the rate to keep up with;
- plain TensorFlow: `tf.io.read_file` + `tf.io.decode_image` + `tf.image.resize` of the
  training files in a parallel `tf.data` map, batched and prefetched (Keras' chain without its
  shuffle);
- raw: `imgclf.images.decode_image` (with its header checks) of the same files in the same map;
- the imgclf training set (`create_train_val_datasets`): its first epoch (which also finds bad
  files) and a later one, in images/s and as a fraction of raw;
- the time before the first training step: making the training, validation and test sets and
  taking the first batch, with a cold verdicts file, for this branch and for the loader before
  (`folders.py` at `--baseline_ref`, loaded from git: by default 2409509, the last commit whose
  loader decoded every file once before training), as a fraction of one epoch's raw decoding time;
- `cache="memory"`: the first (filling) and a cached epoch;
- the same data converted to TFRecord shards (`imgclf.data.tfrecord`), also as a ratio to the
  folder's later epoch in the same round.

All rates are training images per second over `--epochs` epochs of `--batch_size` batches.
"""

import argparse
import datetime
import importlib.util
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def generate(folder, num_images, num_classes, seed):
    """JPEGs of 224-500 px: smooth random colour fields with noise, quality 90 (~20-60 KB)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index in range(num_images):
        label = index % num_classes
        width, height = (int(v) for v in rng.integers(224, 501, size=2))
        coarse = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
        noise = rng.normal(0, 12, size=(height, width, 3))
        pixels = np.clip(field + noise, 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"class{label}", f"{index:05d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)


def ensure_data(root, num_images, num_classes):
    marker = os.path.join(root, f"generated-{num_images}-{num_classes}")
    if os.path.exists(marker):
        return
    shutil.rmtree(root, ignore_errors=True)
    generate(os.path.join(root, "train"), num_images, num_classes, seed=1)
    generate(os.path.join(root, "test"), num_images // 4, num_classes, seed=2)
    open(marker, "w").close()


#: The last commit whose loader decoded every file once before training (issue 7 §5's "before").
BASELINE_REF = "2409509"


def load_baseline_folders(ref):
    """The loader module (`folders.py`) at git commit `ref`, as a module."""
    for path in ("imgclf/data/folders.py", "imgclf/datasets.py"):
        shown = subprocess.run(
            ["git", "show", f"{ref}:{path}"], cwd=os.path.dirname(HERE),
            capture_output=True, text=True,
        )
        if shown.returncode == 0:
            break
    else:
        raise SystemExit(f"input_pipeline_bench.py: git has no loader at {ref!r}: {shown.stderr.strip()}")
    source = shown.stdout
    path = os.path.join("/tmp", "imgclf_main_folders.py")
    with open(path, "w", encoding="utf-8") as file:
        file.write(source)
    spec = importlib.util.spec_from_file_location("imgclf_main_folders", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def count(dataset):
    return sum(int(labels.shape[0]) for _, labels in dataset)


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def cpu_timed(function):
    """`(wall seconds, CPU seconds of this process's threads, result)`."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def forget_verdicts(root):
    for part in ("train", "test"):
        path = os.path.join(root, part, ".imgclf-verdicts.json")
        if os.path.exists(path):
            os.remove(path)


def run(args, main_folders):
    """Every measurement, `args.rounds` times, each round in a rotated order; returns, per key,
    the list of per-round values and, for rates, per-round ratios to raw (same round)."""
    import keras
    import tensorflow as tf

    from imgclf.data import create_test_dataset, create_train_val_datasets
    from imgclf.images import decode_image

    size = (args.image_size, args.image_size)
    train_dir, test_dir = os.path.join(args.data, "train"), os.path.join(args.data, "test")
    records = os.path.join(args.data, "records")

    forget_verdicts(args.data)
    train_files = create_train_val_datasets(train_dir, size, args.batch_size)[0].file_paths
    def parallel_map(load):
        return (
            tf.data.Dataset.from_tensor_slices(train_files)
            .map(lambda p: (load(p), 0), num_parallel_calls=tf.data.AUTOTUNE)
            .batch(args.batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )

    raw_ds = parallel_map(lambda p: decode_image(tf.io.read_file(p), size))
    warm = {
        # What a user writes with TensorFlow alone: no header checks, no bookkeeping.
        "plain tf": parallel_map(lambda p: tf.image.resize(
            tf.io.decode_image(tf.io.read_file(p), channels=3, expand_animations=False), size)),
        "imgclf": create_train_val_datasets(train_dir, size, args.batch_size)[0],
        "cache=memory": create_train_val_datasets(train_dir, size, args.batch_size,
                                                  cache="memory")[0],
        "tfrecord": create_train_val_datasets(records, size, args.batch_size)[0],
        "keras image_dataset_from_directory": keras.utils.image_dataset_from_directory(
            train_dir, image_size=size, batch_size=args.batch_size, validation_split=0.2,
            subset="training", seed=42, verbose=False,
        ).prefetch(tf.data.AUTOTUNE),
    }
    for dataset in warm.values():  # first passes: checks done, cache filled, tf.data tuned
        count(dataset)
    count(raw_ds)

    def epoch_rate(dataset, epochs=args.epochs):
        seconds, cpu_seconds, n = cpu_timed(lambda: sum(count(dataset) for _ in range(epochs)))
        return n / seconds, n / cpu_seconds

    def first_epoch_rate():
        forget_verdicts(args.data)
        dataset = create_train_val_datasets(train_dir, size, args.batch_size)[0]
        return epoch_rate(dataset, epochs=1)

    def start_seconds(module):
        forget_verdicts(args.data)

        def make_and_take_first_batch():
            train_ds, _ = module.create_train_val_datasets(train_dir, size, args.batch_size)
            module.create_test_dataset(test_dir, size, args.batch_size, train_ds.class_names)
            next(iter(train_ds))

        return cpu_timed(make_and_take_first_batch)[:2]

    steps = {
        "raw": lambda: epoch_rate(raw_ds),
        "imgclf 1st epoch": first_epoch_rate,
        **{name: (lambda d=dataset: epoch_rate(d)) for name, dataset in warm.items()},
        "main start s": lambda: start_seconds(main_folders),
        "imgclf start s": lambda: start_seconds(sys.modules["imgclf.data.datasets"]),
    }
    names = list(steps)
    values = {name: [] for name in names}
    for index in range(args.rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            values[name].append(steps[name]())
        print(f"round {index + 1}: " + ", ".join(
            f"{k} {v[-1][0]:.2f} ({v[-1][1]:.2f} CPU)" for k, v in values.items()), flush=True)
    return values, len(train_files)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=3000)
    parser.add_argument("--num_classes", type=int, default=5)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1,
                        help="epochs per measurement of an epoch rate (1st epoch: always 1); a "
                             "measurement of one epoch of 2000 images lasts about a second, and "
                             "neighbouring ones differed by up to 40%% on the idle 2-core machine")
    parser.add_argument("--data", default="/tmp/imgclf_input_bench")
    parser.add_argument("--results", default=None, help="append a Markdown section to this file")
    parser.add_argument("--baseline_ref", default=BASELINE_REF,
                        help="git commit of the loader to compare start-up with (default: %(default)s)")
    args = parser.parse_args(argv)

    ensure_data(args.data, args.num_images, args.num_classes)
    import tensorflow as tf  # noqa: F401  (after generating: TensorFlow start-up is not measured)

    import imgclf.data.datasets  # noqa: F401
    from imgclf.data.tfrecord import convert_folder

    records = os.path.join(args.data, "records")
    shutil.rmtree(records, ignore_errors=True)
    convert_seconds, layout = timed(
        lambda: convert_folder(os.path.join(args.data, "train"), records, num_shards=8)
    )
    values, num_train = run(args, load_baseline_folders(args.baseline_ref))

    def median(numbers):
        return statistics.median(numbers)

    def listed(numbers):
        return ", ".join(f"{x:.2f}" for x in numbers)

    raw_wall = [wall for wall, _ in values["raw"]]
    raw_cpu = [cpu for _, cpu in values["raw"]]
    keras_key = "keras image_dataset_from_directory"
    keras_wall = [wall for wall, _ in values[keras_key]]
    keras_cpu = [cpu for _, cpu in values[keras_key]]
    labels = {
        keras_key: "keras image_dataset_from_directory",
        "plain tf": "plain TF: read_file + tf.io.decode_image + resize (parallel map)",
        "raw": "imgclf decode_image alone (parallel map)",
        "imgclf 1st epoch": "imgclf training set, 1st epoch (finds bad files)",
        "imgclf": "imgclf training set, later epoch",
        "cache=memory": "imgclf cache=memory, cached epoch",
        "tfrecord": "imgclf from TFRecord (8 shards), later epoch",
    }
    lines = []
    for key, label in labels.items():
        # Each round's rate over Keras' rate of the same round: the load on a shared machine
        # changes between rounds more than between neighbouring measurements.
        wall = [w / k for (w, _), k in zip(values[key], keras_wall)]
        cpu = [c / k for (_, c), k in zip(values[key], keras_cpu)]
        lines.append(
            f"| {label} | {median([w for w, _ in values[key]]):.0f} | "
            f"{median([c for _, c in values[key]]):.0f} | {median(wall):.2f} ({listed(wall)}) | "
            f"{median(cpu):.2f} ({listed(cpu)}) |"
        )
    tfrecord_wall = [t / f for (t, _), (f, _) in zip(values["tfrecord"], values["imgclf"])]
    tfrecord_cpu = [t / f for (_, t), (_, f) in zip(values["tfrecord"], values["imgclf"])]
    lines.append(f"| TFRecord over the folder, later epoch, same round | | | "
                 f"{median(tfrecord_wall):.2f} ({listed(tfrecord_wall)}) | "
                 f"{median(tfrecord_cpu):.2f} ({listed(tfrecord_cpu)}) |")
    for key, label in (("main start s", f"before ({args.baseline_ref}, decode pre-pass)"), ("imgclf start s", "imgclf")):
        # One epoch's raw decoding: the training split at the raw rate of the same round.
        wall = [w / (num_train / r) for (w, _), r in zip(values[key], raw_wall)]
        cpu = [c / (num_train / r) for (_, c), r in zip(values[key], raw_cpu)]
        lines.append(
            f"| time to first batch (train + val + test sets made), {label} | "
            f"{median([w for w, _ in values[key]]):.2f} s | "
            f"{median([c for _, c in values[key]]):.2f} CPU s | "
            f"{median(wall):.2f} of an epoch ({listed(wall)}) | "
            f"{median(cpu):.2f} of an epoch ({listed(cpu)}) |"
        )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                            capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()
    section = "\n".join([
        "",
        f"## Input pipeline, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"commit {commit}",
        "",
        "```",
        "TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/input_pipeline_bench.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "```",
        "",
        f"{args.num_images} training JPEGs (+{args.num_images // 4} test) of 224-500 px, "
        f"{args.num_classes} classes, resized to {args.image_size} px, batch {args.batch_size}; "
        f"{num_train} images in the training split, the files every rate is measured on. "
        f"{args.rounds} rounds, each measuring everything once in a rotated order, "
        f"{args.epochs} epoch(s) per measurement; medians. "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, SHARED with other jobs "
        f"(load average {load[0]:.1f} at the end): the ratios pair measurements of the "
        f"same round; absolute rates swing with the load. Rates per CPU second (this process's "
        f"threads) depend least on the other jobs. TFRecord: {len(layout['shards'])} "
        f"shards, converted in {convert_seconds:.1f} s. Ratios are to Keras' loader in the same "
        f"round (its rate is {median(keras_wall):.0f} images/s, {median(keras_cpu):.0f} per CPU s); "
        f"time to first batch is in epochs of imgclf's decode_image alone.",
        "",
        "| pipeline | images/s (wall) | images per CPU s | wall, x Keras (rounds) | CPU, x Keras (rounds) |",
        "|---|---|---|---|---|",
        *lines,
        "",
    ])
    print(section)
    if args.results:
        with open(args.results, "a", encoding="utf-8") as file:
            file.write(section)


if __name__ == "__main__":
    main()
