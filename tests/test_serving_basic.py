"""The server as a client written for TF Serving sees it: REST status, metadata, predict; gRPC.

One server process (real subprocess, ephemeral loopback ports) serves every test of this module:
`conftest_serving.shared_lenet_server`, which other modules' tests use too.
"""

import base64
import os

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from conftest_serving import png_bytes, random_images, shared_lenet_server
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)


@pytest.fixture(scope="module")
def server():
    return shared_lenet_server()


@pytest.fixture(scope="module")
def loaded(server):
    """The same SavedModel, in process: what every answer must equal."""
    return tf.saved_model.load(os.path.join(server.model_dir, "1"))


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield channel


def post(server, path, body):
    return requests.post(f"{server.rest_url}{path}", json=body, timeout=30)


def test_status(server):
    response = requests.get(f"{server.rest_url}/v1/models/lenet", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


def test_predict_row_and_columnar_equal_the_model(server, loaded):
    images = random_images(2)
    expected = loaded.signatures["serving_default"](input_tensor=images)["output_0"].numpy()
    rows = post(server, "/v1/models/lenet:predict", {"instances": images.tolist()})
    assert rows.status_code == 200, rows.text
    np.testing.assert_allclose(rows.json()["predictions"], expected, rtol=1e-5, atol=1e-6)
    columns = post(server, "/v1/models/lenet:predict", {"inputs": images.tolist()})
    np.testing.assert_allclose(columns.json()["outputs"], expected, rtol=1e-5, atol=1e-6)


def test_predict_b64_labels(server, loaded):
    image = png_bytes()
    expected = loaded.signatures["serving_labels"](image_bytes_string=tf.constant([image]))
    response = post(server, "/v1/models/lenet:predict", {
        "signature_name": "serving_labels",
        "instances": [{"b64": base64.b64encode(image).decode()}]})
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert prediction["classes"] == [c.decode() for c in expected["classes"].numpy()[0]]
    assert prediction["class_ids"] == expected["class_ids"].numpy()[0].tolist()
    np.testing.assert_allclose(prediction["probabilities"], expected["probabilities"].numpy()[0], rtol=1e-5)


def test_grpc_predict(channel, loaded):
    images = random_images(3, seed=1)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "lenet"
    request.inputs["input_tensor"].CopyFrom(tf.make_tensor_proto(images))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    assert response.model_spec.name == "lenet"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    expected = loaded.signatures["serving_default"](input_tensor=images)["output_0"].numpy()
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["output_0"]), expected, rtol=1e-5, atol=1e-6)
    # Clients read the typed field directly, as with TF Serving.
    assert len(response.outputs["output_0"].float_val) == expected.size


def test_grpc_status_and_metadata(channel):
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "lenet"}), timeout=10)
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    metadata = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(
        get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "lenet"},
                                                       metadata_field=["signature_def"]), timeout=10)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert metadata.metadata["signature_def"].Unpack(signatures)
    assert {"serving_default", "serving_bytes", "serving_labels"} <= set(signatures.signature_def)
    assert metadata.model_spec.version.value == 1


def test_the_server_loads_neither_pandas_nor_matplotlib(server):
    """Keras would import both whenever TensorFlow imports (imgclf.tensorflow_import): 1.6 CPU s
    and 90 MB of a server's start."""
    with open(f"/proc/{server.pid}/maps", encoding="utf-8") as maps:
        libraries = {line.split()[-1] for line in maps if "site-packages" in line}
    assert any("/tensorflow/" in path for path in libraries)
    assert not [path for path in libraries if "/pandas/" in path or "/matplotlib/" in path]
