"""The folder-to-TFRecord converter, its command, and data sets read from the shards."""

import collections
import json
import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from imgclf.data import convert_folder, create_test_dataset, create_train_val_datasets, list_labels
from imgclf.data.folders import list_image_files
from imgclf.data.tfrecord import (
    LAYOUT_FILE, ShardWriter, main, scan_spans, shard_file_names, write_layout,
)
from test_data_folders import pixel_levels, sides, write_dataset


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = write_dataset(tmp_path_factory.mktemp("folder"), {"a": 6, "b": 5, "c": 3})
    (folder / "b" / "zz.png").write_bytes(b"")  # not known as bad yet: goes into a record
    records = tmp_path_factory.mktemp("records") / "train"
    layout = convert_folder(folder, records, num_shards=3, seed=1)
    return folder, records, layout


def test_converter_writes_shards_of_examples_and_the_layout(converted):
    folder, records, layout = converted
    assert sorted(os.listdir(records)) == [
        "data-00000-of-00003.tfrecord", "data-00001-of-00003.tfrecord",
        "data-00002-of-00003.tfrecord", LAYOUT_FILE,
    ]
    assert json.loads((records / LAYOUT_FILE).read_text()) == layout
    assert layout["class_names"] == ["a", "b", "c"] and layout["num_examples"] == 15
    assert sorted(i for shard in layout["shards"] for i in shard["indices"]) == list(range(15))
    first = next(iter(tf.data.TFRecordDataset(str(records / "data-00000-of-00003.tfrecord"))))
    example = tf.train.Example.FromString(first.numpy()).features.feature
    index = example["image/index"].int64_list.value[0]
    name = example["image/filename"].bytes_list.value[0].decode()
    assert name == layout["files"][index]
    assert example["image/class/label"].int64_list.value[0] == layout["labels"][index]
    assert example["image/encoded"].bytes_list.value[0] == (folder / name).read_bytes()
    # Each shard's size and where each image's bytes lie in it: readers cut them out unparsed.
    for shard in layout["shards"]:
        data = (records / shard["file"]).read_bytes()
        assert shard["bytes"] == len(data)
        assert [data[start:start + size] for start, size in shard["spans"]] == [
            (folder / layout["files"][i]).read_bytes() for i in shard["indices"]]
        assert scan_spans(records / shard["file"]) == shard["spans"]


def test_records_split_and_decode_like_the_folder(converted, caplog):
    folder, records, layout = converted
    with caplog.at_level(logging.WARNING, logger="imgclf.data"):
        test_ds = create_test_dataset(records, (16, 16), 4)
        levels = pixel_levels(test_ds)
    bad_index = layout["files"].index("b/zz.png")
    shard = records / next(s["file"] for s in layout["shards"] if bad_index in s["indices"])
    bad = [m for m in caplog.messages if "zz.png" in m]
    assert bad == [f"skipping unreadable record 'b/zz.png' in '{shard}': Input is empty."]
    assert test_ds.class_names == ["a", "b", "c"]
    # Shard order, file names in the same order as the pixels.
    assert [10 * "abc".index(n[0]) + int(n[2:4]) for n in test_ds.file_paths] == levels
    assert sorted(levels) == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 20, 21, 22]

    folder_train, folder_val = create_train_val_datasets(folder, (16, 16), 4, seed=7)
    train_ds, val_ds = create_train_val_datasets(records, (16, 16), 4, seed=7)
    relative = lambda paths: sorted(os.path.relpath(p, folder) for p in paths)  # noqa: E731
    assert sorted(train_ds.file_paths) == relative(folder_train.file_paths)
    assert sorted(val_ds.file_paths) == relative(folder_val.file_paths)
    assert sorted(pixel_levels(train_ds)) == sorted(pixel_levels(folder_train))
    assert sorted(pixel_levels(val_ds)) == sorted(pixel_levels(folder_val))


def test_a_layout_without_spans_reads_alike_and_a_changed_shard_is_refused(converted, tmp_path,
                                                                         caplog):
    """Layouts written before `spans` existed are read by finding the images in the records; a
    shard that changed since it was written (its size differs) or went missing is refused when
    the data set is made, naming the file."""
    _, records, layout = converted
    expected = pixel_levels(create_test_dataset(records, (16, 16), 4))
    old = tmp_path / "old"
    shutil.copytree(records, old)
    stripped = json.loads((old / LAYOUT_FILE).read_text())
    for shard in stripped["shards"]:
        del shard["spans"], shard["bytes"]
    (old / LAYOUT_FILE).write_text(json.dumps(stripped))
    with caplog.at_level(logging.INFO, logger="imgclf.data"):
        assert pixel_levels(create_test_dataset(old, (16, 16), 4)) == expected
    assert f"finding the images in '{old / layout['shards'][0]['file']}'" in caplog.text

    changed = tmp_path / "changed"
    shutil.copytree(records, changed)
    shard = changed / layout["shards"][1]["file"]
    with open(shard, "ab") as file:
        file.write(b"more")
    with pytest.raises(ValueError) as error:
        create_train_val_datasets(changed, (16, 16), 4)
    assert str(error.value) == (
        f"shard file '{shard}' has {layout['shards'][1]['bytes'] + 4} bytes, its layout says "
        f"{layout['shards'][1]['bytes']}: it changed since it was written; convert the data set "
        "again"
    )
    with pytest.raises(ValueError, match="ends inside a record header at byte"):
        scan_spans(shard)
    shard.unlink()
    with pytest.raises(FileNotFoundError) as error:
        create_test_dataset(changed, (16, 16), 4)
    assert str(error.value) == f"shard file '{shard}' of the TFRecord data set is missing"


def test_a_training_sets_order_depends_on_the_seed_and_epoch_alone(converted):
    """Shards and the records of each draw their order from (seed, epoch): a run
    resumed at epoch 2 in a new process reads epoch 2's order, as the unkilled run did."""
    _, records, _ = converted
    unkilled, _ = create_train_val_datasets(records, (16, 16), 32, seed=3)
    orders = [pixel_levels(unkilled) for _ in range(3)]
    assert orders[0] != orders[1] != orders[2] and sorted(orders[0]) == sorted(orders[2])
    resumed, _ = create_train_val_datasets(records, (16, 16), 32, seed=3)
    resumed.start_epoch(2)
    assert pixel_levels(resumed) == orders[2]
    resumed.start_epoch(0)
    assert pixel_levels(resumed) == orders[0]


def one_class_shards(tmp_path, classes=4, per_class=10):
    """TFRecords whose every shard holds one class, as Spark may write them."""
    folder = write_dataset(tmp_path / "folder", {c: per_class for c in "abcd"[:classes]})
    paths, labels, class_names = list_image_files(folder)
    files = [os.path.relpath(path, folder) for path in paths]
    records = tmp_path / "records"
    records.mkdir()
    shards = []
    for label, name in enumerate(shard_file_names(classes)):
        members = [i for i, l in enumerate(labels) if l == label]
        with ShardWriter(records / name) as writer:
            for i in members:
                with open(paths[i], "rb") as file:
                    writer.write(file.read(), label, files[i], i)
        shards.append({"file": name, "indices": members, **writer.entry()})
    write_layout(records, class_names, files, labels, shards)
    return records


def test_every_training_batch_mixes_shards_of_one_class_each(tmp_path, monkeypatch):
    """A training set takes the records of up to `SHARDS_MIXED` shards in turn: shards of one
    class each still give batches of every class; with shards too large to hold that many at
    once it mixes fewer, two at least."""
    from imgclf.data import records as records_module

    records = one_class_shards(tmp_path)
    train_ds, _ = create_train_val_datasets(records, (8, 8), 8, seed=2)
    # Until the smallest class runs out, each batch of 8 holds 2 records of each class.
    rounds = min(collections.Counter(path[0] for path in train_ds.file_paths).values())
    for _ in range(2):
        batches = [labels.numpy().tolist() for _, labels in train_ds]
        mixed = [sorted(batch) for batch in batches[:rounds // 2]]
        assert mixed == [[0, 0, 1, 1, 2, 2, 3, 3]] * (rounds // 2)
        assert sum(map(len, batches)) == len(train_ds.file_paths)
    monkeypatch.setattr(records_module, "SHARDS_MIXED_BYTES", 1)
    train_ds, _ = create_train_val_datasets(records, (8, 8), 8, seed=2)
    batches = [set(labels.numpy().tolist()) for _, labels in train_ds]
    assert len(batches[0]) == 2 and set().union(*batches) == {0, 1, 2, 3}


def test_shards_mixed_depend_on_the_layout_alone():
    from imgclf.data import records

    assert records._shards_mixed([{"bytes": 12 << 20}] * 20) == records.SHARDS_MIXED == 8
    assert records._shards_mixed([{"bytes": 12 << 20}] * 3) == 3
    assert records._shards_mixed([{"bytes": 100 << 20}] * 20) == 2
    assert records._shards_mixed([{"bytes": 2 << 30}] * 20) == 2  # two at least
    assert records._shards_mixed([{"bytes": 2 << 30}]) == 1


def test_input_context_reads_whole_shard_files(converted):
    _, records, layout = converted
    full, _ = create_train_val_datasets(records, (16, 16), 4)
    parts = [
        create_train_val_datasets(
            records, (16, 16), 4, input_context=tf.distribute.InputContext(2, index, 1)
        )[0]
        for index in range(2)
    ]
    shard_files = [{layout["files"][i] for i in shard["indices"]} for shard in layout["shards"]]
    assert set(parts[0].file_paths) <= shard_files[0] | shard_files[2]
    assert set(parts[1].file_paths) <= shard_files[1]
    assert sorted(parts[0].file_paths + parts[1].file_paths) == sorted(full.file_paths)

    with pytest.raises(ValueError) as error:
        create_train_val_datasets(
            records, (16, 16), 4, input_context=tf.distribute.InputContext(4, 0, 1)
        )
    assert str(error.value) == (
        f"'{records}' has 3 shard files, fewer than the 4 input pipelines; "
        "convert it again with --num_shards 4 or more"
    )


def test_command_converts_and_refuses_a_used_output(tmp_path, capsys):
    folder = write_dataset(tmp_path / "folder", {"a": 2, "b": 2})
    assert main([str(folder), str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out == (
        f"wrote 4 images of 2 classes into 1 shards in '{tmp_path / 'out'}'\n"
    )
    assert main([str(folder), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        "python -m imgclf.data.tfrecord: error: "
        f"output directory '{tmp_path / 'out'}' is not empty\n"
    )
    assert main([str(folder), str(tmp_path / "x"), "--shard_size_mb", "0"]) == 2
    assert capsys.readouterr().err == (
        "python -m imgclf.data.tfrecord: error: shard_size_mb must be a positive number; "
        "received 0.0\n"
    )


def test_auto_sharded_by_a_strategy_names_no_record_of_other_workers(converted, caplog):
    """tf.distribute's auto-sharding (AUTO: by file where it can, else by data), as a multi-worker
    strategy applies it, names no record another worker reads as unreadable. (Shard by file with
    `input_context`, see above: tf.data's own file sharding does not reach past the data set's
    end-of-pass check, so AUTO shards by data.)"""
    from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

    _, records, layout = converted
    dataset = create_test_dataset(records, (16, 16), 2)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.AUTO
    workers = [_AutoShardDataset(dataset.with_options(options), num_workers=2, index=index)
               for index in range(2)]
    with caplog.at_level(logging.WARNING, logger="imgclf.data"):
        levels = [pixel_levels(worker) for worker in workers]
    assert sorted(levels[0] + levels[1]) == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 20, 21, 22]
    assert [m for m in caplog.messages if "skipping" in m] == [
        f"skipping unreadable record 'b/zz.png' in '{records / shard['file']}': Input is empty."
        for shard in layout["shards"] if layout["files"].index("b/zz.png") in shard["indices"]
    ]  # both "workers" share this process's check: named once


def test_records_split_like_the_folder_with_files_left_out_by_the_converter(tmp_path):
    """A file known unreadable when converted is not in any record, but still takes its place in
    the split, as in the folder's: the class of two below keeps its good file on the same side."""
    folder = write_dataset(tmp_path / "folder", {"a": 6, "x": 2})
    (folder / "x" / "01.png").write_bytes(b"")
    pixel_levels(create_test_dataset(folder, (16, 16), 8))  # found and remembered
    records = tmp_path / "records"
    layout = convert_folder(folder, records, num_shards=2)
    assert layout["files"][7] is None and layout["left_out"] == [[7, "x/01.png"]]
    assert list_labels(records) == [0] * 6 + [1]
    for seed in range(4):
        folder_sides = sides(*create_train_val_datasets(folder, (16, 16), 8, seed=seed), folder)
        record_sides = sides(*create_train_val_datasets(records, (16, 16), 8, seed=seed), folder)
        assert record_sides == folder_sides, seed


def test_every_data_set_runs_without_autotuning_on_every_core(converted):
    """Closing an autotuned iterator waits for the rest of tf.data's optimisation period (0.3 s
    after a one-second epoch, seconds after longer ones): imgclf's data sets turn it off and
    give each parallel stage every core (`imgclf.data.pipeline.without_autotuning`)."""
    folder, records, _ = converted
    cores = len(os.sched_getaffinity(0))
    for source in (folder, records):
        datasets = (*create_train_val_datasets(source, (8, 8), 4),
                    create_test_dataset(source, (8, 8), 4))
        for dataset in datasets:
            options = dataset.options()
            assert options.autotune.enabled is False, source
            assert options.autotune.initial_parallelism == cores, source


def test_shards_in_flight_are_bounded_by_the_cores_the_count_and_the_memory(monkeypatch):
    from imgclf.data import records

    small = [{"bytes": 12 << 20}] * 20
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert records._shards_in_flight(small) == 2  # a read from the page cache is CPU work
    assert records._shards_in_flight(small[:1]) == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert records._shards_in_flight(small) == records.SHARDS_IN_FLIGHT == 8
    # 200 MB shards: about SHARDS_IN_FLIGHT_BYTES in memory, each held twice while it is cut.
    assert records._shards_in_flight([{"bytes": 200 << 20}] * 20) == 2
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: one at a time
    assert records._shards_in_flight(small) == 1


def test_every_data_set_function_is_made_for_one_device(converted):
    """Keras opens an iterator every epoch, and a multi-device tf.data function is optimised by
    Grappler each time it is made (40 ms before a one-second epoch's first batch): every function
    a transformation of imgclf's data sets runs is marked for one device
    (`imgclf.data.one_device`), and functions made elsewhere are left as they are."""
    from imgclf.data.one_device import ONE_DEVICE_ATTRIBUTE, one_device_functions

    def functions(dataset):
        graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())
        # tf.data's own functions (`__inference_Dataset_<transformation>_...`), not the branches
        # of a `tf.cond` in them.
        return {f.signature.name: f.attr[ONE_DEVICE_ATTRIBUTE].b for f in graph.library.function
                if "Dataset_" in f.signature.name}

    folder, records, _ = converted
    for source in (folder, records):
        train_ds, val_ds = create_train_val_datasets(source, (8, 8), 4, seed=3)
        for dataset in (train_ds, val_ds, create_test_dataset(source, (8, 8), 4)):
            marks = functions(dataset)
            assert len(marks) >= 5 and all(marks.values()), (source, marks)
        # They run: a checking pass, then a trusting one (other functions).
        for _ in range(2):
            assert sum(int(labels.shape[0]) for _, labels in train_ds) == len(train_ds.file_paths)
    plain = tf.data.Dataset.range(3).map(lambda x: x + 1)
    assert functions(plain) and not any(functions(plain).values())
    with one_device_functions():
        marked = tf.data.Dataset.range(3).map(lambda x: x + 1)
    assert all(functions(marked).values()) and list(marked.as_numpy_iterator()) == [1, 2, 3]
