"""TF Serving's REST API on aiohttp.

    GET  /v1/models/{M}[/versions/{V}|/labels/{L}]             version status
    GET  /v1/models/{M}[/versions/{V}|/labels/{L}]/metadata    signature defs
    POST /v1/models/{M}[/versions/{V}|/labels/{L}]:predict     (also :classify, :regress)
    GET  /monitoring/prometheus/metrics                        Prometheus text

Paths are matched case-insensitively with TF Serving's own patterns, and model names and labels are
URL-decoded. Errors are `{"error": "<message>"}` with the HTTP status TF Serving gives the cause;
anything outside `/v1/` is a plain 404.

    >>> app = make_app(manager, predictor, metrics, timeout_ms=30000, max_body_bytes=64 << 20)
"""

import asyncio
import concurrent.futures
import logging
import os
import re
import time
import urllib.parse

import orjson
from aiohttp import web
from google.protobuf import json_format
from tensorflow_serving.apis import model_pb2

from imgclf.serving import json_workers
from imgclf.serving.json_request import input_dtypes, parse_predict_request
from imgclf.serving.json_response import predict_response_body
from imgclf.serving.manager import DEFAULT_SIGNATURE, status_json
from imgclf.serving.tensor_spec import check_inputs, describe_specs
from imgclf.serving.status import StatusError, invalid_argument

import grpc

_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.I)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.I)
_V1_PATH = re.compile(r"/v1/.*", re.I | re.S)
_INT64_MAX = (1 << 63) - 1
log = logging.getLogger("imgclf.serving")
METRICS_PATH = "/monitoring/prometheus/metrics"
_METHOD_NAMES = {"classify": "tensorflow/serving/classify", "regress": "tensorflow/serving/regress"}
_SERVICE_NAMES = {"classify": "classification", "regress": "regression"}
#: Bodies (bytes) and answers (numbers) smaller than this are handled on the event loop: the hop to
#: a thread costs more than parsing them (64 KB of JSON parses in ~0.3 ms).
_INLINE_BELOW = 64 << 10
#: Bodies from this size on try the dense fast path in a worker process first (`--json_parse_processes`).
_PROCESS_FROM = 256 << 10


def error_response(error):
    return web.Response(status=error.http_status, body=orjson.dumps({"error": error.message}),
                        content_type="application/json")


def _json_response(body):
    return web.Response(body=body, content_type="application/json")


def _decode(text, what):
    try:
        return urllib.parse.unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise invalid_argument(f"Failed to decode {what}:{text}") from None


def _parse_route(match):
    """(model name, version or None, label or None) of a matched path."""
    name, version_text, label = match.group(1), match.group(2), match.group(3)
    name = _decode(name, "model name") if name else ""
    version = None
    if version_text:
        version = int(version_text)
        if version > _INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {version_text} to numeric.")
    if label:
        label = _decode(label, "model version label")
    return name, version, label


class RestApi:
    """The request handlers; `make_app` mounts them."""

    def __init__(self, manager, predictor, metrics, timeout_ms, max_body_bytes, parse_processes=0):
        self.manager = manager
        self.predictor = predictor
        self.metrics = metrics
        self.timeout = timeout_ms / 1000 if timeout_ms and timeout_ms > 0 else None
        self.max_body_bytes = max_body_bytes
        self._threads = concurrent.futures.ThreadPoolExecutor(
            os.cpu_count() or 1, thread_name_prefix="json")
        self._workers = json_workers.JsonParsePool(parse_processes) if parse_processes > 0 else None
        self._parsing = 0  # requests whose bodies are being parsed

    def close(self):
        """Stop the parsing threads and processes."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self._workers is not None:
            self._workers.close()

    async def handle(self, request):
        path = request.raw_path.split("?", 1)[0]
        if path == METRICS_PATH and request.method == "GET":
            return web.Response(body=self.metrics.render(),
                                headers={"Content-Type": self.metrics.content_type})
        if not _V1_PATH.fullmatch(path):
            raise web.HTTPNotFound()
        try:
            if request.method == "POST":
                match = _PREDICT_PATH.fullmatch(path)
                if match:
                    return await self._predict(request, match)
            elif request.method == "GET":
                match = _STATUS_PATH.fullmatch(path)
                if match:
                    return self._status(match)
            raise invalid_argument(f"Malformed request: {request.method} {path}")
        except StatusError as error:
            return error_response(error)
        except Exception:  # a bug: answer TF Serving's error body, never aiohttp's 500 page
            log.exception("REST %s %s failed", request.method, path)
            return error_response(StatusError(grpc.StatusCode.INTERNAL,
                                              f"Internal error in imgclf.serving while handling "
                                              f"{request.method} {path}; the server log has the details"))

    def _status(self, match):
        name, version, label = _parse_route(match)
        if not name:
            raise invalid_argument("Missing model name in request.")
        if (match.group(4) or "").lower() == "metadata":
            servable = self.manager.servable(name, version, label)
            spec = json_format.MessageToDict(
                model_pb2.ModelSpec(name=name, version={"value": servable.version}),
                preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
            body = {"model_spec": spec, "metadata": {"signature_def": servable.metadata_json()}}
            return _json_response(orjson.dumps(body, option=orjson.OPT_INDENT_2))
        return _json_response(status_json(self.manager.status(name, version, label)))

    async def _read_body(self, request):
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED, self._too_large(request.content_length))
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED, self._too_large(None)) from None

    def _too_large(self, size):
        received = f"{size} bytes" if size is not None else "a larger body"
        return (f"Request body too large: the limit is {self.max_body_bytes} bytes "
                f"(--max_request_bytes); received {received}")

    async def _predict(self, request, match):
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        name, version, label = _parse_route(match)
        verb = match.group(4).lower()
        model_label, signature_label, outcome = "", "", "ok"
        try:
            try:
                body = await self._read_body(request)
            except StatusError as error:
                response = error_response(error)
                response.set_status(413)
                outcome = "too_large"
                return response
            found = {}

            def find_signature(signature_name, servable=None):
                if servable is None:
                    servable = self.manager.servable(name, version, label)
                found["servable"] = servable
                key = signature_name or DEFAULT_SIGNATURE
                signature = servable.signatures.get(key)
                if signature is None:
                    raise invalid_argument(f"Serving signature name: \"{key}\" not found in signature def")
                found["signature"] = signature
                if verb != "predict":
                    raise self._unsupported(verb, signature)
                return signature

            try:
                self._parsing += 1
                try:
                    parsed = None
                    if self._parsing > 1:  # alone, a body parses sooner on a thread (no hop)
                        parsed = await self._parse_dense_in_process(body, name, version, label, find_signature)
                    if parsed is None:
                        parsed = await self._off_loop(len(body), parse_predict_request, body, find_signature)
                finally:
                    self._parsing -= 1
                signature, inputs, row_format = parsed
            finally:
                model_label = found["servable"].name if "servable" in found else ""
                signature_label = found["signature"].name if "signature" in found else ""
            servable = found["servable"]
            outputs = await self.predictor.predict(servable, signature, inputs, deadline)
            size = sum(array.size for array in outputs.values())
            return _json_response(await self._off_loop(size, predict_response_body, outputs, row_format))
        except StatusError as error:
            outcome = error.outcome
            return error_response(error)
        except Exception:
            outcome = "internal"
            raise
        finally:
            self.metrics.observe_request(model_label or "unknown", signature_label or "unknown", "rest",
                                         outcome, time.perf_counter() - started)

    async def _off_loop(self, size, function, *args):
        """`function(*args)`, on a thread when `size` (bytes or numbers) makes it slow.

        A 1 MB JSON body takes milliseconds to parse even on the fast path; on the event loop that
        would stall every other request (status, metrics, gRPC) behind it.
        """
        if size < _INLINE_BELOW:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self._threads, function, *args)

    async def _parse_dense_in_process(self, body, name, version, label, find_signature):
        """(signature, inputs, row_format) of a large body of dense numbers, parsed in a worker
        process; None if it is small or huge, not dense, or its model is unknown (the caller's
        general path then answers exactly as TF Serving would). `_predict` calls it only while
        another body is being parsed: alone, a body is parsed sooner on a thread.

        Parsing holds the GIL (~2.5 ms for 1 MB): in the server's threads it would hold up the
        event loop and cap JSON at one core. See `imgclf.serving.json_workers`.
        """
        if self._workers is None or not _PROCESS_FROM <= len(body) <= json_workers.LARGEST_BODY:
            return None
        try:
            servable = self.manager.servable(name, version, label)
        except StatusError:
            return None
        signatures = {key: input_dtypes(signature) for key, signature in servable.signatures.items()}
        try:
            dense = await self._workers.parse(body, signatures)
        except concurrent.futures.process.BrokenProcessPool:
            log.error("a JSON parsing process died; starting new ones")
            return None
        except OSError as error:
            log.warning("JSON parsing processes unavailable (%s); parsing on a thread", error)
            return None
        if dense is None:
            return None
        signature_name, inputs, row_format = dense
        signature = find_signature(signature_name, servable)
        check_inputs(inputs, signature.inputs, signature.name)
        return signature, inputs, row_format

    @staticmethod
    def _unsupported(verb, signature):
        wanted = _METHOD_NAMES[verb]
        if signature.method_name != wanted:
            return invalid_argument(
                f"Expected {_SERVICE_NAMES[verb]} signature method_name to be {wanted}. Was: "
                f"{signature.method_name}. Signature \"{signature.name}\" serves :predict, with inputs "
                f"{describe_specs(signature.inputs)}")
        return StatusError(grpc.StatusCode.UNIMPLEMENTED,
                            f":{verb} is not implemented by imgclf.serving; use :predict")


def make_app(manager, predictor, metrics, timeout_ms, max_body_bytes, parse_processes=0):
    """The aiohttp application serving the REST API.

    `parse_processes` worker processes parse large JSON bodies of dense numbers (0: threads only).
    """
    api = RestApi(manager, predictor, metrics, timeout_ms, max_body_bytes, parse_processes)
    app = web.Application(client_max_size=max_body_bytes)

    async def close(app):
        api.close()

    app.on_cleanup.append(close)
    app.router.add_route("*", "/{path:.*}", api.handle)
    return app
