"""The simdjson fast path of JSON predict requests answers exactly as the general path does.

Every body below is parsed twice: by `parse_predict_request` (fast path where it applies) and by
the general path alone (`loads` + `predict_request_inputs`). Both must give the same arrays
(values, dtype, shape) or the same error; and the dense cases must really take the fast path.
"""

import json
import os
import signal
import time

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2

from imgclf.serving import json_dense
from imgclf.serving.json_request import (
    input_dtypes,
    loads,
    parse_predict_request,
    predict_request_inputs,
    request_signature_name,
)
from imgclf.serving.status import StatusError
from imgclf.serving.tensor_spec import JSON_TYPES, TensorSpec


class Signature:
    def __init__(self, name, **inputs):
        self.name = name
        self.inputs = {key: TensorSpec(key, dtype, shape) for key, (dtype, shape) in inputs.items()}


IMAGE = Signature("serving_default", x=(types_pb2.DT_FLOAT, (-1, -1, -1, 3)))
SIGNATURES = {
    "serving_default": IMAGE,
    "any_float": Signature("any_float", x=(types_pb2.DT_FLOAT, None)),
    "double": Signature("double", x=(types_pb2.DT_DOUBLE, None)),
    "int32": Signature("int32", x=(types_pb2.DT_INT32, None)),
    "uint8": Signature("uint8", x=(types_pb2.DT_UINT8, None)),
    "int64": Signature("int64", x=(types_pb2.DT_INT64, None)),
    "uint64": Signature("uint64", x=(types_pb2.DT_UINT64, None)),
    "two": Signature("two", a=(types_pb2.DT_FLOAT, (-1, 2)), b=(types_pb2.DT_INT32, (-1,))),
}


def find_signature(name):
    try:
        return SIGNATURES[name or "serving_default"]
    except KeyError:
        raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, f"Serving signature name: \"{name}\" not found in signature def") from None


def fast(body):
    return parse_predict_request(body, find_signature)


def general(body):
    request = loads(body)
    signature = find_signature(request_signature_name(request))
    return signature, *predict_request_inputs(request, signature.inputs, signature.name)


def outcome(parse, body):
    try:
        signature, inputs, row_format = parse(body)
    except StatusError as error:
        return ("error", error.code, error.message)
    return ("ok", signature.name, row_format,
            {name: (array.dtype.str, array.shape, array.tobytes()) for name, array in inputs.items()})


def took_fast_path(body):
    document = json_dense.parse(body)
    if document is None or json_dense.signature_name(document) is None:
        return False
    try:
        signature = find_signature(json_dense.signature_name(document))
    except StatusError:
        return False
    return json_dense.dense_predict_inputs(body, document, input_dtypes(signature)) is not None


def image(height=4, width=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3)).tolist()


DENSE = {
    "row image": {"instances": [image(), image(seed=1)]},
    "row image, spaces and name": {"signature_name": "serving_default", "instances": [image()]},
    "row objects (RestClient's form)": {"instances": [{"x": image()}, {"x": image(seed=2)}]},
    "columnar": {"inputs": [image()]},
    "columnar object": {"inputs": {"x": [image()]}},
    "fractions": {"instances": [[[[0.1, 0.25, -1.5e-3]]]]},
    "mixed ints and floats": {"instances": [[[[1, 2.5, 3]]]]},
    "float32's largest exact integers": {"signature_name": "any_float", "inputs": [16777215, -16777215]},
    "double": {"signature_name": "double", "inputs": [[1.0000000000000002, 3]]},
    "int32": {"signature_name": "int32", "inputs": [[2147483647, -2147483648]]},
    "uint8": {"signature_name": "uint8", "instances": [[0, 255], [1, 2]]},
    "int64": {"signature_name": "int64", "inputs": [9223372036854775807, -9223372036854775808]},
    "uint64": {"signature_name": "uint64", "inputs": [18446744073709551615, 0]},
    "two inputs, rows": {"signature_name": "two", "instances": [{"a": [1, 2], "b": 3}, {"b": 4, "a": [5, 6]}]},
    "shape the signature refuses": {"instances": [[1, 2]]},
    "scalar": {"signature_name": "any_float", "inputs": 1.5},
    "two inputs, columns": {"signature_name": "two", "inputs": {"b": [7], "a": [[1, 2]]}},
}

GENERAL = {
    "ragged with the dense count": '{"instances": [[[[1,2,3]]], [[[4,5,6],[7,8,9]]], [[[1,2,3]]]]}',
    "ragged": '{"instances": [[[[1,2,3]]], [[[4,5,6],[7,8,9]]]]}',
    "number at a list's level": '{"instances": [[[[1,2,3]]], 4]}',
    "list at a number's level": '{"signature_name": "any_float", "inputs": [1, [2]]}',
    "string": '{"instances": [[[[1,2,"3"]]]]}',
    "boolean": '{"instances": [[[[1,2,true]]]]}',
    "null": '{"instances": [[[[1,2,null]]]]}',
    "NaN": '{"instances": [[[[1,2,NaN]]]]}',
    "Infinity": '{"signature_name": "any_float", "inputs": [Infinity, -Infinity]}',
    "lossy integer for float": '{"signature_name": "any_float", "inputs": [16777216]}',
    "large float for float": '{"signature_name": "any_float", "inputs": [16777216.0, 1e30]}',
    "float for int": '{"signature_name": "int32", "inputs": [1.0]}',
    "out of int32": '{"signature_name": "int32", "inputs": [2147483648]}',
    "negative uint8": '{"signature_name": "uint8", "inputs": [-1]}',
    "beyond uint64": '{"signature_name": "uint64", "inputs": [18446744073709551616]}',
    "empty list": '{"instances": []}',
    "empty rows": '{"signature_name": "any_float", "inputs": [[], []]}',
    "both keys": '{"instances": [[[[1,2,3]]]], "inputs": [[[[1,2,3]]]]}',
    "neither key": '{"signature_name": "serving_default"}',
    "duplicate key": '{"instances": [[[[1,2,3]]]], "instances": [[[[1,2]]]]}',
    "unknown key": '{"instances": [[[[1,2,3]]]], "extra": [1]}',
    "bracket in a string": '{"signature_name": "[", "instances": [[[[1,2,3]]]]}',
    "signature_name not a string": '{"signature_name": 1, "instances": [[[[1,2,3]]]]}',
    "unknown signature": '{"signature_name": "nope", "instances": [[[[1,2,3]]]]}',
    "row objects with a missing input": '{"signature_name": "two", "instances": [{"a": [1, 2]}]}',
    "row objects, rows of two shapes": '{"signature_name": "two", "instances": [{"a": [1, 2], "b": 3}, {"a": [1], "b": 3}]}',
    "a plain list for two inputs": '{"signature_name": "two", "instances": [[1, 2]]}',
    "float scalar for int": '{"signature_name": "int32", "inputs": 1.5}',
    "bool scalar": '{"signature_name": "int32", "inputs": true}',
    "not an object": '[1, 2, 3]',
    "invalid JSON": '{"instances": [1, 2',
    "empty body": '',
    "object in a tensor": '{"instances": [[[[1,2,{"b64": "AA=="}]]]]}',
}


@pytest.mark.parametrize("case", DENSE)
def test_dense_bodies_take_the_fast_path_and_equal_the_general_path(case):
    for body in (json.dumps(DENSE[case]).encode(), json.dumps(DENSE[case], indent=2).encode()):
        assert took_fast_path(body)
        assert outcome(fast, body) == outcome(general, body)


@pytest.mark.parametrize("case", GENERAL)
def test_other_bodies_take_the_general_path_with_its_answer(case):
    body = GENERAL[case].encode()
    assert not took_fast_path(body)
    assert outcome(fast, body) == outcome(general, body)


def test_ragged_array_with_the_dense_count_is_refused_as_tf_serving_does():
    body = GENERAL["ragged with the dense count"].encode()
    kind, _code, message = outcome(fast, body)
    assert kind == "error"
    assert message.startswith("Expecting tensor size: 3 but got: 6")


def test_a_224_pixel_image_parses_to_float32():
    pixels = np.random.default_rng(0).integers(0, 256, (224, 224, 3))
    body = json.dumps({"instances": [pixels.tolist()]}).encode()
    signature, inputs, row_format = parse_predict_request(body, find_signature)
    assert row_format and signature is IMAGE
    assert inputs["x"].dtype == np.float32 and inputs["x"].shape == (1, 224, 224, 3)
    np.testing.assert_array_equal(inputs["x"][0], pixels.astype(np.float32))


def test_the_fast_paths_dtype_numbers_are_tensorflows():
    # json_dense spells DataType numbers out so that its worker processes need no TensorFlow.
    for dtype, numpy_dtype in json_dense.NUMPY_DTYPES.items():
        assert JSON_TYPES[dtype][0] == numpy_dtype, types_pb2.DataType.Name(dtype)


def test_parse_dense_request_picks_the_named_signature():
    signatures = {name: input_dtypes(signature) for name, signature in SIGNATURES.items()}
    name, inputs, row_format = json_dense.parse_dense_request(
        b'{"signature_name": "uint8", "inputs": [[1, 2]]}', signatures)
    assert (name, row_format, inputs["x"].dtype, inputs["x"].tolist()) == ("uint8", False, np.uint8, [[1, 2]])
    assert json_dense.parse_dense_request(b'{"instances": [[[[1, 2, 3]]]]}', signatures)[0] == ""
    assert json_dense.parse_dense_request(b'{"signature_name": "nope", "inputs": [1]}', signatures) is None


@pytest.fixture(scope="module", params=["1", "0"], ids=["worker_process", "threads"])
def server(request, tmp_path_factory):
    from conftest_serving import saved_model_copy

    from imgclf.serving import ServerProcess

    base = tmp_path_factory.mktemp("models") / "lenet"
    saved_model_copy(base / "1")
    with ServerProcess(["--model_name", "lenet", "--model_base_path", base,
                        "--json_parse_processes", request.param]) as process:
        yield process


def post_together(url, bodies):
    """POST every body at once (so that the server parses them concurrently); the answers."""
    import concurrent.futures

    import requests

    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda body: requests.post(url, data=body, timeout=60), bodies))


def test_large_bodies_parsed_off_the_event_loop_answer_as_the_general_path(server):
    url = f"{server.rest_url}/v1/models/lenet:predict"
    pixels = image(height=160, width=160)  # ~300 KB of JSON: over the worker processes' threshold
    dense = json.dumps({"instances": [pixels]}).encode()
    # An unknown key keeps a body off the fast path; TF Serving (and the general path) ignore it.
    general = json.dumps({"instances": [pixels], "comment": "x"}).encode()
    assert len(dense) > 256 << 10
    ragged = json.dumps({"instances": [pixels, pixels[:-1]]}).encode()
    pixels[5][5][1] = True
    boolean = json.dumps({"inputs": [pixels]}).encode()
    # Sent together, four at a time: a body parsed alone goes to a thread, the others to workers.
    answers = post_together(url, [dense, general, ragged, boolean] * 4)
    for index in range(0, len(answers), 4):
        ok, also_ok, refused, wrong_type = answers[index:index + 4]
        assert [ok.status_code, also_ok.status_code] == [200, 200], ok.text
        assert ok.json() == also_ok.json() == answers[0].json()
        assert refused.status_code == 400
        assert refused.json()["error"].startswith("Expecting tensor size: 76800 but got: 76320.")
        assert wrong_type.status_code == 400
        assert wrong_type.json()["error"].startswith(
            "JSON Value: true Type: True is not of expected type: float")
    processes = server.args[server.args.index("--json_parse_processes") + 1]
    assert bool(children_of(server.pid)) == (processes != "0"), "workers used as configured"


def process_state(pid):
    """(state letter, parent pid) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def running(pid):
    state = process_state(pid)
    return state is not None and state[0] != "Z"


def children_of(pid):
    return [int(entry) for entry in os.listdir("/proc")
            if entry.isdigit() and (process_state(entry) or ("", 0))[1] == pid]


def test_concurrent_bodies_go_to_parsing_processes_which_exit_when_the_server_is_killed(tmp_path):
    import requests
    from conftest_serving import saved_model_copy

    from imgclf.serving import ServerProcess

    saved_model_copy(tmp_path / "lenet" / "1")
    with ServerProcess(["--model_name", "lenet", "--model_base_path", tmp_path / "lenet",
                        "--json_parse_processes", "2"]) as server:
        url = f"{server.rest_url}/v1/models/lenet:predict"
        body = json.dumps({"instances": [image(height=160, width=160)]}).encode()
        # Alone, a body is parsed on a thread: no worker is started for it.
        answer = requests.post(url, data=body, timeout=60)
        assert answer.status_code == 200, answer.text
        assert children_of(server.pid) == []
        # Together, bodies go to parsing processes too.
        answers = post_together(url, [body] * 8)
        assert {answer.status_code for answer in answers} == {200}
        assert all(other.json() == answer.json() for other in answers)
        workers = children_of(server.pid)
        assert workers, "no parsing process was started"
        os.kill(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(map(running, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(running, workers)), f"parsing processes {workers} outlived the killed server"


def test_a_thread_keeps_its_parser_for_ordinary_bodies_but_not_for_huge_ones(monkeypatch):
    import threading

    made = []
    real = json_dense.simdjson.Parser

    def counting_parser(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(json_dense.simdjson, "Parser", counting_parser)
    monkeypatch.setattr(json_dense, "KEEP_PARSER_UP_TO", 1000)
    small = json.dumps({"instances": [[1.0, 2.0]]}).encode()
    large = json.dumps({"instances": [[1.0] * 400]}).encode()
    assert len(small) <= 1000 < len(large)

    def parse_all():
        for body in (small, small, large, large, small):
            assert json_dense.parse_dense_request(body, {"serving_default": {"x": json_dense.DT_FLOAT}})

    thread = threading.Thread(target=parse_all)  # a thread of its own: no parser kept from before
    thread.start()
    thread.join()
    assert len(made) == 3  # one kept for the small bodies, one for each large body
