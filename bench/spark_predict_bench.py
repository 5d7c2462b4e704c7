"""Prediction on Spark (issue 13 §3, Spark row): `imgclf.spark.predict` in `local[2]` against the
one-machine `imgclf-predict` on the same 2 cores, and the Spark machinery it uses against the
alternatives.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/spark_predict_bench.py --num_images 2000 --rounds 2

Writes `--num_images` JPEGs of 224-500 px (bench/input_pipeline_bench.py's generator) into
`--data` (not committed) and, per model (`--models`: random weights, 5 classes, 224 px input),
measures side by side in one process, `--rounds` times in a rotated order (other programs share
the cores; the median is reported, and each Spark rate is also a ratio to the one-machine rate
of the same round):

    local          `imgclf.prediction.predict_files(predictor, [folder], output=<x>.parquet)`:
                   the one-machine engine of `imgclf-predict`, model loaded beforehand
    spark_udf      `imgclf.spark.predict(binaryFile(folder), model)` written to Parquet: what
                   imgclf uses, Spark's `predict_batch_udf` calling `Predictor.predict_encoded`
                   per batch of `--batch_size`
    spark_arrow    the same work through `mapInArrow` (a pipeline per `--batch_size` rows)
    spark_pandas   the same work through `mapInPandas`

Every Spark target reads the same `binaryFile` DataFrame, writes Parquet, and runs with workers
that already hold the model (a warm-up job over a few files first): the numbers are the job's,
without Spark's start-up (reported apart: the first job's wall time, session and workers cold).

Prints a markdown section (command, machine, table, verdict against the goal >= 0.8).
"""

import argparse
import datetime
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGETS = ("local", "spark_udf", "spark_arrow", "spark_pandas")
NUM_CLASSES = 5


def ensure_data(folder, num_images):
    from input_pipeline_bench import generate

    marker = os.path.join(folder, f".generated-{num_images}")
    if not os.path.exists(marker):
        shutil.rmtree(folder, ignore_errors=True)
        generate(folder, num_images, NUM_CLASSES, seed=13)
        open(marker, "w").close()


def save_model(model_type, base):
    from imgclf.models.registry import create_model

    if not os.path.exists(os.path.join(base, "1")):
        kwargs = {} if model_type == "LenetModel" else {"weights": None}
        create_model(model_type, input_shape=(224, 224, 3), num_classes=NUM_CLASSES,
                     **kwargs).save(os.path.join(base, "1"))
    return base


# The alternatives to predict_batch_udf, written as a user would with imgclf's Predictor: a
# tf.data pipeline per batch of `batch_size` rows, taken out of Arrow or pandas first.

def _arrow_batches(batches, model_path, fingerprint, top_k, batch_size):
    """mapInArrow."""
    import pyarrow as pa

    from imgclf.prediction import columns
    from imgclf.spark.prediction import worker_models

    predictor = worker_models.get(model_path, fingerprint)
    schema = columns.output_schema()
    for batch in batches:
        for start in range(0, batch.num_rows, batch_size):
            chunk = batch.slice(start, batch_size)
            sources = [(None, content or b"") for content in chunk.column("content").to_pylist()]
            rows = list(predictor.predict_sources(sources, top_k=top_k, batch_size=batch_size))
            for row, path in zip(rows, chunk.column("path").to_pylist()):
                row["path"] = path
            yield pa.RecordBatch.from_pylist(rows, schema=schema)


def _pandas_batches(frames, model_path, fingerprint, top_k, batch_size):
    """mapInPandas."""
    import pandas as pd

    from imgclf.prediction import columns
    from imgclf.spark.prediction import worker_models

    predictor = worker_models.get(model_path, fingerprint)
    for frame in frames:
        for start in range(0, len(frame), batch_size):
            chunk = frame.iloc[start:start + batch_size]
            sources = [(None, content or b"") for content in chunk["content"]]
            rows = list(predictor.predict_sources(sources, top_k=top_k, batch_size=batch_size))
            for row, path in zip(rows, chunk["path"]):
                row["path"] = path
            yield pd.DataFrame(rows, columns=list(columns.output_columns()))


def mapped(images, predictor, top_k, batch_size, kind):
    import functools

    from pyspark.sql.pandas.types import from_arrow_schema

    from imgclf.prediction import columns

    function = functools.partial(_arrow_batches if kind == "arrow" else _pandas_batches,
                                 model_path=predictor.model_path,
                                 fingerprint=predictor.fingerprint, top_k=top_k,
                                 batch_size=batch_size)
    method = images.select("path", "content").mapInArrow if kind == "arrow" else \
        images.select("path", "content").mapInPandas
    return method(function, from_arrow_schema(columns.output_schema()))


def run(args):
    from imgclf.prediction import Predictor, predict_files
    from imgclf.spark.files import JOB_CONF
    from imgclf.spark.prediction import _predictions
    from imgclf.spark.session import spark_session

    ensure_data(args.data, args.num_images)
    work = tempfile.mkdtemp(prefix="spark-predict-bench-")
    started = time.perf_counter()
    # The settings of imgclf-predict --engine spark's job (files.JOB_CONF) for every target.
    spark = spark_session(args.master, conf={"spark.ui.enabled": "false", **JOB_CONF})
    spark.sparkContext.setLogLevel("ERROR")
    session_seconds = time.perf_counter() - started
    images = (spark.read.format("binaryFile").option("recursiveFileLookup", "true")
              .option("pathGlobFilter", "*.jpg").load(args.data))
    partitions = images.rdd.getNumPartitions()
    warmup = spark.read.format("binaryFile").load(os.path.join(args.data, "class0", "0000*.jpg"))
    results = {}
    for model_type in args.models:
        base = save_model(model_type, os.path.join(work, model_type))
        predictor = Predictor.load(base)
        frames = {
            "spark_udf": lambda df: _predictions(df, predictor, "content", "path", args.top_k,
                                                 args.batch_size, False),
            "spark_arrow": lambda df: mapped(df, predictor, args.top_k, args.batch_size, "arrow"),
            "spark_pandas": lambda df: mapped(df, predictor, args.top_k, args.batch_size, "pandas"),
        }
        first = {}
        for name, make in frames.items():  # workers load the model; the first job is timed apart
            clock = time.perf_counter()
            make(warmup).write.mode("overwrite").parquet(os.path.join(work, "warmup.parquet"))
            first[name] = time.perf_counter() - clock
        list(predict_files(predictor, [os.path.join(args.data, "class0", "00000.jpg")],
                           progress=False))
        rates = {target: [] for target in args.targets}
        ratios = {target: [] for target in args.targets if target != "local"}
        for round_index in range(args.rounds):
            order = args.targets[round_index % len(args.targets):] + args.targets[:round_index % len(args.targets)]
            seconds = {}
            for target in order:
                output = os.path.join(work, f"{target}.parquet")
                clock = time.perf_counter()
                if target == "local":
                    summary = predict_files(predictor, [args.data], output=output,
                                            batch_size=args.batch_size, top_k=args.top_k,
                                            progress=False)
                    count = summary.files
                else:
                    frames[target](images).write.mode("overwrite").parquet(output)
                    count = None
                seconds[target] = time.perf_counter() - clock
                if count is None:
                    count = spark.read.parquet(output).count()
                assert count == args.num_images, (target, count)
                rates[target].append(args.num_images / seconds[target])
                print(f"{model_type} round {round_index + 1} {target}: {seconds[target]:.1f} s, "
                      f"{rates[target][-1]:.1f} images/s", file=sys.stderr, flush=True)
            if "local" in seconds:
                for target in ratios:
                    ratios[target].append(seconds["local"] / seconds[target])
        results[model_type] = {
            "rates": {t: statistics.median(v) for t, v in rates.items()},
            "ratios": {t: statistics.median(v) for t, v in ratios.items() if v},
            "all_ratios": ratios,
            "first": first,
        }
    shutil.rmtree(work, ignore_errors=True)
    return results, session_seconds, partitions


def report(argv, args, results, session_seconds, partitions):
    import pyspark

    load = os.getloadavg()
    lines = [
        f"## Run of {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"(spark_predict_bench)",
        "",
        "```",
        "TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/spark_predict_bench.py " + " ".join(argv),
        "```",
        "",
        f"{args.num_images} JPEGs of 224-500 px, models at 224 px with random weights, "
        f"batch {args.batch_size}, top_k {args.top_k}; Spark {pyspark.__version__} `{args.master}` "
        f"({partitions} binaryFile partitions; imgclf's job settings: Arrow batches of 256 rows, "
        f"a file counted as 64 KB when packing tasks), Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, load average after the run "
        f"{load[0]:.1f} (other programs share the cores). Median of {args.rounds} rounds, rotated "
        "order; a ratio is to the one-machine rate of the same round.",
        "",
        "| model | target | images/s | vs local (same round) | first job, cold workers (s) |",
        "|---|---|---|---|---|",
    ]
    for model_type, result in results.items():
        for target, rate in result["rates"].items():
            ratio = result["ratios"].get(target)
            first = result["first"].get(target)
            lines.append(
                f"| {model_type} | {target} | {rate:.1f} | "
                f"{'' if ratio is None else f'{ratio:.2f}'} | "
                f"{'' if first is None else f'{first:.1f}'} |"
            )
    lines += ["", f"Spark session start: {session_seconds:.1f} s.", ""]
    for model_type, result in results.items():
        ratio = result["ratios"].get("spark_udf")
        if ratio is not None:
            verdict = "met" if ratio >= 0.8 else "NOT met"
            lines.append(f"- {model_type}: Spark local[2] (imgclf.spark.predict) / one machine = "
                         f"{ratio:.2f} (goal >= 0.8: {verdict}); every round: "
                         f"{', '.join(f'{r:.2f}' for r in result['all_ratios']['spark_udf'])}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "imgclf-spark-bench-jpegs"))
    parser.add_argument("--models", nargs="+", default=["LenetModel", "MobileNetV3SmallModel"])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--results", default=None, help="append the report to this file")
    args = parser.parse_args(argv)
    results, session_seconds, partitions = run(args)
    text = report(argv, args, results, session_seconds, partitions)
    print(text)
    if args.results:
        with open(args.results, "a") as file:
            file.write("\n" + text)


if __name__ == "__main__":
    main()
