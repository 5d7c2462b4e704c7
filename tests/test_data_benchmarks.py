"""The benchmark scripts of bench/ run end to end, tiny: the GPU one on CPU (no GPU here)."""

import importlib.util
import json
import os
import re

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_training_bench_runs_on_cpu(tmp_path):
    """fp32 and mixed precision with XLA (the code paths of every mode), on one device and under
    MirroredStrategy."""
    bench = load("gpu_training_bench")
    results_md, results_json = tmp_path / "RESULTS.md", tmp_path / "results.json"
    results = bench.main([
        "--model", "tiny", "--image_size", "32", "--batch_size", "4", "--steps", "2",
        "--warmup_steps", "1", "--modes", "fp32,mixed_xla",
        "--strategies", "one,mirrored", "--results", str(results_md), "--json", str(results_json),
    ])
    assert [(r["strategy"], r["mode"]) for r in results] == [
        (s, m) for s in ("one", "mirrored") for m in ("fp32", "mixed_xla")
    ]
    assert all(r["images_per_second"] > 0 and r["global_batch"] == 4 for r in results)
    written = json.loads(results_json.read_text())
    assert written["device"] == "CPU only (no GPU visible)"
    table = results_md.read_text()
    assert "| one | fp32 | 1 | 4 |" in table and "| mirrored | mixed_xla | 1 | 4 |" in table


def test_gpu_training_bench_refuses_unknown_modes(capsys):
    bench = load("gpu_training_bench")
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--modes", "fp32,fp8"])
    assert exit_.value.code == 2
    assert "--modes takes a comma-separated list of fp32, mixed, xla, mixed_xla; received " \
        "'fp32,fp8'" in capsys.readouterr().err


def test_input_pipeline_bench_measures_every_pipeline(tmp_path, monkeypatch):
    bench = load("input_pipeline_bench")
    dropped = []
    # The real drop needs root and empties the whole machine's page cache: counted instead.
    monkeypatch.setattr(bench, "drop_page_cache", lambda: dropped.append(1))
    results = tmp_path / "RESULTS.md"
    bench.main([
        "--num_images", "40", "--num_classes", "2", "--image_size", "32", "--batch_size", "8",
        "--rounds", "1", "--data", str(tmp_path / "data"), "--results", str(results), "--cold",
        # Any commit's loader exercises the comparison; HEAD needs no history in the clone.
        "--baseline_ref", "HEAD",
    ])
    text = results.read_text()
    start = "time to first batch (train + val + test sets made)"
    for row in ("imgclf decode_image alone", "plain TF: read_file", "TFRecord over the folder",
                "imgclf training set, 1st epoch",
                "imgclf training set, later epoch", "imgclf cache=memory, cached epoch",
                "imgclf from TFRecord", "keras image_dataset_from_directory",
                "keras image_dataset_from_directory, from disk",
                "imgclf training set, later epoch, from disk",
                "imgclf from TFRecord (8 shards), later epoch, from disk",
                "TFRecord over the folder, later epoch, from disk",
                "TFRecord over the folder, later epoch, side by side",
                "TFRecord over the folder, later epoch, from disk, side by side",
                f"{start}, before (HEAD", f"{start}, imgclf"):
        assert f"| {row}" in text
    assert "| wall, x Keras: best / median |" in text
    # The check that it can, then the two cold pipelines' epochs and Keras' three around them,
    # and two cold epochs of each side by side.
    assert len(dropped) == 1 + 2 + 3 + 4


def test_input_pipeline_bench_refuses_cold_without_root(tmp_path, monkeypatch, capsys):
    bench = load("input_pipeline_bench")

    def denied():
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(bench, "drop_page_cache", denied)
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--cold", "--data", str(tmp_path / "data")])
    assert exit_.value.code == 2
    assert "--cold drops the page cache: it needs Linux and root" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # refused before generating anything


def test_tfrecord_bench_compares_records_folder_and_keras(tmp_path, monkeypatch):
    bench = load("tfrecord_bench")
    dropped = []
    monkeypatch.setattr(bench.pipeline_bench, "drop_page_cache", lambda: dropped.append(1))
    results = tmp_path / "RESULTS.md"
    bench.main(["--num_images", "40", "--num_classes", "2", "--image_size", "32",
                "--batch_size", "8", "--rounds", "1", "--shard_size_mb", "1",
                "--data", str(tmp_path / "data"), "--results", str(results), "--cold"])
    text = results.read_text()
    for where in ("page cache", "from disk"):
        for row in ("TFRecord over the folder", "the folder over Keras' loader",
                    "TFRecord over Keras' loader"):
            assert f"| {row}, {where} | **" in text
    assert re.search(r"TFRecord: \d+ shard\(s\) of \d+-\d+ MB \(shard size 1 MB\), "
                     r"converted in", text)
    # The check that it can, then two epochs of each of the three pipelines from disk.
    assert len(dropped) == 1 + 3 * 2
