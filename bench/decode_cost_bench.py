"""CPU per image of decoding in a tf.data map: imgclf's `decode_image` against Keras' chain.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/decode_cost_bench.py --data /tmp/datahelper_bench \
        --baseline_ref f105659 --rounds 10

One map call at a time (`num_parallel_calls=1`) over `--num_files` JPEGs already in memory, so
that CPU time per image is the cost of the function alone, without the scheduling noise of a
parallel pipeline on a shared machine; each variant runs `--rounds` times in turn and the
minimum is reported (the least disturbed run). Variants:

- keras: `tf.io.decode_image(channels=3)` + `tf.image.resize` (what
  `keras.utils.image_dataset_from_directory` maps), default executor;
- plain TF, float32: the same with a cast to float32 before resizing (the same pixels);
- imgclf `decode_image` of `--baseline_ref` (loaded from git), and of this checkout, with the
  default executor and with the single-threaded one the data sets use
  (`imgclf.data.pipeline.inline_parallel_map`).

The data folder is bench/input_pipeline_bench.py's (generated there).
"""

import argparse
import glob
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def load_baseline(ref):
    source = subprocess.run(["git", "show", f"{ref}:imgclf/images.py"], cwd=os.path.dirname(HERE),
                            check=True, capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "baseline_images.py")
    with open(path, "w") as file:
        file.write(source)
    spec = importlib.util.spec_from_file_location("baseline_images", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/tmp/datahelper_bench")
    parser.add_argument("--num_files", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--baseline_ref", default="f105659")
    args = parser.parse_args(argv)

    import tensorflow as tf
    from tensorflow.python.data.ops.map_op import _ParallelMapDataset

    import imgclf.images as images

    files = sorted(glob.glob(os.path.join(args.data, "train", "*", "*.jpg")))[:args.num_files]
    if not files:
        sys.exit(f"no JPEGs under {args.data}/train: run bench/input_pipeline_bench.py first")
    size = (args.image_size, args.image_size)
    baseline = load_baseline(args.baseline_ref)

    def keras_chain(data):
        return tf.image.resize(tf.io.decode_image(data, channels=3, expand_animations=False), size)

    def plain_float(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        return tf.image.resize(tf.cast(image, tf.float32), size)

    variants = {
        "keras: decode_image(channels=3) + resize": (keras_chain, False),
        "plain TF, cast to float32 before resizing": (plain_float, False),
        f"imgclf decode_image at {args.baseline_ref}": (
            lambda data: baseline.decode_image(data, size), False),
        "imgclf decode_image, this checkout, default executor": (
            lambda data: images.decode_image(data, size), False),
        "imgclf decode_image, this checkout, single-threaded executor (the data sets')": (
            lambda data: images.decode_image(data, size), True),
    }
    encoded = tf.data.Dataset.from_tensor_slices([open(f, "rb").read() for f in files]).cache()
    for _ in encoded:
        pass
    costs = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (function, inline) in variants.items():
            if inline:
                mapped = _ParallelMapDataset(encoded, function, 1, None,
                                             use_inter_op_parallelism=False,
                                             preserve_cardinality=True)
            else:
                mapped = encoded.map(function, num_parallel_calls=1)
            start = time.process_time()
            for _ in mapped:
                pass
            costs[name].append((time.process_time() - start) / len(files) * 1e6)
    reference = min(costs[next(iter(variants))])
    print(f"{len(files)} JPEGs of 224-500 px to {size[0]} px, one call at a time, "
          f"min of {args.rounds} rounds\n")
    print("| decoding | CPU per image (us) | x Keras' CPU |")
    print("|---|---:|---:|")
    for name, values in costs.items():
        print(f"| {name} | {min(values):.0f} | {min(values) / reference:.2f} |")


if __name__ == "__main__":
    main()
