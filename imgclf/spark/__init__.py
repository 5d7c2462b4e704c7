"""imgclf on Apache Spark: predict a DataFrame of images, write training records, train in a
barrier stage. An optional extra: `pip install imgclf[spark]`.

    >>> from imgclf.spark import spark_session
    >>> spark = spark_session("local[2]")      # or the session of spark-submit / a notebook
    >>> images = spark.read.format("binaryFile").load("gs://bucket/images/")

The modules import pyspark; `import imgclf` and its other parts never do.
"""
