"""`imgclf.spark.write_tfrecords`: a DataFrame of images written as the converter's TFRecord layout."""

import json
import os
import shutil

import pytest
import tensorflow as tf

from conftest_spark import shared_spark_session

from imgclf.data import (convert_folder, create_test_dataset, create_train_val_datasets,
                         list_image_files)
from imgclf.data.tfrecord import LAYOUT_FILE, shard_file_names
from imgclf.spark.records import labels_from_paths, read_image_folder, write_tfrecords


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


def _by_name(directory, layout):
    """`{name: (index, label, bytes)}` of every record, checked against the layout's shards."""
    found = {}
    for file, records in _records(directory, layout).items():
        shard = next(shard for shard in layout["shards"] if shard["file"] == file)
        assert [index for index, *_ in records] == shard["indices"]
        # Where each image lies in the file, for readers that cut it out (imgclf.data.records).
        data = open(os.path.join(directory, file), "rb").read()
        assert shard["bytes"] == len(data)
        assert [data[start:start + size] for start, size in shard["spans"]] == [
            encoded for *_, encoded in records]
        for index, label, name, encoded in records:
            assert name not in found
            found[name] = (index, label, encoded)
    return found


def test_spark_writes_the_converters_records_and_numbering(sample, tmp_path):
    spark_dir, converted_dir = tmp_path / "spark", tmp_path / "converted"
    layout = write_tfrecords(_images(sample), str(spark_dir), num_shards=3)
    expected = convert_folder(sample, converted_dir, num_shards=3, seed=1)

    # The same records, numbered alike; only which shard holds which record differs.
    for entry in ("format", "class_names", "num_examples", "class_counts", "files", "labels",
                  "left_out"):
        assert layout[entry] == expected[entry], entry
    assert layout["class_counts"] == {"circle": 12, "square": 12, "triangle": 12}
    assert layout["unreadable"] == {}
    assert _by_name(spark_dir, layout) == _by_name(converted_dir, expected)
    assert len(_by_name(spark_dir, layout)) == 36
    assert [shard["file"] for shard in layout["shards"]] == shard_file_names(3)
    assert json.loads((spark_dir / LAYOUT_FILE).read_text()) == layout
    assert sorted(os.listdir(spark_dir)) == sorted(shard_file_names(3) + [LAYOUT_FILE])
    # Nothing staged is left beside it.
    assert sorted(os.listdir(tmp_path)) == ["converted", "spark"]


def _in_partitions(sample, count):
    """The sample's images in `count` partitions of equal size, in name order."""
    images = _images(sample).select("key", "label", "content")
    rows = sorted(images.collect())
    return images.sparkSession.createDataFrame(
        images.sparkSession.sparkContext.parallelize(rows, count), images.schema)


def test_each_task_writes_its_own_partition(sample, tmp_path):
    images = _in_partitions(sample, 3)
    partitions = images.rdd.mapPartitions(lambda rows: [[row.key for row in rows]]).collect()
    assert [len(keys) for keys in partitions] == [12, 12, 12]

    layout = write_tfrecords(images, str(tmp_path / "records"))
    # One shard per partition, its records in the partition's order: no shuffle between.
    assert [[name for _, _, name, _ in records]
            for records in _records(tmp_path / "records", layout).values()] == partitions


@pytest.mark.parametrize("num_shards, expected", [
    (None, [12, 12, 12]),       # one per partition
    (2, None),                  # neighbouring partitions merged: 2 tasks, 2 shards
    (5, [6, 6, 6, 6, 12]),      # 2 files for the first two partitions, 1 for the third
    (100, [1] * 36),            # at most one shard per record
])
def test_num_shards_is_at_most_and_splits_or_merges_partitions(sample, tmp_path, num_shards,
                                                               expected):
    layout = write_tfrecords(_in_partitions(sample, 3), str(tmp_path / "records"),
                             num_shards=num_shards)
    sizes = [len(shard["indices"]) for shard in layout["shards"]]
    if expected is None:
        assert len(sizes) == 2 and sum(sizes) == 36
    else:
        assert sorted(sizes) == sorted(expected)
    assert sorted(i for shard in layout["shards"] for i in shard["indices"]) == list(range(36))
    assert len(_by_name(tmp_path / "records", layout)) == 36


def test_records_split_as_the_folder_does(sample, tmp_path):
    """A folder (with two bad images) and its Spark-written records give the same training and
    validation files: the split is keyed by each image's name, the bad ones included."""
    folder = tmp_path / "data"
    shutil.copytree(sample, folder)
    # Not empty: a binaryFile read leaves out files of 0 bytes altogether.
    (folder / "square" / "cut.png").write_bytes((folder / "square" / "0000.png").read_bytes()[:40])
    (folder / "circle" / "text.png").write_bytes(b"not an image")
    layout = write_tfrecords(_images(folder).repartition(2), str(tmp_path / "records"))
    assert sorted(layout["unreadable"]) == ["circle/text.png", "square/cut.png"]
    assert [name for _, name in layout["left_out"]] == ["circle/text.png", "square/cut.png"]

    def names(dataset, root=""):
        return sorted(os.path.relpath(path, root) if root else path for path in dataset.file_paths)

    for seed in (1, 42):
        folder_sets = create_train_val_datasets(folder, (16, 16), 8, 0.6, seed=seed)
        record_sets = create_train_val_datasets(tmp_path / "records", (16, 16), 8, 0.6, seed=seed)
        for from_folder, from_records in zip(folder_sets, record_sets):
            expected = [name for name in names(from_folder, folder)
                        if name not in layout["unreadable"]]
            assert names(from_records) == expected and expected


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


def test_read_image_folder_labels_as_the_converter_lists(sample, tmp_path):
    folder = tmp_path / "data é"           # a name a URI would escape
    shutil.copytree(sample, folder)
    (folder / "circle" / "more").mkdir()
    shutil.copy(folder / "circle" / "0000.png", folder / "circle" / "more" / "0000.PNG")
    (folder / "square" / "notes.txt").write_text("not an image name")
    (folder / "loose.png").write_bytes((folder / "circle" / "0000.png").read_bytes())
    spark = shared_spark_session()

    images = read_image_folder(folder, spark)
    paths, labels, class_names = list_image_files(folder)
    expected = sorted((os.path.relpath(path, folder), class_names[label])
                      for path, label in zip(paths, labels))
    assert sorted(images.select("key", "label").collect()) == expected
    assert ("circle/more/0000.PNG", "circle") in expected and len(expected) == 37
    # Straight into the converter's layout.
    layout = write_tfrecords(images, str(tmp_path / "records"))
    assert layout["files"] == convert_folder(folder, tmp_path / "converted")["files"]

    with pytest.raises(FileNotFoundError, match=r"^dataset folder '.*nowhere' does not exist$"):
        read_image_folder(tmp_path / "nowhere", spark)
    with pytest.raises(ValueError, match=r"^dataset folder '.*loose.png' is not a directory$"):
        read_image_folder(folder / "loose.png", spark)
