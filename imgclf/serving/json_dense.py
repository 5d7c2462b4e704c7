"""The fast path of JSON predict requests: dense numeric tensors read straight from the text.

A 224 x 224 x 3 image in TF Serving's row format is a 1 MB body of 150,528 numbers. Turning that
into Python lists (orjson) and then into an array costs ~30 ms; simdjson parses it in ~3 ms and
`Array.as_buffer` hands every number of a nested array over as one flat buffer, without a
Python object per number. That buffer says nothing about the nesting, though, and TF Serving
refuses ragged arrays and numbers at the wrong depth, so the nesting is checked on the text
itself: deleting everything but `[`, `]` and `,` from a body leaves its *skeleton*, and a tensor
is dense exactly when its part of the skeleton equals that of a full tensor of the shape read
along its first elements (`[[,],[,]]` for 2 x 2). The whole body's skeleton is compared at once
(about 1 ms for 1 MB, with `bytes.translate`), so strings that could hold those characters keep a
request off this path.

This path takes only requests it can answer exactly as the general path
(`imgclf.serving.json_request`) would, and returns None for everything else: other dtypes (string,
bool), empty or ragged arrays, numbers a dtype cannot hold without loss, NaN/Infinity (which
simdjson does not parse), duplicate or unknown keys, invalid JSON. The general path then parses the
body again and answers with TF Serving's exact result or message.

The module imports neither TensorFlow nor the rest of the server (dtypes are `DataType` enum
numbers), so that `parse_dense_request` can run in small worker processes
(`imgclf.serving.json_workers`): parsing holds Python's GIL, and in the server's own threads it
would stall the event loop whatever thread it ran on.

    >>> parse_dense_request(body, {"serving_default": {"input_tensor": DT_FLOAT}})
    ('', {'input_tensor': array(...)}, True)
"""

import functools
import math
import threading

import numpy as np
import simdjson

# `DataType` enum numbers (tensorflow/core/framework/types.proto), so as not to import TensorFlow.
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_INT64 = 1, 2, 3, 4, 5, 6, 9
DT_UINT32, DT_UINT64 = 22, 23
DEFAULT_SIGNATURE = "serving_default"

_MAX_RANK = 64
_SKELETON = b"[],"
_NOT_SKELETON = bytes(sorted(set(range(256)) - set(_SKELETON)))
_TOP_LEVEL_KEYS = {"signature_name", "instances", "inputs"}

#: DataType -> (`as_buffer` type, numpy type of that buffer, largest magnitude taken as it is).
#: A float tensor takes integers only below 2**digits (TF Serving refuses larger JSON integers as
#: lossy); the buffer cannot tell `16777216` from `16777216.0`, so such numbers go to the general
#: path, which can.
_BUFFERS = {
    DT_FLOAT: ("d", np.float64, float((1 << 24) - 1)),
    DT_DOUBLE: ("d", np.float64, float((1 << 53) - 1)),
    DT_INT8: ("i", np.int64, None),
    DT_INT16: ("i", np.int64, None),
    DT_INT32: ("i", np.int64, None),
    DT_INT64: ("i", np.int64, None),
    DT_UINT8: ("i", np.int64, None),
    DT_UINT32: ("i", np.int64, None),
    DT_UINT64: ("u", np.uint64, None),
}
#: DataType -> the numpy dtype of the tensor (as `tensor_spec.JSON_TYPES`, which a test checks).
NUMPY_DTYPES = {
    DT_FLOAT: np.dtype(np.float32), DT_DOUBLE: np.dtype(np.float64), DT_INT8: np.dtype(np.int8),
    DT_INT16: np.dtype(np.int16), DT_INT32: np.dtype(np.int32), DT_INT64: np.dtype(np.int64),
    DT_UINT8: np.dtype(np.uint8), DT_UINT32: np.dtype(np.uint32), DT_UINT64: np.dtype(np.uint64),
}


_parsers = threading.local()
#: Bodies up to this size are parsed by a parser each thread keeps (its buffers stay allocated).
KEEP_PARSER_UP_TO = 4 << 20


class _NotDense(Exception):
    """The request needs the general path."""


def parse_dense_request(body, signatures):
    """(signature_name, inputs, row_format) of a request of dense numeric tensors, or None.

    `signatures` maps each signature name of the servable to its inputs' dtypes
    (`{"serving_default": {"input_tensor": DT_FLOAT}}`); `signature_name` is as the request gave
    it ("" when absent). The inputs are not yet checked against the signature's shapes.
    """
    document = parse(body)
    if document is None:
        return None
    name = signature_name(document)
    dtypes = None if name is None else signatures.get(name or DEFAULT_SIGNATURE)
    if dtypes is None:
        return None
    dense = dense_predict_inputs(body, document, dtypes)
    return None if dense is None else (name, *dense)


def parse(body):
    """`body` parsed by simdjson (a lazy `simdjson.Object`), or None if simdjson refuses it.

    Each thread keeps its parser rather than allocating a new one's buffers (about five times the
    body's size) for every body; bodies over `KEEP_PARSER_UP_TO` get a parser of their own, so that
    one huge body does not leave a thread holding its buffers. A parser cannot parse again while
    proxies of its last document live; then this thread gets a new one.
    """
    if len(body) > KEEP_PARSER_UP_TO:
        parser = simdjson.Parser()
    else:
        parser = getattr(_parsers, "parser", None)
        if parser is None:
            parser = _parsers.parser = simdjson.Parser()
    try:
        document = parser.parse(body)
    except RuntimeError as error:
        if "re-use a parser" not in str(error):
            return None
        parser = _parsers.parser = simdjson.Parser()
        return parse(body)
    except Exception:  # invalid JSON, NaN, too deep, too large a number: the general path says why
        return None
    return document if isinstance(document, simdjson.Object) else None


def signature_name(document):
    """The request's `signature_name` ("" if absent), or None if it is not a plain string."""
    name = document.get("signature_name", "")
    if not isinstance(name, str) or _has_skeleton_chars(name):
        return None
    return name


def dense_predict_inputs(body, document, input_dtypes):
    """(inputs, row_format) of a request of dense numeric tensors, or None (see the module doc).

    `input_dtypes` maps the signature's input names to `DataType` numbers. The arrays are not yet
    checked against the signature's shapes (`check_inputs` does that for both paths).
    """
    if not input_dtypes or any(dtype not in _BUFFERS or _has_skeleton_chars(name)
                               for name, dtype in input_dtypes.items()):
        return None
    try:
        keys = _keys(document)
        if not set(keys) <= _TOP_LEVEL_KEYS or ("instances" in keys) == ("inputs" in keys):
            return None
        skeletons = []
        for key in keys:
            if key == "signature_name":
                skeletons.append(b"")  # a string: checked by `signature_name`
            elif key == "instances":
                inputs, skeleton = _rows(document[key], input_dtypes)
                skeletons.append(skeleton)
            else:
                inputs, skeleton = _columns(document[key], input_dtypes)
                skeletons.append(skeleton)
        if body.translate(None, _NOT_SKELETON) != b",".join(skeletons):
            return None
    except _NotDense:
        return None
    return inputs, "instances" in keys


def _has_skeleton_chars(text):
    return "[" in text or "]" in text or "," in text


def _keys(obj):
    keys = list(obj.keys())
    # Duplicate keys: which value wins differs between parsers; let the general path decide.
    if len(set(keys)) != len(keys) or any(_has_skeleton_chars(key) for key in keys):
        raise _NotDense
    return keys


def _rows(instances, input_dtypes):
    """Inputs of `"instances"` and its expected skeleton."""
    if not isinstance(instances, simdjson.Array) or len(instances) == 0:
        raise _NotDense
    if not isinstance(instances[0], simdjson.Object):
        return _single_input(instances, input_dtypes)
    names = set(input_dtypes)
    columns = {name: [] for name in input_dtypes}
    row_skeletons = []
    for row in instances:
        if not isinstance(row, simdjson.Object):
            raise _NotDense
        keys = _keys(row)
        if set(keys) != names:
            raise _NotDense
        parts = []
        for key in keys:
            array, skeleton = _tensor(row[key], input_dtypes[key])
            columns[key].append(array)
            parts.append(skeleton)
        row_skeletons.append(b",".join(parts))
    inputs = {}
    for name, arrays in columns.items():
        if any(array.shape != arrays[0].shape for array in arrays):
            raise _NotDense
        inputs[name] = np.stack(arrays)
    return inputs, b"[" + b",".join(row_skeletons) + b"]"


def _columns(value, input_dtypes):
    """Inputs of `"inputs"` and its expected skeleton."""
    if not isinstance(value, simdjson.Object):
        return _single_input(value, input_dtypes)
    keys = _keys(value)
    if set(keys) != set(input_dtypes):
        raise _NotDense
    inputs, parts = {}, []
    for key in keys:
        inputs[key], skeleton = _tensor(value[key], input_dtypes[key])
        parts.append(skeleton)
    return inputs, b",".join(parts)


def _single_input(value, input_dtypes):
    """Inputs and skeleton of a value given bare, which only a one-input signature takes."""
    if len(input_dtypes) != 1:
        raise _NotDense
    (name, dtype), = input_dtypes.items()
    array, skeleton = _tensor(value, dtype)
    return {name: array}, skeleton


def _tensor(value, dtype):
    """A number or nested JSON array of numbers as a `dtype` array, and its expected skeleton."""
    kind, buffer_dtype, largest = _BUFFERS[dtype]
    if not isinstance(value, simdjson.Array):
        return _scalar(value, dtype, buffer_dtype, largest), b""
    shape = []
    item = value
    while isinstance(item, simdjson.Array):
        size = len(item)
        if size == 0 or len(shape) >= _MAX_RANK:
            raise _NotDense
        shape.append(size)
        item = item[0]
    try:
        flat = np.frombuffer(value.as_buffer(of_type=kind), dtype=buffer_dtype)
    except (TypeError, ValueError):  # a string, bool, null or object inside; out of range
        raise _NotDense from None
    if flat.size != math.prod(shape):
        raise _NotDense
    return _checked(flat, dtype, buffer_dtype, largest).reshape(shape), _skeleton(tuple(shape))


def _scalar(value, dtype, buffer_dtype, largest):
    """A JSON number as a 0-d array (a row's value of a scalar input, `{"ids": 3}`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _NotDense
    if buffer_dtype is not np.float64 and not isinstance(value, int):
        raise _NotDense  # 1.5 for an integer input: the general path words the refusal
    try:
        flat = np.array([value], dtype=buffer_dtype)
    except OverflowError:
        raise _NotDense from None
    return _checked(flat, dtype, buffer_dtype, largest).reshape(())


def _checked(flat, dtype, buffer_dtype, largest):
    """`flat` as a `dtype` array, if every number fits it as the general path would take it."""
    dtype = NUMPY_DTYPES[dtype]
    if largest is not None:
        if flat.max() > largest or flat.min() < -largest:
            raise _NotDense
    elif buffer_dtype is np.int64 and dtype != np.int64:
        limits = np.iinfo(dtype)
        if flat.min() < limits.min or flat.max() > limits.max:
            raise _NotDense
    return flat.astype(dtype)


@functools.lru_cache(maxsize=64)
def _skeleton(shape):
    """`[[,],[,]]` for (2, 2): what is left of a dense tensor's text without its numbers."""
    if not shape:
        return b""
    return b"[" + b",".join([_skeleton(shape[1:])] * shape[0]) + b"]"
