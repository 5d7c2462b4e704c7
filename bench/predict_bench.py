"""Offline prediction benchmark (issue 13 §3, one machine): `imgclf-predict` against its limit,
against Keras' own loader + `model.predict`, and against the imgclf server fed over gRPC.

The bench writes `--num_images` JPEGs of random sizes (224-500 px a side, smooth content with
noise, quality 90) and, per model (`--models`, random weights, 10 classes, 224 px), measures in
one run, side by side, on the same files:

    imgclf_predict  `imgclf.prediction.predict_files(predictor, [folder], output=<parquet>)`:
                    listing, decoding, the forward pass and writing the output, model loaded
    limit           N / (t_decode + t_forward): the same files decoded alone (imgclf's decoder
                    in tf.data, parallel, AUTOTUNE) plus the same batches run through the
                    model's compiled function alone, from tensors in memory
    keras           `keras.utils.image_dataset_from_directory(folder, labels=None,
                    image_size=(224, 224), shuffle=False)` + `model.predict(dataset)`
    grpc_server     `python -m imgclf.serving --enable_batching` on loopback, fed the same
                    files as encoded bytes through `serving_bytes` by `GrpcClient`
                    (`--client_threads` threads, `--client_batch` images a request)

Each target runs `--rounds` times in turn (the median is reported), since other programs share
the cores. Then `imgclf-predict` (the command, `predict_model.py`) runs as a child process over
`--rss_counts` tiny images (32 px PNGs, LenetModel at 224 px) and its peak RSS is read from
`wait4`: memory must stay flat in the number of files.

    .venv/bin/python bench/predict_bench.py --num_images 2000 --rounds 1
    .venv/bin/python bench/predict_bench.py --models LenetModel --num_images 200 --rss_counts 100 500

On a GPU machine, the same command measures there (the report names the device):

    CUDA_VISIBLE_DEVICES=0 .venv/bin/python bench/predict_bench.py --num_images 20000 --batch_size 256

Prints a markdown section (the command, the machine, a table and the verdicts against the
issue's goals) to paste at the end of bench/RESULTS.md.
"""

import argparse
import concurrent.futures
import datetime
import io
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))
sys.path.insert(0, str(REPO_DIR / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGETS = ("imgclf_predict", "limit", "keras", "grpc_server")
MODEL_NAME = "bench"


def main(argv=None):
    args = _parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="imgclf-predict-bench-"))
    images = work / "images" / "all"
    if not images.is_dir() or len(list(images.iterdir())) != args.num_images:
        _write_jpegs(images, args.num_images, seed=0)
    results = {}
    for model_type in args.models:
        base = work / "models" / model_type
        model = _build_and_save(model_type, base, args.image_size)
        rows = {target: [] for target in args.targets}
        for _ in range(args.rounds):
            for target in args.targets:
                seconds, cpu = MEASURE[target](model, base, images, args, work)
                rows[target].append((seconds, cpu))
                print(f"{model_type} {target}: {args.num_images / seconds:.1f} images/s, "
                      f"{args.num_images / cpu:.1f} images per CPU second", file=sys.stderr,
                      flush=True)
        results[model_type] = {
            t: (statistics.median(w for w, _ in m), statistics.median(c for _, c in m))
            for t, m in rows.items()
        }
    rss = _rss_runs(args, work) if args.rss_counts else {}
    print(_report(argv, args, results, rss))


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=["MobileNetV3SmallModel", "LenetModel"])
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--client_threads", type=int, default=4)
    parser.add_argument("--client_batch", type=int, default=16)
    parser.add_argument("--rss_counts", type=int, nargs="*", default=[1000, 20000])
    parser.add_argument("--work_dir", default=None, help="reuse generated images (default: a new temporary folder)")
    return parser.parse_args(argv)


def _write_jpegs(folder, count, seed):
    """`count` JPEGs of 224-500 px a side: gradients and blobs with noise, as photos compress."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        height, width = (int(d) for d in rng.integers(224, 501, size=2))
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        base = rng.uniform(0, 255, size=3) + rng.uniform(-0.3, 0.3, size=3) * (x + y)[..., None]
        blob = 80 * np.exp(-((x - rng.uniform(0, width)) ** 2 + (y - rng.uniform(0, height)) ** 2)
                           / (2 * (width / 5) ** 2))
        pixels = base + blob[..., None] + rng.normal(0, 12, size=(height, width, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        image.save(folder / f"image{i:06d}.jpg", format="JPEG", quality=90)


def _build_and_save(model_type, base, image_size):
    from imgclf.models.registry import create_model

    kwargs = {} if model_type == "LenetModel" else {"weights": None}
    model = create_model(model_type, input_shape=(image_size, image_size, 3), num_classes=10,
                         **kwargs)
    if not (base / "1").exists():  # a reused --work_dir keeps its models
        model.save(str(base / "1"))
    return model


class _Clock:
    """Wall seconds and CPU seconds (this process, plus the process tree of `pid` if given)
    from now to `stop()`: on cores other programs share, CPU seconds are the steadier measure."""

    def __init__(self, pid=None):
        self.pid = pid
        self.wall, self.cpu = time.perf_counter(), self._cpu()

    def _cpu(self):
        cpu = time.process_time()
        if self.pid is not None:
            from serving_bench import _tree_cpu_seconds

            cpu += sum(_tree_cpu_seconds(self.pid))
        return cpu

    def stop(self):
        return time.perf_counter() - self.wall, self._cpu() - self.cpu


def _files(images):
    return sorted(str(p) for p in images.iterdir())


def measure_imgclf_predict(model, base, images, args, work):
    from imgclf.prediction import predict_files

    predictor = _predictor(base)
    output = work / "predictions.parquet"
    clock = _Clock()
    summary = predict_files(predictor, [str(images)], output=str(output),
                            batch_size=args.batch_size, progress=False)
    assert summary.files == args.num_images and summary.errors == 0, summary
    return clock.stop()


_predictors = {}


def _predictor(base):
    from imgclf.prediction import Predictor

    if str(base) not in _predictors:
        _predictors[str(base)] = Predictor.load(str(base))
    return _predictors[str(base)]


def measure_limit(model, base, images, args, work):
    """t_decode (the files decoded alone, as imgclf's pipeline decodes them) + t_forward (the
    same batches, preloaded, through the model's compiled function alone)."""
    import tensorflow as tf

    from imgclf.data.pipeline import image_decoder

    predictor = _predictor(base)
    decode = image_decoder(predictor.image_size, read_file=True)
    dataset = (tf.data.Dataset.from_tensor_slices(_files(images))
               .map(decode, num_parallel_calls=tf.data.AUTOTUNE)
               .batch(args.batch_size).prefetch(tf.data.AUTOTUNE))
    clock = _Clock()
    batches = [batch for batch in dataset]
    t_decode, cpu_decode = clock.stop()
    predictor._predict_logits(batches[0])  # traced already; one warm call
    clock = _Clock()
    for batch in batches:
        predictor._predict_logits(batch).numpy()
    t_forward, cpu_forward = clock.stop()
    del batches
    print(f"  t_decode {t_decode:.2f} s ({cpu_decode:.2f} CPU s), t_forward {t_forward:.2f} s "
          f"({cpu_forward:.2f} CPU s)", file=sys.stderr)
    _limit_parts[str(base)] = (t_decode, t_forward)
    return t_decode + t_forward, cpu_decode + cpu_forward


_limit_parts = {}


def measure_keras(model, base, images, args, work):
    import keras

    clock = _Clock()
    dataset = keras.utils.image_dataset_from_directory(
        str(images), labels=None, image_size=(args.image_size, args.image_size),
        batch_size=args.batch_size, shuffle=False, verbose=False)
    logits = model.predict(dataset, verbose=0)
    assert len(logits) == args.num_images
    return clock.stop()


def measure_grpc_server(model, base, images, args, work):
    from imgclf.serving.client import GrpcClient
    from imgclf.serving.process import ServerProcess

    files = _files(images)
    flags = ["--model_name", MODEL_NAME, "--model_base_path", str(base), "--enable_batching"]
    with ServerProcess(flags, timeout=300) as server:
        host, port = server.grpc_target.rsplit(":", 1)
        client = GrpcClient(host, int(port), MODEL_NAME, timeout=300)
        client.predict("serving_bytes", {"image_bytes_string": [Path(files[0]).read_bytes()]})

        def send(start):
            chunk = [Path(f).read_bytes() for f in files[start:start + args.client_batch]]
            return len(client.predict("serving_bytes", {"image_bytes_string": chunk})["output_0"])

        clock = _Clock(server.pid)
        with concurrent.futures.ThreadPoolExecutor(args.client_threads) as pool:
            answered = sum(pool.map(send, range(0, len(files), args.client_batch)))
        measured = clock.stop()
        client.close()
    assert answered == len(files)
    return measured


MEASURE = {
    "imgclf_predict": measure_imgclf_predict,
    "limit": measure_limit,
    "keras": measure_keras,
    "grpc_server": measure_grpc_server,
}


def _rss_runs(args, work):
    """Peak RSS (MB) of `predict_model.py` over each of `args.rss_counts` tiny PNGs."""
    from PIL import Image

    base = work / "models" / "LenetModel"
    if not (base / "1").exists():
        _build_and_save("LenetModel", base, args.image_size)
    rng = np.random.default_rng(1)
    tiny = []
    for i in range(16):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, size=(32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
        tiny.append(buffer.getvalue())
    peaks = {}
    for count in args.rss_counts:
        folder = work / f"tiny{count}"
        if not folder.is_dir() or sum(1 for _ in folder.rglob("*.png")) != count:
            for i in range(count):
                sub = folder / f"{i // 1000:03d}"
                sub.mkdir(parents=True, exist_ok=True)
                (sub / f"{i:06d}.png").write_bytes(tiny[i % len(tiny)])
        output = work / f"tiny{count}.parquet"
        command = [sys.executable, str(REPO_DIR / "predict_model.py"), "--model_path", str(base),
                   "--output", str(output), "--batch_size", str(args.batch_size), str(folder)]
        started = time.perf_counter()
        process = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(REPO_DIR)},
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        summary = process.stdout.read().strip()
        process.returncode = os.waitstatus_to_exitcode(status)
        assert process.returncode == 0, (command, summary)
        peaks[count] = (usage.ru_maxrss / 1024, time.perf_counter() - started, summary)
        print(f"RSS over {count} files: {peaks[count][0]:.0f} MB ({summary})", file=sys.stderr)
    peaks["command"] = shlex.join(["predict_model.py", *command[2:-1], "<folder>"])
    return peaks


def _report(argv, args, results, rss):
    import tensorflow as tf

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    git = subprocess.run(["git", "-C", str(REPO_DIR), "log", "-1", "--format=%h %s"],
                         capture_output=True, text=True).stdout.strip()
    devices = [d.device_type for d in tf.config.list_physical_devices()]
    command = shlex.join(["bench/predict_bench.py", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        f"### Run of {now}",
        "",
        "```",
        f"TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python {command}",
        "```",
        "",
        f"- machine: {os.cpu_count()} CPUs, devices {devices}, load average at the end "
        f"{'%.2f %.2f %.2f' % os.getloadavg()} (other programs share the cores: compare rows of "
        "one run); Python " + platform.python_version() + f", TensorFlow {tf.__version__}",
        f"- code: `{git}`",
        f"- data: {args.num_images} JPEGs of 224-500 px (quality 90), models at "
        f"{args.image_size} px with 10 classes and random weights; batch size {args.batch_size}; "
        f"median of {args.rounds} round(s); gRPC client: {args.client_threads} threads, "
        f"{args.client_batch} images a request, server with `--enable_batching`",
        "",
        "| model | target | seconds | images/s | CPU seconds | images per CPU s | "
        "imgclf-predict speed-up (wall) | (CPU) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    goals = {"limit": 0.9, "keras": 1.2, "grpc_server": 2.0}
    for model_type, measured in results.items():
        ours = measured.get("imgclf_predict")
        for target, (wall, cpu) in measured.items():
            ratios = (f"{wall / ours[0]:.2f} | {cpu / ours[1]:.2f}"
                      if ours and target != "imgclf_predict" else " | ")
            lines.append(f"| {model_type} | {target} | {wall:.2f} | {args.num_images / wall:.1f} | "
                         f"{cpu:.2f} | {args.num_images / cpu:.1f} | {ratios} |")
        for target, goal in goals.items():
            if ours and target in measured:
                wall, cpu = measured[target][0] / ours[0], measured[target][1] / ours[1]
                verdicts.append(
                    f"- {model_type}: imgclf-predict against {target}: {wall:.2f}x by wall time "
                    f"({'met' if wall >= goal else 'NOT met'}), {cpu:.2f}x by CPU time "
                    f"({'met' if cpu >= goal else 'NOT met'}); goal >= {goal}")
    for base, (t_decode, t_forward) in _limit_parts.items():
        verdicts.append(f"- {Path(base).name}: t_decode {t_decode:.2f} s + t_forward "
                        f"{t_forward:.2f} s for {args.num_images} images")
    lines += ["", *verdicts]
    counts = [c for c in rss if c != "command"]
    if counts:
        lines += ["", f"Peak RSS of `{rss['command']}` (LenetModel at {args.image_size} px, "
                  "32 px PNGs):", "", "| files | peak RSS MB | seconds | summary |",
                  "|---:|---:|---:|---|"]
        for count in counts:
            peak, seconds, summary = rss[count]
            lines.append(f"| {count} | {peak:.0f} | {seconds:.1f} | {summary} |")
        growth = rss[max(counts)][0] - rss[min(counts)][0]
        lines += ["", f"- RSS growth from {min(counts)} to {max(counts)} files: {growth:+.0f} MB "
                  f"(goal <= +100 MB: {'met' if growth <= 100 else 'NOT met'})"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
