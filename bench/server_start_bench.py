"""How much CPU and memory an imgclf server takes to become ready, with and without the pandas and
pyplot Keras imports whenever they are installed (`imgclf.tensorflow_import`), in one run.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/server_start_bench.py [--model EfficientNetV2B0Model]

A SavedModel of the model at 224 px (random weights) is saved once; then `--rounds` servers of
each kind start on it, alternating, each a fresh `python -m imgclf.serving` on loopback ports:
- imgclf: as `imgclf-serve` starts, TensorFlow imported through `import_tensorflow`;
- with Keras' extras: the same server in a process that imported pandas and matplotlib's pyplot
  first, so that Keras imports them as it did before (what every server paid until then).
A server is ready when it writes its `--ready_file` (model loaded, warmed up, ports bound). Each
row gives the medians of the CPU seconds it had used by then and of its resident memory. Prints a
Markdown table.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

_WITH_EXTRAS = ("import runpy, sys, pandas, matplotlib.pyplot; sys.argv[0] = 'imgclf-serve'; "
                "runpy.run_module('imgclf.serving', run_name='__main__')")


def save_model(name, folder):
    code = ("import sys; from imgclf.models.registry import create_model; "
            "kwargs = {} if sys.argv[1] == 'LenetModel' else {'weights': None}; "
            "create_model(sys.argv[1], input_shape=(224, 224, 3), num_classes=5, "
            "class_names=list('abcde'), **kwargs).save(sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, name, os.path.join(folder, "1")], check=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def start_once(kind, base, workdir):
    """`(CPU seconds, resident MB)` of a server of `kind` when it is ready."""
    ready = os.path.join(workdir, f"ready-{kind}-{time.monotonic_ns()}.json")
    flags = ["--model_name", "bench", "--model_base_path", base, "--host", "127.0.0.1",
             "--port", "0", "--rest_api_port", "0", "--ready_file", ready]
    program = ["-m", "imgclf.serving"] if kind == "imgclf" else ["-c", _WITH_EXTRAS]
    with open(os.path.join(workdir, "server.log"), "ab") as log:
        process = subprocess.Popen([sys.executable, *program, *flags], stdout=log, stderr=log,
                                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    try:
        deadline = time.monotonic() + 300
        while not os.path.exists(ready):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} server did not start; see {workdir}/server.log")
            time.sleep(0.02)
        with open(f"/proc/{process.pid}/stat", encoding="ascii") as file:
            fields = file.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{process.pid}/statm", encoding="ascii") as file:
            resident = int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), resident / 2**20
    finally:
        process.terminate()
        process.wait(60)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="EfficientNetV2B0Model")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        base = os.path.join(workdir, "bench")
        save_model(args.model, base)
        runs = {"imgclf": [], "with Keras' extras": []}
        for index in range(args.rounds):
            for kind in (list(runs) if index % 2 == 0 else list(runs)[::-1]):
                runs[kind].append(start_once(kind, base, workdir))
    print(f"| server of {args.model} (224 px) | CPU s until ready | resident MB |")
    print("|---|---:|---:|")
    for kind, results in runs.items():
        print(f"| {kind} | {statistics.median(c for c, _ in results):.2f} "
              f"| {statistics.median(m for _, m in results):.0f} |")


if __name__ == "__main__":
    main()
