"""`imgclf.prediction.predict_files` and `imgclf-predict` (predict_model.py): every input kind,
every output format, bad files as rows, --max_errors, resume after a real SIGKILL, usage errors."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

import predict_model
from imgclf.data.tfrecord import convert_folder
from imgclf.prediction import Predictor, predict_files
from imgclf.prediction.columns import output_columns

from conftest_prediction import bad_images, coloured_pixels, encode, trained_model, write_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def model_paths():
    return trained_model()


@pytest.fixture(scope="session")
def predictor(model_paths):
    return Predictor.load(model_paths["version"])


def read_output(path):
    """The rows of an output file, lists parsed, as dicts of `output_columns`."""
    path = str(path)
    if path.endswith(".parquet"):
        return pq.read_table(path).to_pylist()
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as file:
            return [json.loads(line) for line in file]
    with open(path, encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        for name in ("top_classes", "top_probabilities", "logits", "embedding"):
            if name in row:
                row[name] = json.loads(row[name])
        row["probability"] = float(row["probability"]) if row["probability"] else None
        row["class"] = row["class"] or None
    return rows


def test_files_give_what_serving_labels_gives(model_paths, predictor, tmp_path):
    paths = write_images(tmp_path / "images", 12)
    rows = list(predict_files(predictor, [str(tmp_path / "images")], batch_size=5, progress=False))
    assert [row["path"] for row in rows] == sorted(paths)
    loaded = tf.saved_model.load(model_paths["version"])
    contents = [open(row["path"], "rb").read() for row in rows]
    labels = loaded.signatures["serving_labels"](image_bytes_string=tf.constant(contents))
    assert [row["top_classes"] for row in rows] == [
        [c.decode() for c in classes] for classes in labels["classes"].numpy()]
    np.testing.assert_allclose([row["top_probabilities"] for row in rows],
                               labels["probabilities"].numpy(), atol=1e-5)


def test_every_input_kind(predictor, tmp_path):
    folder = tmp_path / "images"
    paths = write_images(folder, 10)
    records = tmp_path / "records"
    convert_folder(str(folder), str(records), num_shards=2)
    (tmp_path / "list.txt").write_text("# two images\n\nimages/sub0/image0000.png\n"
                                       f"{paths[1]}\n")
    (tmp_path / "list.csv").write_text("label,path\nx,images/sub0/image0002.bmp\n"
                                       "y,\"images/sub1/image0003.gif\"\n")
    inputs = [str(folder / "sub1"), str(folder / "sub0" / "*.png"), str(tmp_path / "list.txt"),
              str(tmp_path / "list.csv"), str(records), paths[4]]
    rows = list(predict_files(predictor, inputs, progress=False))
    layout = json.loads((records / "tfrecords.json").read_text())
    in_records = [layout["files"][i] for shard in layout["shards"] for i in shard["indices"]]
    assert [row["path"] for row in rows] == [
        *sorted(p for p in paths if "/sub1/" in p),
        *sorted(p for p in paths if "/sub0/" in p and p.endswith(".png")),
        str(tmp_path / "images/sub0/image0000.png"), paths[1],
        str(tmp_path / "images/sub0/image0002.bmp"), str(tmp_path / "images/sub1/image0003.gif"),
        *in_records, paths[4],
    ]
    assert all(row["error"] == "" for row in rows)
    # A record predicts as its file does.
    by_path = {row["path"]: row for row in rows}
    from_files = predictor.predict_encoded([(folder / name).read_bytes() for name in in_records])
    np.testing.assert_allclose([by_path[name]["logits"] for name in in_records],
                               from_files["logits"], atol=1e-6)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_every_output_format_with_embeddings_and_bad_files(model_paths, tmp_path, suffix):
    folder = tmp_path / "images"
    write_images(folder, 7)
    for name, (content, _) in bad_images().items():
        (folder / "sub0" / name).write_bytes(content)
    output = tmp_path / f"labels{suffix}"
    expected = list(predict_files(model_paths["keras"], [str(folder)], top_k=2, embeddings=True,
                                  progress=False))
    summary = predict_files(model_paths["keras"], [str(folder)], output=str(output), top_k=2,
                            embeddings=True, part_size=3, progress=False)
    assert (summary.files, summary.errors, summary.resumed) == (12, 5, 0)
    rows = read_output(output)
    assert list(rows[0]) == list(output_columns(embeddings=True))
    assert [row["path"] for row in rows] == [row["path"] for row in expected]
    for row, want in zip(rows, expected):
        assert row["error"] == want["error"]
        assert row["class"] == want["class"] and row["top_classes"] == want["top_classes"]
        for name in ("top_probabilities", "logits", "embedding"):
            np.testing.assert_allclose(row[name], want[name], atol=1e-6)
    assert sum(bool(row["error"]) for row in rows) == 5
    assert sorted(os.listdir(tmp_path)) == ["images", output.name]  # parts removed


def run_script(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "predict_model.py"), *args], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, **kwargs)


def test_sigkill_then_the_same_command_gives_every_input_exactly_once(model_paths, tmp_path,
                                                                     capsys):
    folder = tmp_path / "images"
    paths = sorted(write_images(folder, 30))
    # A FIFO among the inputs: reading it blocks until a writer comes, so the run is certainly
    # in the middle (parts before it committed, its own not) when it is killed.
    blocked = paths[13]
    os.remove(blocked)
    os.mkfifo(blocked)
    output = tmp_path / "labels.jsonl"
    args = ["--model_path", model_paths["savedmodel"], "--output", str(output),
            "--part_size", "4", "--batch_size", "2", str(folder)]
    process = run_script(*args)
    parts = tmp_path / "labels.jsonl.parts"
    deadline = time.monotonic() + 120
    while not (parts / "part-00002.parquet").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no part was committed in 2 minutes"
        time.sleep(0.05)
    time.sleep(1.0)  # whatever else it would commit, it has committed
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert sorted(p.name for p in parts.glob("part-*")) == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert not output.exists()
    os.remove(blocked)
    with open(blocked, "wb") as file:
        file.write(encode(coloured_pixels(1, (20, 20), np.random.default_rng(3))))

    # Parts of another model or of other inputs: refused with --resume.
    for other, difference in (
        (["--model_path", model_paths["keras"], *args[2:]], "model_fingerprint 'sha256:"),
        ([*args[:-1], str(folder / "sub0")], "inputs_fingerprint 'sha256:"),
    ):
        assert predict_model.main([*other, "--resume"]) == 2
        error = capsys.readouterr().err
        assert error.startswith(
            f"predict_model.py: error: --resume: {parts} holds the parts of another run "
            f"({difference}")
        assert error.endswith(
            "); run without --resume to replace them, or choose another --output\n")
        assert len(error.splitlines()) == 1
    assert len(list(parts.glob("part-*"))) == 3

    result = run_script(*args)  # the same command
    stdout, stderr = result.communicate(timeout=300)
    assert result.returncode == 0, stderr
    assert stdout.startswith("30 files, 0 errors (18 predicted now, 12 resumed) in ")
    rows = read_output(output)
    assert [row["path"] for row in rows] == paths
    assert all(row["error"] == "" for row in rows)
    assert not parts.exists()
    # A fresh run gives the same rows.
    fresh = list(predict_files(model_paths["savedmodel"], [str(folder)], progress=False))
    assert [row["logits"] for row in rows] == [
        pytest.approx(row["logits"], abs=1e-6) for row in fresh]


def test_max_errors_stops_a_run_and_keeps_its_parts(model_paths, tmp_path, capsys):
    folder = tmp_path / "images"
    write_images(folder, 8)
    for name, (content, _) in bad_images().items():
        (folder / "sub1" / f"z{name}").write_bytes(content)  # last in the listing
    output = tmp_path / "labels.csv"
    args = ["--model_path", model_paths["version"], "--output", str(output), "--part_size", "3",
            str(folder)]
    assert predict_model.main([*args, "--max_errors", "2"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(
        "predict_model.py: stopped after 11 of 13 files: 3 could not be read (more than "
        f"max_errors 2); first errors: {folder}/sub1/zbomb.png: image declares 900000000 pixels")
    assert captured.err.rstrip().endswith(
        f"The parts committed so far stay in {output}.parts: the same command resumes them")
    assert not output.exists()
    assert predict_model.main([*args, "--max_errors", "0.9"]) == 0
    assert capsys.readouterr().out.startswith("13 files, 5 errors (4 predicted now, 9 resumed)")
    assert predict_model.main([*args, "--max_errors", "0.3"]) == 1  # 5/13 > 0.3 at the end
    assert "5 could not be read (38% of them, more than max_errors 0.3)" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: INPUT, --model_path, --output"),
    (["x"], "the following arguments are required: --model_path, --output"),
    (["--model_path", "m", "--output", "o.csv"], "the following arguments are required: INPUT"),
    (["--model_path", "m", "--output", "o.txt", "x"],
     "the output must end in .csv, .jsonl, .ndjson, .parquet; received 'o.txt'"),
    (["--model_path", "m", "--output", "o.csv", "--max_errors", "1.5", "x"],
     "argument --max_errors: must be a count (an integer >= 0) or a fraction between 0 and 1; "
     "received '1.5'"),
    (["--model_path", "m", "--output", "o.csv", "--top_k", "0", "x"],
     "argument --top_k: must be a positive integer; received 0"),
    (["--model_path", "m", "--output", "o.csv", "--master", "local[2]", "x"],
     "argument --master: only with --engine spark"),
    (["--model_path", "m", "--output", "o.csv", "--engine", "gpu", "x"],
     "argument --engine: invalid choice: 'gpu' (choose from 'local', 'spark')"),
])
def test_usage_errors_are_one_line_exit_2(argv, message, capsys):
    try:
        status = predict_model.main(argv)  # the library's refusals: returned
    except SystemExit as caught:  # argparse's: raised
        status = caught.code
    assert status == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"predict_model.py: error: {message}"


def test_data_and_model_errors_are_one_line_exit_2(model_paths, tmp_path, capsys):
    out = str(tmp_path / "o.csv")
    cases = [
        (["--model_path", model_paths["version"], "--output", out, str(tmp_path / "none")],
         f"input '{tmp_path}/none' does not exist"),
        (["--model_path", str(tmp_path), "--output", out, model_paths["version"]],
         f"model_path '{tmp_path}' is neither a SavedModel (no saved_model.pb) nor a model base "
         "path (no numbered version folder holding one); found: nothing"),
        (["--model_path", model_paths["version"], "--output", out, str(tmp_path)],
         f"no images found in '{tmp_path}'"),
    ]
    for argv, message in cases:
        assert predict_model.main(argv) == 2
        assert capsys.readouterr().err == f"predict_model.py: error: {message}\n"
