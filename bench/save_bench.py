"""How long a servable save and its reload take, against Keras' own SavedModel export, in one run.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/save_bench.py [--models EfficientNetV2B0Model ...]

For each backbone at 224 px (random weights: the graph, not the values, sets the cost), in a fresh
process per save so that nothing traced before is reused:
- imgclf: `ImageClassifierModel.save` (three serving signatures, `predict_embeddings`, warm-up
  file, metadata), what every version and every best checkpoint of a training run costs;
- Keras: `model.export(path, format="tf_saved_model")`, one `serve` endpoint, what a user of
  plain Keras would write for TF Serving.
Each row gives the save's CPU seconds, `saved_model.pb`'s size, `tf.saved_model.load`'s CPU seconds
and the first call's (serving_default, or Keras' `serve`: the function's instantiation, what a
server's warm-up pays), medians of `--rounds` processes alternating the two. Prints a Markdown
table.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

MODELS = ("EfficientNetV2B0Model", "ConvNeXtTinyModel", "MobileNetV2Model", "LenetModel")

_ONE_SAVE = r"""
import json, os, sys, tempfile, time
import numpy as np
import tensorflow as tf
from imgclf.models.registry import create_model

name, how = sys.argv[1], sys.argv[2]
kwargs = {} if name == "LenetModel" else {"weights": None}
model = create_model(name, input_shape=(224, 224, 3), num_classes=5, class_names=list("abcde"), **kwargs)
pixels = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
expected = model(pixels, training=False).numpy()
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "1")
    start = time.process_time()
    if how == "imgclf":
        model.save(path)
    else:
        model.export(path, format="tf_saved_model", verbose=False)
    save = time.process_time() - start
    start = time.process_time()
    loaded = tf.saved_model.load(path)
    load = time.process_time() - start
    start = time.process_time()
    if how == "imgclf":
        logits = loaded.signatures["serving_default"](input_tensor=tf.constant(pixels))["output_0"]
    else:
        logits = loaded.serve(tf.constant(pixels))
    first_call = time.process_time() - start
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-4, atol=1e-4)
    print(json.dumps({"save": save, "pb": os.path.getsize(os.path.join(path, "saved_model.pb")),
                      "load": load, "first_call": first_call}))
"""


def one_save(name, how):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", _ONE_SAVE, name, how], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print("| model (224 px) | saved by | save CPU s | saved_model.pb | load CPU s | first call CPU s |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.models:
        runs = {"imgclf": [], "keras": []}
        for index in range(args.rounds):
            for how in (list(runs) if index % 2 == 0 else list(runs)[::-1]):
                runs[how].append(one_save(name, how))
        for how, results in runs.items():
            median = {key: statistics.median(r[key] for r in results) for key in results[0]}
            label = "imgclf" if how == "imgclf" else "Keras export"
            print(f"| {name} | {label} | {median['save']:.2f} | {median['pb'] / 1e6:.2f} MB "
                  f"| {median['load']:.2f} | {median['first_call']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
