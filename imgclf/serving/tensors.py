"""Tensors in and out of the server: TF Serving's JSON rules and `TensorProto`s, to and from numpy.

The JSON rules are those of TF Serving's `util/json_tensor.cc` (its error messages too):

* a predict request is an object with an optional string `"signature_name"` and exactly one of
  `"instances"` (row format: a non-empty list with one entry per example, stacked into
  `[len(instances), ...]`) or `"inputs"` (columnar format: the tensors as they are);
* binary strings are `{"b64": "<standard base64>"}`; `NaN`, `Infinity` and `-Infinity` are numbers;
* a row request is answered with `{"predictions": ...}`, a columnar one with `{"outputs": ...}`;
  string outputs whose name ends in `_bytes` are written as `{"b64": ...}`.

    >>> spec = TensorSpec("input_tensor", types_pb2.DT_FLOAT, (-1, -1, -1, 3))
    >>> request = loads(b'{"instances": [[[[0, 0, 0]]]]}')
    >>> inputs, row_format = predict_request_inputs(request, {"input_tensor": spec}, "serving_default")
    >>> inputs["input_tensor"].shape
    (1, 1, 1, 3)

Floats are written shortest-round-trip for their own precision (a float32 `0.1` is `0.1`).
"""

import base64
import binascii
import json
import math
from typing import NamedTuple, Optional

import numpy as np
import orjson
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from imgclf.serving.status import ServingError, invalid_argument

import grpc

BYTES_SUFFIX = "_bytes"
_MAX_RANK = 64

#: DataType -> (numpy dtype, name TF prints for it), for the types JSON can carry.
_JSON_TYPES = {
    types_pb2.DT_FLOAT: (np.dtype(np.float32), "float"),
    types_pb2.DT_DOUBLE: (np.dtype(np.float64), "double"),
    types_pb2.DT_INT8: (np.dtype(np.int8), "int8"),
    types_pb2.DT_INT16: (np.dtype(np.int16), "int16"),
    types_pb2.DT_INT32: (np.dtype(np.int32), "int32"),
    types_pb2.DT_INT64: (np.dtype(np.int64), "int64"),
    types_pb2.DT_UINT8: (np.dtype(np.uint8), "uint8"),
    types_pb2.DT_UINT32: (np.dtype(np.uint32), "uint32"),
    types_pb2.DT_UINT64: (np.dtype(np.uint64), "uint64"),
    types_pb2.DT_BOOL: (np.dtype(np.bool_), "bool"),
    types_pb2.DT_STRING: (np.dtype(object), "string"),
}


class TensorSpec(NamedTuple):
    """One input or output of a signature: its alias, `DataType` enum and shape.

    `shape` is a tuple of dimensions (-1 for unknown) or None for an unknown rank.
    """

    name: str
    dtype: int
    shape: Optional[tuple]

    @classmethod
    def from_tensor_info(cls, name, info):
        shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
        return cls(name, info.dtype, shape)

    @property
    def dtype_name(self):
        return types_pb2.DataType.Name(self.dtype)

    def describe(self):
        """`input_tensor: DT_FLOAT [-1,-1,-1,3]`; an unknown rank prints as `[?]`."""
        return f"{self.name}: {self.dtype_name} {shape_string(self.shape)}"

    def accepts_shape(self, shape):
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(
            want == -1 or want == got for want, got in zip(self.shape, shape))


def shape_string(shape):
    return "[?]" if shape is None else "[" + ",".join(str(d) for d in shape) + "]"


def describe_specs(specs):
    """`{input_tensor: DT_FLOAT [-1,-1,-1,3]}` for a dict name -> TensorSpec."""
    return "{" + ", ".join(specs[name].describe() for name in sorted(specs)) + "}"


def describe_arrays(arrays):
    """`{input_tensor: DT_FLOAT [1,28,28,3]}` for a dict name -> numpy array."""
    return "{" + ", ".join(
        f"{name}: {numpy_dtype_name(arrays[name].dtype)} {shape_string(arrays[name].shape)}"
        for name in sorted(arrays)) + "}"


def numpy_dtype_name(dtype):
    if dtype == object:
        return "DT_STRING"
    try:
        return types_pb2.DataType.Name(tf.dtypes.as_dtype(dtype).as_datatype_enum)
    except TypeError:
        return str(dtype)


# ---------------------------------------------------------------------------------------------
# JSON text


def loads(body):
    """Parse a request body; `NaN`/`Infinity` are accepted. Raises INVALID_ARGUMENT."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses NaN and Infinity, which TF Serving accepts; the standard parser takes them.
    try:
        text = body.decode("utf-8") if isinstance(body, (bytes, bytearray, memoryview)) else body
        if isinstance(text, memoryview):
            text = bytes(text).decode("utf-8")
        return json.loads(text)
    except UnicodeDecodeError as error:
        raise invalid_argument(f"JSON Parse error: Invalid encoding in string. at offset: {error.start}")
    except json.JSONDecodeError as error:
        raise invalid_argument(f"JSON Parse error: {error.msg} at offset: {error.pos}")
    except RecursionError:
        raise invalid_argument("JSON Parse error: the document nests too deeply")


def dumps(value):
    """Serialize a response (numpy arrays inside are fine) to JSON bytes."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def _json_text(value):
    """A JSON value as text, for error messages (TF Serving prints the offending value)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    try:
        text = json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _json_type(value):
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


# ---------------------------------------------------------------------------------------------
# JSON values -> numpy


def _is_b64_object(value):
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def decode_b64(text):
    """Standard-alphabet base64 (padding optional), as TF Serving's `absl::Base64Unescape`.

    The URL-safe alphabet (`-`, `_`) is refused, as TF Serving refuses it.
    """
    missing = -len(text) % 4
    if missing == 3:
        raise invalid_argument("Unable to base64 decode")
    try:
        return binascii.a2b_base64(text + "=" * missing, strict_mode=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _type_error(value, dtype):
    return invalid_argument(f"JSON Value: {_json_text(value)} Type: {_json_type(value)} "
                            f"is not of expected type: {_JSON_TYPES[dtype][1]}")


def _lossy(value, target):
    return invalid_argument(f"Cannot convert JSON value: {_json_text(value)} to {target} "
                            "without loss of precision.")


def _scalar(value, dtype):
    """One JSON leaf converted for `dtype`, or INVALID_ARGUMENT as TF Serving words it."""
    if dtype == types_pb2.DT_STRING:
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, dict):
            if not _is_b64_object(value):
                raise invalid_argument(f"JSON Value: {_json_text(value)} not formatted correctly "
                                       "for base64 data")
            return decode_b64(value["b64"])
        raise _type_error(value, dtype)
    if dtype == types_pb2.DT_BOOL:
        if isinstance(value, bool):
            return value
        raise _type_error(value, dtype)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(value, dtype)
    np_dtype = _JSON_TYPES[dtype][0]
    if np_dtype.kind == "f":
        if not math.isfinite(value):
            return value
        digits = np.finfo(np_dtype).nmant + 1
        if isinstance(value, int):
            if abs(value) > (1 << digits) - 1:
                raise _lossy(value, _JSON_TYPES[dtype][1])
        elif abs(value) > float(np.finfo(np_dtype).max):
            raise _lossy(value, _JSON_TYPES[dtype][1])
        return value
    info = np.iinfo(np_dtype)
    if isinstance(value, float) or not info.min <= value <= info.max:
        raise _type_error(value, dtype)
    return value


def _dense_shape(value):
    """Shape from the first element at every level (as TF Serving's GetDenseTensorShape)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if len(shape) > _MAX_RANK:
            raise invalid_argument(f"JSON value nests lists more than {_MAX_RANK} deep")
        if not value:
            break
        value = value[0]
    return shape


def _walk(value, dtype):
    """A JSON value -> numpy array, leaf by leaf, with TF Serving's checks and messages."""
    shape = _dense_shape(value)
    rank = len(shape)
    flat = []

    def fill(item, level):
        if not isinstance(item, list):
            if level != rank:
                raise invalid_argument(f"JSON Value: {_json_text(item)} found at incorrect level: "
                                       f"{level + 1} in the JSON DOM. Expected at level: {rank}")
            if isinstance(item, dict) and dtype != types_pb2.DT_STRING:
                raise _type_error(item, dtype)
            flat.append(_scalar(item, dtype))
            return
        if level >= rank:
            raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(item) != shape[level]:
            raise invalid_argument(f"Encountered list at unexpected size: {len(item)} at level: "
                                   f"{level} expected size: {shape[level]}")
        for element in item:
            fill(element, level + 1)

    fill(value, 0)
    np_dtype = _JSON_TYPES[dtype][0]
    if np_dtype == object:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    return np.array(flat, dtype=np_dtype).reshape(shape)


def _fast_numeric(value, dtype):
    """`value` as a numpy array of `dtype` when numpy can do it losslessly, else None.

    numpy reads a nested list of numbers about 50 times faster than `_walk`; anything unusual
    (ragged lists, strings, null, out-of-range numbers) falls back to `_walk` for TF Serving's
    checks and messages.
    """
    try:
        array = np.array(value)
    except (ValueError, OverflowError, TypeError, RecursionError):
        return None
    np_dtype = _JSON_TYPES[dtype][0]
    kind = array.dtype.kind
    if np_dtype.kind == "b":
        return array if kind == "b" else None
    if np_dtype.kind == "f":
        if kind in "iu":
            limit = 1 << (np.finfo(np_dtype).nmant + 1)
            if array.size and (array.max() >= limit or array.min() <= -limit):
                return None
        elif kind == "f":
            if np_dtype.itemsize < 8 and array.size:
                with np.errstate(invalid="ignore"):
                    finite = np.abs(array[np.isfinite(array)])
                if finite.size and finite.max() > np.finfo(np_dtype).max:
                    return None
        else:
            return None
        return array.astype(np_dtype, copy=False)
    if kind not in "iu":
        return None
    if array.size:
        info = np.iinfo(np_dtype)
        if array.min() < info.min or array.max() > info.max:
            return None
    return array.astype(np_dtype, copy=False)


def json_to_array(value, spec, has_booleans=True):
    """A JSON value -> numpy array for input `spec` (no batch dimension added).

    `has_booleans=False` promises the request holds no `true`/`false`, which numpy would turn into
    numbers silently; it lets numeric tensors take the fast path.
    """
    if spec.dtype not in _JSON_TYPES:
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                           f"Conversion of JSON Value: {_json_text(value)} to type: "
                           f"{tf.dtypes.as_dtype(spec.dtype).name}")
    if spec.dtype != types_pb2.DT_STRING and (not has_booleans or spec.dtype == types_pb2.DT_BOOL):
        array = _fast_numeric(value, spec.dtype)
        if array is not None:
            return array
    return _walk(value, spec.dtype)


def _rows_to_array(rows, spec, has_booleans):
    """The values of one input over all `instances` rows, stacked to `[len(rows), ...]`."""
    if spec.dtype != types_pb2.DT_STRING and spec.dtype in _JSON_TYPES and (
            not has_booleans or spec.dtype == types_pb2.DT_BOOL):
        array = _fast_numeric(rows, spec.dtype)
        if array is not None and array.ndim >= 1 and array.shape[0] == len(rows):
            return array
    # Slow path, row by row, for TF Serving's per-element messages.
    arrays = []
    for index, row in enumerate(rows):
        try:
            arrays.append(json_to_array(row, spec, has_booleans))
        except ServingError as error:
            raise invalid_argument(f"Failed to process element: {index} of 'instances' list. "
                                   f"Error: {_status_text(error)}") from None
        if arrays[-1].size != arrays[0].size:
            raise invalid_argument(f"Expecting tensor size: {arrays[0].size} but got: {arrays[-1].size}")
        if arrays[-1].shape != arrays[0].shape:
            raise invalid_argument(f"Expecting shape {shape_string(arrays[0].shape)} but got: "
                                   f"{shape_string(arrays[-1].shape)}")
    if spec.dtype == types_pb2.DT_STRING:
        flat = np.empty(sum(array.size for array in arrays), dtype=object)
        flat[:] = [item for array in arrays for item in array.ravel().tolist()]
        return flat.reshape((len(arrays),) + arrays[0].shape)
    return np.stack(arrays)


def _status_text(error):
    return f"{error.code.name}: {error.message}"


def request_signature_name(request):
    """The `signature_name` of a parsed JSON request ("" if absent); checks the request is an object."""
    if not isinstance(request, dict):
        raise invalid_argument(f"JSON Value: {_json_text(request)} Is not object")
    name = request.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(f"JSON Value: {_json_text(request)} not formatted correctly. "
                               "'signature_name' key must be a string value.")
    return name


def predict_request_inputs(request, input_specs, signature_name, has_booleans=True):
    """The input arrays of a parsed JSON predict request, and whether it was in row format.

    Checks the request as TF Serving does, then each input's dtype and shape against the
    signature; every refusal is INVALID_ARGUMENT naming the problem, the signature's inputs and,
    where it got that far, what arrived. `has_booleans=False` promises the request holds no JSON
    `true`/`false` (a REST handler knows it from `b"true" not in body and b"false" not in body`).
    """
    instances = request.get("instances")
    columns = request.get("inputs")
    try:
        if "instances" in request and "inputs" in request:
            raise invalid_argument(f"JSON Value: {_json_text(request)} Not formatted correctly "
                                   "expecting only one of 'inputs' or 'instances' keys to exist ")
        if "instances" in request:
            if not isinstance(instances, list):
                raise invalid_argument(f"JSON Value: {_json_text(request)} Excepting 'instances' "
                                       "to be an list/array")
            if not instances:
                raise invalid_argument(f"JSON Value: {_json_text(request)} No values in 'instances' array")
            inputs = _row_inputs(instances, input_specs, has_booleans)
            row_format = True
        elif "inputs" in request:
            inputs = _columnar_inputs(columns, input_specs, has_booleans)
            row_format = False
        else:
            raise invalid_argument("Missing 'inputs' or 'instances' key")
    except ServingError as error:
        message = error.message.rstrip()
        message += "" if message.endswith(".") else "."
        raise ServingError(error.code, f"{message} Signature \"{signature_name}\" expects inputs "
                                       f"{describe_specs(input_specs)}") from None
    check_inputs(inputs, input_specs, signature_name)
    return inputs, row_format


def _row_inputs(instances, input_specs, has_booleans):
    first = instances[0]
    as_objects = isinstance(first, dict) and not _is_b64_object(first)
    if not as_objects and len(input_specs) > 1:
        raise invalid_argument("instances is a plain list, but expecting list of objects as multiple "
                               "input tensors required as per tensorinfo_map")
    if not as_objects:
        for index, row in enumerate(instances):
            if isinstance(row, dict) and not _is_b64_object(row):
                raise invalid_argument(f"Expecting value/list but got object at item {index} of input list")
        (name, spec), = input_specs.items()
        return {name: _rows_to_array(instances, spec, has_booleans)}
    names = set(input_specs)
    columns = {name: [] for name in input_specs}
    for index, row in enumerate(instances):
        if not isinstance(row, dict) or _is_b64_object(row):
            raise invalid_argument(f"Expecting object but got list at item {index} of input list")
        unknown = sorted(set(row) - names)
        if unknown:
            raise invalid_argument(f"Failed to process element: {index} key: {unknown[0]} of 'instances' "
                                   f"list. Error: INVALID_ARGUMENT: JSON object: does not have named "
                                   f"input: {unknown[0]}")
        if set(row) != names:
            raise invalid_argument(f"Failed to process element: {index} of 'instances' list. JSON "
                                   f"object: {_json_text(row)} keys must be equal to: "
                                   f"{','.join(sorted(names))}")
        for name in input_specs:
            columns[name].append(row[name])
    return {name: _rows_to_array(columns[name], input_specs[name], has_booleans) for name in input_specs}


def _columnar_inputs(value, input_specs, has_booleans):
    if not isinstance(value, dict) or _is_b64_object(value):
        if len(input_specs) > 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as multiple "
                                   "input tensors required as per tensorinfo_map")
        (name, spec), = input_specs.items()
        return {name: json_to_array(value, spec, has_booleans)}
    inputs = {}
    for name, spec in input_specs.items():
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        inputs[name] = json_to_array(value[name], spec, has_booleans)
    return inputs


def check_inputs(inputs, input_specs, signature_name):
    """Refuse inputs whose names, dtypes or shapes the signature cannot take (INVALID_ARGUMENT)."""
    sent, wanted = set(inputs), set(input_specs)
    if sent != wanted:
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(wanted)} "
            f"len({{{', '.join(sorted(sent))}}}) != len({{{', '.join(sorted(wanted))}}}). "
            f"Sent extra: {{{', '.join(sorted(sent - wanted))}}}. "
            f"Missing but required: {{{', '.join(sorted(wanted - sent))}}}. "
            f"Signature \"{signature_name}\" expects inputs {describe_specs(input_specs)}")
    for name, spec in input_specs.items():
        array = inputs[name]
        want = _JSON_TYPES.get(spec.dtype, (None,))[0]
        if want is not None and array.dtype != want and not (want == object and array.dtype.kind in "SO"):
            raise invalid_argument(
                f"Input \"{name}\" has type {numpy_dtype_name(array.dtype)} but signature "
                f"\"{signature_name}\" expects {spec.dtype_name}. Expected inputs "
                f"{describe_specs(input_specs)}; received {describe_arrays(inputs)}")
        if not spec.accepts_shape(array.shape):
            raise invalid_argument(
                f"Input \"{name}\" has shape {shape_string(array.shape)} but signature "
                f"\"{signature_name}\" expects {shape_string(spec.shape)}. Expected inputs "
                f"{describe_specs(input_specs)}; received {describe_arrays(inputs)}")


# ---------------------------------------------------------------------------------------------
# numpy -> JSON


def _strings_to_json(array, as_b64):
    def convert(item):
        if isinstance(item, list):
            return [convert(i) for i in item]
        if not as_b64:
            try:
                return item.decode("utf-8")
            except UnicodeDecodeError:
                pass  # not text: the only lossless way to write it is base64
        return {"b64": base64.b64encode(item).decode("ascii")}

    return convert(array.tolist())


class _RawJson:
    """Pre-serialized JSON for non-finite floats, spliced in by `predict_response_body`."""


def _float_text(value):
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _nonfinite_json(array):
    """JSON text for a float array holding NaN or Infinity, which orjson would write as null."""
    if array.ndim == 0:
        return _float_text(array[()])
    return "[" + ",".join(_nonfinite_json(row) for row in array) + "]"


def _output_value(name, array, raw):
    """What to hand orjson for one output: the array, strings converted, or a placeholder."""
    if array.dtype == object or array.dtype.kind == "S":
        return _strings_to_json(array, name.endswith(BYTES_SUFFIX))
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        key = f"__imgclf_raw_{len(raw)}__"
        raw[key] = _nonfinite_json(array)
        return key
    return np.ascontiguousarray(array)


def predict_response_body(outputs, row_format):
    """JSON bytes answering a predict request: `{"predictions": ...}` or `{"outputs": ...}`."""
    raw = {}
    names = sorted(outputs)
    if row_format:
        batch = None
        for name in names:
            array = outputs[name]
            if array.ndim == 0:
                raise invalid_argument(f"Tensor name: {name} has no shape information ")
            if batch is None:
                batch = array.shape[0]
            elif array.shape[0] != batch:
                raise invalid_argument(f"Tensor name: {name} has inconsistent batch size: "
                                       f"{array.shape[0]} expecting: {batch}")
        if len(names) == 1:
            body = {"predictions": _output_value(names[0], outputs[names[0]], raw)}
        else:
            body = {"predictions": [
                {name: _output_value(name, outputs[name][index], raw) for name in names}
                for index in range(batch)]}
    elif len(names) == 1:
        body = {"outputs": _output_value(names[0], outputs[names[0]], raw)}
    else:
        body = {"outputs": {name: _output_value(name, outputs[name], raw) for name in names}}
    text = dumps(body)
    for key, value in raw.items():
        text = text.replace(f'"{key}"'.encode(), value.encode(), 1)
    return text


# ---------------------------------------------------------------------------------------------
# TensorProto <-> numpy


def tensor_proto_to_array(proto, name="input"):
    """A request `TensorProto` as a numpy array (strings as an object array of bytes)."""
    try:
        return tf.make_ndarray(proto)
    except (TypeError, ValueError) as error:
        raise invalid_argument(f"Input \"{name}\" is not a valid TensorProto: {error}") from None


#: Numeric dtypes written to the typed repeated field TF Serving fills (clients read e.g.
#: `outputs["scores"].float_val` directly, so `tensor_content` would break them).
_VALUE_FIELDS = {
    np.dtype(np.float32): (types_pb2.DT_FLOAT, "float_val"),
    np.dtype(np.float64): (types_pb2.DT_DOUBLE, "double_val"),
    np.dtype(np.int32): (types_pb2.DT_INT32, "int_val"),
    np.dtype(np.int64): (types_pb2.DT_INT64, "int64_val"),
    np.dtype(np.bool_): (types_pb2.DT_BOOL, "bool_val"),
}


def array_to_tensor_proto(array):
    """A numpy array as a `TensorProto` in the form TF Serving answers with."""
    array = np.asarray(array)
    if array.dtype == object or array.dtype.kind == "S":
        proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
        proto.string_val.extend(array.ravel().tolist())
    elif array.dtype in _VALUE_FIELDS:
        dtype, field = _VALUE_FIELDS[array.dtype]
        proto = tensor_pb2.TensorProto(dtype=dtype)
        getattr(proto, field).extend(array.ravel().tolist())
    else:
        return tf.make_tensor_proto(array)
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    return proto
