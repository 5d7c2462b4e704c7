"""Label images offline with a saved model: every file of folders, globs, lists or TFRecords.

    imgclf-predict --model_path models/LenetModel --output labels.parquet photos/ more/*.jpg

Writes one row per input (path, class, probability, top_classes, top_probabilities, logits,
[embedding], error) as CSV, JSON Lines or Parquet, by the suffix of --output. A killed run is
resumed by the same command. Exit status: 0 done, 1 stopped by --max_errors, 2 usage error.
"""

import sys

from imgclf import cli
from imgclf.tensorflow_import import import_tensorflow

parser = cli.ArgumentParser(prog="predict_model.py", description=__doc__.split("\n")[0])
parser.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="a folder (recursive), a glob, a .txt/.csv file list, an imgclf TFRecord "
                         "directory or an image")
parser.add_argument("--model_path", required=True,
                    help="a SavedModel version folder, a model base path (its highest version) "
                         "or a .keras file")
parser.add_argument("--output", required=True,
                    help="the output file: .csv, .jsonl (.ndjson) or .parquet")
parser.add_argument("--top_k", type=int, default=5, help="classes in top_classes (default: 5)")
parser.add_argument("--batch_size", type=int, default=64, help="images per forward pass (default: 64)")
parser.add_argument("--embeddings", action="store_true",
                    help="add the penultimate layer's output as an 'embedding' column")
parser.add_argument("--resume", action="store_true",
                    help="refuse to replace the parts of another run at --output (the parts of "
                         "the same run are resumed with or without it)")
parser.add_argument("--max_errors", default=None, metavar="N|FRACTION",
                    help="stop after more than N unreadable files, or more than this fraction "
                         "(0-1) of the files read")
parser.add_argument("--part_size", type=int, default=1000,
                    help="inputs per committed part: what a killed run may redo (default: 1000)")
parser.add_argument("--log_every", type=float, default=30.0,
                    help="seconds between progress lines when stderr is not a terminal (default: 30)")
parser.add_argument("--engine", choices=("local", "spark"), default="local",
                    help="local: this machine (default); spark: a Spark cluster (imgclf[spark])")
parser.add_argument("--master", default=None,
                    help="with --engine spark: the Spark master URL (default: Spark's own)")


def parse_max_errors(text):
    """`--max_errors`: an integer count or a fraction between 0 and 1."""
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            value = None
    if value is None or (isinstance(value, int) and value < 0) or (
        isinstance(value, float) and not 0 < value < 1
    ):
        parser.error(f"argument --max_errors: must be a count (an integer >= 0) or a fraction "
                     f"between 0 and 1; received {text!r}")
    return value


def main(argv=None):
    args = parser.parse_args(argv)
    for name in ("top_k", "batch_size", "part_size"):
        if getattr(args, name) < 1:
            parser.error(f"argument --{name}: must be a positive integer; received "
                         f"{getattr(args, name)}")
    if args.log_every <= 0:
        parser.error(f"argument --log_every: must be positive; received {args.log_every}")
    args.max_errors = parse_max_errors(args.max_errors)
    if args.master is not None and args.engine != "spark":
        parser.error("argument --master: only with --engine spark")
    if args.engine == "spark":
        return _spark(args)
    status = 0

    def work():
        nonlocal status
        import_tensorflow()
        from imgclf.prediction.files import TooManyErrors, predict_files
        from imgclf.prediction.outputs import output_format

        output_format(args.output)  # before the model loads: a wrong suffix is a usage error
        try:
            summary = predict_files(
                args.model_path, args.inputs, output=args.output, top_k=args.top_k,
                batch_size=args.batch_size, embeddings=args.embeddings, resume=args.resume,
                max_errors=args.max_errors, part_size=args.part_size, log_every=args.log_every,
            )
        except TooManyErrors as error:
            print(f"{parser.prog}: {error}", file=sys.stderr)
            status = 1
            return
        print(summary)

    return cli.run(parser, work) or status


def _spark(args):
    """`--engine spark`: the Spark engine (`imgclf.spark`, the `imgclf[spark]` extra) runs the
    same job; it takes the parsed arguments and returns the exit status."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        parser.error("--engine spark needs pyspark: pip install 'imgclf[spark]'")
    try:
        from imgclf.spark import predict_files_cli
    except ImportError as error:
        parser.error(f"--engine spark is not available in this imgclf: {error}")
    status = 0

    def work():
        nonlocal status
        status = predict_files_cli(args) or 0

    return cli.run(parser, work) or status
