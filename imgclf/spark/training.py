"""Train an imgclf model on Spark executors: N workers of one MultiWorkerMirroredStrategy cluster.

    >>> from imgclf.spark import train
    >>> result = train("LenetModel", "/mnt/records/train", "/mnt/records/test", "/mnt/models",
    ...                TrainingConfig(num_epochs=10), num_workers=4)
    >>> result.export_path, result.test_metrics["accuracy"]
    ('/mnt/models/LenetModel/1', 0.97)

Each worker is a task of one Spark barrier stage (all start together, or none), and runs
`imgclf.training.train`, imgclf's own multi-worker training (Keras 3's `fit` alone fails under
`MultiWorkerMirroredStrategy`: keras-team/keras#20585). The shape is Spark's TorchDistributor's:

- every task picks a free port on its executor and the tasks exchange `host:port` with
  `BarrierTaskContext.allGather` (task addresses alone do not do: in `local[N]` every task has
  the same one); each builds its `TF_CONFIG`, task 0 is the chief;
- each runs its training in a fresh child process (a Python worker Spark reuses cannot start a
  second collective job: "Collective ops are already configured"), whose output is streamed to
  the driver's stderr, `[worker 1] Epoch 3/10 ...`; the child dies with its task (Linux
  parent-death signal), so a cancelled or failed stage leaves nothing running;
- the chief alone writes the version, checkpoints, logs, backup and metadata into
  `model_folder_path`, which must be a path every executor sees (NFS, `/dbfs/...`, a bucket
  mount); its `imgclf.json` records the launcher (`{"name": "spark", "num_workers": N, ...}`);
- every task waits for the others at the end (`barrier()`), and the driver gets the chief's
  summary, a `SparkTrainingResult`.

One worker failing fails the stage: `train` raises `SparkTrainingError` with that worker's own
exit status and last lines, after Spark has ended the other tasks. Started again with the same
arguments, a run resumes from its backup at its last finished epoch, as on Kubernetes
(`imgclf.training.backup`). The stage needs `num_workers` free task slots at once.
"""

import collections
import dataclasses
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from imgclf.spark.session import require_pyspark, spark_session

logger = logging.getLogger("imgclf.spark")

#: The environment variable a worker's child reads its training arguments from.
SPEC_VARIABLE = "IMGCLF_SPARK_TRAINING"
#: The file a worker's child may write its result into (the chief's summary), read by its task.
RESULT_VARIABLE = "IMGCLF_WORKER_RESULT"
#: Read by `imgclf.export.metadata`: who launched the training (JSON), kept in `imgclf.json`.
LAUNCHER_VARIABLE = "IMGCLF_LAUNCHER"
#: Lines of a failed worker's output that its error carries to the driver.
TAIL_LINES = 40


class SparkTrainingError(RuntimeError):
    """A worker of a Spark training stage failed; the message is that worker's own error."""


@dataclasses.dataclass
class SparkTrainingResult:
    """The chief's summary of a training run on Spark (`imgclf.training.TrainingResult` without
    the model, which stays in the chief's process: load it from `export_path`)."""

    export_path: str
    test_metrics: dict
    #: Every epoch of both phases: Keras' history lists, concatenated.
    history: dict
    phase_epochs: list
    litert_path: str
    num_workers: int


def train(model_type, train_dataset_path, test_dataset_path, model_folder_path, config=None, *,
          num_workers=2, spark=None, **options):
    """Train `model_type` on `num_workers` Spark tasks; return the chief's `SparkTrainingResult`.

    Args:
        model_type, train_dataset_path, test_dataset_path, model_folder_path, config, options:
            as `imgclf.training.train`. The data sets (folders or TFRecord directories, e.g.
            from `write_tfrecords`, with at least one shard file per worker to shard by file)
            and `model_folder_path` must be paths every executor sees.
        num_workers: tasks of the barrier stage, one TensorFlow worker each.
        spark: the session; by default the active one (`imgclf.spark.session.spark_session`).

    The options are checked here, before any task starts.
    """
    from imgclf.training.config import plan_training, with_options

    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive integer; received {num_workers!r}")
    config = with_options(config, options)
    if config.distribution not in ("auto", "multi_worker"):
        raise ValueError(
            "distribution must be 'auto' or 'multi_worker' on Spark (the workers form one "
            f"MultiWorkerMirroredStrategy cluster); received {config.distribution!r}"
        )
    config = dataclasses.replace(config, distribution="multi_worker")
    plan_training(model_type, config)
    spark = spark or spark_session()
    spec = {
        "model_type": model_type,
        "paths": [_shared_path(p) for p in
                  (train_dataset_path, test_dataset_path, model_folder_path)],
        "config": dataclasses.asdict(config),
    }
    launcher = {"name": "spark", "num_workers": num_workers, "master": spark.sparkContext.master,
                "spark_version": spark.version}
    results = run_workers(
        [sys.executable, "-m", "imgclf.spark.training"], num_workers, spark,
        env={SPEC_VARIABLE: json.dumps(spec), LAUNCHER_VARIABLE: json.dumps(launcher)},
    )
    summary = json.loads(results[0])
    return SparkTrainingResult(num_workers=num_workers, **summary)


def run_workers(command, num_workers, spark=None, env=None, description="imgclf training"):
    """Run `command` as `num_workers` workers of one TF_CONFIG cluster in a Spark barrier stage.

    Each task runs `command` in a child process with `TF_CONFIG` (and `env`) set, streams its
    output to the driver and ends with the others. Returns, by worker, the text the child wrote
    into the file named by `$IMGCLF_WORKER_RESULT`, or None. Raises `SparkTrainingError` with
    the first failed worker's status and last lines; by then no task of the stage is running.

        >>> run_workers([sys.executable, "my_multi_worker_script.py"], 2, spark)
        [None, None]
    """
    require_pyspark()
    from py4j.protocol import Py4JJavaError
    from pyspark.ml.torch.log_communication import LogStreamingServer

    spark = spark or spark_session()
    context = spark.sparkContext
    logs = LogStreamingServer()
    driver_host = context.getConf().get("spark.driver.host", "127.0.0.1")
    logs.start(spark_host_address=driver_host)
    task = _worker_task(list(command), num_workers, dict(env or {}), driver_host, logs.port)
    group = f"imgclf-{uuid.uuid4().hex[:12]}"
    properties = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")
    previous = {key: context.getLocalProperty(key) for key in properties}
    context.setJobGroup(group, f"{description}: {num_workers} workers", interruptOnCancel=True)
    try:
        results = context.parallelize(range(num_workers), num_workers).barrier() \
            .mapPartitions(task).collect()
    except Py4JJavaError as error:
        worker_error = _worker_error(str(error.java_exception))
        if worker_error is None:
            raise
        raise SparkTrainingError(worker_error) from None
    finally:
        # Whatever ended the stage (a failed worker, Ctrl-C in the driver), end every task
        # before returning: a task's death takes its child with it.
        context.cancelJobGroup(group)
        _wait_for_tasks(context, group)
        for key, value in previous.items():
            context.setLocalProperty(key, value)
        logs.shutdown()
    by_index = dict(json.loads(row) for row in results)
    return [by_index.get(i) for i in range(num_workers)]


def _worker_task(command, num_workers, env, driver_host, log_port):
    """The function each barrier task runs (pickled to the executors)."""

    def run(_):
        from pyspark import BarrierTaskContext
        from pyspark.ml.torch.log_communication import LogStreamingClient

        context = BarrierTaskContext.get()
        index = context.partitionId()
        host = context.getTaskInfos()[index].address.rsplit(":", 1)[0]
        addresses = context.allGather(f"{host}:{_free_port()}")
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        folder = tempfile.mkdtemp(prefix=f"imgclf-spark-worker-{index}-")
        result_path = os.path.join(folder, "result.json")
        child_env = dict(
            os.environ, **env, TF_CONFIG=json.dumps(tf_config), PYTHONUNBUFFERED="1",
            # The task's own import path: what Spark added (--py-files) reaches the child too.
            PYTHONPATH=os.pathsep.join(path for path in sys.path if path),
            **{RESULT_VARIABLE: result_path},
        )
        child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        gpus = context.resources().get("gpu")
        if gpus is not None:
            child_env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus.addresses)
        client = LogStreamingClient(driver_host, log_port)
        tail = collections.deque(maxlen=TAIL_LINES)
        try:
            child = subprocess.Popen(
                command, env=child_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
            )
            try:
                for line in child.stdout:
                    text = line.decode("utf-8", errors="replace").rstrip()
                    tail.append(text)
                    client.send(f"[worker {index}] {text}")
                code = child.wait()
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            if code != 0:
                raise RuntimeError(_failure_text(index, num_workers, code, tail))
            result = None
            if os.path.exists(result_path):
                with open(result_path, encoding="utf-8") as file:
                    result = file.read()
        finally:
            client.close()
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
        context.barrier()  # every worker ends together
        yield json.dumps([index, result])

    return run


def _free_port():
    """A port free on this machine a moment ago (the child's TensorFlow server binds it)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _die_with_parent():
    """In the child, before exec: ask Linux to SIGKILL it when its task's process dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_FAILURE = re.compile(r"(imgclf worker \d+ of \d+ .*?--- end of worker \d+'s output ---)", re.S)


def _failure_text(index, num_workers, code, tail):
    if code < 0:
        status = f"was killed by signal {-code} ({signal.Signals(-code).name})"
    else:
        status = f"failed with exit code {code}"
    return (f"imgclf worker {index} of {num_workers} {status}; its last lines:\n"
            + "\n".join(tail) + f"\n--- end of worker {index}'s output ---")


def _worker_error(text):
    """The first worker failure (`_failure_text`) quoted in a Spark job's error, or None."""
    match = _FAILURE.search(text)
    return match.group(1) if match else None


def _wait_for_tasks(context, group, timeout=120):
    """Wait until no task of the job group `group` runs (Spark ends killed tasks asynchronously)."""
    tracker = context.statusTracker()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = 0
        for job_id in tracker.getJobIdsForGroup(group):
            job = tracker.getJobInfo(job_id)
            for stage_id in (job.stageIds if job else ()):
                stage = tracker.getStageInfo(stage_id)
                active += stage.numActiveTasks if stage else 0
        if not active:
            return
        time.sleep(0.2)
    logger.warning("tasks of %s still run %d s after the stage ended", group, timeout)


def _shared_path(path):
    """An absolute path for a local one (executors do not share the driver's directory)."""
    path = os.fspath(path)
    return path if "://" in path else os.path.abspath(path)


def _worker_main():
    """A worker's child process: imgclf's own training, with the driver's arguments."""
    logging.basicConfig(stream=sys.stdout, format="%(name)s: %(message)s")
    logging.getLogger("imgclf.training").setLevel(logging.INFO)
    from imgclf.tensorflow_import import import_tensorflow

    import_tensorflow()
    from imgclf.training import TrainingConfig
    from imgclf.training import train as train_locally

    spec = json.loads(os.environ[SPEC_VARIABLE])
    config = dict(spec["config"])
    if config.get("input_shape") is not None:
        config["input_shape"] = tuple(config["input_shape"])
    result = train_locally(spec["model_type"], *spec["paths"], TrainingConfig(**config),
                           verbose=2)
    if result.export_path is None:
        print("worker done: the chief saved the model", flush=True)
        return
    summary = {
        "export_path": result.export_path,
        "test_metrics": {k: float(v) for k, v in result.test_metrics.items()},
        "history": {k: [float(v) for v in values] for k, values in result.history.items()},
        "phase_epochs": list(result.phase_epochs),
        "litert_path": result.litert_path,
    }
    staging = os.environ[RESULT_VARIABLE] + ".partial"
    with open(staging, "w", encoding="utf-8") as file:
        json.dump(summary, file)
    os.replace(staging, os.environ[RESULT_VARIABLE])
    print(f"saved model: {result.export_path}", flush=True)


if __name__ == "__main__":
    _worker_main()
