"""Property-based tests (hypothesis) of the REST parser and the JSON-to-tensor conversion.

Arbitrary JSON, and arbitrary bytes, never give a 500 and never kill the server: a request is
either answered or refused with a 4xx status and a message. First in-process against every kind of
signature input, then against a real server.
"""

import base64

import numpy as np
import orjson
import pytest
import requests
from conftest_serving import shared_lenet_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tensorflow.core.framework import types_pb2

from imgclf.serving.json_request import loads, predict_request_inputs, request_signature_name
from imgclf.serving.status import StatusError
from imgclf.serving.tensor_spec import TensorSpec, check_inputs

# No example database in the repository; the same examples every run.
settings.register_profile("imgclf", database=None, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("imgclf")

SIGNATURES = {
    "images": {"input_tensor": TensorSpec("input_tensor", types_pb2.DT_FLOAT, (-1, -1, -1, 3))},
    "bytes": {"image_bytes_string": TensorSpec("image_bytes_string", types_pb2.DT_STRING, None)},
    "fixed int": {"ids": TensorSpec("ids", types_pb2.DT_INT64, (-1, 2))},
    "scalar uint8": {"x": TensorSpec("x", types_pb2.DT_UINT8, ())},
    "two inputs": {"flag": TensorSpec("flag", types_pb2.DT_BOOL, (-1,)),
                   "score": TensorSpec("score", types_pb2.DT_DOUBLE, (-1, -1))},
}
NAMES = sorted({name for specs in SIGNATURES.values() for name in specs} | {"b64", "instances"})

scalars = (st.none() | st.booleans() | st.integers(min_value=-(1 << 70), max_value=1 << 70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
           | st.sampled_from(["", "AAAA", "not base64!", "-_-_"]))
json_values = st.recursive(
    scalars,
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=4), children,
                                        max_size=3)
                      | st.builds(lambda v: {"b64": v}, children)),
    max_leaves=24,
)
# Dense numeric nests of any depth, which reach the fast numeric paths.
numeric_nests = st.recursive(
    st.lists(st.integers(-300, 300) | st.floats(allow_nan=True, allow_infinity=True), max_size=4),
    lambda children: st.lists(children, min_size=1, max_size=3),
    max_leaves=30,
)
# Well-formed tensors of every JSON type, rows of named inputs and b64 strings: near misses and
# valid requests, which reach the conversion paths behind the first checks.
shaped = hnp.arrays(dtype=st.sampled_from([np.float64, np.int64, np.bool_]),
                    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=3)
                    ).map(lambda array: array.tolist())
named_rows = st.lists(st.fixed_dictionaries(
    {"flag": st.booleans() | scalars, "score": st.lists(st.floats(), min_size=1, max_size=3)}),
    min_size=1, max_size=3)
b64_rows = st.lists(st.builds(lambda data: {"b64": base64.b64encode(data).decode()},
                              st.binary(max_size=8)), min_size=1, max_size=3)
tensors = json_values | numeric_nests | shaped | named_rows | b64_rows
documents = st.fixed_dictionaries(
    {},
    optional={"instances": tensors, "inputs": tensors | st.fixed_dictionaries(
        {}, optional={name: tensors for name in NAMES}), "signature_name": scalars},
) | st.builds(lambda value: {"instances": value}, tensors) | st.builds(
    lambda value: {"inputs": value}, tensors) | json_values


def assert_answer_or_refusal(document, specs):
    try:
        name = request_signature_name(document)
        inputs, _ = predict_request_inputs(document, specs, name or "serving_default")
        check_inputs(inputs, specs, name or "serving_default")
    except StatusError as error:
        assert 400 <= error.http_status < 500, (error.code, error.message)
        assert error.message


@pytest.mark.parametrize("kind", sorted(SIGNATURES))
@settings(max_examples=150)
@given(document=documents)
def test_any_json_is_converted_or_refused_with_a_4xx(kind, document):
    assert_answer_or_refusal(document, SIGNATURES[kind])


@settings(max_examples=200)
@given(body=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_any_bytes_parse_or_are_refused_with_a_4xx(body):
    try:
        document = loads(body)
    except StatusError as error:
        assert error.http_status == 400 and error.message
    else:
        assert_answer_or_refusal(document, SIGNATURES["images"])


def test_deep_nesting_is_refused_not_a_crash():
    for body in [b"[" * 100000, b'{"instances": ' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}"]:
        try:
            assert_answer_or_refusal(loads(body), SIGNATURES["images"])
        except StatusError as error:
            assert error.http_status == 400


@pytest.fixture(scope="module")
def server():
    """A server with batching (`conftest_serving.shared_lenet_server`)."""
    return shared_lenet_server()


def _encode(document):
    try:
        return orjson.dumps(document)
    except TypeError:  # integers beyond 64 bits, NaN: the standard encoder writes them
        import json
        return json.dumps(document).encode()


@settings(max_examples=120)
@given(document=documents, path=st.sampled_from(["lenet:predict", "lenet/versions/1:predict",
                                                  "lenet/labels/x:predict", "lenet:classify"]),
       raw=st.none() | st.binary(max_size=32))
def test_a_real_server_never_answers_500(server, document, path, raw):
    body = raw if raw is not None else _encode(document)
    response = requests.post(f"{server.rest_url}/v1/models/{path}", data=body, timeout=30,
                             headers={"Content-Type": "application/json"})
    if response.status_code != 200:
        assert 400 <= response.status_code < 500, response.text
        message = response.json()["error"]
        assert isinstance(message, str) and message
    assert server.returncode is None


def test_the_server_survived(server):
    assert requests.get(f"{server.rest_url}/v1/models/lenet", timeout=10).status_code == 200
    assert "Traceback" not in server.log, server.log
