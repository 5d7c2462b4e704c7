"""Serving benchmark: imgclf.serving against BentoML, against itself without batching and on
encoded images, and against calling the SavedModel's signature in process.

Every server serves the same SavedModel (`--model_type`, LeNet by default; `--image_size` px square
RGB in, 10 logits out) on 127.0.0.1 and is loaded by the same generator, `wrk` with `post_json.lua`, which POSTs the same
JSON body (TF Serving's row format with one image of whole-number pixels, `{"instances": [...]}`;
1 MB at 224 px) over keep-alive connections in a closed loop. Each target is started, warmed up, measured at each concurrency, and stopped
before the next one starts, so only one server is running at a time. `--rounds N` repeats the
round robin and reports the median, which keeps the comparison side by side on a busy machine.

Targets:
    inprocess        `tf.saved_model.load(...).signatures["serving_default"]` called in a loop in
                     this process (concurrency 1 only): the floor for our server's latency
    ours_batching    `python -m imgclf.serving --enable_batching ...` (REST)
    ours_nobatching  the same server without `--enable_batching`
    ours_json_threads  ours_batching with `--json_parse_processes 0`: large JSON bodies parsed
                     in the server's threads instead of its worker processes (the default)
    ours_bytes       ours_batching on the same image as a base64 JPEG through `serving_bytes`
                     (`{"signature_name": "serving_bytes", "instances": [{"b64": ...}]}`)
    bentoml          bentoml_service.py under BentoML 1.4 with adaptive batching, in its own venv
                     (bench/.venv-bentoml, created on first use)

`--status_probe` also asks our server for the model's status (`GET /v1/models/lenet`, one
keep-alive connection, every 20 ms) during each measured run at `--connections` clients, and
reports that latency: a JSON load must not stall the rest of the server.

Every measured run also reports the CPU time its server's process tree spent per answered
request: the server process itself, plus its child processes (our JSON parsing workers,
BentoML's workers). On a machine whose cores are all busy, requests/s follow from it.

    .venv/bin/python bench/serving_bench.py --duration 15 --warmup 5 --connections 32 --rounds 3
    .venv/bin/python bench/serving_bench.py --image_size 224 --targets ours_batching ours_bytes \
        bentoml --status_probe --connections 32 --duration 15 --warmup 5
    .venv/bin/python bench/serving_bench.py --image_size 224 --model_type MobileNetV3SmallModel ...

A LeNet at 224 px computes next to nothing, so it measures the server's own costs; a backbone
(random weights: nothing is downloaded) is what a 224 px model costs in use.

prints a table and appends a section to bench/RESULTS.md with the command, the machine and the
numbers. Needs `wrk` (Debian: `apt-get install -y wrk`).
"""

import argparse
import base64
import contextlib
import http.client
import io
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
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
BENTOML_VENV = BENCH_DIR / ".venv-bentoml"
BENTOML_REQUIREMENTS = ["bentoml==1.4.*", "tensorflow==2.21.0"]
LUA_SCRIPT = BENCH_DIR / "post_json.lua"
MODEL_NAME = "lenet"
NUM_CLASSES = 10
TARGETS = ("inprocess", "ours_batching", "ours_json_threads", "ours_nobatching", "ours_bytes", "bentoml")
STATUS_PROBE_INTERVAL_S = 0.02
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
        image = _make_model_and_image(model_base_path, args.image_size, seed=args.seed,
                                      model_type=args.model_type)
        json_body = work_dir / "body.json"
        json_body.write_text(json.dumps({"instances": [image.tolist()]}))
        jpeg = _jpeg(image)
        bytes_body = work_dir / "bytes_body.json"
        bytes_body.write_text(json.dumps({"signature_name": "serving_bytes", "instances": [
            {"b64": base64.b64encode(jpeg).decode("ascii")}]}))
        expected_logits = _inprocess_logits(model_base_path / "1", image)
        expected_bytes_logits = _inprocess_logits(model_base_path / "1", jpeg)
        body_sizes = {"json": json_body.stat().st_size, "bytes": bytes_body.stat().st_size}
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
                body_path, expected = ((bytes_body, expected_bytes_logits) if target == "ours_bytes"
                                       else (json_body, expected_logits))
                with _start_target(target, model_base_path, batching_file, work_dir, args) as (url, pid):
                    _check_answer(target, url, body_path, expected)
                    probe_url = None
                    if args.status_probe and target.startswith("ours"):
                        probe_url = url.removesuffix(":predict")
                    for connections in concurrencies:
                        result = _run_wrk(url, body_path, connections, args,
                                          probe_url if connections == args.connections else None, pid)
                        measurements.append({"round": round_index, "target": target, **result})
                        _print_row(measurements[-1])

        summary = _summarise(measurements)
        facts = _machine_facts()
        report = _format_report(argv, args, facts, summary, measurements, batching_file, body_sizes)
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
    parser.add_argument("--image_size", type=int, default=28,
                        help="height and width of the model's input and of the image sent (224: a 1 MB JSON body)")
    parser.add_argument("--model_type", default="LenetModel",
                        help="imgclf model class served (a backbone gets random weights)")
    parser.add_argument("--server_flags", default="",
                        help="more flags for every one of our servers, e.g. '--json_parse_processes 1'")
    parser.add_argument("--status_probe", action="store_true",
                        help="measure our server's status latency during each run at --connections")
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
    for name in ("duration", "connections", "rounds", "wrk_threads", "image_size"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive; received {getattr(args, name)}")
    if args.wrk_threads > args.connections:
        parser.error(f"--wrk_threads ({args.wrk_threads}) must not exceed --connections ({args.connections})")
    return args


# ---------------------------------------------------------------------------------------------
# The model, the request, the in-process baseline


def _make_model_and_image(model_base_path, image_size, seed, model_type="LenetModel"):
    import keras

    from imgclf.models import BackboneModel, get_model_class

    shape = (image_size, image_size, 3)
    keras.utils.set_random_seed(seed)
    cls = get_model_class(model_type)
    kwargs = {"weights": None} if issubclass(cls, BackboneModel) else {}
    cls(input_shape=shape, num_classes=NUM_CLASSES, **kwargs).save(model_base_path / "1")
    # Whole-number pixels, as a photo has: every server parses the same numbers, and the JSON body
    # is the size TF Serving's row format gives a real image (1 MB at 224 px). A smooth gradient
    # plus noise, so that the JPEG of it is the size of a photo's rather than of pure noise.
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, image_size)
    base = ramp[:, None, None] * np.array([1.0, 0.6, 0.3]) + ramp[None, :, None] * np.array([0.2, 0.3, 0.2])
    return np.clip(base + rng.integers(0, 40, size=shape), 0, 255).round().astype(np.float32)


def _jpeg(image):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _load_signature(model_dir):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(model_dir))
    return loaded, loaded.signatures["serving_default"]


def _inprocess_logits(model_dir, image):
    """The logits of `image` (float pixels, or encoded bytes through `serving_bytes`)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(model_dir))
    if isinstance(image, bytes):
        return loaded.signatures["serving_bytes"](image_bytes_string=tf.constant([image]))["output_0"].numpy()[0]
    return loaded.signatures["serving_default"](input_tensor=image[None])["output_0"].numpy()[0]


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
    """Start `target`, wait until it answers, yield (its predict URL, its pid), stop it."""
    if target == "bentoml":
        with _bentoml_server(model_base_path / "1", work_dir, args) as served:
            yield served
        return
    from imgclf.serving.process import ServerProcess

    flags = ["--model_name", MODEL_NAME, "--model_base_path", str(model_base_path),
             *shlex.split(args.server_flags)]
    if target == "ours_json_threads":
        flags += ["--json_parse_processes", "0"]
    if target in ("ours_batching", "ours_json_threads", "ours_bytes"):
        flags += ["--enable_batching", "--batching_parameters_file", str(batching_file)]
    with ServerProcess(flags, timeout=SERVER_START_TIMEOUT_S) as server:
        yield f"{server.rest_url}/v1/models/{MODEL_NAME}:predict", server.pid


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
        yield f"http://127.0.0.1:{port}/predict", process.pid
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


def _tree_cpu_seconds(pid):
    """CPU seconds (user + system) used so far by process `pid` and by its descendants alive now:
    (the process's own, its descendants')."""
    parents, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
            cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    descendants, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - descendants
        descendants |= frontier
    return cpu.get(pid, 0.0), sum(cpu.get(child, 0.0) for child in descendants)


def _run_wrk(url, body_path, connections, args, probe_url=None, pid=None):
    threads = min(args.wrk_threads, connections)

    def wrk(seconds):
        command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s",
                   "-s", str(LUA_SCRIPT), url, "--", str(body_path)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        lines = [line for line in output.splitlines() if line.startswith("BENCH_JSON ")]
        if not lines:
            raise RuntimeError(f"no BENCH_JSON line in wrk's output:\n{output}")
        return json.loads(lines[-1].removeprefix("BENCH_JSON "))

    if args.warmup > 0:
        wrk(_wrk_seconds(args.warmup))
    load_before = os.getloadavg()[0]
    probe = _StatusProbe(probe_url) if probe_url else contextlib.nullcontext()
    cpu_before = _tree_cpu_seconds(pid) if pid else None
    with probe:
        stats = wrk(_wrk_seconds(args.duration))
    cpu = {}
    if pid:
        cpu_after = _tree_cpu_seconds(pid)
        answered = max(stats["requests"] - stats["status_errors"], 1)
        # Descendants (parsing processes, BentoML's workers) are counted if alive at both ends.
        cpu = {"cpu_ms_server": (cpu_after[0] - cpu_before[0]) / answered * 1e3,
               "cpu_ms_children": (cpu_after[1] - cpu_before[1]) / answered * 1e3}
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
        **(probe.summary() if probe_url else {}),
        **cpu,
    }


class _StatusProbe:
    """A thread that GETs a status URL every 20 ms over one keep-alive connection, timing each.

    What a health check or a dashboard sees while the load runs; it costs the server ~50 small
    requests a second.
    """

    def __init__(self, url):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port, self.path = parsed.hostname, parsed.port, parsed.path
        self.latencies_us, self.failures = [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()

    def _run(self):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        while not self._stop.wait(STATUS_PROBE_INTERVAL_S):
            start = time.perf_counter()
            try:
                connection.request("GET", self.path)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
                connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
            if ok:
                self.latencies_us.append((time.perf_counter() - start) * 1e6)
            else:
                self.failures += 1
        connection.close()

    def summary(self):
        latencies = np.array(self.latencies_us or [np.nan])
        return {
            "status_requests": len(self.latencies_us),
            "status_failures": self.failures,
            "status_p50_us": float(np.percentile(latencies, 50)),
            "status_p99_us": float(np.percentile(latencies, 99)),
            "status_max_us": float(latencies.max()),
        }


def _wrk_seconds(seconds):
    return max(1, round(seconds))  # wrk takes whole seconds


# ---------------------------------------------------------------------------------------------
# Reporting


def _print_row(m):
    status = ""
    if "status_p99_us" in m:
        status = (f"  status p50 {m['status_p50_us'] / 1e3:.2f} p99 {m['status_p99_us'] / 1e3:.2f} ms "
                  f"({m['status_requests']} asked, {m['status_failures']} failed)")
    cpu = ""
    if "cpu_ms_server" in m:
        cpu = f"  CPU ms/request {m['cpu_ms_server']:.2f} + {m['cpu_ms_children']:.2f} in child processes"
    print(f"  c={m['connections']:<3} {m['requests_per_s']:8.1f} req/s  p50 {m['p50_us'] / 1e3:7.2f} ms  "
          f"p99 {m['p99_us'] / 1e3:7.2f} ms  errors {m['errors']}  (load {m['load_before']:.2f}){status}{cpu}",
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
        if all("cpu_ms_server" in r for r in runs):
            for field in ("cpu_ms_server", "cpu_ms_children"):
                summary[key][field] = statistics.median(r[field] for r in runs)
        summary[key]["errors"] = sum(r["errors"] for r in runs)
        summary[key]["rounds"] = len(runs)
        if all("status_p99_us" in r for r in runs):
            for field in ("status_p50_us", "status_p99_us", "status_max_us"):
                summary[key][field] = statistics.median(r[field] for r in runs)
            summary[key]["status_requests"] = sum(r["status_requests"] for r in runs)
            summary[key]["status_failures"] = sum(r["status_failures"] for r in runs)
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


def _format_report(argv, args, facts, summary, measurements, batching_file, body_sizes):
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
        f"- model: {args.model_type} at {args.image_size} px, 10 classes"
        + ("" if args.model_type == "LenetModel" else " (random weights)"),
        f"- load: wrk -t{args.wrk_threads}, keep-alive, one {args.image_size}x{args.image_size}x3 image "
        f"per request: JSON `{{\"instances\": [...]}}` ({body_sizes['json']:,} bytes); ours_bytes the "
        f"same image as a base64 JPEG through serving_bytes ({body_sizes['bytes']:,} bytes); "
        f"{args.warmup:g} s warm-up then {args.duration:g} s measured, median of {args.rounds} round(s)",
        f"- ours_batching: `--enable_batching` with "
        f"`{' '.join(batching_file.read_text().split())}`",
        *([f"- our servers' extra flags: `{args.server_flags}`"] if args.server_flags else []),
        f"- bentoml: workers={args.bentoml_workers}, max_batch_size={args.bentoml_max_batch_size}, "
        f"max_latency_ms={args.bentoml_max_latency_ms}, access log off",
        "",
        "| target | clients | requests/s | p50 ms | p90 ms | p99 ms | errors | rounds | status p50 / p99 / max ms "
        "| server CPU ms / request (+ child processes) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (target, connections), s in sorted(summary.items(), key=lambda kv: (-kv[0][1], TARGETS.index(kv[0][0]))):
        status = ""
        if "status_p99_us" in s:
            status = (f"{s['status_p50_us'] / 1e3:.2f} / {s['status_p99_us'] / 1e3:.2f} / "
                      f"{s['status_max_us'] / 1e3:.2f} ({s['status_requests']} asked, "
                      f"{s['status_failures']} failed)")
        cpu = ""
        if "cpu_ms_server" in s:
            cpu = f"{s['cpu_ms_server']:.2f} (+ {s['cpu_ms_children']:.2f})"
        lines.append(
            f"| {target} | {connections} | {s['requests_per_s']:.1f} | {s['p50_us'] / 1e3:.2f} | "
            f"{s['p90_us'] / 1e3:.2f} | {s['p99_us'] / 1e3:.2f} | {s['errors']} | {s['rounds']} | {status} | {cpu} |"
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
    if ours and bento and bento["requests_per_s"] > 0:
        ratio = ours["requests_per_s"] / bento["requests_per_s"]
        verdicts.append(
            f"- (a) at {connections} clients ours_batching / bentoml: {ratio:.2f}x requests/s "
            f"(target >= 2x: {'met' if ratio >= 2 else 'NOT met'}); p99 {ours['p99_us'] / 1e3:.2f} ms vs "
            f"{bento['p99_us'] / 1e3:.2f} ms (target no worse: "
            f"{'met' if ours['p99_us'] <= bento['p99_us'] else 'NOT met'})"
        )
    if ours and plain and plain["requests_per_s"] > 0:
        verdicts.append(
            f"- (b) at {connections} clients batching on / off: "
            f"{ours['requests_per_s'] / plain['requests_per_s']:.2f}x requests/s, p99 "
            f"{ours['p99_us'] / 1e3:.2f} ms vs {plain['p99_us'] / 1e3:.2f} ms"
        )
    as_bytes = summary.get(("ours_bytes", connections))
    if ours and as_bytes and as_bytes["requests_per_s"] > 0:
        ratio = ours["requests_per_s"] / as_bytes["requests_per_s"]
        verdicts.append(
            f"- (d) at {connections} clients ours JSON / ours serving_bytes: {ratio:.2f}x requests/s "
            f"(issue 8 target >= 0.6: {'met' if ratio >= 0.6 else 'NOT met'})")
    if ours and bento:
        ratio = ours["requests_per_s"] / bento["requests_per_s"] if bento["requests_per_s"] else float("inf")
        verdicts.append(
            f"- (e) at {connections} clients ours JSON / BentoML JSON: {ratio:.2f}x requests/s "
            f"(issue 8 target >= 3x: {'met' if ratio >= 3 else 'NOT met'})")
    if ours and "status_p99_us" in ours:
        verdicts.append(
            f"- (f) status during the JSON load at {connections} clients: p99 "
            f"{ours['status_p99_us'] / 1e3:.2f} ms, max {ours['status_max_us'] / 1e3:.2f} ms "
            f"(issue 8 target p99 <= 10 ms: {'met' if ours['status_p99_us'] <= 10e3 else 'NOT met'})")
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
