"""The hard fact and its fix: Keras 3 `fit` under MultiWorkerMirroredStrategy, two real workers.

A plain `keras.Model` fails in the two places of keras-team/keras#20585 (so the overrides are
still needed with the pinned Keras); an `ImageClassifierModel` trains and evaluates, and both
workers end with the same weights and the same global metrics, equal to those of one process
training the same model on the same data and global batch.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest_distributed import free_ports

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multi_worker_probe.py")


def _run_pair(mode):
    ports = ",".join(map(str, free_ports(2)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    workers = [
        subprocess.Popen([sys.executable, PROBE, str(index), ports, mode], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for index in (0, 1)
    ]
    try:
        return [(worker.wait(timeout=300), worker.stdout.read()) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


@pytest.mark.timeout(900)
def test_plain_keras_fails_and_imgclf_models_train_with_two_workers():
    outcomes = {mode: _run_pair(mode) for mode in ("keras", "symbolic_build_only", "imgclf")}
    alone = subprocess.run([sys.executable, PROBE, "0", "-", "one_process"], capture_output=True,
                           text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=300)

    for code, output in outcomes["keras"]:
        assert code != 0 and "Attempt to convert a value (PerReplica" in output, output[-2000:]
    for code, output in outcomes["symbolic_build_only"]:
        assert code != 0, output[-2000:]
        assert "Invalid reduction dimension 0 for input with 0 dimensions" in output, output[-2000:]

    results = []
    for code, output in outcomes["imgclf"]:
        assert code == 0, output[-3000:]
        results.append(json.loads(output.split("RESULT ", 1)[1]))
    chief, worker = results
    assert chief == worker  # one model: same weights, same global metrics on both workers
    assert set(chief["history"]) == {"accuracy", "loss", "val_accuracy", "val_loss"}
    assert all(len(values) == 2 for values in chief["history"].values())
    assert set(chief["evaluation"]) == {"accuracy", "loss"}
    # Two workers computed what one process computes: each step averages the same 8 images.
    assert alone.returncode == 0, alone.stdout[-2000:] + alone.stderr[-2000:]
    one = json.loads(alone.stdout.split("RESULT ", 1)[1])
    for key, values in one["history"].items():
        assert chief["history"][key] == pytest.approx(values, rel=1e-5, abs=1e-6), key
    assert chief["evaluation"] == pytest.approx(one["evaluation"], rel=1e-5, abs=1e-6)
    assert chief["weights_sum"] == pytest.approx(one["weights_sum"], rel=1e-5, abs=1e-6)
