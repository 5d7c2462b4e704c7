"""`assets.extra/imgclf.json`: what a saved model is and how it was made, readable without running it.

    >>> metadata = read_model_metadata("models/LenetModel/1")
    >>> metadata["class_names"]
    ['circle', 'square', 'triangle']
    >>> metadata["training"]["test_metrics"]["accuracy"], metadata["created_at"]
    (0.98, '2026-11-22T04:10:00Z')

Every imgclf SavedModel has the model's own description (`model_metadata`: class, constructor
arguments, input shape, class names, signatures, library versions, creation time). One written by
training also has `training` (`run_metadata`: the flags with their defaults resolved, the
strategy, replicas, global batch and scaled learning rates, the data sets' class counts and a
fingerprint of their file lists, the validation and test metrics). A backbone's
`model_arguments.weights` says where its starting weights came from: `"imagenet"`, a file
(`{"file": name, "sha256": ...}`) or null (random). `python -m imgclf.info` lists
the versions of a model with these.
"""

import dataclasses
import datetime
import hashlib
import json
import os
import platform
from importlib import metadata as importlib_metadata

#: imgclf's description of the model (class names, input shape, how it was made).
METADATA_FILE = os.path.join("assets.extra", "imgclf.json")

_LIBRARIES = ("imgclf", "tensorflow", "keras", "numpy")


def model_metadata(model):
    """What a client may want to know of a saved model without running it."""
    from imgclf.export.signatures import SIGNATURE_FUNCTIONS  # TensorFlow: only when saving

    arguments = {
        key: value for key, value in model.get_config().items()
        if key not in ("name", "trainable", "class_names")
    }
    if hasattr(model, "weights_source"):
        # get_config says None (a reloaded model must not download); say where they came from.
        arguments["weights"] = model.weights_source
    return {
        "model_class": type(model).__name__,
        "model_arguments": _jsonable(arguments),
        "input_shape": list(model.image_shape),
        "class_names": list(model.class_names),
        "signatures": sorted(SIGNATURE_FUNCTIONS),
        "library_versions": library_versions(),
        "created_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def training_metadata(flags, datasets=None, validation_metrics=None, test_metrics=None,
                      distribution=None):
    """The `training` entry of a version's metadata: how it was trained and how well it did.

    Args:
        flags: the training arguments (`{"batch_size": 32, "augment": "light", ...}`).
        datasets: `{"train": folder, "test": folder}`: each is summarised by `dataset_summary`.
        validation_metrics, test_metrics: `{"accuracy": 0.98, "loss": 0.05}` of the saved weights.
        distribution: how the run was spread over devices (`run_distribution`), if known.
    """
    training = {
        "flags": _jsonable(flags),
        "datasets": {name: dataset_summary(folder) for name, folder in (datasets or {}).items()},
        "validation_metrics": _floats(validation_metrics),
        "test_metrics": _floats(test_metrics),
        **launcher_metadata(),
    }
    if distribution is not None:
        training["distribution"] = _jsonable(distribution)
    return {"training": training}


def run_metadata(plan, strategy_plan, model_type, version, datasets=None,
                 validation_metrics=None, test_metrics=None):
    """The `training` entry of a version written by `imgclf.training.train`: what actually ran.

    `flags` are the run's options with every default resolved (learning rates, schedule,
    fine-tuning epochs, augmentation, input shape), learning rates per replica as they are given;
    `distribution` (`run_distribution`) has the strategy, replicas, global batch and the learning
    rates after scaling for the replicas.

        >>> metadata = run_metadata(plan, run.plan, "LenetModel", 3, {"train": "data/train"})
        >>> metadata["training"]["flags"]["learning_rate"], metadata["training"]["distribution"]
        (0.001, {'strategy': 'DefaultStrategy', 'num_workers': 1, 'num_replicas': 1, ...})
    """
    learning_rate, fine_tune_learning_rate = plan.per_replica_learning_rates
    flags = {
        "model_type": model_type,
        **dataclasses.asdict(plan.config),
        "model_version": version,
        "learning_rate": learning_rate,
        # None when no phase 2 ran: the rate was never used.
        "fine_tune_learning_rate": fine_tune_learning_rate if plan.fine_tune_epochs else None,
        "schedule": plan.schedule,
        "fine_tune_epochs": plan.fine_tune_epochs,
    }
    return training_metadata(
        flags, datasets=datasets, validation_metrics=validation_metrics,
        test_metrics=test_metrics, distribution=run_distribution(plan, strategy_plan),
    )


def run_distribution(plan, strategy_plan):
    """How a run was spread: the strategy's name, workers, replicas, batch per replica and
    global, and the learning rates the optimizers ran with (scaled for the replicas by the
    optimizer's rule, `imgclf.training.strategies.LEARNING_RATE_SCALING`)."""
    from imgclf.training.strategies import LEARNING_RATE_SCALING

    return {
        "strategy": strategy_plan.name,
        "num_workers": strategy_plan.num_workers,
        "num_replicas": strategy_plan.num_replicas,
        "per_replica_batch_size": strategy_plan.per_replica_batch_size,
        "global_batch_size": strategy_plan.global_batch_size,
        "learning_rate_scaling": LEARNING_RATE_SCALING[plan.config.optimizer],
        "learning_rate_scale": plan.learning_rate_scale,
        "learning_rate": plan.learning_rate,
        "fine_tune_learning_rate": plan.fine_tune_learning_rate if plan.fine_tune_epochs else None,
    }


def launcher_metadata():
    """`{"launcher": {...}}` from `$IMGCLF_LAUNCHER` (JSON), set by what started the training
    (`imgclf.spark.train`: `{"name": "spark", "num_workers": 2, ...}`); `{}` when unset."""
    text = os.environ.get("IMGCLF_LAUNCHER", "").strip()
    if not text:
        return {}
    try:
        launcher = json.loads(text)
    except ValueError:
        launcher = text
    return {"launcher": launcher if isinstance(launcher, dict) else {"name": str(launcher)}}


def dataset_summary(folder):
    """A data set's path, images per class and a fingerprint of its file list.

    For a folder, the fingerprint is the SHA-256 of the sorted `(relative path, size)` of every
    image: it changes when a file is added, removed, renamed or replaced by one of another size,
    so two versions trained on the same fingerprint saw the same files. For a TFRecord directory
    it is the SHA-256 of its `tfrecords.json`, which lists every shard and the file each record
    came from.
    """
    from imgclf.data import list_image_files, list_labels
    from imgclf.data.tfrecord import LAYOUT_FILE, is_tfrecord_dataset, read_layout

    folder = os.fspath(folder)
    digest = hashlib.sha256()
    if is_tfrecord_dataset(folder):
        class_names = read_layout(folder)["class_names"]
        labels = list_labels(folder)
        with open(os.path.join(folder, LAYOUT_FILE), "rb") as file:
            digest.update(file.read())
    else:
        paths, labels, class_names = list_image_files(folder)
        for path in sorted(os.path.relpath(p, folder) for p in paths):
            digest.update(f"{path}\0{os.path.getsize(os.path.join(folder, path))}\n".encode())
    counts = {name: 0 for name in class_names}
    for label in labels:
        counts[class_names[label]] += 1
    return {
        "path": os.path.abspath(folder),
        "num_images": len(labels),
        "class_counts": counts,
        "fingerprint": f"sha256:{digest.hexdigest()}",
    }


def library_versions():
    """The versions of Python and the libraries that made a model."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_model_metadata(saved_model_path, metadata):
    """Write `metadata` (a JSON-able dict) as the `METADATA_FILE` of a SavedModel."""
    path = os.path.join(os.fspath(saved_model_path), METADATA_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(metadata, file, indent=2)


def read_model_metadata(saved_model_path):
    """The metadata saved with an imgclf SavedModel at `saved_model_path`."""
    path = os.path.join(os.fspath(saved_model_path), METADATA_FILE)
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{saved_model_path!s} is not an imgclf SavedModel: {METADATA_FILE} is missing"
        ) from None


def _floats(metrics):
    return {str(k): float(v) for k, v in (metrics or {}).items()}


def _jsonable(value):
    """`value` with tuples as lists and anything JSON cannot hold as its `str`."""
    return json.loads(json.dumps(value, default=str))
