"""The Spark session imgclf's Spark jobs run in, and the check that pyspark is installed.

    >>> spark = spark_session()                 # the active session, or a new local[*] one
    >>> spark = spark_session("local[2]")       # a new or the active session on that master

With a `local[...]` or `local-cluster[...]` master the Python workers run on this machine, so
unless the user chose `PYSPARK_PYTHON`, imgclf makes them run this process's own Python: Spark
otherwise starts the system `python3`, which in a virtualenv lacks TensorFlow and imgclf, and a
user's first try fails deep inside a task. Such a master also binds to the loopback address unless
`SPARK_LOCAL_IP` says otherwise. With a cluster master (`spark://`, `yarn`, `k8s://`) nothing is
changed: the cluster's own Python and addresses apply (docs/spark.md).
"""

import os
import sys

#: What to install when pyspark is missing.
INSTALL_HINT = "pip install 'imgclf[spark]'"


def require_pyspark():
    """Import and return the `pyspark` module, or raise ImportError saying how to install it."""
    try:
        import pyspark
    except ImportError as error:
        raise ImportError(
            f"imgclf's Spark jobs need pyspark, which is not installed; {INSTALL_HINT}"
        ) from error
    return pyspark


def is_local_master(master):
    """Whether `master` runs its executors on this machine (`local`, `local[..]`, `local-cluster[..]`)."""
    return master is not None and (master == "local" or master.startswith(("local[", "local-cluster[")))


def spark_session(master=None, app_name="imgclf", conf=None):
    """The Spark session to run imgclf's jobs in.

    Args:
        master: a Spark master URL (`local[2]`, `spark://host:7077`, `yarn`, ...); None: the
            active session if there is one (a notebook), else spark-submit's master when
            spark-submit started this program, else `local[*]`.
        app_name: the application's name, for a new session.
        conf: more Spark settings `{key: value}`, for a new session.

    A session that is already active is returned as it is (Spark allows one per process); if
    its master differs from `master`, a ValueError says so.
    """
    require_pyspark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        running = active.sparkContext.master
        if master is not None and master != running:
            raise ValueError(
                f"a Spark session on master '{running}' is already active in this process; "
                f"cannot start one on '{master}' (stop it first, or pass master=None)"
            )
        return active
    if master is None and "PYSPARK_GATEWAY_PORT" in os.environ:
        # Started by spark-submit (or the pyspark shell): its --master, --name and --conf apply.
        builder = SparkSession.builder
    else:
        master = master or "local[*]"
        if is_local_master(master):
            prepare_local_workers()
        builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def prepare_local_workers():
    """Make a local master's Python workers run this Python and stay on loopback (unless set)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
