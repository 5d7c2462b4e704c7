"""Serving benchmark: imgclf.serving against BentoML, against itself without batching, and against
calling the SavedModel's signature in process.

Every server serves the same LeNet SavedModel (28x28x3 in, 10 logits out) on 127.0.0.1 and is
loaded by the same generator, `wrk` with `post_json.lua`, which POSTs the same JSON body (TF
Serving's row format with one 28x28x3 image, `{"instances": [...]}`) over keep-alive connections
in a closed loop. Each target is started, warmed up, measured at each concurrency, and stopped
before the next one starts, so only one server is running at a time. `--rounds N` repeats the
round robin and reports the median, which keeps the comparison side by side on a busy machine.

Targets:
    inprocess        `tf.saved_model.load(...).signatures["serving_default"]` called in a loop in
                     this process (concurrency 1 only): the floor for our server's latency
    ours_batching    `python -m imgclf.serving --enable_batching ...` (REST)
    ours_nobatching  the same server without `--enable_batching`
    bentoml          bentoml_service.py under BentoML 1.4 with adaptive batching, in its own venv
                     (bench/.venv-bentoml, created on first use)

    .venv/bin/python bench/serving_bench.py --duration 15 --warmup 5 --connections 32 --rounds 3

prints a table and appends a section to bench/RESULTS.md with the command, the machine and the
numbers. Needs `wrk` (Debian: `apt-get install -y wrk`).
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
BENTOML_VENV = BENCH_DIR / ".venv-bentoml"
BENTOML_REQUIREMENTS = ["bentoml==1.4.*", "tensorflow==2.21.0"]
LUA_SCRIPT = BENCH_DIR / "post_json.lua"
MODEL_NAME = "lenet"
IMAGE_SHAPE = (28, 28, 3)
NUM_CLASSES = 10
TARGETS = ("inprocess", "ours_batching", "ours_nobatching", "bentoml")
SERVER_START_TIMEOUT_S = 120


def main(argv=None):
    args = _parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if shutil.which("wrk") is None:
        print("serving_bench.py: wrk not found; install it with `apt-get install -y wrk`", file=sys.stderr)
        return 2
    if "bentoml" in args.targets:
        _ensure_bentoml_venv()

    work_dir = Path(tempfile.mkdtemp(prefix="imgclf-bench-"))
    try:
        model_base_path = work_dir / MODEL_NAME
        image = _make_model_and_image(model_base_path, seed=args.seed)
        body_path = work_dir / "body.json"
        body_path.write_text(json.dumps({"instances": [image.tolist()]}))
        expected_logits = _inprocess_logits(model_base_path / "1", image)
        batching_file = work_dir / "batching_parameters.txt"
        batching_file.write_text(
            f"max_batch_size {{ value: {args.max_batch_size} }}\n"
            f"batch_timeout_micros {{ value: {args.batch_timeout_micros} }}\n"
            f"num_batch_threads {{ value: {args.num_batch_threads} }}\n"
            f"max_enqueued_batches {{ value: {args.max_enqueued_batches} }}\n"
        )

        concurrencies = sorted({args.connections, 1}, reverse=True)
        measurements = []  # dicts: round, target, connections, requests_per_s, p50_us, ...
        for round_index in range(args.rounds):
            for target in args.targets:
                print(f"[round {round_index + 1}/{args.rounds}] {target}", flush=True)
                if target == "inprocess":
                    result = _measure_inprocess(model_base_path / "1", image, args)
                    measurements.append({"round": round_index, "target": target, **result})
                    continue
                with _start_target(target, model_base_path, batching_file, work_dir, args) as url:
                    _check_answer(target, url, body_path, expected_logits)
                    for connections in concurrencies:
                        result = _run_wrk(url, body_path, connections, args)
                        measurements.append({"round": round_index, "target": target, **result})
                        _print_row(measurements[-1])

        summary = _summarise(measurements)
        facts = _machine_facts()
        report = _format_report(argv, args, facts, summary, measurements, batching_file)
        print()
        print(report)
        if args.results:
            with open(args.results, "a") as results:
                results.write("\n" + report)
            print(f"appended to {args.results}")
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=5, help="unmeasured seconds before each run")
    parser.add_argument("--connections", type=int, default=32, help="concurrent clients (besides 1)")
    parser.add_argument("--wrk_threads", type=int, default=1, help="wrk threads (one keeps wrk's CPU small)")
    parser.add_argument("--rounds", type=int, default=1, help="round robins over the targets; medians are reported")
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--seed", type=int, default=0, help="seed of the model weights and the image")
    group = parser.add_argument_group("our server's batching (--batching_parameters_file)")
    group.add_argument("--max_batch_size", type=int, default=32)
    # 0, the server's and TF Serving's default: batches still grow while the batch thread is busy;
    # 2000 served no more requests/s at 32 clients and doubled the latency at 1 (RESULTS.md).
    group.add_argument("--batch_timeout_micros", type=int, default=0)
    group.add_argument("--num_batch_threads", type=int, default=1)
    group.add_argument("--max_enqueued_batches", type=int, default=100)
    group = parser.add_argument_group("BentoML's adaptive batching (see bentoml_service.py)")
    group.add_argument("--bentoml_workers", type=int, default=1)
    group.add_argument("--bentoml_max_batch_size", type=int, default=32)
    group.add_argument("--bentoml_max_latency_ms", type=int, default=1000)
    parser.add_argument("--results", default=str(BENCH_DIR / "RESULTS.md"),
                        help="Markdown file the report is appended to ('' to skip)")
    args = parser.parse_args(argv)
    for name in ("duration", "connections", "rounds", "wrk_threads"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive; received {getattr(args, name)}")
    if args.wrk_threads > args.connections:
        parser.error(f"--wrk_threads ({args.wrk_threads}) must not exceed --connections ({args.connections})")
    return args


# ---------------------------------------------------------------------------------------------
# The model, the request, the in-process baseline


def _make_model_and_image(model_base_path, seed):
    import keras

    from imgclf import LenetModel

    keras.utils.set_random_seed(seed)
    LenetModel(input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES).save(model_base_path / "1")
    # Whole-number pixels: the JSON body is short and every server parses the same numbers.
    return np.random.default_rng(seed).integers(0, 256, size=IMAGE_SHAPE).astype(np.float32)


def _load_signature(model_dir):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(model_dir))
    return loaded, loaded.signatures["serving_default"]


def _inprocess_logits(model_dir, image):
    _, serving_default = _load_signature(model_dir)
    return serving_default(input_tensor=image[None])["output_0"].numpy()[0]


def _measure_inprocess(model_dir, image, args):
    """Latency of the bare signature call at concurrency 1, numpy image in, numpy logits out."""
    _loaded, serving_default = _load_signature(model_dir)
    batch = image[None]

    def call_for(seconds):
        latencies = []
        end = time.perf_counter() + seconds
        while True:
            start = time.perf_counter()
            if start >= end:
                return latencies
            serving_default(input_tensor=batch)["output_0"].numpy()
            latencies.append(time.perf_counter() - start)

    call_for(args.warmup)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    latencies_us = np.array(call_for(args.duration)) * 1e6
    elapsed = time.perf_counter() - started
    return {
        "connections": 1,
        "requests": len(latencies_us),
        "requests_per_s": len(latencies_us) / elapsed,
        "p50_us": float(np.percentile(latencies_us, 50)),
        "p90_us": float(np.percentile(latencies_us, 90)),
        "p99_us": float(np.percentile(latencies_us, 99)),
        "max_us": float(latencies_us.max()),
        "errors": 0,
        "load_before": load_before,
    }


# ---------------------------------------------------------------------------------------------
# Servers


@contextlib.contextmanager
def _start_target(target, model_base_path, batching_file, work_dir, args):
    """Start `target`, wait until it answers, yield its predict URL, stop it."""
    if target == "bentoml":
        with _bentoml_server(model_base_path / "1", work_dir, args) as url:
            yield url
        return
    from imgclf.serving.process import ServerProcess

    flags = ["--model_name", MODEL_NAME, "--model_base_path", str(model_base_path)]
    if target == "ours_batching":
        flags += ["--enable_batching", "--batching_parameters_file", str(batching_file)]
    with ServerProcess(flags, timeout=SERVER_START_TIMEOUT_S) as server:
        yield f"{server.rest_url}/v1/models/{MODEL_NAME}:predict"


def _ensure_bentoml_venv():
    bentoml = BENTOML_VENV / "bin" / "bentoml"
    if bentoml.exists():
        return
    print(f"creating {BENTOML_VENV} with {' '.join(BENTOML_REQUIREMENTS)}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(BENTOML_VENV)], check=True)
    subprocess.run(
        [str(BENTOML_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
         *BENTOML_REQUIREMENTS],
        check=True,
    )


@contextlib.contextmanager
def _bentoml_server(model_dir, work_dir, args):
    port = _free_port()
    env = dict(
        os.environ,
        IMGCLF_BENCH_MODEL_DIR=str(model_dir),
        IMGCLF_BENCH_WORKERS=str(args.bentoml_workers),
        IMGCLF_BENCH_MAX_BATCH_SIZE=str(args.bentoml_max_batch_size),
        IMGCLF_BENCH_MAX_LATENCY_MS=str(args.bentoml_max_latency_ms),
        BENTOML_HOME=str(work_dir / "bentoml_home"),
        BENTOML_DO_NOT_TRACK="True",
    )
    log_path = work_dir / "bentoml.log"
    with open(log_path, "wb") as log:
        # A session of its own: `bentoml serve` forks workers, and the whole group is stopped.
        process = subprocess.Popen(
            [str(BENTOML_VENV / "bin" / "bentoml"), "serve", "bentoml_service:LenetService",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=BENCH_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_ready(f"http://127.0.0.1:{port}/readyz", process, log_path)
        yield f"http://127.0.0.1:{port}/predict"
    finally:
        _stop_group(process)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url, process, log_path):
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}; see {log_path}:\n"
                               + Path(log_path).read_text()[-3000:])
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {SERVER_START_TIMEOUT_S} s; see {log_path}")


def _stop_group(process):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _check_answer(target, url, body_path, expected_logits):
    """One request before measuring: the server must answer the body with the in-process logits."""
    request = urllib.request.Request(url, data=body_path.read_bytes(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    logits = np.asarray(answer["predictions"] if isinstance(answer, dict) else answer)[0]
    if not np.allclose(logits, expected_logits, atol=1e-4):
        raise RuntimeError(f"{target} answered {logits.tolist()}; expected {expected_logits.tolist()}")


# ---------------------------------------------------------------------------------------------
# Load generation


def _run_wrk(url, body_path, connections, args):
    threads = min(args.wrk_threads, connections)

    def wrk(seconds):
        command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
                   "-s", str(LUA_SCRIPT), url, "--", str(body_path)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        lines = [line for line in output.splitlines() if line.startswith("BENCH_JSON ")]
        if not lines:
            raise RuntimeError(f"no BENCH_JSON line in wrk's output:\n{output}")
        return json.loads(lines[-1].removeprefix("BENCH_JSON "))

    if args.warmup > 0:
        wrk(_wrk_seconds(args.warmup))
    load_before = os.getloadavg()[0]
    stats = wrk(_wrk_seconds(args.duration))
    errors = sum(stats[k] for k in ("connect_errors", "read_errors", "write_errors",
                                    "timeout_errors", "status_errors"))
    return {
        "connections": connections,
        "requests": stats["requests"],
        # Only answered requests count: a server that fails fast must not look fast.
        "requests_per_s": (stats["requests"] - stats["status_errors"]) / (stats["duration_us"] / 1e6),
        "p50_us": stats["p50_us"],
        "p90_us": stats["p90_us"],
        "p99_us": stats["p99_us"],
        "max_us": stats["max_us"],
        "errors": errors,
        "load_before": load_before,
    }


def _wrk_seconds(seconds):
    return max(1, round(seconds))  # wrk takes whole seconds


# ---------------------------------------------------------------------------------------------
# Reporting


def _print_row(m):
    print(f"  c={m['connections']:<3} {m['requests_per_s']:8.1f} req/s  p50 {m['p50_us'] / 1e3:7.2f} ms  "
          f"p99 {m['p99_us'] / 1e3:7.2f} ms  errors {m['errors']}  (load {m['load_before']:.2f})",
          flush=True)


def _summarise(measurements):
    """Median over rounds of each (target, connections)."""
    groups = {}
    for m in measurements:
        groups.setdefault((m["target"], m["connections"]), []).append(m)
    summary = {}
    for key, runs in groups.items():
        summary[key] = {
            field: statistics.median(r[field] for r in runs)
            for field in ("requests_per_s", "p50_us", "p90_us", "p99_us", "max_us")
        }
        summary[key]["errors"] = sum(r["errors"] for r in runs)
        summary[key]["rounds"] = len(runs)
    return summary


def _machine_facts():
    def run(*command):
        # No check: `wrk --version` prints its version and exits 1.
        with contextlib.suppress(OSError):
            return subprocess.run(command, capture_output=True, text=True).stdout.strip() or "?"
        return "?"

    cpu_model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": run("nproc"),
        "cpu": cpu_model,
        "load_average": "%.2f %.2f %.2f" % os.getloadavg(),
        "python": platform.python_version(),
        "wrk": run("wrk", "--version").splitlines()[0],
        "git": run("git", "-C", str(REPO_DIR), "log", "-1", "--format=%h %s"),
        # The servers run the working tree, which others may be editing.
        "dirty": run("git", "-C", str(REPO_DIR), "status", "--porcelain", "--", "imgclf").replace("\n", ", "),
        "bentoml": run(str(BENTOML_VENV / "bin" / "python"), "-c",
                       "import bentoml; print(bentoml.__version__)"),
    }


def _format_report(argv, args, facts, summary, measurements, batching_file):
    command_args = sys.argv[1:] if argv is None else list(argv)
    lines = [
        f"## Run of {facts['date']}",
        "",
        "```",
        "TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/serving_bench.py " + shlex.join(command_args),
        "```",
        "",
        f"- machine: {facts['nproc']} CPUs ({facts['cpu']}), load average at the end "
        f"{facts['load_average']} (other users share the machine: compare rows, not runs)",
        f"- code: `{facts['git']}`"
        + (f" plus uncommitted changes ({facts['dirty']})" if facts["dirty"] != "?" else "")
        + f"; Python {facts['python']}; {facts['wrk']}; BentoML {facts['bentoml']}",
        f"- load: wrk -t{args.wrk_threads}, keep-alive, one 28x28x3 image per request "
        f"(`{{\"instances\": [...]}}`), {args.warmup:g} s warm-up then {args.duration:g} s measured, "
        f"median of {args.rounds} round(s)",
        f"- ours_batching: `--enable_batching` with "
        f"`{' '.join(batching_file.read_text().split())}`",
        f"- bentoml: workers={args.bentoml_workers}, max_batch_size={args.bentoml_max_batch_size}, "
        f"max_latency_ms={args.bentoml_max_latency_ms}, access log off",
        "",
        "| target | clients | requests/s | p50 ms | p90 ms | p99 ms | errors | rounds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (target, connections), s in sorted(summary.items(), key=lambda kv: (-kv[0][1], TARGETS.index(kv[0][0]))):
        lines.append(
            f"| {target} | {connections} | {s['requests_per_s']:.1f} | {s['p50_us'] / 1e3:.2f} | "
            f"{s['p90_us'] / 1e3:.2f} | {s['p99_us'] / 1e3:.2f} | {s['errors']} | {s['rounds']} |"
        )
    lines += ["", *_verdicts(summary, args.connections), ""]
    if args.rounds > 1:
        lines += ["Every round:", "", "| round | target | clients | requests/s | p50 ms | p99 ms | load before |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for m in measurements:
            lines.append(f"| {m['round'] + 1} | {m['target']} | {m['connections']} | "
                         f"{m['requests_per_s']:.1f} | {m['p50_us'] / 1e3:.2f} | {m['p99_us'] / 1e3:.2f} | "
                         f"{m['load_before']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def _verdicts(summary, connections):
    """The issue's three questions, answered from the medians."""
    verdicts = []
    ours = summary.get(("ours_batching", connections))
    bento = summary.get(("bentoml", connections))
    plain = summary.get(("ours_nobatching", connections))
    if ours and bento:
        ratio = ours["requests_per_s"] / bento["requests_per_s"]
        verdicts.append(
            f"- (a) at {connections} clients ours_batching / bentoml: {ratio:.2f}x requests/s "
            f"(target >= 2x: {'met' if ratio >= 2 else 'NOT met'}); p99 {ours['p99_us'] / 1e3:.2f} ms vs "
            f"{bento['p99_us'] / 1e3:.2f} ms (target no worse: "
            f"{'met' if ours['p99_us'] <= bento['p99_us'] else 'NOT met'})"
        )
    if ours and plain:
        verdicts.append(
            f"- (b) at {connections} clients batching on / off: "
            f"{ours['requests_per_s'] / plain['requests_per_s']:.2f}x requests/s, p99 "
            f"{ours['p99_us'] / 1e3:.2f} ms vs {plain['p99_us'] / 1e3:.2f} ms"
        )
    floor = summary.get(("inprocess", 1))
    for target in ("ours_nobatching", "ours_batching", "bentoml"):
        served = summary.get((target, 1))
        if floor and served:
            verdicts.append(
                f"- (c) at 1 client {target} adds p50 {(served['p50_us'] - floor['p50_us']) / 1e3:.2f} ms, "
                f"p99 {(served['p99_us'] - floor['p99_us']) / 1e3:.2f} ms over the in-process signature call "
                f"({floor['p50_us'] / 1e3:.2f} / {floor['p99_us'] / 1e3:.2f} ms)"
            )
    return verdicts


if __name__ == "__main__":
    sys.exit(main())
