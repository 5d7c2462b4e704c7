"""Training: from a folder of labelled images to a servable SavedModel.

    >>> from imgclf.training import train
    >>> result = train("LenetModel", "data/train", "data/test", "models", num_epochs=10)
    >>> result.export_path, result.test_metrics["accuracy"]
    ('models/LenetModel/1', 0.98)
    >>> config = TrainingConfig(num_epochs=20, fine_tune_epochs=10, model_kwargs={"weights": "imagenet"})
    >>> result = train("MobileNetV2Model", "data/train", "data/test", "models", config)

What `train` does, in order: check every option and the model's arguments (before any image
is decoded); seed everything (`keras.utils.set_random_seed`); read the data; build and compile
the model (`build_model`); phase 1, `fit`; for a pretrained backbone, phase 2: unfreeze the
backbone (`start_fine_tuning`), recompile with a ten times lower learning rate, `fit` again;
keep the best weights of both phases; evaluate them on the validation and test sets; save the
SavedModel (with how it was made in `assets.extra/imgclf.json`) and, if asked, a LiteRT file;
log the test confusion matrix to TensorBoard.

The layout written under `model_folder_path/<ClassName>/`:
`<version>/` (the best weights as a SavedModel, the base path TF Serving watches; by default the
next free version, so a re-run never replaces the version a server is serving),
`<version>.tflite` and `<version>.labels.txt` (with `export_litert`),
`checkpoints/best/` (a servable SavedModel after each improving epoch, across both phases) and
`logs/` (TensorBoard). TF Serving ignores the non-numeric folders.
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
from imgclf.training.callbacks import ModelCheckpoint
from imgclf.training.config import plan_training, scaled_learning_rates, with_options
from imgclf.training.distributed import DistributedRun, file_shard_context, shard_across_workers
from imgclf.training.phases import MONITOR, best_of, build_model, fit_phase, start_fine_tuning

logger = logging.getLogger("imgclf.training")


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

    A run that was killed resumes from its last finished epoch when started again with the same
    arguments, and writes the version it was going to write (`imgclf.training.backup`).
    """
    plan = plan_training(model_type, with_options(config, options))
    # The strategy comes first: MultiWorkerMirroredStrategy must precede other TensorFlow work.
    run = DistributedRun.start(
        os.path.join(model_folder_path, plan.model_class.__name__), plan.config.distribution,
        plan.config.batch_size, restart=plan.config.restart,
    )
    try:
        result = _train_in(run, plan, model_type, train_dataset_path, test_dataset_path, verbose,
                           callbacks)
    except BaseException:
        run.finish(succeeded=False)
        raise
    run.finish(succeeded=True)
    return result


def _train_in(run, plan, model_type, train_dataset_path, test_dataset_path, verbose, callbacks):
    plan = scaled_learning_rates(plan, run.plan.num_replicas)
    config = plan.config
    # Chosen once: a restarted run writes the version the interrupted one chose, even if it had
    # already written it (killed before removing its backup).
    resumed = run.backup.exists
    version = run.backup.remember(
        "version", lambda: choose_version(run.run_folder, config.model_version, config.overwrite,
                                          litert=config.export_litert)
    )
    keras.utils.set_random_seed(config.seed)
    input_shape = plan.model_args["input_shape"]
    batch_size = run.plan.global_batch_size
    input_context = file_shard_context(run.plan, train_dataset_path)
    train_ds, val_ds = create_train_val_datasets(
        train_dataset_path, input_shape, batch_size, split_ratio=config.split_ratio,
        seed=config.seed, cache=config.cache, input_context=input_context,
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
        test_dataset_path, input_shape, batch_size, class_names=class_names
    )
    train_ds = shard_across_workers(train_ds, sharded=input_context is not None)
    val_ds, test_ds = map(shard_across_workers, (val_ds, test_ds))
    class_weight = None
    if config.class_weight == "balanced":
        class_weight = balanced_class_weights(list_labels(train_dataset_path), len(class_names))

    with run.strategy.scope():
        model = build_model(plan, class_names, steps_per_epoch)

    run_folder = run.output_folder
    # One checkpoint callback for both phases: it keeps its best value across fits, so phase 2
    # only writes a checkpoint that beats phase 1's best.
    shared_callbacks = [
        ModelCheckpoint(
            os.path.join(run_folder, "checkpoints", "best"), monitor=MONITOR, save_best_only=True
        ),
        keras.callbacks.TensorBoard(log_dir=os.path.join(run_folder, "logs")),
        *callbacks,
    ]
    fit_args = dict(train_ds=train_ds, val_ds=val_ds, class_weight=class_weight,
                    callbacks=shared_callbacks, patience=config.patience, verbose=verbose,
                    steps_per_epoch=fit_steps)
    # Each phase backs up after every epoch; a restarted run skips the phases that finished
    # and resumes the other at its last finished epoch (epochs count on across phases).
    history, phase_1_end, best_phase_1 = _resumable_phase(
        run, "train", model, 0, config.num_epochs, fit_args
    )
    histories = [history]
    if plan.fine_tune_epochs:
        phase_1_weights = [(v, v.numpy()) for v in model.weights]
        with run.strategy.scope():
            start_fine_tuning(model, plan, steps_per_epoch)
        history, _, best_phase_2 = _resumable_phase(
            run, "fine_tune", model, phase_1_end, plan.fine_tune_epochs, fit_args
        )
        histories.append(history)
        if not best_phase_2 > best_phase_1:
            # Fine-tuning never beat the frozen backbone: keep phase 1's best weights.
            for variable, value in phase_1_weights:
                variable.assign(value)

    with first_pass_errors(val_ds, test_ds):
        validation_metrics = model.evaluate(val_ds, return_dict=True, verbose=verbose)
        test_metrics = model.evaluate(test_ds, return_dict=True, verbose=verbose)
    metadata = run_metadata(
        plan, run.plan, model_type, version,
        datasets={"train": train_dataset_path, "test": test_dataset_path},
        validation_metrics=validation_metrics, test_metrics=test_metrics,
    )
    export_path = model.save(
        os.path.join(run_folder, str(version)), overwrite=config.overwrite or resumed,
        metadata=metadata,
    )
    litert_path = None
    if config.export_litert:
        litert_path = model.save(os.path.join(run_folder, f"{version}.tflite"),
                                 overwrite=config.overwrite or resumed)
    # A resumed run may have skipped a finished phase: its history is empty.
    keys = dict.fromkeys(key for h in histories for key in h)
    merged = {key: [v for h in histories for v in h.get(key, [])] for key in keys}
    from imgclf.reports import log_test_confusion_matrix

    log_test_confusion_matrix(
        os.path.join(run_folder, "logs", "test"), model, test_ds,
        step=len(merged.get(MONITOR, ())),
    )
    if input_context is not None:
        logger.info("worker %d read the training shard files: %s", input_context.input_pipeline_id,
                    ", ".join(sorted(os.path.basename(p) for p in train_ds.opened_shard_files)))
    if not run.is_chief:
        # A worker's copies were temporary; they go with its folder.
        export_path = litert_path = None
    return TrainingResult(
        model, merged, export_path, test_metrics, [len(h.get(MONITOR, ())) for h in histories],
        litert_path,
    )


def _resumable_phase(run, name, model, first_epoch, epochs, fit_args):
    """`fit_phase` for at most `epochs` epochs from `first_epoch`, resumed from the backup.

    Returns the phase's history (only the epochs run now), the epoch it ended at and its best
    validation accuracy. Every worker computes these alike from what it read before `fit` (the
    backup does not change until every worker is in `fit`) and from `fit`'s global metrics, so
    they take the same decisions.
    """
    phase = run.backup.phase(name)
    with run.strategy.scope():
        resumed_at = phase.restore(model) or first_epoch
    state = phase.state
    best_before = state.get("best", -math.inf)
    if state.get("done"):
        return {}, resumed_at, best_before
    history = fit_phase(
        model, epochs=first_epoch + epochs - resumed_at, initial_epoch=resumed_at,
        callbacks=[*fit_args["callbacks"], phase.callback()],
        **{k: v for k, v in fit_args.items() if k != "callbacks"},
    )
    best = max(best_before, best_of(history))
    phase.finish(model, best=best)
    return history, resumed_at + len(history.get("loss", ())), best


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
