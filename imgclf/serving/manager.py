"""The servable manager: which model versions exist, loading them, warming them up, unloading them.

A model's base path holds numeric version folders (`00000123` is version 123). `ModelManager.poll`
scans them, loads and warms up the versions the model's version policy asks for, makes them
AVAILABLE, and only then unloads versions no longer wanted, so a request never finds a gap.
Folders that are not numbers, or are not complete SavedModels, are logged by name and left out.

Faults, and what the manager does (nothing that serves is lost):

* a version that fails to load shows in the status as END with the error; the versions already
  serving keep serving; it is tried again when its folder changes or 30 s later;
* a version folder deleted while it serves: it is unloaded once the version that takes its place
  is AVAILABLE; a base path that is missing, unreadable or holds no version at all keeps every
  loaded version serving (a deployment script replacing folders), with one warning;
* a version folder rewritten in place: versions are immutable, as in TF Serving, so the copy
  loaded keeps serving and a warning says so once; publish a change as a new version number;
* a version folder that is a symlink resolving outside its base path is ignored with a warning;
* `reload_config` (gRPC `HandleReloadConfigRequest`) adds, changes and removes models at run time,
  with base paths inside the allowed roots only.

    >>> manager = ModelManager(config.model_server_config(options))
    >>> manager.poll()                          # load what is there; call again to pick up changes
    >>> servable = manager.servable("lenet")    # latest AVAILABLE version; raises StatusError
    >>> servable.run("serving_default", {"input_tensor": images})["output_0"]
"""

import gc
import logging
import os
import re
import threading
import time

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, prediction_log_pb2
from tensorflow_serving.apis import status_pb2
from tensorflow.core.protobuf import error_codes_pb2

from imgclf.images import REFUSAL_PREFIX
from imgclf.serving.tensor_proto import tensor_proto_to_array
from imgclf.serving.tensor_spec import TensorSpec, check_inputs, describe_arrays, describe_specs
from imgclf.serving.status import StatusError, invalid_argument, not_found

import grpc

log = logging.getLogger("imgclf.serving")

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000
RETRY_FAILED_SECONDS = 30.0

State = get_model_status_pb2.ModelVersionStatus.State


class Signature:
    """One SignatureDef of a loaded version and the function that computes it."""

    def __init__(self, name, signature_def, function):
        self.name = name
        self.signature_def = signature_def
        self.method_name = signature_def.method_name
        self.inputs = {k: TensorSpec.from_tensor_info(k, v) for k, v in signature_def.inputs.items()}
        self.outputs = {k: TensorSpec.from_tensor_info(k, v) for k, v in signature_def.outputs.items()}
        self.function = function

    @property
    def batchable(self):
        """Whether requests can be merged along dim 0 (see `imgclf.serving.batching`)."""
        return bool(self.inputs) and all(
            spec.shape is None or (spec.shape and spec.shape[0] == -1) for spec in self.inputs.values()
        ) and all(spec.shape is not None and spec.shape and spec.shape[0] == -1
                  for spec in self.outputs.values())


class Servable:
    """One loaded version of a model: its signatures and a thread-safe `run`."""

    def __init__(self, name, version, path, session_options=None):
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = read_signature_defs(path)
        self._loaded = tf.saved_model.load(path)
        self.signatures = {}
        for key, signature_def in self.signature_defs.items():
            function = self._loaded.signatures.get(key)
            if function is not None:
                self.signatures[key] = Signature(key, signature_def, function)

    def signature(self, name):
        """The `Signature` called `name` ("" means serving_default); FAILED_PRECONDITION if unknown."""
        key = name or DEFAULT_SIGNATURE
        try:
            return self.signatures[key]
        except KeyError:
            raise StatusError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"Serving signature key \"{key}\" not found.") from None

    def run(self, signature, inputs):
        """Outputs (name -> numpy array) of `signature` for `inputs` (name -> numpy array).

        Blocking; call it from a worker thread. A TensorFlow `InvalidArgumentError` becomes
        INVALID_ARGUMENT with the message cleaned of graph details.
        """
        try:
            feeds = {name: tf.convert_to_tensor(array, dtype=tf.dtypes.as_dtype(signature.inputs[name].dtype))
                     for name, array in inputs.items()}
            results = signature.function(**feeds)
        except tf.errors.InvalidArgumentError as error:
            raise invalid_argument(clean_tf_message(error.message)) from None
        except (tf.errors.OutOfRangeError, tf.errors.FailedPreconditionError) as error:
            raise invalid_argument(clean_tf_message(error.message)) from None
        except (TypeError, ValueError) as error:
            raise invalid_argument(
                f"{error}. Signature \"{signature.name}\" expects inputs "
                f"{describe_specs(signature.inputs)}; received {describe_arrays(inputs)}"
            ) from None
        except tf.errors.OpError as error:
            raise StatusError(grpc.StatusCode.INTERNAL, clean_tf_message(error.message)) from None
        return {name: value.numpy() for name, value in results.items()}

    def warm_up(self):
        """Replay `assets.extra/tf_serving_warmup_requests` (at most 1000 predict records).

        Returns the number of requests replayed; raises ValueError naming the file and record if
        one fails, which fails the load as it does in TF Serving.
        """
        path = os.path.join(self.path, WARMUP_FILE)
        if not os.path.exists(path):
            return 0
        count = 0
        for index, record in enumerate(tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS)):
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if entry.WhichOneof("log_type") != "predict_log":
                raise ValueError(f"{path} record {index}: only predict_log warm-up records are "
                                 f"supported; received {entry.WhichOneof('log_type')}")
            request = entry.predict_log.request
            try:
                signature = self.signature(request.model_spec.signature_name)
                inputs = {name: tensor_proto_to_array(proto, name)
                          for name, proto in request.inputs.items()}
                check_inputs(inputs, signature.inputs, signature.name)
                self.run(signature, inputs)
            except StatusError as error:
                raise ValueError(f"{path} record {index}: {error.message}") from None
            count += 1
        return count

    def metadata_json(self):
        """`SignatureDefMap` of this version as TF Serving's JSON (proto field names)."""
        return json_format.MessageToDict(signature_def_map(self.signature_defs),
                                         preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)


def read_signature_defs(path):
    """The SignatureDefs of the `serve` MetaGraph in `path/saved_model.pb`, as protos."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{path}/saved_model.pb has no MetaGraph tagged 'serve'")


def signature_def_map(signature_defs):
    """The SignatureDefs as the `SignatureDefMap` GetModelMetadata packs in an Any."""
    result = get_model_metadata_pb2.SignatureDefMap()
    for key, value in signature_defs.items():
        result.signature_def[key].CopyFrom(value)
    return result


_TF_NOISE = [
    re.compile(r"\s*\[\[\{\{.*?\}\}\]\]", re.S),
    re.compile(r"\s*\[Op:[^\]]*\]"),
    re.compile(r"\s*\(defined at [^)]*\)"),
    re.compile(re.escape(REFUSAL_PREFIX)),  # decode_image's refusals
]
_ASSERTION = re.compile(r"assertion failed: \[(.*)\]", re.S)
_TF_NOISE_LINES = re.compile(
    r"^(Graph execution error:|Detected at node |<stack traces unavailable>|File \"|\s*$)")


def clean_tf_message(message):
    """A TensorFlow error message without graph node names, stacks and op names.

        >>> clean_tf_message("Graph execution error:\\n\\nDetected at node x defined at (most recent "
        ...                  "call last):\\n<stack traces unavailable>\\nInvalid PNG data, size 60\\n"
        ...                  "\\t [[{{node DecodeImage}}]] [Op:__inference_signature_wrapper_824]")
        'Invalid PNG data, size 60'
        >>> clean_tf_message("StringToNumberOp could not correctly convert string: assertion "
        ...                  "failed: [image declares] [49000000] [pixels, more than the limit of] "
        ...                  "[33554432]")
        'image declares 49000000 pixels, more than the limit of 33554432'
    """
    for pattern in _TF_NOISE:
        message = pattern.sub("", message)
    lines = [line.strip() for line in message.splitlines()]
    lines = [line for line in lines if not _TF_NOISE_LINES.match(line)]
    message = " ".join(lines)
    # A graph's Assert (imgclf's image checks) reads "assertion failed: [a] [b]": say "a b".
    asserted = _ASSERTION.fullmatch(message)
    if asserted:
        message = asserted.group(1).replace("] [", " ")
    return message or "TensorFlow failed to run the signature"


class _Failure:
    def __init__(self, stamp, when, message):
        self.stamp, self.when, self.message = stamp, when, message


class ManagedModel:
    """One model of the config: base path, version policy, labels, and its versions' states."""

    def __init__(self, model_config):
        self.name = model_config.name
        self.base_path = model_config.base_path
        self.configure(model_config)
        self.available = {}  # version -> Servable; replaced, never mutated, so readers need no lock
        self.states = {}  # version -> (State, status_pb2.StatusProto)
        self.failures = {}  # version -> _Failure
        self.loaded_stamps = {}  # version -> change stamp of its folder when it was loaded
        self.ignored = set()  # folder names already logged as ignored

    def configure(self, model_config):
        """Take the version policy and labels of `model_config` (same name and base path)."""
        self.policy = model_config.model_version_policy
        self.labels = dict(model_config.version_labels)

    def wanted(self, versions):
        """The versions the policy serves, among loadable `versions`."""
        choice = self.policy.WhichOneof("policy_choice")
        ordered = sorted(versions, reverse=True)
        if choice == "all":
            return set(ordered)
        if choice == "specific":
            return set(self.policy.specific.versions) & set(ordered)
        count = self.policy.latest.num_versions if choice == "latest" else 1
        return set(ordered[:max(count, 1)])


def _model_configs(model_server_config, allowed_roots=None):
    """The `ModelConfig`s of a `ModelServerConfig` by name; ValueError if one is bad.

    With `allowed_roots` (resolved folders), every base path must lie inside one of them.
    """
    if model_server_config.WhichOneof("config") != "model_config_list":
        raise ValueError("only model_config_list configs are supported")
    configs = {}
    for model_config in model_server_config.model_config_list.config:
        if not model_config.name or not model_config.base_path:
            raise ValueError(f"every model config needs a name and a base_path; received "
                             f"{json_format.MessageToDict(model_config)}")
        if not model_config.name.isprintable():
            raise ValueError(f"model name {model_config.name!r} has control characters")
        if model_config.model_platform not in ("", "tensorflow"):
            raise ValueError(f"model {model_config.name}: model_platform must be 'tensorflow'; "
                             f"received {model_config.model_platform!r}")
        if model_config.name in configs:
            raise ValueError(f"model {model_config.name} is configured twice")
        # Resolved for the check only: a base path that is a symlink is followed at every poll,
        # so re-pointing it (current -> release-42) deploys as it does in TF Serving.
        resolved = os.path.realpath(model_config.base_path)
        if allowed_roots is not None and not any(_inside(resolved, root) for root in allowed_roots):
            raise ValueError(f"model {model_config.name}: base_path {model_config.base_path} "
                             f"(resolved: {resolved}) is outside the allowed model roots "
                             f"{sorted(allowed_roots)} (--allowed_model_roots)")
        configs[model_config.name] = model_config
    return configs


def _inside(path, root):
    """Whether resolved `path` is `root` or lies below it."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class ModelManager:
    """Loads, serves and unloads the versions of every model in a `ModelServerConfig`.

    `allowed_roots`: folders that base paths given to `reload_config` must lie in (resolved);
    by default the folders holding the start-up config's base paths.
    """

    def __init__(self, model_server_config, allowed_roots=None):
        configs = _model_configs(model_server_config)
        self.models = {name: ManagedModel(config) for name, config in configs.items()}
        if allowed_roots is None:
            allowed_roots = {os.path.dirname(os.path.realpath(config.base_path))
                             for config in configs.values()}
        self.allowed_roots = {os.path.realpath(root) for root in allowed_roots}
        self._poll_lock = threading.Lock()
        self.on_unload = None  # called with each Servable taken out of service

    def reload_config(self, model_server_config):
        """Serve the models of `model_server_config` from now on, as TF Serving's ReloadConfig.

        New models are loaded, models whose base path changed are loaded anew, models left out are
        unloaded; a model kept as it was keeps serving (its policy and labels are updated). Blocks
        until the new models have been polled; returns the names of new models with no AVAILABLE
        version (they stay configured, and later polls keep trying). ValueError, before anything
        changes, if the config is invalid or a base path lies outside `allowed_roots`.
        """
        configs = _model_configs(model_server_config, self.allowed_roots)
        with self._poll_lock:
            before = self._loaded_servables()
            models, added, removed = {}, [], []
            for name, model_config in configs.items():
                model = self.models.get(name)
                if model is None or model.base_path != model_config.base_path:
                    if model is not None:
                        removed.append(model)
                    model = ManagedModel(model_config)
                    added.append(model)
                else:
                    model.configure(model_config)
                models[name] = model
            removed += [model for name, model in self.models.items() if name not in configs]
            self.models = models  # requests see the old or the new dict, never half of one
            for model in removed:
                log.info("model %s: removed from the config; unloading versions %s", model.name,
                         sorted(model.available))
                for version in sorted(model.available):
                    self._unload(model, version)
            for model in models.values():
                self._poll_model(model)
            if self._loaded_servables() != before:
                freeze_long_lived_objects()
        return [model.name for model in added if not model.available]

    # -- requests ---------------------------------------------------------------------------

    def _model(self, name, request_text):
        if not name:
            raise invalid_argument("Missing ModelSpec name")
        model = self.models.get(name)
        if model is None:
            raise not_found(f"Servable not found for request: {request_text}")
        return model

    def resolve_label(self, name, label):
        model = self._model(name, f"Latest({name})")
        if label not in model.labels:
            raise invalid_argument(f"Unrecognized servable version label: {label}")
        return model.labels[label]

    def servable(self, name, version=None, label=None):
        """The Servable serving `name` at `version` or `label` (else the latest AVAILABLE one)."""
        if label:
            version = self.resolve_label(name, label)
        request_text = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        model = self._model(name, request_text)
        available = model.available
        if version is None:
            if available:
                return available[max(available)]
        elif version in available:
            return available[version]
        raise not_found(f"Servable not found for request: {request_text}")

    def status(self, name, version=None, label=None):
        """`GetModelStatusResponse` of `name`: every version it knows, newest first."""
        if not name:
            raise invalid_argument("Missing model name in request.")
        if label:
            version = self.resolve_label(name, label)
        model = self.models.get(name)
        states = dict(model.states) if model else {}
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {name}")
            states = {version: states[version]}
        if not states:
            raise not_found(f"Could not find any versions of model {name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for number in sorted(states, reverse=True):
            state, status = states[number]
            entry = response.model_version_status.add(version=number, state=state)
            entry.status.CopyFrom(status)
        return response

    # -- the file system ----------------------------------------------------------------------

    def poll(self):
        """Scan every base path once: load and warm up wanted versions, then unload the rest."""
        with self._poll_lock:
            before = self._loaded_servables()
            for model in self.models.values():
                self._poll_model(model)
            if self._loaded_servables() != before:
                freeze_long_lived_objects()

    def _loaded_servables(self):
        return {id(s) for model in self.models.values() for s in model.available.values()}

    def _poll_model(self, model):
        candidates = self._scan(model)
        if not candidates and model.available:
            if "empty" not in model.ignored:
                log.warning("model %s: no version folder found under %s; keeping versions %s in "
                            "service until one is back", model.name, model.base_path,
                            sorted(model.available))
                model.ignored.add("empty")
            return
        model.ignored.discard("empty")
        self._check_immutable(model, candidates)
        now = time.monotonic()
        loadable = {}
        for version, (path, stamp) in candidates.items():
            failure = model.failures.get(version)
            if failure and failure.stamp == stamp and now - failure.when < RETRY_FAILED_SECONDS:
                continue
            loadable[version] = path
        # A version that failed stays out of the choice, so an older good one keeps serving; a
        # loaded version whose folder was deleted too, so the one taking its place loads first.
        kept = {v for v in model.available if v in candidates}
        wanted = model.wanted(set(loadable) | kept)
        wanted = {v for v in wanted if v in loadable or v in model.available}
        for version in sorted(wanted - set(model.available), reverse=True):
            path = loadable[version]
            servable = self._load(model, version, path, candidates[version][1])
            if servable is not None:
                available = dict(model.available)
                available[version] = servable
                model.available = available
                model.states[version] = (State.AVAILABLE, _ok())
                model.loaded_stamps[version] = candidates[version][1]
        # Versions that lost their place: the wanted set again, now that loads are done.
        wanted = model.wanted({v for v in model.available if v in candidates})
        for version in sorted(set(model.available) - wanted):
            if version not in candidates:
                log.warning("model %s: version %d was deleted from %s while serving; unloading it",
                            model.name, version, model.base_path)
            self._unload(model, version)

    def _check_immutable(self, model, candidates):
        """Warn, once per change, about a loaded version whose folder was rewritten in place."""
        for version, servable in model.available.items():
            if version not in candidates:
                continue
            stamp = candidates[version][1]
            if stamp != model.loaded_stamps.get(version, stamp):
                log.warning("model %s: version %d folder %s was rewritten in place after it was "
                            "loaded; versions are immutable (as in TF Serving), so the copy loaded "
                            "keeps serving. Publish a change as a new version folder.",
                            model.name, version, servable.path)
                model.loaded_stamps[version] = stamp

    def _scan(self, model):
        """Numeric version folders holding a saved_model.pb: version -> (path, change stamp)."""
        try:
            names = os.listdir(model.base_path)
        except OSError as error:
            if "base_path" not in model.ignored:
                log.warning("model %s: cannot read base path %s: %s", model.name, model.base_path, error)
                model.ignored.add("base_path")
            return {}
        model.ignored.discard("base_path")
        found = {}
        root = os.path.realpath(model.base_path)
        for folder in sorted(names):
            path = os.path.join(model.base_path, folder)
            if not os.path.isdir(path) or folder.startswith("."):
                continue  # files, and the hidden staging folders of an atomic save
            resolved = os.path.realpath(path)
            if not _inside(resolved, root) or resolved == root:
                if f"outside:{folder}" not in model.ignored:
                    log.warning("model %s: ignoring folder %s: it resolves to %s, outside the base "
                                "path %s", model.name, path, resolved, root)
                    model.ignored.add(f"outside:{folder}")
                continue
            if not folder.isdigit() or not folder.isascii():
                if folder not in model.ignored:
                    log.warning("model %s: ignoring folder %s: version folders must be named by a "
                                "non-negative integer", model.name, path)
                    model.ignored.add(folder)
                continue
            if not os.path.isfile(os.path.join(path, "saved_model.pb")):
                key = f"incomplete:{folder}"
                if key not in model.ignored:
                    log.warning("model %s: ignoring folder %s for now: it has no saved_model.pb "
                                "(will look again)", model.name, path)
                    model.ignored.add(key)
                continue
            model.ignored.discard(f"incomplete:{folder}")
            version = int(folder)
            if version in found:
                log.warning("model %s: ignoring folder %s: version %d is also in %s",
                            model.name, path, version, found[version][0])
                continue
            found[version] = (path, _stamp(path))
        return found

    def _load(self, model, version, path, stamp):
        log.info("Loading servable version {name: %s version: %d} from %s", model.name, version, path)
        model.states.setdefault(version, (State.START, _ok()))
        model.states[version] = (State.LOADING, _ok())
        started = time.monotonic()
        try:
            servable = Servable(model.name, version, path)
            replayed = servable.warm_up()
        except Exception as error:  # a broken folder must not stop the server
            message = clean_tf_message(str(error))
            log.error("model %s: failed to load version %d from %s (will retry when it changes or "
                      "in %.0f s): %s", model.name, version, path, RETRY_FAILED_SECONDS, message)
            model.failures[version] = _Failure(stamp, time.monotonic(), message)
            # TF Serving shows a version that failed to load as END with the error.
            model.states[version] = (State.END, status_pb2.StatusProto(
                error_code=error_codes_pb2.UNKNOWN, error_message=message))
            return None
        model.failures.pop(version, None)
        log.info("Successfully loaded servable version {name: %s version: %d} in %.2f s "
                 "(signatures: %s; %d warm-up requests replayed)", model.name, version,
                 time.monotonic() - started, ", ".join(sorted(servable.signatures)), replayed)
        return servable

    def _unload(self, model, version):
        available = dict(model.available)
        servable = available.pop(version)
        model.loaded_stamps.pop(version, None)
        model.states[version] = (State.UNLOADING, _ok())
        model.available = available
        # Requests holding `servable` finish with it; the garbage collector frees it afterwards.
        if self.on_unload is not None:
            self.on_unload(servable)
        model.states[version] = (State.END, _ok())
        log.info("Unloaded servable version {name: %s version: %d}", model.name, version)

    def loaded_summary(self):
        return {name: sorted(model.available) for name, model in self.models.items()}


def _ok():
    return status_pb2.StatusProto(error_code=0)


def freeze_long_lived_objects():
    """Hide what is loaded now from Python's cyclic garbage collector.

    A server process holds about 300,000 objects the collector tracks (most from importing
    TensorFlow, some 13,000 from a small model), and a JSON request allocates hundreds of lists
    (814 for one 28 x 28 x 3 image), which sets off collections that walked them all: under load
    that was most of a REST request's time (bench/RESULTS.md). Unfreezing and collecting
    first lets the collector free the versions just unloaded; what a request in flight still holds
    is freed by reference counting when it ends, or at the next change of versions.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _stamp(path):
    """Changes when a version folder is rewritten (its mtime and that of saved_model.pb)."""
    try:
        return (os.stat(path).st_mtime_ns, os.stat(os.path.join(path, "saved_model.pb")).st_mtime_ns)
    except OSError:
        return None


def status_json(response):
    """`GetModelStatusResponse` as TF Serving's REST JSON."""
    return json_format.MessageToJson(response, always_print_fields_with_no_presence=True, indent=1)
