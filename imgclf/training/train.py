"""Training: from a folder of labelled images to a servable SavedModel.

    >>> from imgclf.training import train
    >>> result = train("LenetModel", "data/train", "data/test", "models", num_epochs=10)
    >>> result.export_path, result.test_metrics["accuracy"]
    ('models/LenetModel/1', 0.98)
    >>> config = TrainingConfig(num_epochs=20, fine_tune_epochs=10, model_kwargs={"weights": "imagenet"})
    >>> result = train("MobileNetV2Model", "data/train", "data/test", "models", config)

What `train` does, in order, one step per function around a `TrainingRun` (the run's state:
identity, version, phase, best): check every option and the model's arguments, take the model
folder's lock and check the run against an interrupted run's backup (`TrainingRun.begin`, all
before any image is decoded); seed everything and read the data (`prepare_data`); build and
compile the model (`build_model`); pin the run's identity and version in the backup
(`TrainingRun.pin`); phase 1, `fit`; for a pretrained backbone, phase 2: unfreeze the backbone
(`start_fine_tuning`), recompile with a ten times lower learning rate, `fit` again; keep the
best weights of both phases (`train_phases`, `run_phase`, each phase resumable); evaluate them
on the validation and test sets (`evaluate`); save the SavedModel (with how it was made in
`assets.extra/imgclf.json`) and, if asked, a LiteRT file, and log the test confusion matrix to
TensorBoard (`export`). Resume and identity: docs/resume.md.

The layout written under `model_folder_path/<ClassName>/`:
`<version>/` (the best weights as a SavedModel, the base path TF Serving watches; by default the
next free version, so a re-run never replaces the version a server is serving),
`<version>.tflite` and `<version>.labels.txt` (with `export_litert`),
`checkpoints/best/` (a servable SavedModel after each improving epoch, across both phases),
`logs/` (TensorBoard), and while a run is unfinished `backup/` and `.backup.lock`
(`imgclf.training.backup`). TF Serving ignores the non-numeric folders.
"""

import dataclasses
import logging
import math
import os

import keras
import numpy as np

from imgclf.data import create_test_dataset, create_train_val_datasets, first_pass_errors, list_labels
from imgclf.data.augmentation import augment_dataset
from imgclf.data.pipeline import keep_attributes
from imgclf.export.metadata import run_metadata
from imgclf.export.versions import choose_version
from imgclf.training.callbacks import EpochSeeds, ModelCheckpoint
from imgclf.training.config import plan_training, scaled_learning_rates, with_options
from imgclf.training.distributed import DistributedRun, file_shard_context, shard_across_workers
from imgclf.training.identity import run_identity
from imgclf.training.phases import (
    MONITOR, build_model, fit_phase, phase_early_stopping, start_fine_tuning,
)

logger = logging.getLogger("imgclf.training")

#: The phases of a run, in order: the backbone frozen, then fine-tuned (pretrained backbones).
PHASES = ("train", "fine_tune")


@dataclasses.dataclass
class TrainingResult:
    model: keras.Model
    #: Every epoch of both phases: Keras' history lists, concatenated.
    history: dict
    #: The SavedModel written; None on a worker that is not the chief (it writes nothing).
    export_path: str
    test_metrics: dict
    #: How many epochs each phase ran (one entry per phase run).
    phase_epochs: list = dataclasses.field(default_factory=list)
    #: The `.tflite` file written with `export_litert`, else None.
    litert_path: str = None


def train(model_type, train_dataset_path, test_dataset_path, model_folder_path, config=None, *,
          verbose="auto", callbacks=(), **options):
    """Train a model on `train_dataset_path`, save it as a SavedModel, evaluate it on the test set.

    Args:
        model_type: a registered model name (`"LenetModel"`) or `"package.module:ClassName"`.
        train_dataset_path, test_dataset_path: folders of `<class>/<image>`; a part of the
            training folder (`1 - split_ratio`) is held out for validation.
        model_folder_path: where `<ClassName>/<model_version>/` is written.
        config: a `TrainingConfig`; `options` (its field names) override it.
        callbacks: more Keras callbacks, used in both phases.

    Returns a `TrainingResult`.

    A run that was killed resumes after its last finished epoch when started again with the same
    definition (model, options, data) and ends as it would have unkilled; a different definition
    is refused before any work (`imgclf.training.backup`, docs/resume.md).
    """
    plan = plan_training(model_type, with_options(config, options))
    # The strategy comes first: MultiWorkerMirroredStrategy must precede other TensorFlow work.
    process = DistributedRun.start(
        os.path.join(model_folder_path, plan.model_class.__name__), plan.config.distribution,
        plan.config.batch_size, restart=plan.config.restart,
    )
    succeeded = False
    try:
        process.backup.lock()
        run = TrainingRun.begin(process, plan, train_dataset_path)
        data = prepare_data(run, train_dataset_path, test_dataset_path)
        with process.strategy.scope():
            model = build_model(run.plan, data.class_names, data.steps_per_epoch)
        run.pin()
        histories = train_phases(run, model, data, verbose, callbacks)
        validation_metrics, test_metrics = evaluate(model, data, verbose)
        result = export(run, model, data, histories, validation_metrics, test_metrics,
                        model_type, {"train": train_dataset_path, "test": test_dataset_path})
        succeeded = True
    finally:
        process.finish(succeeded=succeeded)
        process.backup.unlock()
    return result


@dataclasses.dataclass
class TrainingRun:
    """The state of one training run, in one place: what it is, where it is, what it has.

    Attributes:
        plan: the checked options, learning rates scaled for the replicas.
        process: this process's `DistributedRun` (strategy, folders, backup).
        identity: what defines the run (`imgclf.training.identity`); a backup of another
            identity is refused.
        resumed: whether this run continues an interrupted one (from `process.backup`).
        version: the version it writes; pinned (recorded in the backup) when training starts.
        phase: the phase it is in: None before training, then "train", "fine_tune".
        best: the best validation accuracy of each finished phase, by name.
        checkpoint: the `ModelCheckpoint` of `checkpoints/best/`, shared by both phases.
    """

    plan: object
    process: DistributedRun
    identity: dict
    resumed: bool
    version: int = None
    phase: str = None
    best: dict = dataclasses.field(default_factory=dict)
    checkpoint: object = None

    @classmethod
    def begin(cls, process, plan, train_dataset_path):
        """Check that this run may start: the same run as a backup's, a free version.

        Reads no image (the data's fingerprint lists files): a refusal costs nothing.
        """
        replicas = process.plan.num_replicas
        identity = run_identity(plan, replicas, train_dataset_path)
        backup = process.backup
        backup.check(identity, asked_version=plan.config.model_version)
        if not backup.exists:
            # Refuses an existing --model_version now, not after training.
            choose_version(process.run_folder, plan.config.model_version, plan.config.overwrite,
                           litert=plan.config.export_litert)
        return cls(scaled_learning_rates(plan, replicas), process, identity, backup.exists)

    @property
    def backup(self):
        return self.process.backup

    @property
    def output_folder(self):
        return self.process.output_folder

    def pin(self):
        """Training starts: record the identity and version in the backup (the version the
        interrupted run chose, if resumed). Nothing before this leaves anything behind."""
        config = self.plan.config
        self.version = self.backup.pin(
            self.identity,
            lambda: choose_version(self.process.run_folder, config.model_version, config.overwrite,
                                   litert=config.export_litert),
        )


@dataclasses.dataclass
class TrainingData:
    """The data sets of a run and what follows from them."""

    train_ds: object
    val_ds: object
    test_ds: object
    class_names: list
    steps_per_epoch: int
    #: `fit`'s `steps_per_epoch`: None, or the steps of an endless (repeated) training set.
    fit_steps: int = None
    class_weight: dict = None
    input_context: object = None


def prepare_data(run, train_dataset_path, test_dataset_path):
    """The training, validation and test sets, sharded for the strategy; seeds everything."""
    config = run.plan.config
    keras.utils.set_random_seed(config.seed)
    input_shape = run.plan.model_args["input_shape"]
    strategy_plan = run.process.plan
    batch_size = strategy_plan.global_batch_size
    input_context = file_shard_context(strategy_plan, train_dataset_path)
    train_ds, val_ds = create_train_val_datasets(
        train_dataset_path, input_shape, batch_size, split_ratio=config.split_ratio,
        seed=config.seed, cache=config.cache, input_context=input_context,
        writer=run.process.is_chief,
    )
    fit_steps = None
    if input_context is None:
        steps_per_epoch = _steps_per_epoch(train_ds, batch_size)
    else:
        # Sharded by file, workers hold different numbers of records (shards differ, bad records
        # drop out as they are found), and a collective step waits for every worker: a worker
        # that ran out of data would hang the others. So each worker repeats its part endlessly
        # and every worker runs the same number of steps per epoch, computed alike everywhere
        # from the layout: as many as the whole training set fills global batches, the epoch of
        # a run sharded by data. Each step takes `batch_size / num_workers` images from each
        # worker's part; Keras keeps the iterator across epochs, so no part is cut short for
        # good (a smaller part is only revisited sooner).
        steps_per_epoch = fit_steps = max(
            1, math.ceil(sum(train_ds.records_per_pipeline) / batch_size)
        )
        logger.info("training records per worker: %s; %d steps per epoch on every worker",
                    train_ds.records_per_pipeline, steps_per_epoch)
    train_ds = augment_dataset(train_ds, config.augment, seed=config.seed)
    if input_context is not None:
        train_ds = keep_attributes(train_ds, train_ds.repeat())
    class_names = list(train_ds.class_names)
    test_ds = create_test_dataset(
        test_dataset_path, input_shape, batch_size, class_names=class_names,
        writer=run.process.is_chief,
    )
    train_ds = shard_across_workers(train_ds, sharded=input_context is not None)
    val_ds, test_ds = map(shard_across_workers, (val_ds, test_ds))
    class_weight = None
    if config.class_weight == "balanced":
        class_weight = balanced_class_weights(list_labels(train_dataset_path), len(class_names))
    return TrainingData(train_ds, val_ds, test_ds, class_names, steps_per_epoch, fit_steps,
                        class_weight, input_context)


def train_phases(run, model, data, verbose, callbacks):
    """Phase 1 and, for a pretrained backbone, phase 2; the model ends with the better one's
    best weights. Returns each phase's history (all its epochs, also those before a kill)."""
    plan = run.plan
    # One checkpoint callback for both phases: it keeps its best value across fits, so phase 2
    # only writes a checkpoint that beats phase 1's best; resumed, it starts from the best
    # value the killed run had checkpointed.
    run.checkpoint = ModelCheckpoint(
        os.path.join(run.output_folder, "checkpoints", "best"), monitor=MONITOR,
        save_best_only=True, initial_value_threshold=_checkpointed_best(run),
    )
    shared_callbacks = [
        run.checkpoint, keras.callbacks.TensorBoard(log_dir=os.path.join(run.output_folder, "logs")),
        *callbacks,
    ]
    history, phase_1_end = run_phase(run, "train", model, 0, plan.config.num_epochs, data,
                                     shared_callbacks, verbose)
    histories = [history]
    if plan.fine_tune_epochs:
        phase_1_weights = [(v, v.numpy()) for v in model.weights]
        with run.process.strategy.scope():
            start_fine_tuning(model, plan, data.steps_per_epoch)
        history, _ = run_phase(run, "fine_tune", model, phase_1_end, plan.fine_tune_epochs, data,
                               shared_callbacks, verbose)
        histories.append(history)
        if not run.best["fine_tune"] > run.best["train"]:
            # Fine-tuning never beat the frozen backbone: keep phase 1's best weights.
            for variable, value in phase_1_weights:
                variable.assign(value)
    return histories


def run_phase(run, name, model, first_epoch, epochs, data, callbacks, verbose):
    """One phase (`fit_phase`) of at most `epochs` epochs from `first_epoch`, resumed from the
    backup: its weights, early-stopping state, best weights and history.

    Returns the phase's whole history and the epoch it ended at; records its best in
    `run.best[name]`. Every worker computes these alike from what it read before `fit` (the
    backup does not change until every worker is in `fit`) and from `fit`'s global metrics, so
    they take the same decisions.
    """
    run.phase = name
    backup = run.backup.phase(name)
    with run.process.strategy.scope():
        resumed_at = backup.restore(model) or first_epoch
    state = backup.state
    if state.get("done"):
        run.best[name] = _or_minus_infinity(state.get("best"))
        return state.get("history", {}), resumed_at
    early_stopping = phase_early_stopping(run.plan.config.patience)
    remaining = first_epoch + epochs - resumed_at
    if "early_stopping" in state:
        early_stopping.resume(state["early_stopping"], backup.best_weights())
        if state["early_stopping"]["stopped_epoch"]:
            remaining = 0  # killed after it stopped, before the phase was marked done
    epoch_backup = backup.callback(early_stopping, run.checkpoint)
    fit_phase(
        model, data.train_ds, data.val_ds, epochs=remaining, initial_epoch=resumed_at,
        callbacks=[*callbacks, epoch_backup, EpochSeeds(run.plan.config.seed, data.train_ds)],
        patience=run.plan.config.patience, class_weight=data.class_weight, verbose=verbose,
        steps_per_epoch=data.fit_steps, early_stopping=early_stopping,
    )
    run.best[name] = _or_minus_infinity(early_stopping.best)
    history = epoch_backup.history
    backup.finish(model, best=run.best[name], history=history)
    return history, first_epoch + len(history.get("loss", ()))


def evaluate(model, data, verbose):
    """The validation and test metrics of the model's final weights."""
    with first_pass_errors(data.val_ds, data.test_ds):
        validation_metrics = model.evaluate(data.val_ds, return_dict=True, verbose=verbose)
        test_metrics = model.evaluate(data.test_ds, return_dict=True, verbose=verbose)
    return validation_metrics, test_metrics


def export(run, model, data, histories, validation_metrics, test_metrics, model_type, datasets):
    """Save the SavedModel (and LiteRT file), log the test confusion matrix; the result."""
    config = run.plan.config
    version = run.version
    metadata = run_metadata(
        run.plan, run.process.plan, model_type, version, datasets=datasets, validation_metrics=validation_metrics, test_metrics=test_metrics,
    )
    export_path = model.save(
        os.path.join(run.output_folder, str(version)), overwrite=config.overwrite or run.resumed,
        metadata=metadata,
    )
    litert_path = None
    if config.export_litert:
        litert_path = model.save(os.path.join(run.output_folder, f"{version}.tflite"),
                                 overwrite=config.overwrite or run.resumed)
    keys = dict.fromkeys(key for h in histories for key in h)
    merged = {key: [v for h in histories for v in h.get(key, [])] for key in keys}
    from imgclf.evaluation import model_confusion_matrix

    # Every worker predicts (collective under a multi-worker strategy); the chief alone draws
    # the picture: a worker's logs go with its temporary folder, and matplotlib's import and
    # the drawing cost it 1.6 CPU s.
    matrix = model_confusion_matrix(model, data.test_ds)
    if run.process.is_chief:
        from imgclf.reports import log_confusion_matrix

        log_confusion_matrix(os.path.join(run.output_folder, "logs", "test"), matrix,
                             model.class_names, step=len(merged.get(MONITOR, ())))
    if data.input_context is not None:
        logger.info("worker %d read the training shard files: %s",
                    data.input_context.input_pipeline_id,
                    ", ".join(sorted(os.path.basename(p) for p in data.train_ds.opened_shard_files)))
    if not run.process.is_chief:
        # A worker's copies were temporary; they go with its folder.
        export_path = litert_path = None
    return TrainingResult(
        model, merged, export_path, test_metrics, [len(h.get(MONITOR, ())) for h in histories],
        litert_path,
    )


def _checkpointed_best(run):
    """The best value `checkpoints/best/` holds from before a kill (None on a fresh run)."""
    values = [run.backup.phase(name).state.get("checkpoint_best") for name in PHASES]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def _or_minus_infinity(value):
    return -math.inf if value is None else value


def balanced_class_weights(labels, num_classes):
    """`{class: total / (num_classes x count)}`: each class weighs the same in the loss.

        >>> balanced_class_weights([0, 0, 0, 1], 2)
        {0: 0.6666666666666666, 1: 2.0}
    """
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=num_classes)
    return {c: len(labels) / (num_classes * int(n)) for c, n in enumerate(counts) if n}


def _steps_per_epoch(dataset, batch_size):
    steps = int(dataset.cardinality())
    if steps < 0 and hasattr(dataset, "file_paths"):
        # imgclf data sets drop unreadable files as they go: their length is known from the files.
        steps = math.ceil(len(dataset.file_paths) / batch_size)
    return steps if steps > 0 else 1
