"""`imgclf.spark.predict` and `imgclf-predict --engine spark` on a real `local[2]` Spark.

One tiny trained LeNet (conftest_prediction) and one folder of 12-40 px images in every format
with the hostile files of `bad_images`; every test compares with the one-machine engine on the
same files: classes equal, probabilities within 1e-5, the same errors.
"""

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest_prediction import CLASS_NAMES, bad_images, trained_model, write_images
from conftest_spark import shared_spark_session

import predict_model
from imgclf.prediction import Predictor, columns, predict_files


@pytest.fixture(scope="module")
def model_path():
    return trained_model()["savedmodel"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """15 images in two sub-folders, the bad images in `bad/`, and a file that is no image."""
    root = tmp_path_factory.mktemp("images")
    write_images(root, 15)
    os.makedirs(root / "bad")
    for name, (content, _) in bad_images().items():
        (root / "bad" / name).write_bytes(content)
    (root / "notes.txt").write_text("not an image: left out of a folder's inputs")
    return root


def local_rows(model_path, folder):
    """The one-machine engine's rows for `folder`, keyed by path (as file: URIs, Spark's)."""
    rows = predict_files(model_path, [str(folder)], top_k=2, embeddings=True, progress=False)
    return {"file:" + row["path"]: row for row in rows}


def assert_same_rows(rows, expected):
    assert sorted(rows) == sorted(expected)
    for path, row in rows.items():
        want = expected[path]
        assert (row["class"], row["top_classes"], row["error"]) == (
            want["class"], want["top_classes"], want["error"]), path
        if want["error"]:
            assert row["probability"] is None and row["logits"] == [], path
            continue
        for name in ("probability", "top_probabilities", "logits", "embedding"):
            np.testing.assert_allclose(row[name], want[name], atol=1e-5, err_msg=f"{path} {name}")


def images_of(spark, folder, partitions):
    return (spark.read.format("binaryFile").option("recursiveFileLookup", "true")
            .option("pathGlobFilter", "*.{png,jpg,bmp,gif,webp}").load(str(folder))
            .repartition(partitions))


def test_predictions_equal_the_one_machine_engine_and_bad_images_are_rows(model_path, image_folder):
    from imgclf.spark import predict

    spark = shared_spark_session()
    predictions = predict(images_of(spark, image_folder, 2), model_path, top_k=2, batch_size=4,
                          embeddings=True)
    assert tuple(predictions.columns) == columns.output_columns(embeddings=True)
    rows = {row["path"]: row.asDict() for row in predictions.collect()}

    expected = local_rows(model_path, image_folder)
    # Spark's file sources skip empty files: the DataFrame has no row for bad/empty.png (the
    # command line gives it one, test_the_command_line_...).
    empty = next(path for path in expected if path.endswith("bad/empty.png"))
    del expected[empty]
    assert_same_rows(rows, expected)
    errors = {os.path.basename(path) for path, row in rows.items() if row["error"]}
    assert errors == set(bad_images()) - {"empty.png"}
    assert {row["class"] for row in rows.values()} <= {*CLASS_NAMES, None}


def test_any_dataframe_of_bytes_with_nulls_and_its_own_column_names(model_path, image_folder):
    from imgclf.spark import predict

    spark = shared_spark_session()
    paths = sorted(str(path) for path in image_folder.glob("sub0/*"))[:3]
    data = [(f"id-{i}", open(path, "rb").read()) for i, path in enumerate(paths)]
    df = spark.createDataFrame(data + [("id-null", None)], "key string, image binary")
    rows = {row["path"]: row for row in predict(df, model_path, image_col="image", path_col="key",
                                                top_k=2).collect()}
    predicted = Predictor.load(model_path).predict_encoded([content for _, content in data], top_k=2)
    assert [rows[f"id-{i}"]["top_classes"] for i in range(3)] == predicted["top_classes"]
    assert rows["id-null"]["error"] == "Input is empty." and rows["id-null"]["class"] is None


def test_the_model_is_loaded_once_per_python_worker(model_path, image_folder):
    from imgclf.spark import predict

    spark = shared_spark_session()
    # 4 tasks of several batches each (after the tests before): loading per task or per batch
    # would count more loads than workers.
    predict(images_of(spark, image_folder, 4), model_path, batch_size=2).collect()

    # This model's loads only (its folder or a version in it): the session's workers may have
    # served other tests' models.
    wanted = os.path.abspath(str(model_path))

    def loads_in_this_worker(batches):
        import os

        import pyarrow as pa

        from imgclf.spark.prediction import worker_models

        for _ in batches:
            pass
        loads = sum(count for (path, _), count in worker_models.loads.items()
                    if os.path.commonpath([os.path.abspath(path), wanted]) == wanted)
        yield pa.RecordBatch.from_pydict({"pid": [os.getpid()], "loads": [loads]})

    # The same kind of job (Arrow batches to Python) reaches the same pool of Python workers.
    probe = spark.range(8, numPartitions=8).mapInArrow(loads_in_this_worker, "pid long, loads long")
    per_worker = {row["pid"]: row["loads"] for row in probe.collect()}
    assert set(per_worker.values()) <= {0, 1} and sum(per_worker.values()) >= 1, per_worker


def test_bad_arguments_are_refused_before_any_task(model_path, image_folder, tmp_path):
    from imgclf.spark import predict

    images = images_of(shared_spark_session(), image_folder, 1)
    with pytest.raises(ValueError) as error:
        predict(images, model_path, image_col="bytes")
    assert str(error.value) == (
        "image_col 'bytes' is not a column of the DataFrame; its columns are "
        "['path', 'modificationTime', 'length', 'content']"
    )
    with pytest.raises(ValueError) as error:
        predict(images, model_path, image_col="length")
    assert str(error.value) == (
        "image_col 'length' must be a binary (encoded image bytes) column; received bigint")
    with pytest.raises(ValueError) as error:
        predict(images, model_path, top_k=0)
    assert str(error.value) == "top_k must be a positive integer; received 0"
    with pytest.raises(FileNotFoundError) as error:
        predict(images, str(tmp_path / "no_model"))
    assert str(error.value) == f"model_path '{tmp_path / 'no_model'}' does not exist"


def test_the_command_line_writes_parquet_with_a_row_for_every_file(model_path, image_folder,
                                                                      tmp_path, capsys):
    shared_spark_session()
    output = tmp_path / "labels.parquet"
    argv = ["--engine", "spark", "--master", "local[2]", "--model_path", model_path,
            "--output", str(output), "--top_k", "2", "--embeddings", str(image_folder)]
    assert predict_model.main(argv) == 0
    assert capsys.readouterr().out.startswith(f"{15 + len(bad_images())} files, {len(bad_images())} errors in ")
    assert os.path.exists(output / "_SUCCESS")
    rows = {row["path"]: row for row in pq.read_table(output).to_pylist()}
    assert_same_rows(rows, local_rows(model_path, image_folder))

    # The same command on a complete output does nothing; another job's output is refused with
    # --resume (and replaced without it, as Spark's overwrite does).
    assert predict_model.main(argv) == 0
    assert capsys.readouterr().out.startswith(f"{15 + len(bad_images())} files: already predicted")
    assert predict_model.main([*argv[:-4], "--top_k", "1", "--resume", argv[-1]]) == 2
    assert "holds the predictions of another job" in capsys.readouterr().err


def test_command_line_usage_errors_are_one_line(model_path, image_folder, tmp_path, capsys):
    base = ["--engine", "spark", "--master", "local[2]", "--model_path", model_path]
    assert predict_model.main([*base, "--output", str(tmp_path / "x.csv"), str(image_folder)]) == 2
    assert capsys.readouterr().err == (
        "predict_model.py: error: --engine spark writes a Parquet directory: the output must end "
        f"in .parquet; received '{tmp_path / 'x.csv'}'\n")
    assert predict_model.main([*base, "--output", str(tmp_path / "x.parquet"),
                               str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err == (
        f"predict_model.py: error: input '{tmp_path / 'missing'}' does not exist\n")


def test_files_listed_beside_a_folder_are_read_whatever_their_names(model_path, tmp_path):
    """A folder is read for image names only; a file list's files are read as they are named,
    also when both are given (one `binaryFile` reader for both applied the folder's filter)."""
    from imgclf.spark.files import predict_files as predict_on_spark

    shared_spark_session()
    folder, listed = tmp_path / "folder", tmp_path / "listed.data"
    write_images(str(folder), 2)
    listed.write_bytes(open(write_images(str(tmp_path / "other"), 1)[0], "rb").read())
    file_list = tmp_path / "list.txt"
    file_list.write_text(f"{listed}\n")
    output = tmp_path / "labels.parquet"
    predict_on_spark(model_path, [str(folder), str(file_list)], str(output), master="local[2]",
                     top_k=1)
    rows = {os.path.basename(row["path"]): row for row in pq.read_table(output).to_pylist()}
    assert len(rows) == 3 and rows["listed.data"]["error"] == "", rows["listed.data"]
