"""Adaptive batching, its bounded queue, deadlines, and SIGTERM with a request in flight."""

import concurrent.futures
import re
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from conftest_serving import random_images, saved_model_copy
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from imgclf.serving import ServerProcess


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("models") / "lenet"
    saved_model_copy(base / "1")
    return base


def _batching_file(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("batching") / "batching.txt"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def batching_server(model_dir, tmp_path_factory):
    params = _batching_file(tmp_path_factory, "max_batch_size { value: 8 }\n"
                            "batch_timeout_micros { value: 50000 }\nmax_enqueued_batches { value: 100 }\n"
                            "num_batch_threads { value: 1 }\n")
    with ServerProcess(["--model_name", "lenet", "--model_base_path", model_dir,
                        "--enable_batching", "--batching_parameters_file", params]) as process:
        yield process


@pytest.fixture(scope="module")
def slow_batching_server(model_dir, tmp_path_factory):
    """Batches wait 3 s and only one may be queued: deadlines and a full queue are reachable."""
    params = _batching_file(tmp_path_factory, "max_batch_size { value: 4 }\n"
                            "batch_timeout_micros { value: 3000000 }\nmax_enqueued_batches { value: 1 }\n"
                            "num_batch_threads { value: 1 }\n")
    process = ServerProcess(["--model_name", "lenet", "--model_base_path", model_dir,
                             "--batching_parameters_file", params, "--rest_api_timeout_in_ms", "1000"])
    with process:
        yield process


def metric(server, name, **labels):
    text = requests.get(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=10).text
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{selector}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def predict(server, images, timeout=30):
    return requests.post(f"{server.rest_url}/v1/models/lenet:predict",
                         json={"instances": images.tolist()}, timeout=timeout)


def test_concurrent_requests_are_merged_and_split_back(batching_server, model_dir):
    loaded = tf.saved_model.load(str(model_dir / "1"))
    images = [random_images(1, seed=i) for i in range(16)]
    barrier = threading.Barrier(16)

    def send(image):
        barrier.wait()
        return predict(batching_server, image)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(send, images))
    for image, response in zip(images, responses):
        assert response.status_code == 200, response.text
        expected = loaded.signatures["serving_default"](input_tensor=image)["output_0"].numpy()
        np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-5, atol=1e-6)
    labels = {"model": "lenet", "signature": "serving_default"}
    examples = metric(batching_server, "imgclf_serving_batch_size_sum", **labels)
    batches = metric(batching_server, "imgclf_serving_batch_size_count", **labels)
    assert examples == 16
    assert batches < examples, "no two requests were merged"
    assert metric(batching_server, "imgclf_serving_requests_total", model="lenet",
                  signature="serving_default", api="rest", outcome="ok") == 16


def test_requests_of_other_shapes_are_not_merged_but_answered(batching_server):
    sizes = [16, 20, 16, 20]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda s: predict(batching_server, random_images(2, size=s)), sizes))
    assert all(r.status_code == 200 and len(r.json()["predictions"]) == 2 for r in responses)


def test_deadline_exceeded_in_the_queue_is_504(slow_batching_server):
    response = predict(slow_batching_server, random_images(1))
    assert response.status_code == 504
    assert response.json() == {"error": "Deadline exceeded"}


def test_grpc_deadline(slow_batching_server):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "lenet"
    request.inputs["input_tensor"].CopyFrom(tf.make_tensor_proto(random_images(1)))
    with grpc.insecure_channel(slow_batching_server.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_full_queue_is_503(slow_batching_server):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(predict, slow_batching_server, random_images(3))
        deadline = time.monotonic() + 30
        while metric(slow_batching_server, "imgclf_serving_batch_queue_depth", model="lenet") < 1:
            assert time.monotonic() < deadline, "the first request never reached the queue"
            time.sleep(0.02)
        # 3 + 2 examples exceed max_batch_size 4, and the one batch allowed is taken.
        response = predict(slow_batching_server, random_images(2))
        assert response.status_code == 503
        assert response.json() == {
            "error": "The batch scheduling queue to which this task was submitted is full"}
        assert first.result().status_code in (200, 504)
    assert predict(slow_batching_server, random_images(1), timeout=30).status_code in (200, 504)


def test_sigterm_finishes_requests_in_flight(slow_batching_server):
    """Runs last in this module: it stops the shared slow server."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "lenet"
    request.inputs["input_tensor"].CopyFrom(tf.make_tensor_proto(random_images(1)))
    with grpc.insecure_channel(slow_batching_server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(stub.Predict, request, timeout=60)
            deadline = time.monotonic() + 30
            while metric(slow_batching_server, "imgclf_serving_batch_queue_depth", model="lenet") < 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert slow_batching_server.stop() == 0
            response = in_flight.result()
    assert response.model_spec.version.value == 1
    assert tf.make_ndarray(response.outputs["output_0"]).shape == (1, 3)
    assert "Server stopped" in slow_batching_server.log
