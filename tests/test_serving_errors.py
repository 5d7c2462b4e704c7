"""Refusals: every client error is answered with TF Serving's status and a message naming the
problem, and the server keeps answering afterwards (`conftest_serving.shared_lenet_server`, which
other modules' tests use too)."""

import base64
import struct
import zlib

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from conftest_serving import SHARED_MAX_REQUEST_BYTES, png_bytes, random_images, shared_lenet_server
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

MAX_BYTES = SHARED_MAX_REQUEST_BYTES
DEFAULT_INPUTS = 'Signature "serving_default" expects inputs {input_tensor: DT_FLOAT [-1,-1,-1,3]}'
BYTES_INPUTS = 'Signature "serving_bytes" expects inputs {image_bytes_string: DT_STRING [?]}'


@pytest.fixture(scope="module")
def server():
    return shared_lenet_server()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(autouse=True)
def still_answers(server):
    """After every test, the server answers a good request."""
    yield
    response = requests.post(f"{server.rest_url}/v1/models/lenet:predict",
                             json={"instances": random_images(1).tolist()}, timeout=30)
    assert response.status_code == 200, response.text
    assert server.returncode is None


def call(server, method, path, body=None, data=None):
    response = requests.request(method, f"{server.rest_url}{path}", json=body, data=data, timeout=30)
    return response.status_code, response.json() if response.headers.get(
        "Content-Type", "").startswith("application/json") else response.text


def b64(data):
    return {"b64": base64.b64encode(data).decode()}


@pytest.mark.parametrize("method, path, status, error", [
    ("GET", "/v1/models/nope", 404, "Could not find any versions of model nope"),
    ("GET", "/v1/models/lenet/versions/7", 404, "Could not find version 7 of model lenet"),
    ("GET", "/v1/models/nope/metadata", 404, "Servable not found for request: Latest(nope)"),
    ("GET", "/v1/models/lenet/versions/7/metadata", 404, "Servable not found for request: Specific(lenet, 7)"),
    ("GET", "/v1/models", 400, "Missing model name in request."),
    ("GET", "/v1/models/lenet/versions/x", 400, "Malformed request: GET /v1/models/lenet/versions/x"),
    ("GET", "/v1/models/lenet/version/1", 400, "Malformed request: GET /v1/models/lenet/version/1"),
    ("GET", "/v1/models/lenet/versions/1/labels/a", 400,
     "Malformed request: GET /v1/models/lenet/versions/1/labels/a"),
    ("POST", "/v1/models/lenet/metadata", 400, "Malformed request: POST /v1/models/lenet/metadata"),
    ("GET", "/v1/models/lenet/labels/stable", 400, "Unrecognized servable version label: stable"),
    ("POST", "/v1/models/nope:predict", 404, "Servable not found for request: Latest(nope)"),
    ("POST", "/v1/models/lenet/versions/9:predict", 404, "Servable not found for request: Specific(lenet, 9)"),
])
def test_route_errors(server, method, path, status, error):
    body = {"instances": [1]} if method == "POST" else None
    assert call(server, method, path, body) == (status, {"error": error})


def test_routes_are_case_insensitive_and_url_decoded(server):
    assert call(server, "GET", "/V1/MODELS/len%65t")[0] == 200
    assert call(server, "GET", "/v1/models/lenet/METADATA")[0] == 200
    assert requests.get(f"{server.rest_url}/v2/models/lenet", timeout=10).status_code == 404
    assert requests.get(f"{server.rest_url}/", timeout=10).status_code == 404


@pytest.mark.parametrize("body, error", [
    ({"signature_name": "x", "instances": [1]}, 'Serving signature name: "x" not found in signature def'),
    ({"signature_name": 5, "instances": [1]},
     "JSON Value: {\"signature_name\":5,\"instances\":[1]} not formatted correctly. "
     "'signature_name' key must be a string value."),
    ({"nothing": 1}, f"Missing 'inputs' or 'instances' key. {DEFAULT_INPUTS}"),
    ({"instances": [], }, f"JSON Value: {{\"instances\":[]}} No values in 'instances' array. {DEFAULT_INPUTS}"),
    ({"instances": [1], "inputs": [1]},
     "JSON Value: {\"instances\":[1],\"inputs\":[1]} Not formatted correctly expecting only one of "
     f"'inputs' or 'instances' keys to exist. {DEFAULT_INPUTS}"),
    ({"instances": [[[[1, 2]]], [[[1, 2, 3]]]]},
     "Expecting tensor size: 2 but got: 3. " + DEFAULT_INPUTS),
    ({"inputs": [[[[1, 2, 3], [4, 5]]]]},
     f"Encountered list at unexpected size: 2 at level: 3 expected size: 3. {DEFAULT_INPUTS}"),
    ({"inputs": [[[["1", 2, 3]]]]},
     f"JSON Value: \"1\" Type: String is not of expected type: float. {DEFAULT_INPUTS}"),
    ({"inputs": [[[[True, 2, 3]]]]},
     f"JSON Value: true Type: True is not of expected type: float. {DEFAULT_INPUTS}"),
    ({"inputs": [[[[None, 2, 3]]]]},
     f"JSON Value: null Type: Null is not of expected type: float. {DEFAULT_INPUTS}"),
    ({"inputs": [[[1, 2, 3]]]},
     "Input \"input_tensor\" has shape [1,1,3] but signature \"serving_default\" expects [-1,-1,-1,3]. "
     "Expected inputs {input_tensor: DT_FLOAT [-1,-1,-1,3]}; received {input_tensor: DT_FLOAT [1,1,3]}"),
    ({"signature_name": "serving_bytes", "inputs": {"b64": "a-_b"}},
     f"Unable to base64 decode. {BYTES_INPUTS}"),
    ({"signature_name": "serving_bytes", "inputs": {"b64": "@@@@"}},
     f"Unable to base64 decode. {BYTES_INPUTS}"),
    ({"signature_name": "serving_bytes", "inputs": {"other": 1}},
     f"Missing named input: image_bytes_string in 'inputs' object. {BYTES_INPUTS}"),
])
def test_bad_predict_requests(server, body, error):
    assert call(server, "POST", "/v1/models/lenet:predict", body) == (400, {"error": error})


def test_bad_json(server):
    status, body = call(server, "POST", "/v1/models/lenet:predict", data=b'{"instances": [1,')
    assert status == 400 and body["error"].startswith("JSON Parse error:")
    assert call(server, "POST", "/v1/models/lenet:predict", data=b"")[1] == {
        "error": "JSON Parse error: The document is empty"}
    assert call(server, "POST", "/v1/models/lenet:predict", data=b"[1]")[1] == {
        "error": "JSON Value: [1] Is not object"}
    deep = b'{"inputs": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    assert call(server, "POST", "/v1/models/lenet:predict", data=deep)[0] == 400


def test_nan_and_infinity_are_numbers(server):
    data = b'{"inputs": [[[[NaN, Infinity, -Infinity]]]]}'
    status, _ = call(server, "POST", "/v1/models/lenet:predict", data=data)
    assert status == 200


def test_huge_body_is_413(server):
    response = requests.post(f"{server.rest_url}/v1/models/lenet:predict", data=b" " * (MAX_BYTES + 1),
                             timeout=30)
    assert response.status_code == 413
    assert response.json() == {"error": f"Request body too large: the limit is {MAX_BYTES} bytes "
                                        f"(--max_request_bytes); received {MAX_BYTES + 1} bytes"}


def _png_declaring(width, height):
    """A tiny PNG whose header declares `width` x `height` pixels (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("data, message", [
    (b"not an image at all", "Unknown image file format"),
    (png_bytes()[:60], "PNG"),
    (_png_declaring(100000, 100000), "image declares"),
])
def test_bad_images_are_400(server, data, message):
    status, body = call(server, "POST", "/v1/models/lenet:predict",
                        {"signature_name": "serving_bytes", "instances": [b64(data)]})
    assert status == 400
    assert message in body["error"]
    assert "Graph execution error" not in body["error"] and "[[{{node" not in body["error"]


def test_classify_on_a_predict_signature(server):
    status, body = call(server, "POST", "/v1/models/lenet:classify", {"examples": [{"x": 1}]})
    assert status == 400
    assert body["error"].startswith("Expected classification signature method_name to be "
                                    "tensorflow/serving/classify. Was: tensorflow/serving/predict.")
    assert call(server, "POST", "/v1/models/lenet:regress", {"examples": [{"x": 1}]})[0] == 400


def _request(**inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "lenet"
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def _grpc_error(stub, request):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=30)
    return caught.value.code(), caught.value.details()


def test_grpc_errors(stub):
    request = _request(input_tensor=random_images(1))
    request.model_spec.name = ""
    assert _grpc_error(stub, request)[0] == grpc.StatusCode.INVALID_ARGUMENT
    request.model_spec.name = "nope"
    assert _grpc_error(stub, request) == (grpc.StatusCode.NOT_FOUND,
                                          "Servable not found for request: Latest(nope)")
    request.model_spec.name = "lenet"
    request.model_spec.version.value = 5
    assert _grpc_error(stub, request) == (grpc.StatusCode.NOT_FOUND,
                                          "Servable not found for request: Specific(lenet, 5)")
    request = _request(input_tensor=random_images(1))
    request.model_spec.signature_name = "nope"
    assert _grpc_error(stub, request) == (grpc.StatusCode.FAILED_PRECONDITION,
                                          'Serving signature key "nope" not found.')
    assert _grpc_error(stub, _request(images=random_images(1))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "input size does not match signature: 1!=1 len({images}) != len({input_tensor}). "
        "Sent extra: {images}. Missing but required: {input_tensor}. " + DEFAULT_INPUTS)
    code, message = _grpc_error(stub, _request(input_tensor=np.array(["x"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "expects DT_FLOAT" in message
    request = _request(input_tensor=random_images(1))
    request.output_filter.append("nope")
    assert _grpc_error(stub, request) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "output tensor alias not found in signature: nope Outputs expected to be in the set {output_0}.")


def test_grpc_bad_image(stub):
    request = _request(image_bytes_string=np.array([b"garbage"], dtype=object))
    request.model_spec.signature_name = "serving_labels"
    code, message = _grpc_error(stub, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Unknown image file format" in message
