"""Clients for a TensorFlow Serving-compatible model server, over REST or gRPC, with one interface.

They speak TensorFlow Serving's public API only (the REST routes of `g3doc/api_rest.md` and the
official gRPC stubs of `tensorflow-serving-api`), so they work the same against TensorFlow Serving
and against `python -m imgclf.serving`.

    >>> client = RestClient("localhost", 8501, "LenetModel")      # or GrpcClient(host, 8500, ...)
    >>> with open("cat.png", "rb") as f:
    ...     outputs = client.predict("serving_bytes", {"image_bytes_string": [f.read()]})
    >>> outputs["output_0"].shape                                 # logits, float32
    (1, 3)
    >>> client.status()[0].state
    'AVAILABLE'

Both raise `ServingUnavailableError` when nothing answers at the address (connection refused, host
not found, no answer in time) and `ServingRequestError` when the server answers with an error.
"""

import base64
import dataclasses
import json
import socket
import threading
import urllib.parse
from typing import Any, Mapping, Optional

import grpc
import numpy as np
import requests
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

Inputs = Mapping[str, Any]

#: Seconds a request may take, connection included, unless a client is given another timeout.
DEFAULT_TIMEOUT = 30.0

# TensorFlow Serving answers REST errors with these HTTP statuses (http_rest_api_handler.cc);
# mapping them back gives REST and gRPC errors the same `code`.
_HTTP_STATUS_CODES = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# The numeric dtypes a REST answer is converted to, by the dtype the signature declares. DT_STRING
# becomes an object array of bytes, as `tf.make_ndarray` gives over gRPC.
_NUMPY_DTYPES = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_HALF": np.float16,
    "DT_INT8": np.int8,
    "DT_INT16": np.int16,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_UINT8": np.uint8,
    "DT_UINT16": np.uint16,
    "DT_UINT32": np.uint32,
    "DT_UINT64": np.uint64,
    "DT_BOOL": np.bool_,
}


class ServingError(Exception):
    """Base of the errors the serving clients raise."""


class ServingUnavailableError(ServingError):
    """Nothing answers at the address: connection refused, host not found, or no answer in time.

    `str(error)` reads like "no server answers REST at localhost:8501 (connection refused)".
    """

    def __init__(self, protocol: str, host: str, port: int, reason: str):
        super().__init__(f"no server answers {protocol} at {host}:{port} ({reason})")
        self.protocol = protocol
        self.host = host
        self.port = port
        self.reason = reason


class ServingRequestError(ServingError):
    """The server answered, with an error.

    Attributes:
        code: the canonical status name, the same over REST and gRPC: `"NOT_FOUND"` (unknown model
            or version), `"INVALID_ARGUMENT"` (bad input; over REST also an unknown signature),
            `"FAILED_PRECONDITION"` (unknown signature over gRPC), `"UNAVAILABLE"` (queue full)...
        message: the server's own message.
        http_status: the HTTP status of a REST answer; None over gRPC.
    """

    def __init__(
        self, protocol: str, host: str, port: int, code: str, message: str,
        http_status: Optional[int] = None,
    ):
        status = f"HTTP {http_status} {code}" if http_status is not None else code
        super().__init__(f"{protocol} at {host}:{port} answered {status}: {message}")
        self.protocol = protocol
        self.host = host
        self.port = port
        self.code = code
        self.message = message
        self.http_status = http_status


@dataclasses.dataclass(frozen=True)
class ModelVersionStatus:
    """The state of one loaded (or loading) version of a model."""

    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING or END
    error_code: str = "OK"
    error_message: str = ""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One input or output of a signature."""

    name: str  # the tensor's name in the graph, e.g. "serving_default_input_tensor:0"
    dtype: str  # TensorFlow's enum name, e.g. "DT_FLOAT"
    shape: Optional[tuple]  # dimensions, -1 where unknown; None when even the rank is unknown


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
    """One serving signature: what it takes and what it returns, keyed by input/output name."""

    inputs: dict
    outputs: dict
    method_name: str = ""


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """The signatures of the version of a model the server answers with."""

    name: str
    version: int
    signatures: dict  # signature name -> SignatureInfo


def _address(host, port):
    """`host:port`, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class RestClient:
    """A client for TensorFlow Serving's REST API (default port 8501).

    Requests go through a `requests.Session` per thread, so connections are reused and one client
    may be shared by several threads. Predictions use the row format (`"instances"`, each row
    an object keyed by input name); binary strings travel as `{"b64": ...}`.

        >>> with RestClient("localhost", 8501, "LenetModel") as client:
        ...     logits = client.predict("serving_default", {"input_tensor": images})["output_0"]
    """

    protocol = "REST"

    def __init__(self, host: str, port: int, model_name: str, timeout: float = DEFAULT_TIMEOUT):
        self.host = host
        self.port = int(port)
        self.model_name = model_name
        self.timeout = timeout
        self.model_url = (
            f"http://{_address(host, self.port)}/v1/models/{urllib.parse.quote(model_name, safe='')}"
        )
        self._local = threading.local()
        self._sessions = []
        self._sessions_lock = threading.Lock()
        self._signatures = None

    def status(self) -> list:
        """The `ModelVersionStatus` of each version of the model the server knows."""
        body = self._request("GET", self.model_url)
        return _status_from_json(body)

    def metadata(self) -> ModelMetadata:
        """The signatures of the version the server would answer with."""
        body = self._request("GET", f"{self.model_url}/metadata")
        return _metadata_from_json(body, self.model_name)

    def predict(self, signature_name: str, inputs: Inputs) -> dict:
        """Run `signature_name` on a batch; return its outputs as numpy arrays, keyed by name.

        `inputs` maps each input name of the signature to an array whose first dimension is the
        batch (row format): float images `[N, H, W, 3]`, or `N` encoded images as bytes.
        """
        instances = _rows(inputs)
        body = self._request(
            "POST",
            f"{self.model_url}:predict",
            data=json.dumps({"signature_name": signature_name, "instances": instances}),
        )
        if "predictions" not in body:
            raise self._request_error(200, f"answer without 'predictions': {_shorten(body)}")
        outputs = self._signature(signature_name).outputs
        return _outputs_from_rows(body["predictions"], outputs)

    def close(self) -> None:
        """Close the connections of every thread's session."""
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
        self._local = threading.local()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _signature(self, signature_name):
        # The output names and dtypes of a row-format answer are not in the answer itself (one
        # output comes back as a bare list), so they are read once from the metadata.
        if self._signatures is None or signature_name not in self._signatures:
            self._signatures = self.metadata().signatures
        if signature_name not in self._signatures:
            raise self._request_error(
                200, f"the answer's signature {signature_name!r} is missing from the metadata"
            )
        return self._signatures[signature_name]

    def _session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _request(self, method, url, data=None):
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            response = self._session().request(
                method, url, data=data, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as error:
            raise ServingUnavailableError(
                self.protocol, self.host, self.port, _connection_failure(error, self.timeout)
            ) from error
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            if isinstance(body, dict) and "error" in body:
                message = str(body["error"])
            else:
                message = response.text.strip()[:200] or response.reason or "no message"
            raise self._request_error(response.status_code, message)
        if not isinstance(body, dict):
            raise self._request_error(200, f"answer is not a JSON object: {response.text[:200]!r}")
        return body

    def _request_error(self, http_status, message):
        code = _HTTP_STATUS_CODES.get(http_status, "UNKNOWN")
        return ServingRequestError(self.protocol, self.host, self.port, code, message, http_status)


class GrpcClient:
    """A client for TensorFlow Serving's gRPC API (default port 8500), on the official stubs.

    Tensors are converted with `tf.make_tensor_proto` and `tf.make_ndarray`. One channel carries
    every call; a client may be shared by several threads.

        >>> with GrpcClient("localhost", 8500, "LenetModel") as client:
        ...     logits = client.predict("serving_bytes", {"image_bytes_string": [png]})["output_0"]
    """

    protocol = "gRPC"

    def __init__(self, host: str, port: int, model_name: str, timeout: float = DEFAULT_TIMEOUT):
        self.host = host
        self.port = int(port)
        self.model_name = model_name
        self.timeout = timeout
        target = _address(host, self.port)
        # A batch of float images easily passes gRPC's 4 MB default; TF Serving accepts up to 2 GB.
        self._channel = grpc.insecure_channel(
            target,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def status(self) -> list:
        """The `ModelVersionStatus` of each version of the model the server knows."""
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        response = self._call(self._models.GetModelStatus, request)
        return _status_from_json(_to_json(response))

    def metadata(self) -> ModelMetadata:
        """The signatures of the version the server would answer with."""
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = self.model_name
        request.metadata_field.append("signature_def")
        response = self._call(self._predictions.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" in response.metadata:
            response.metadata["signature_def"].Unpack(signature_map)
        return _metadata_from_json(
            {
                "model_spec": _to_json(response.model_spec),
                "metadata": {"signature_def": _to_json(signature_map)},
            },
            self.model_name,
        )

    def predict(self, signature_name: str, inputs: Inputs) -> dict:
        """Run `signature_name`; return its outputs as numpy arrays, keyed by name.

        `inputs` maps each input name of the signature to an array (or a list, or bytes); it is
        sent as it is, so a batch needs its batch dimension.
        """
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = signature_name
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = self._call(self._predictions.Predict, request)
        return {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise self._error(error) from error

    def _error(self, error):
        code = error.code()
        details = error.details() or ""
        lowered = details.lower()
        if code == grpc.StatusCode.UNAVAILABLE:
            # A server's own UNAVAILABLE (a full batch queue) is an answer; a channel that could
            # not connect says so in the details.
            if "connection refused" in lowered:
                reason = "connection refused"
            elif "resolv" in lowered or "dns" in lowered or "name not found" in lowered:
                reason = "host not found"
            elif "failed to connect" in lowered or "connect" in lowered and "fail" in lowered:
                reason = "cannot connect"
            else:
                reason = None
            if reason:
                return ServingUnavailableError(self.protocol, self.host, self.port, reason)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and not self._connected():
            return ServingUnavailableError(
                self.protocol, self.host, self.port, f"no answer within {self.timeout:g} s"
            )
        name = code.name if code is not None else "UNKNOWN"
        return ServingRequestError(self.protocol, self.host, self.port, name, details)

    def _connected(self):
        try:
            grpc.channel_ready_future(self._channel).result(timeout=0.5)
        except grpc.FutureTimeoutError:
            return False
        return True


def _connection_failure(error, timeout):
    """Why a request got no answer, in a few words, from a `requests` exception."""
    if isinstance(error, requests.ConnectTimeout):
        return f"no connection within {timeout:g} s"
    if isinstance(error, requests.Timeout):
        return f"no answer within {timeout:g} s"
    causes = _causes(error)
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return "connection refused"
    if any(
        isinstance(cause, socket.gaierror) or type(cause).__name__ == "NameResolutionError"
        for cause in causes
    ):
        return "host not found"
    if any(isinstance(cause, ConnectionResetError) for cause in causes):
        return "connection reset"
    return f"cannot connect: {type(causes[-1]).__name__}"


def _causes(error):
    """`error` and the exceptions it wraps, outermost first (urllib3 nests them in args/reason)."""
    seen, pending, causes = set(), [error], []
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        causes.append(current)
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += list(getattr(current, "args", ()))
        pending += [item for item in linked if isinstance(item, BaseException)]
    return causes


def _to_json(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _status_from_json(body):
    """`ModelVersionStatus` list from a REST status body (or the same dict made from the proto)."""
    statuses = []
    for entry in body.get("model_version_status", []):
        status = entry.get("status", {})
        statuses.append(
            ModelVersionStatus(
                version=int(entry.get("version", 0)),
                state=entry.get("state", "UNKNOWN"),
                error_code=status.get("error_code", "OK"),
                error_message=status.get("error_message", ""),
            )
        )
    return statuses


def _metadata_from_json(body, model_name):
    """`ModelMetadata` from a REST metadata body (or the same dict made from the gRPC answer)."""
    model_spec = body.get("model_spec", {})
    signature_defs = body.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
    signatures = {
        name: SignatureInfo(
            inputs=_tensor_infos(definition.get("inputs", {})),
            outputs=_tensor_infos(definition.get("outputs", {})),
            method_name=definition.get("method_name", ""),
        )
        for name, definition in signature_defs.items()
    }
    return ModelMetadata(
        name=model_spec.get("name", model_name),
        version=int(model_spec.get("version", 0)),
        signatures=signatures,
    )


def _tensor_infos(tensors):
    infos = {}
    for key, tensor in tensors.items():
        shape_json = tensor.get("tensor_shape", {})
        if shape_json.get("unknown_rank", False):
            shape = None
        else:
            shape = tuple(int(dim.get("size", 0)) for dim in shape_json.get("dim", []))
        infos[key] = TensorInfo(
            name=tensor.get("name", ""), dtype=tensor.get("dtype", "DT_INVALID"), shape=shape
        )
    return infos


def _rows(inputs):
    """The `"instances"` of a row-format request: one object per example, keyed by input name."""
    if not inputs:
        raise ValueError("inputs must name at least one input; received none")
    arrays = {name: _as_array(value) for name, value in inputs.items()}
    for name, array in arrays.items():
        if array.ndim == 0:
            raise ValueError(
                f"input {name!r} needs a batch dimension for the REST row format; "
                f"received a scalar (wrap it in a list)"
            )
    sizes = {name: len(array) for name, array in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"every input needs the same batch size; received {sizes}")
    # Rows are objects keyed by input name even for one input (TF Serving accepts both), so a
    # wrong input name is refused over REST as it is over gRPC instead of passing unnoticed.
    columns = {name: _json_value(array) for name, array in arrays.items()}
    return [
        {name: column[row] for name, column in columns.items()}
        for row in range(next(iter(sizes.values())))
    ]


def _as_array(value):
    if isinstance(value, (bytes, str)):
        return np.array(value, dtype=object)
    array = np.asarray(value)
    if array.dtype.kind in "SU":
        # numpy's fixed-width bytes drop trailing NULs, which encoded images may end with.
        array = np.array(value, dtype=object)
    return array


def _json_value(value):
    """A numpy array (or one of its items) as JSON: nested lists, bytes as `{"b64": ...}`."""
    if isinstance(value, np.ndarray):
        if value.dtype != object:
            return value.tolist()
        if value.ndim == 0:
            return _json_value(value.item())
        return [_json_value(item) for item in value]
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _outputs_from_rows(predictions, outputs):
    """Numpy outputs from a row-format answer, typed by the signature's declared outputs."""
    if len(outputs) == 1:
        ((name, info),) = outputs.items()
        return {name: _array_from_json(predictions, info.dtype)}
    return {
        name: _array_from_json([row[name] for row in predictions], info.dtype)
        for name, info in outputs.items()
    }


def _array_from_json(value, dtype):
    if dtype == "DT_STRING":
        return np.array(_strings_from_json(value), dtype=object)
    return np.asarray(value, dtype=_NUMPY_DTYPES.get(dtype))


def _strings_from_json(value):
    if isinstance(value, list):
        return [_strings_from_json(item) for item in value]
    if isinstance(value, dict) and "b64" in value:
        return base64.b64decode(value["b64"])
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def _shorten(body):
    text = json.dumps(body)
    return text if len(text) <= 200 else text[:197] + "..."
