"""`imgclf.spark.write_tfrecords`: a DataFrame of images written as the converter's TFRecord layout."""

import json
import os

import pytest
import tensorflow as tf

from conftest_spark import shared_spark_session

from imgclf.data import convert_folder, create_test_dataset
from imgclf.data.tfrecord import LAYOUT_FILE
from imgclf.spark.records import labels_from_paths, write_tfrecords


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from imgclf.data.sample_data import write_sample_dataset

    folder = tmp_path_factory.mktemp("sample") / "data"
    write_sample_dataset(str(folder), num_classes=3, image_size=16, train_per_class=12,
                         test_per_class=2)
    return folder / "train"


def _images(folder):
    spark = shared_spark_session()
    return labels_from_paths(spark.read.format("binaryFile").load(f"{folder}/*/*"))


def _records(directory, layout):
    """`{file: [(index, label, name, bytes), ...]}` of every shard, in file order."""
    shards = {}
    for shard in layout["shards"]:
        shards[shard["file"]] = [
            (f["image/index"].int64_list.value[0], f["image/class/label"].int64_list.value[0],
             f["image/filename"].bytes_list.value[0].decode(),
             f["image/encoded"].bytes_list.value[0])
            for f in (tf.train.Example.FromString(r.numpy()).features.feature
                      for r in tf.data.TFRecordDataset(os.path.join(directory, shard["file"])))
        ]
    return shards


def test_spark_writes_the_converters_layout_and_records(sample, tmp_path):
    spark_dir, converted_dir = tmp_path / "spark", tmp_path / "converted"
    layout = write_tfrecords(_images(sample), str(spark_dir), num_shards=3, seed=1)
    expected = convert_folder(sample, converted_dir, num_shards=3, seed=1)

    assert layout == {**expected, "unreadable": {}}
    assert layout["class_counts"] == {"circle": 12, "square": 12, "triangle": 12}
    assert json.loads((spark_dir / LAYOUT_FILE).read_text()) == layout
    assert sorted(os.listdir(spark_dir)) == sorted(os.listdir(converted_dir))
    assert _records(spark_dir, layout) == _records(converted_dir, expected)
    # Nothing staged is left beside it.
    assert sorted(os.listdir(tmp_path)) == ["converted", "spark"]


def test_bad_images_are_named_in_the_layout_and_left_out(sample, tmp_path):
    images = _with_bad_images(sample)
    layout = write_tfrecords(images, str(tmp_path / "records"), num_shards=2)

    assert layout["unreadable"] == {
        "circle/text.png": "assertion failed: [Unknown image file format. One of PNG, JPEG, BMP, "
                           "GIF, WebP required (JPEG XL is not accepted).]",
        "square/empty.png": "Input is empty.",
    }
    assert layout["num_examples"] == 36 and layout["class_counts"]["square"] == 12
    bad = {i for i, name in enumerate(layout["files"]) if name is None}
    assert len(bad) == 2 and len(layout["labels"]) == 38
    assert not bad & {i for s in layout["shards"] for i in s["indices"]}
    # Training reads it; every record decodes.
    test_ds = create_test_dataset(tmp_path / "records", (16, 16), 8)
    assert sum(int(labels.shape[0]) for _, labels in test_ds) == 36


def _with_bad_images(sample):
    spark = shared_spark_session()
    images = _images(sample).select("key", "label", "content")
    bad = spark.createDataFrame(
        [("square/empty.png", "square", b""), ("circle/text.png", "circle", b"not an image")],
        images.schema,
    )
    return images.union(bad)


def test_a_failed_job_leaves_no_layout_and_nothing_staged(sample, tmp_path):
    from pyspark.sql import functions as F

    images = _images(sample)
    failing = images.withColumn(
        "content", F.when(F.col("key") == "square/0003.png", F.raise_error(F.lit("disk gone")))
        .otherwise(F.col("content"))
    )
    with pytest.raises(Exception, match="disk gone"):
        write_tfrecords(failing, str(tmp_path / "records"), num_shards=2)
    assert os.listdir(tmp_path) == []
    # A re-run writes it all.
    layout = write_tfrecords(images, str(tmp_path / "records"), num_shards=2)
    assert layout["num_examples"] == 36 and os.listdir(tmp_path) == ["records"]


def test_usage_errors_name_what_arrived(sample, tmp_path):
    images = _images(sample)
    with pytest.raises(ValueError, match=r"^the DataFrame has no column 'label'; its columns: "):
        write_tfrecords(images.drop("label"), str(tmp_path / "a"))
    with pytest.raises(ValueError, match=r"^image_col 'key' must hold the encoded images \(binary\); "
                                         r"received string$"):
        write_tfrecords(images, str(tmp_path / "a"), image_col="key")
    with pytest.raises(ValueError, match=r"key must name each image once; 1 names repeat, "
                                         r"e\.g\. \['circle/0000.png'\]"):
        write_tfrecords(images.union(images.filter("key = 'circle/0000.png'")), str(tmp_path / "a"))
    with pytest.raises(ValueError, match=r"labels \['triangle'\] are not in class_names "):
        write_tfrecords(images, str(tmp_path / "a"), class_names=["circle", "square"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError, match="is not empty"):
        write_tfrecords(images, str(tmp_path / "full"))
