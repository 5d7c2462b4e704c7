"""The Spark session shared by the Spark tests (`tests/test_spark_*.py`).

Spark allows one SparkContext per process and starting one takes seconds, so every Spark test of a
pytest process uses the same `local[2]` session, made on first use and stopped at exit. A test
module skips (with the reason) where pyspark is not installed; `make test` installs it.

    >>> from conftest_spark import spark   # the pytest fixture
"""

import atexit

import pytest

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'imgclf[spark]')")

_session = []


def shared_spark_session():
    """The process's `local[2]` session for tests (loopback, no UI, few shuffle partitions)."""
    if not _session:
        from imgclf.spark.session import spark_session

        session = spark_session("local[2]", app_name="imgclf-tests", conf={
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.driver.memory": "1g",
            # The JVM's C1 compiler only: C2 spent 12 of the JVM's 30 CPU s in
            # test_spark_records, compiling code these short jobs run a few times (the module
            # took 71 CPU s instead of 80).
            "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
        })
        session.sparkContext.setLogLevel("ERROR")
        atexit.register(session.stop)
        _session.append(session)
    return _session[0]


@pytest.fixture(scope="session")
def spark():
    return shared_spark_session()
