import os
import sys

from conftest_spark import shared_spark_session

from imgclf.spark.session import is_local_master, spark_session


def test_local_workers_run_the_drivers_python():
    spark = shared_spark_session()
    executables = spark.sparkContext.parallelize(range(4), 2).map(lambda _: __import__("sys").executable).collect()
    assert set(executables) == {os.environ.get("PYSPARK_PYTHON", sys.executable)}


def test_the_active_session_is_reused_and_another_master_refused():
    spark = shared_spark_session()
    assert spark_session() is spark
    try:
        spark_session("local[1]")
    except ValueError as error:
        assert str(error).startswith("a Spark session on master 'local[2]' is already active")
    else:
        raise AssertionError("a second master was accepted")


def test_local_masters():
    assert is_local_master("local[2]") and is_local_master("local-cluster[2,1,1024]")
    assert not is_local_master("spark://host:7077") and not is_local_master("yarn")
