"""Helpers shared by the distributed-training tests: sample data, worker processes on loopback.

Every worker is a real `train_model.py` process with its own `TF_CONFIG` (127.0.0.1 ports) and
its own `TMPDIR`, so a test can see what each one left behind.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SIZE = 32


def write_data(folder, train_per_class=200, test_per_class=30, image_size=IMAGE_SIZE):
    """The generated sample data set (3 classes, `image_size` pixels) in `folder`; returns `folder`."""
    from imgclf.data.sample_data import write_sample_dataset

    write_sample_dataset(folder, num_classes=3, image_size=image_size,
                         train_per_class=train_per_class, test_per_class=test_per_class)
    return folder


def free_ports(count):
    """`count` loopback ports that were free a moment ago (TF_CONFIG needs them up front)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def train_args(data, models, num_epochs, *extra, image_size=IMAGE_SIZE):
    return [
        "--train_dataset_path", os.path.join(data, "train"),
        "--test_dataset_path", os.path.join(data, "test"),
        "--model_folder_path", str(models), "--model_type", "LenetModel",
        "--input_width", str(image_size), "--input_height", str(image_size),
        "--batch_size", "8", "--num_epochs", str(num_epochs), "--patience", str(num_epochs),
        *extra,
    ]


def start_training(workdir, args, num_workers=1, ports=None, name="run"):
    """Start `train_model.py args` as `num_workers` processes (a TF_CONFIG cluster if > 1).

    Returns a list of `(process, log_path, tmpdir)`. Each worker's output goes to
    `workdir/<name>-<index>.log` and its temporary files to `workdir/<name>-<index>.tmp/`.
    """
    ports = ports or (free_ports(num_workers) if num_workers > 1 else [])
    workers = []
    for index in range(num_workers):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        env.pop("TF_CONFIG", None)
        # Test models (tests/distributed_models.py) are imported by name, like users' own.
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [os.path.dirname(os.path.abspath(__file__)), env.get("PYTHONPATH")]))
        if num_workers > 1:
            env["TF_CONFIG"] = json.dumps({
                "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                "task": {"type": "worker", "index": index},
            })
        tmpdir = os.path.join(workdir, f"{name}-{index}.tmp")
        os.makedirs(tmpdir, exist_ok=True)
        env["TMPDIR"] = tmpdir
        log_path = os.path.join(workdir, f"{name}-{index}.log")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, os.path.join(REPO, "train_model.py"), *args],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
            )
        workers.append((process, log_path, tmpdir))
    return workers


def wait_all(workers, timeout=500):
    """Wait for every worker; return their exit codes (killing all on timeout)."""
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for process, _, _ in workers:
            codes.append(process.wait(timeout=max(1, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
        kill_all(workers)
        raise AssertionError("workers did not finish in time:\n" + logs(workers)) from None
    return codes


def kill_all(workers):
    for process, _, _ in workers:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
    for process, _, _ in workers:
        process.wait()


def logs(workers):
    text = []
    for _, log_path, _ in workers:
        with open(log_path, encoding="utf-8", errors="replace") as file:
            text.append(f"--- {log_path}\n{file.read()[-3000:]}")
    return "\n".join(text)


def kill_after_epoch(workers, state_path, epoch, timeout=400):
    """SIGKILL every worker once the backup at `state_path` records `epoch` finished epochs.

    Returns the backup's epoch after the kill (it may have moved on before the signal landed).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(state_path, encoding="utf-8") as file:
                if json.load(file)["epoch"] >= epoch:
                    break
        except (FileNotFoundError, ValueError):
            pass
        if any(process.poll() is not None for process, _, _ in workers):
            kill_all(workers)
            raise AssertionError("a worker ended before the kill:\n" + logs(workers))
        time.sleep(0.02)
    else:
        kill_all(workers)
        raise AssertionError(f"no backup of epoch {epoch} in time:\n" + logs(workers))
    kill_all(workers)
    with open(state_path, encoding="utf-8") as file:
        return json.load(file)["epoch"]


def first_epoch_line(log_path):
    """The first `Epoch k/N` line a run printed, e.g. `"Epoch 4/30"`."""
    with open(log_path, encoding="utf-8", errors="replace") as file:
        for line in file:
            if line.startswith("Epoch "):
                return line.split()[0] + " " + line.split()[1]
    return None
