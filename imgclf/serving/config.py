"""The server's settings: command-line flags (TF Serving's names) and its text-proto config files.

    >>> options = parse_args(["--model_name", "lenet", "--model_base_path", "/models/lenet"])
    >>> config = model_server_config(options)      # a tensorflow.serving.ModelServerConfig
    >>> batching = batching_options(options)        # None unless --enable_batching

`--model_config_file` takes a text `ModelServerConfig` (official proto); `--batching_parameters_file`
a text `BatchingParameters`. The installed `tensorflow-serving-api` does not ship
`session_bundle_config_pb2`, where TF Serving declares `BatchingParameters`, so this module declares
the same message (same package, names, numbers and types) and parses the file with
`google.protobuf.text_format` like TF Serving does.
"""

import argparse
import dataclasses
import os
import re
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf import wrappers_pb2  # noqa: F401  (registers wrappers.proto in the pool)
from tensorflow_serving.config import model_server_config_pb2

from imgclf.cpus import usable_cpus  # noqa: F401  (its home before imgclf.cpus; still imported from here)

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
#: `--json_parse_processes -1` starts one per CPU, up to this many.
MAX_AUTO_PARSE_PROCESSES = 8


@dataclasses.dataclass
class ServerOptions:
    """Parsed command-line flags; see `build_parser` for their meaning."""

    port: int = 8500
    rest_api_port: int = 8501
    host: str = "127.0.0.1"
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    enable_batching: bool = False
    batching_parameters_file: str = ""
    file_system_poll_wait_seconds: float = 1.0
    rest_api_timeout_in_ms: int = 30000
    max_request_bytes: int = DEFAULT_MAX_BODY_BYTES
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    num_request_threads: int = 0
    json_parse_processes: int = -1
    ready_file: str = ""
    allowed_model_roots: str = ""


def build_parser():
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    parser = argparse.ArgumentParser(
        prog="imgclf-serve" if invoked == "imgclf-serve" else "python -m imgclf.serving",
        description="Serve SavedModels over TensorFlow Serving's REST and gRPC APIs.",
    )
    defaults = ServerOptions()
    add = parser.add_argument
    add("--port", type=int, default=defaults.port,
        help="gRPC port (0 binds a free one)")
    add("--rest_api_port", type=int, default=defaults.rest_api_port,
        help="REST port (0 binds a free one; unlike TF Serving, REST cannot be switched off)")
    add("--host", default=defaults.host, help="address both servers listen on")
    add("--model_name", default=defaults.model_name, help="name of the model served from --model_base_path")
    add("--model_base_path", default=defaults.model_base_path,
        help="folder holding numeric version folders of one model")
    add("--model_config_file", default=defaults.model_config_file,
        help="text ModelServerConfig: several models, version policies and labels")
    add("--enable_batching", action="store_true", help="merge concurrent requests into batches")
    add("--batching_parameters_file", default=defaults.batching_parameters_file,
        help="text BatchingParameters (implies --enable_batching)")
    add("--file_system_poll_wait_seconds", type=float, default=defaults.file_system_poll_wait_seconds,
        help="seconds between scans for new versions (0 or less: scan once at start-up)")
    add("--rest_api_timeout_in_ms", type=int, default=defaults.rest_api_timeout_in_ms,
        help="deadline of a REST request (0: none)")
    add("--max_request_bytes", type=int, default=defaults.max_request_bytes,
        help="larger REST bodies (413) and gRPC messages (RESOURCE_EXHAUSTED) are refused")
    add("--tensorflow_intra_op_parallelism", type=int, default=0,
        help="threads one TensorFlow op may use (0: TensorFlow decides)")
    add("--tensorflow_inter_op_parallelism", type=int, default=0,
        help="TensorFlow ops run in parallel (0: TensorFlow decides)")
    add("--num_request_threads", type=int, default=0,
        help="threads running unbatched requests (0: number of CPUs)")
    add("--json_parse_processes", type=int, default=defaults.json_parse_processes,
        help="worker processes parsing JSON bodies of numbers from 256 KB on, started at the first "
             "such body (default -1: one per usable CPU, at most 8; 0: parse in threads of the server "
             "process, which holds up its event loop); see bench/RESULTS.md")
    add("--ready_file", default="",
        help='once both ports listen and models are loaded, write {"grpc_port", "rest_port", "pid"} '
             "here as JSON (atomically)")
    add("--allowed_model_roots", default="",
        help="comma-separated folders that base paths given at run time (gRPC "
             "HandleReloadConfigRequest) must lie in, symlinks resolved (default: the folders "
             "holding the start-up base paths)")
    return parser


def parse_args(argv=None):
    """`ServerOptions` from command-line arguments; exits 2 with one line on a usage error."""
    parser = build_parser()
    options = ServerOptions(**vars(parser.parse_args(argv)))
    if bool(options.model_base_path) == bool(options.model_config_file):
        parser.error("give exactly one of --model_base_path and --model_config_file; "
                     f"received --model_base_path={options.model_base_path!r} "
                     f"--model_config_file={options.model_config_file!r}")
    for flag in ("port", "rest_api_port"):
        value = getattr(options, flag)
        if not 0 <= value <= 65535:
            parser.error(f"--{flag} must be a port number from 0 to 65535; received {value}")
    if options.batching_parameters_file:
        options.enable_batching = True
    if options.json_parse_processes < 0:
        # A cap, so that a large machine does not start dozens of processes for one event loop.
        options.json_parse_processes = min(usable_cpus(), MAX_AUTO_PARSE_PROCESSES)
    if options.max_request_bytes < 1:
        parser.error(f"--max_request_bytes must be positive; received {options.max_request_bytes}")
    return options


def allowed_model_roots(options):
    """The folders of `--allowed_model_roots`, or None for the manager's default."""
    roots = [root for root in options.allowed_model_roots.split(",") if root]
    return roots or None


def model_server_config(options):
    """The `ModelServerConfig` to serve: read from `--model_config_file`, or one model from flags."""
    if options.model_config_file:
        return read_text_proto(options.model_config_file, model_server_config_pb2.ModelServerConfig())
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = options.model_name
    model.base_path = options.model_base_path
    model.model_platform = "tensorflow"
    return config


def read_text_proto(path, message):
    """Parse the text-format protobuf file at `path` into `message`; ValueError names the file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return text_format.Parse(text, message)
    except (OSError, text_format.ParseError) as error:
        raise ValueError(f"cannot read {type(message).__name__} from {path}: {error}") from None


def _declare_batching_parameters():
    """The `tensorflow.serving.BatchingParameters` message class (session_bundle_config.proto)."""
    pool = descriptor_pool.Default()
    try:
        return message_factory.GetMessageClass(
            pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto(
        name="imgclf/serving/batching_parameters.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    for number, name, type_name in [
        (1, "max_batch_size", ".google.protobuf.Int64Value"),
        (2, "batch_timeout_micros", ".google.protobuf.Int64Value"),
        (3, "max_enqueued_batches", ".google.protobuf.Int64Value"),
        (4, "num_batch_threads", ".google.protobuf.Int64Value"),
        (5, "thread_pool_name", ".google.protobuf.StringValue"),
    ]:
        message.field.add(name=name, number=number, type=field.TYPE_MESSAGE,
                          label=field.LABEL_OPTIONAL, type_name=type_name)
    message.field.add(name="allowed_batch_sizes", number=6, type=field.TYPE_INT64,
                      label=field.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=field.TYPE_BOOL,
                      label=field.LABEL_OPTIONAL)
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


BatchingParameters = _declare_batching_parameters()


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """Batching settings with TF Serving's defaults filled in."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple = ()
    #: The batch threads' name (TF Serving names its shared batch thread pool with it).
    thread_pool_name: str = "batch_threads"


def batching_options(options):
    """`BatchingOptions` from `--enable_batching` / `--batching_parameters_file`, or None."""
    if not options.enable_batching:
        return None
    params = BatchingParameters()
    if options.batching_parameters_file:
        read_text_proto(options.batching_parameters_file, params)
    return batching_options_from_proto(params, source=options.batching_parameters_file or "defaults")


def batching_options_from_proto(params, source="BatchingParameters"):
    defaults = BatchingOptions()
    values = {}
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        values[name] = getattr(params, name).value if params.HasField(name) else getattr(defaults, name)
    allowed = tuple(params.allowed_batch_sizes)
    if params.HasField("thread_pool_name"):
        values["thread_pool_name"] = params.thread_pool_name.value
    result = BatchingOptions(allowed_batch_sizes=allowed, **values)
    problems = []
    if params.pad_variable_length_inputs:
        # Padding would change what a model computes (an image with a black border); requests of
        # other shapes form batches of their own instead, which TF Serving cannot do.
        problems.append("pad_variable_length_inputs: true is not supported: requests whose inputs "
                        "differ after dim 0 are batched separately, never padded; remove it or set "
                        "it to false")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", result.thread_pool_name):
        problems.append("thread_pool_name must be 1-64 letters, digits, '_', '.' or '-'; received "
                        f"{result.thread_pool_name!r}")
    if result.max_batch_size < 1:
        problems.append(f"max_batch_size must be at least 1; received {result.max_batch_size}")
    if result.num_batch_threads < 1:
        problems.append(f"num_batch_threads must be at least 1; received {result.num_batch_threads}")
    if result.max_enqueued_batches < 1:
        problems.append(f"max_enqueued_batches must be at least 1; received {result.max_enqueued_batches}")
    if result.batch_timeout_micros < 0:
        problems.append(f"batch_timeout_micros must not be negative; received {result.batch_timeout_micros}")
    if allowed and (list(allowed) != sorted(set(allowed)) or allowed[0] < 1
                    or allowed[-1] != result.max_batch_size):
        problems.append("allowed_batch_sizes must increase and end with max_batch_size "
                        f"({result.max_batch_size}); received {list(allowed)}")
    if problems:
        raise ValueError(f"invalid batching parameters in {source}: " + "; ".join(problems))
    return result
