"""Evaluate a saved imgclf model on a folder of labelled test images, through its signatures.

    python eval_model.py --test_dataset_path data/test --model_path models/LenetModel/1

Prints `accuracy: <x>`, per-class precision and recall and the confusion matrix. `--report DIR`
also writes DIR/metrics.json, DIR/confusion_matrix.png and DIR/misclassified.png (the worst
mistakes, with their true and predicted classes).
"""

import sys

from imgclf import cli
from imgclf.tensorflow_import import import_tensorflow

parser = cli.ArgumentParser(prog="eval_model.py", description=__doc__.split("\n")[0])
parser.add_argument("--test_dataset_path", required=True, help="folder of <class>/<image>")
parser.add_argument("--model_path", required=True, help="an imgclf SavedModel directory")
parser.add_argument("--batch_size", type=int, default=32, help="default: 32")
parser.add_argument("--metrics_json", default=None, help="also write the metrics to this JSON file")
parser.add_argument("--report", default=None, metavar="DIR",
                    help="write metrics.json, confusion_matrix.png and misclassified.png into DIR")


def main(argv=None):
    args = parser.parse_args(argv)
    status = 0

    def work():
        nonlocal status
        import_tensorflow()
        from imgclf.evaluation import evaluate_saved_model, write_metrics_json

        report, predictions = evaluate_saved_model(
            args.model_path, args.test_dataset_path, args.batch_size, return_predictions=True
        )
        print(report.format())
        if args.metrics_json:
            write_metrics_json(report, args.metrics_json)
        if args.report:
            from imgclf.reports import write_report

            for path in write_report(args.report, report, predictions).values():
                print(f"wrote {path}")
        agreeing, checked = report.bytes_agreement
        if agreeing != checked:
            print(f"eval_model.py: serving_bytes disagrees with serving_default on "
                  f"{checked - agreeing} of {checked} images", file=sys.stderr)
            status = 1

    return cli.run(parser, work) or status
