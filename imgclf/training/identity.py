"""What defines a training run: its identity, recorded in the backup and compared on a re-run.

A backup may only be resumed by the run it belongs to. `run_identity` lists what decides the
result: the model class and its arguments, every resolved training option that changes the
weights (not the ones about output: version, overwrite, LiteRT, cache, restart), the number of
replicas (the global batch and the scaled learning rate follow from it), and the training data
(its classes and a fingerprint of its files). `check_same_run` compares a re-run with the
backup and refuses a different one before any image is decoded, in one line that says what
differs and how to go on:

    >>> identity = run_identity(plan, num_replicas=1, train_dataset_path="data/train")
    >>> check_same_run(backup_identity, identity, "models/LenetModel/backup")
    RunMismatchError: models/LenetModel/backup holds an interrupted run with other settings:
    learning_rate 0.001 -> 0.05, seed 42 -> 1; run again with the original settings to resume it,
    or with restart=True (--restart) to discard it and start afresh
"""

import dataclasses
import hashlib
import json
import os

from imgclf.data.folders import list_image_files
from imgclf.data.tfrecord import LAYOUT_FILE, is_tfrecord_dataset, read_layout

#: `TrainingConfig` fields that do not change the trained weights; the rest are the identity.
NOT_IDENTITY = ("model_version", "overwrite", "export_litert", "cache", "distribution",
                "restart", "model_kwargs", "input_shape")


class RunMismatchError(ValueError):
    """A re-run does not match the interrupted run whose backup it found."""


def run_identity(plan, num_replicas, train_dataset_path):
    """The JSON-able identity of a run: `{"model", "model_arguments", "options", "data"}`."""
    config = plan.config
    options = {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(config) if field.name not in NOT_IDENTITY
    }
    # Resolved values: "the model's default" may change with the code.
    options.update(
        learning_rate=plan.learning_rate,
        # Derived from learning_rate unless given; it matters only with a phase 2.
        fine_tune_learning_rate=plan.fine_tune_learning_rate if plan.fine_tune_epochs else None,
        schedule=plan.schedule, fine_tune_epochs=plan.fine_tune_epochs, replicas=num_replicas,
    )
    model_class = plan.model_class
    return _jsonable({
        "model": f"{model_class.__module__}:{model_class.__qualname__}",
        "model_arguments": plan.model_args,
        "options": options,
        "data": data_fingerprint(train_dataset_path),
    })


def data_fingerprint(path):
    """`{"classes": [...], "images": n, "digest": sha256}` of a training data set.

    A folder: the sorted relative paths and sizes of its image files (listed, not read, so it
    costs a directory walk). A TFRecord directory: its layout file (`tfrecords.json`), which
    lists every record and shard.
    """
    path = os.fspath(path)
    digest = hashlib.sha256()
    if is_tfrecord_dataset(path):
        layout = read_layout(path)
        with open(os.path.join(path, LAYOUT_FILE), "rb") as file:
            digest.update(file.read())
        return {"classes": list(layout["class_names"]), "images": len(layout["files"]),
                "digest": digest.hexdigest()}
    paths, _, class_names = list_image_files(path)
    for file_path in sorted(os.path.relpath(p, path) for p in paths):
        size = os.path.getsize(os.path.join(path, file_path))
        digest.update(f"{file_path}\0{size}\0".encode())
    return {"classes": class_names, "images": len(paths), "digest": digest.hexdigest()}


def check_same_run(recorded, identity, backup_folder, pinned_version=None, asked_version=None):
    """Raise `RunMismatchError` unless `identity` is the `recorded` one of the backup.

    `asked_version` (the re-run's `model_version`, None when left out) must be the version the
    interrupted run pinned: a re-run never writes another version than the one it asked for.
    """
    differences = describe_differences(recorded, identity)
    if asked_version is not None and pinned_version is not None and asked_version != pinned_version:
        differences.append(f"model_version {pinned_version} -> {asked_version}")
    if differences:
        raise RunMismatchError(
            f"{backup_folder} holds an interrupted run with other settings: "
            f"{', '.join(differences)}; run again with the original settings to resume it, or "
            "with restart=True (--restart) to discard it and start afresh"
        )


def describe_differences(recorded, identity):
    """What differs between two identities, as short `name old -> new` phrases."""
    differences = []
    if recorded.get("model") != identity["model"]:
        differences.append(f"model {recorded.get('model')} -> {identity['model']}")
    for group in ("model_arguments", "options"):
        old, new = recorded.get(group, {}), identity[group]
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                differences.append(f"{name} {old.get(name)!r} -> {new.get(name)!r}")
    old, new = recorded.get("data", {}), identity["data"]
    if old.get("classes") != new["classes"]:
        differences.append(f"training classes {old.get('classes')} -> {new['classes']}")
    elif old.get("digest") != new["digest"]:
        differences.append(
            f"training images changed ({old.get('images')} -> {new['images']} files)"
        )
    return differences


def _jsonable(value):
    """`value` as it reads back from JSON (tuples become lists), to compare like with like."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))
