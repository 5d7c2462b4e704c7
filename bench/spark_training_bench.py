"""Issue 14 §4: what Spark costs around imgclf's training and record writing, side by side.

    TF_CPP_MIN_LOG_LEVEL=2 python bench/spark_training_bench.py --work_dir /tmp/spark_bench \\
        --images_per_class 1000 --image_size 224 --rounds 2

1. Records: `python -m imgclf.data.tfrecord FOLDER OUT --num_shards 2` (what a user runs on one
   machine) against `imgclf.spark.write_tfrecords` of the same folder read by
   `imgclf.spark.read_image_folder`, on Spark `local[2]` (job time in a running session; the
   session's start is reported apart); and the same folder read with a `binaryFile` glob.
2. Training: the same 2-worker LeNet training, launched by hand (two `train_model.py`
   processes with TF_CONFIG on loopback) against `imgclf.spark.train(num_workers=2)` in the
   same local[2] session.

Rounds alternate the two ways, so a load from elsewhere on the machine hits both alike; the
ratios (Spark / by hand) are what to read. Prints a Markdown section.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def convert_by_hand(folder, output):
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imgclf.data.tfrecord", folder, output,
                    "--num_shards", "2"], check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    return time.perf_counter() - start


def convert_on_spark(spark, folder, output, check_images=True, glob=False):
    """`read_image_folder` + `write_tfrecords`; `glob`: read with a `folder/*/*` glob instead."""
    from imgclf.spark import labels_from_paths, read_image_folder, write_tfrecords

    start = time.perf_counter()
    if glob:
        images = labels_from_paths(spark.read.format("binaryFile").load(f"{folder}/*/*"))
    else:
        images = read_image_folder(folder, spark)
    write_tfrecords(images, output, num_shards=2, check_images=check_images)
    return time.perf_counter() - start


def train_args(records, test, models, epochs, image_size):
    return ["--train_dataset_path", records, "--test_dataset_path", test,
            "--model_folder_path", models, "--model_type", "LenetModel",
            "--input_width", str(image_size), "--input_height", str(image_size),
            "--batch_size", "16", "--num_epochs", str(epochs), "--patience", str(epochs)]


def train_by_hand(args):
    start = time.perf_counter()
    ports = free_ports(2)
    workers = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({
            "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
            "task": {"type": "worker", "index": index},
        }))
        workers.append(subprocess.Popen([sys.executable, os.path.join(REPO, "train_model.py"),
                                         *args], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
    codes = [worker.wait() for worker in workers]
    if codes != [0, 0]:
        raise RuntimeError(f"the workers launched by hand failed: {codes}")
    return time.perf_counter() - start


def train_on_spark(spark, records, test, models, epochs, image_size):
    from imgclf.spark import train

    start = time.perf_counter()
    train("LenetModel", records, test, models, num_workers=2, spark=spark,
          input_shape=(image_size, image_size, 3), batch_size=16, num_epochs=epochs,
          patience=epochs)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--images_per_class", type=int, default=1000)
    parser.add_argument("--image_size", type=int, default=224, help="of the record-writing data")
    parser.add_argument("--train_per_class", type=int, default=300, help="of the training data")
    parser.add_argument("--train_image_size", type=int, default=32)
    parser.add_argument("--num_epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip", choices=("records", "training"), default=None)
    args = parser.parse_args(argv)

    from imgclf.data.sample_data import write_sample_dataset
    from imgclf.spark.session import spark_session

    work = os.path.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    start = time.perf_counter()
    spark = spark_session("local[2]", app_name="imgclf-bench", conf={
        "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": "2g"})
    spark.sparkContext.setLogLevel("ERROR")
    session_start = time.perf_counter() - start
    lines = [f"Spark local[2] session start: {session_start:.1f} s (not in the times below)", ""]

    if args.skip != "records":
        data = os.path.join(work, f"data-{args.image_size}")
        write_sample_dataset(data, num_classes=3, image_size=args.image_size,
                             train_per_class=args.images_per_class, test_per_class=1)
        folder = os.path.join(data, "train")
        size_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder)
                      for f in fs) / 2**20
        hand, on_spark, unchecked, globbed = [], [], [], []
        for round_ in range(args.rounds):
            for name, times, convert in (
                ("hand", hand, lambda out: convert_by_hand(folder, out)),
                ("spark", on_spark, lambda out: convert_on_spark(spark, folder, out)),
                # The converter decodes nothing: Spark without its per-image check does the
                # same work, which tells the check's cost from Spark's own.
                ("spark-unchecked", unchecked,
                 lambda out: convert_on_spark(spark, folder, out, check_images=False)),
                # What a `binaryFile` read with a glob costs: Spark lists each match apart.
                ("spark-glob", globbed, lambda out: convert_on_spark(spark, folder, out, glob=True)),
            ):
                output = os.path.join(work, f"records-{name}-{round_}")
                shutil.rmtree(output, ignore_errors=True)
                times.append(convert(output))
                print(f"records {name} round {round_}: {times[-1]:.1f} s", file=sys.stderr)
        lines += [
            f"Records: {3 * args.images_per_class} sample images, {args.image_size} px, "
            f"{size_mb:.0f} MB, 2 shards; best of {args.rounds} rounds",
            "",
            "| writer | wall time (s) |",
            "|---|---|",
            f"| `python -m imgclf.data.tfrecord` | {min(hand):.1f} |",
            f"| `read_image_folder` + `write_tfrecords` (local[2], images checked) | "
            f"{min(on_spark):.1f} |",
            f"| the same, `write_tfrecords(check_images=False)` | {min(unchecked):.1f} |",
            f"| `labels_from_paths(binaryFile .load(folder/*/*))` + `write_tfrecords` | "
            f"{min(globbed):.1f} |",
            f"| ratio Spark / converter | {min(on_spark) / min(hand):.2f}x |",
            f"| ratio Spark unchecked / converter | {min(unchecked) / min(hand):.2f}x |",
            "",
        ]

    if args.skip != "training":
        data = os.path.join(work, f"train-data-{args.train_image_size}")
        write_sample_dataset(data, num_classes=3, image_size=args.train_image_size,
                             train_per_class=args.train_per_class, test_per_class=30)
        records = os.path.join(work, "train-records")
        if not os.path.exists(records):
            from imgclf.data import convert_folder
            convert_folder(os.path.join(data, "train"), records, num_shards=1)
        test = os.path.join(data, "test")
        hand, on_spark = [], []
        for round_ in range(args.rounds):
            for name, times in (("hand", hand), ("spark", on_spark)):
                models = os.path.join(work, f"models-{name}-{round_}")
                shutil.rmtree(models, ignore_errors=True)
                if name == "hand":
                    times.append(train_by_hand(train_args(records, test, models, args.num_epochs,
                                                          args.train_image_size)))
                else:
                    times.append(train_on_spark(spark, records, test, models, args.num_epochs,
                                                args.train_image_size))
                print(f"training {name} round {round_}: {times[-1]:.1f} s", file=sys.stderr)
        lines += [
            f"Training: LenetModel, 2 workers, {3 * args.train_per_class} images of "
            f"{args.train_image_size} px (TFRecords, 1 shard), batch 16 per worker, "
            f"{args.num_epochs} epochs; best of {args.rounds} rounds",
            "",
            "| launcher | wall time (s) |",
            "|---|---|",
            f"| two `train_model.py` with TF_CONFIG, by hand | {min(hand):.1f} |",
            f"| `imgclf.spark.train(num_workers=2)`, local[2] | {min(on_spark):.1f} |",
            f"| ratio Spark / by hand | {min(on_spark) / min(hand):.2f}x |",
            "",
        ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
