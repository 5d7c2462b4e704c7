"""Input pipeline benchmark: imgclf's data sets against Keras' loader and plain TensorFlow.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/input_pipeline_bench.py \
        --num_images 3000 --rounds 5 --results bench/RESULTS.md

Generates `--num_images` training JPEGs (and a test set a quarter as large) of random sizes
between 224 and 500 px with Pillow into `--data` (not committed), then measures side by side,
in one process, on the same files and cores, `--rounds` times in a rotated order, each epoch
rate between two epochs of Keras' loader (every rate is also given as a ratio to those two, which
holds on a machine whose speed drifts):

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
  folder's later epoch (their two ratios to Keras' loader divided), and side by side: each
  round, two epochs of each, the second measured, TFRecord's rate over the folder's.

- with `--cold` (Linux, root): Keras' loader, the imgclf training set and its TFRecord twin with
  every file's cached pages dropped (`/proc/sys/vm/drop_caches`) before each epoch: read from the
  disk, as a data set larger than the memory is every epoch.

All rates are training images per second over `--epochs` epochs of `--batch_size` batches. Each
pipeline gets its median and its best (fastest) measurement: on a shared or virtual machine a
measurement is only ever slowed down (by other jobs, and by tf.data itself: destroying an
iterator waits for its autotuning thread, which added 0 to 1.2 s to one-second epochs of any
pipeline, Keras' included), so the best of many alternating measurements is the steadiest
estimate of what a pipeline can do, and the median what it did.
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


KERAS = "keras image_dataset_from_directory"
#: TFRecord against the folder, each measured in the epoch after one of its own.
SIDE_BY_SIDE = "tfrecord over folder"
KERAS_STEPS = (KERAS, f"{KERAS}, cold")


def keras_step_for(name):
    """The Keras' loader measurement a rate `name` is compared with (from disk for a cold one)."""
    return KERAS_STEPS[1] if name.endswith(", cold") else KERAS

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


def drop_page_cache():
    """Evict every file's cached pages (Linux, root only), so the next reads come from the disk."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w", encoding="ascii") as file:
        file.write("1\n")


def can_drop_page_cache():
    try:
        drop_page_cache()
        return True
    except OSError:
        return False


def forget_verdicts(root):
    for part in ("train", "test"):
        path = os.path.join(root, part, ".imgclf-verdicts.json")
        if os.path.exists(path):
            os.remove(path)


def current_commit():
    """The short hash of the checkout's HEAD, for a results section's header."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                          capture_output=True, text=True).stdout.strip()


def publish(section, results=None):
    """Print a results section and append it to the Markdown file `results`, if given."""
    print(section)
    if results:
        with open(results, "a", encoding="utf-8") as file:
            file.write(section)


def run(args, main_folders):
    """Every measurement, `args.rounds` times, each round in a rotated order; returns, per key,
    the list of its values (`(wall, CPU)`: images/s or seconds), per rate the mean of the two
    Keras epochs around each of its measurements, and the number of training images."""
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
        KERAS: keras.utils.image_dataset_from_directory(
            train_dir, image_size=size, batch_size=args.batch_size, validation_split=0.2,
            subset="training", seed=42, verbose=False,
        ).prefetch(tf.data.AUTOTUNE),
    }
    for dataset in warm.values():  # first passes: checks done, cache filled, tf.data tuned
        count(dataset)
    count(raw_ds)

    def epoch_rate(dataset, epochs=args.epochs, cold=False):
        seconds = cpu_seconds = n = 0
        for _ in range(epochs):
            if cold:
                drop_page_cache()
            wall, cpu, images = cpu_timed(lambda: count(dataset))
            seconds, cpu_seconds, n = seconds + wall, cpu_seconds + cpu, n + images
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

    turns = {False: 0, True: 0}

    def side_by_side(cold=False):
        """A later TFRecord epoch's rate over the folder's (wall, CPU), the two compared directly,
        not through their ratios to Keras' loader: each set runs two epochs and the second is
        measured (an epoch after one of its own, as in training), in turns which goes first."""
        rates = {}
        turns[cold] += 1
        for name in ("imgclf", "tfrecord")[::1 if turns[cold] % 2 else -1]:
            epoch_rate(warm[name], cold=cold)
            rates[name] = epoch_rate(warm[name], cold=cold)
        return tuple(rates["tfrecord"][i] / rates["imgclf"][i] for i in (0, 1))

    steps = {
        "raw": lambda: epoch_rate(raw_ds),
        "imgclf 1st epoch": first_epoch_rate,
        **{name: (lambda d=dataset: epoch_rate(d)) for name, dataset in warm.items()},
        "main start s": lambda: start_seconds(main_folders),
        "imgclf start s": lambda: start_seconds(sys.modules["imgclf.data.datasets"]),
        SIDE_BY_SIDE: side_by_side,
    }
    if args.cold:
        for name in ("imgclf", "tfrecord", KERAS):
            steps[f"{name}, cold"] = lambda d=warm[name]: epoch_rate(d, cold=True)
        steps[f"{SIDE_BY_SIDE}, cold"] = lambda: side_by_side(cold=True)
    values = {name: [] for name in steps}
    # Each rate measured between two epochs of Keras' loader (from disk for the cold ones), and
    # compared with their mean: this VM's speed drifts by up to 1.7x within minutes.
    neighbours = {name: [] for name in steps}
    others = [name for name in steps if name not in KERAS_STEPS]
    def keras_epoch(keras):
        rate = steps[keras]()
        values[keras].append(rate)
        return rate

    for index in range(args.rounds):
        shift = index % len(others)
        last = {}  # Keras' last epoch of each kind: the next pipeline's "before"
        for name in others[shift:] + others[:shift]:
            if name.endswith(" start s") or name.startswith(SIDE_BY_SIDE):
                values[name].append(steps[name]())
                continue
            keras = keras_step_for(name)
            before = last[keras] if keras in last else keras_epoch(keras)
            values[name].append(steps[name]())
            after = last[keras] = keras_epoch(keras)
            neighbours[name].append(((before[0] + after[0]) / 2, (before[1] + after[1]) / 2))
        print(f"round {index + 1}: " + ", ".join(
            f"{k} {v[-1][0]:.2f} ({v[-1][1]:.2f} CPU)" for k, v in values.items() if v),
            flush=True)
    return values, neighbours, len(train_files)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=3000)
    parser.add_argument("--num_classes", type=int, default=5)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=1,
                        help="epochs per measurement of an epoch rate (1st epoch: always 1); a "
                             "measurement of one epoch of 2000 images lasts about a second, and "
                             "neighbouring ones differed by up to 40%% on the idle 2-core machine")
    parser.add_argument("--cold", action="store_true",
                        help="also measure Keras' loader, the training set and TFRecord with the "
                             "page cache dropped before each epoch (Linux, root)")
    parser.add_argument("--data", default="/tmp/imgclf_input_bench")
    parser.add_argument("--results", default=None, help="append a Markdown section to this file")
    parser.add_argument("--baseline_ref", default=BASELINE_REF,
                        help="git commit of the loader to compare start-up with (default: %(default)s)")
    args = parser.parse_args(argv)

    if args.cold and not can_drop_page_cache():
        parser.error("--cold drops the page cache: it needs Linux and root")
    ensure_data(args.data, args.num_images, args.num_classes)
    import tensorflow as tf  # noqa: F401  (after generating: TensorFlow start-up is not measured)

    import imgclf.data.datasets  # noqa: F401
    from imgclf.data.tfrecord import convert_folder

    records = os.path.join(args.data, "records")
    shutil.rmtree(records, ignore_errors=True)
    convert_seconds, layout = timed(
        lambda: convert_folder(os.path.join(args.data, "train"), records, num_shards=8)
    )
    values, neighbours, num_train = run(args, load_baseline_folders(args.baseline_ref))

    def median(numbers):
        return statistics.median(numbers)

    def listed(numbers):
        return ", ".join(f"{x:.2f}" for x in numbers)

    raw_wall = [wall for wall, _ in values["raw"]]
    raw_cpu = [cpu for _, cpu in values["raw"]]
    labels = {
        KERAS: KERAS,
        "plain tf": "plain TF: read_file + tf.io.decode_image + resize (parallel map)",
        "raw": "imgclf decode_image alone (parallel map)",
        "imgclf 1st epoch": "imgclf training set, 1st epoch (finds bad files)",
        "imgclf": "imgclf training set, later epoch",
        "cache=memory": "imgclf cache=memory, cached epoch",
        "tfrecord": "imgclf from TFRecord (8 shards), later epoch",
    }
    if args.cold:
        labels.update({KERAS_STEPS[1]: f"{KERAS}, from disk",
                       "imgclf, cold": "imgclf training set, later epoch, from disk",
                       "tfrecord, cold": "imgclf from TFRecord (8 shards), later epoch, from disk"})

    def compared(key, base, relative_to=None):
        """Rates (best / median, wall then CPU) and ratios to `base`: best over best, and the
        median of the ratios to the Keras epochs around each measurement (`relative_to`: the
        ratio of the two pipelines' ratios to their own Keras neighbours)."""
        rates, ratios, rounds = [], [], []
        for part in (0, 1):
            mine = [v[part] for v in values[key]]
            near = [m / n[part] for m, n in zip(mine, neighbours[key])] if neighbours[key] \
                else [1.0] * len(mine)  # Keras' loader itself
            if relative_to is not None:
                near = [m / (v[part] / n[part]) for m, v, n in
                        zip(near, values[relative_to], neighbours[relative_to])]
            rates.append(f"{max(mine):.0f} / {median(mine):.0f}")
            ratios.append(f"**{max(mine) / max(v[part] for v in values[base]):.2f}** / "
                          f"{median(near):.2f}")
            rounds.append(near)
        return f"{rates[0]} | {rates[1]} |", f" {ratios[0]} | {ratios[1]} |", rounds

    lines, rounds_lines = [], []
    for key, label in labels.items():
        rates, ratios, (wall, cpu) = compared(key, keras_step_for(key))
        lines.append(f"| {label} | {rates}{ratios}")
        if key not in KERAS_STEPS:
            rounds_lines.append(f"- {label}: wall {listed(wall)}; CPU {listed(cpu)}")
    for folder, records, where in (("imgclf", "tfrecord", ""), ("imgclf, cold", "tfrecord, cold",
                                                                 ", from disk")):
        if folder not in values:
            continue
        _, ratios, (wall, cpu) = compared(records, folder, relative_to=folder)
        lines.append(f"| TFRecord over the folder, later epoch{where} | | |{ratios}")
        rounds_lines.append(f"- TFRecord over the folder{where}: wall {listed(wall)}; "
                            f"CPU {listed(cpu)}")
    for key, where in ((SIDE_BY_SIDE, ""), (f"{SIDE_BY_SIDE}, cold", ", from disk")):
        if key not in values:
            continue
        wall, cpu = ([v[part] for v in values[key]] for part in (0, 1))
        # (A single round has no quartiles but its value.)
        quartiles = [statistics.quantiles(x, n=4) if len(x) > 1 else x * 3 for x in (wall, cpu)]
        lines.append(
            f"| TFRecord over the folder, later epoch{where}, side by side (median, quartiles) "
            f"| | | {median(wall):.2f} ({quartiles[0][0]:.2f}-{quartiles[0][2]:.2f}) "
            f"| {median(cpu):.2f} ({quartiles[1][0]:.2f}-{quartiles[1][2]:.2f}) |")
        rounds_lines.append(f"- TFRecord over the folder{where}, side by side: wall "
                            f"{listed(wall)}; CPU {listed(cpu)}")
    starts = []
    for key, label in (("main start s", f"before ({args.baseline_ref}, decode pre-pass)"),
                       ("imgclf start s", "imgclf")):
        # One epoch's raw decoding: the training split at the raw rate of the same round.
        wall = [w / (num_train / r) for (w, _), r in zip(values[key], raw_wall)]
        cpu = [c / (num_train / r) for (_, c), r in zip(values[key], raw_cpu)]
        starts.append(
            f"| time to first batch (train + val + test sets made), {label} | "
            f"{median([w for w, _ in values[key]]):.2f} s | "
            f"{median([c for _, c in values[key]]):.2f} CPU s | "
            f"{median(wall):.2f} of an epoch ({listed(wall)}) | "
            f"{median(cpu):.2f} of an epoch ({listed(cpu)}) |"
        )
    commit = current_commit()
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
        f"{args.epochs} epoch(s) per measurement. "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, load average "
        f"{load[0]:.1f} at the end. TFRecord: {len(layout['shards'])} shards, converted in "
        f"{convert_seconds:.1f} s. Every epoch rate is measured between two epochs of Keras' "
        "loader. Rates are best / median; ratios are to Keras' loader (its "
        f"best: {max(w for w, _ in values[KERAS]):.0f} images/s, "
        f"{max(c for _, c in values[KERAS]):.0f} per CPU s), as best over best (bold) / "
        "median of the ratios to the two Keras epochs around each measurement; \"from disk\" "
        "rows drop the page cache before each epoch and compare with Keras' loader from disk; "
        "TFRecord over the folder divides their two ratios to Keras; \"side by side\" rows "
        "run two epochs of each in turn instead, and divide the second ones' rates (wall, "
        "CPU).",
        "",
        "| pipeline | images/s, best / median | images per CPU s, best / median "
        "| wall, x Keras: best / median | CPU, x Keras: best / median |",
        "|---|---|---|---|---|",
        *lines,
        "",
        "Ratios to the Keras epochs around each measurement, round by round:",
        "",
        *rounds_lines,
        "",
        "| start-up | wall | CPU | wall, in epochs of decode_image alone (rounds) "
        "| CPU, in epochs (rounds) |",
        "|---|---|---|---|---|",
        *starts,
        "",
    ])
    publish(section, args.results)


if __name__ == "__main__":
    main()
