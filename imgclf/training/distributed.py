"""One process's part in a (possibly distributed) training run: strategy, output folder, backup.

Every worker of a multi-worker run executes the same program, and every worker must take part
in every collective step: building, fitting, evaluating and even saving (a SavedModel export
reads distributed variables). Only the chief's results are kept. `DistributedRun` gives each
process the folder it writes to: the chief writes into `<model_folder_path>/<ClassName>/`
(the version, `checkpoints/`, `logs/`, the metadata); the other workers write the very same
files into a temporary folder, removed when the run ends, successful or not.

    >>> run = DistributedRun.start("models/LenetModel", distribution="auto", batch_size=32,
    ...                            restart=False)
    >>> with run.strategy.scope():
    ...     model = LenetModel(...); compile_model(model, 1e-3)
    >>> context = file_shard_context(run.plan, "records/train")  # TFRecord: this worker's files
    >>> train_ds, val_ds = create_train_val_datasets(..., input_context=context)
    >>> train_ds = shard_across_workers(train_ds, sharded=context is not None)
    >>> ... checkpoints under run.output_folder, resume with run.backup ...
    >>> run.finish(succeeded=True)                  # remove the temporary folder and the backup
"""

import dataclasses
import logging
import os
import shutil
import tempfile

import tensorflow as tf

from imgclf.data.pipeline import keep_attributes
from imgclf.data.tfrecord import is_tfrecord_dataset, read_layout
from imgclf.training.backup import RunBackup
from imgclf.training.strategies import cluster_from_tf_config, create_strategy, describe_strategy

logger = logging.getLogger("imgclf.training")

BACKUP_FOLDER = "backup"


@dataclasses.dataclass
class DistributedRun:
    """This process's view of a training run.

    Attributes:
        plan: the `StrategyPlan` (strategy, replicas, role, global batch).
        run_folder: `<model_folder_path>/<ClassName>`, the chief's output folder.
        output_folder: where this process writes: `run_folder` on the chief, a temporary folder
            on the other workers.
        backup: the `RunBackup` under `run_folder/backup` (written by the chief, read by all).
    """

    plan: object
    run_folder: str
    output_folder: str
    backup: RunBackup

    @classmethod
    def start(cls, run_folder, distribution="auto", batch_size=32, restart=False):
        """Create the strategy (first: it must precede other TensorFlow work) and the folders."""
        strategy = create_strategy(distribution)
        plan = describe_strategy(strategy, batch_size)
        logger.info("distribution: %s", plan.summary())
        run_folder = os.fspath(run_folder)
        if plan.is_chief:
            output_folder = run_folder
        else:
            output_folder = tempfile.mkdtemp(
                prefix=f"imgclf-{plan.task_type}-{plan.task_index}-"
            )
        backup = RunBackup(
            os.path.join(run_folder, BACKUP_FOLDER), writer=plan.is_chief, restart=restart
        )
        return cls(plan, run_folder, output_folder, backup)

    @property
    def strategy(self):
        return self.plan.strategy

    @property
    def is_chief(self):
        return self.plan.is_chief

    def finish(self, succeeded):
        """End the run: drop a worker's temporary folder; after success, the chief's backup."""
        if not self.is_chief:
            shutil.rmtree(self.output_folder, ignore_errors=True)
        if succeeded:
            self.backup.remove()


def file_shard_context(plan, train_dataset_path):
    """The `tf.distribute.InputContext` that shards a TFRecord training set by file, or None.

    Only for a multi-worker run (`plan.num_workers > 1`) reading a TFRecord directory with at
    least one shard file per worker: then this worker reads every `num_workers`-th shard file
    itself (`imgclf.data.records`), and its data set must not be sharded again
    (`shard_across_workers(..., sharded=True)`). A directory with fewer shard files (logged,
    with the fix) or a folder data set gets None: it is sharded by data.

        >>> context = file_shard_context(run.plan, "records/train")
        >>> train_ds, val_ds = create_train_val_datasets(..., input_context=context)
    """
    path = os.fspath(train_dataset_path)
    if plan.num_workers < 2 or not is_tfrecord_dataset(path):
        return None
    num_files = len(read_layout(path)["shards"])
    if num_files < plan.num_workers:
        logger.info(
            "input sharded by data: '%s' has %d shard file(s) for %d workers; convert it with "
            "--num_shards %d or more to shard it by file", path, num_files, plan.num_workers,
            plan.num_workers,
        )
        return None
    index = worker_index(plan)
    logger.info("input sharded by file: worker %d of %d reads %d of the %d shard files",
                index, plan.num_workers, len(range(index, num_files, plan.num_workers)),
                num_files)
    return tf.distribute.InputContext(
        num_input_pipelines=plan.num_workers, input_pipeline_id=index,
        num_replicas_in_sync=plan.num_replicas,
    )


def worker_index(plan):
    """This process's place among the workers, 0 to `num_workers - 1`, the chief first.

    TF_CONFIG numbers a `chief` apart from the `worker`s; tf.distribute orders them chief first.
    """
    if plan.task_type == "chief":
        return 0
    return plan.task_index + (1 if "chief" in cluster_from_tf_config() else 0)


def shard_across_workers(dataset, sharded=False):
    """`dataset` set to be split across workers, or not, when a strategy distributes it.

    Whatever the policy, `tf.distribute` splits every batch of a worker's data set into its
    replicas' parts across all the workers' replicas, and each step a worker takes
    `global batch / num_workers` elements from its own data set (TF's
    `batch_sizes_for_worker`): data sets are batched with the global batch size either way.

    - `sharded=True`: the data set already holds only this worker's part (a TFRecord training
      set read with `file_shard_context`): policy `OFF`, so that tf.distribute keeps it whole.
    - Otherwise by data (policy `DATA`): each worker reads and decodes every image and keeps its
      share of every global batch. tf.data's `AUTO` policy would end there too, as it cannot
      split imgclf's readers by file, with a warning. Validation and test sets, and every
      folder data set, are sharded this way: input work does not shrink with more workers, so
      for large multi-worker runs convert the training folder to TFRecord files, at least one
      file per worker (`python -m imgclf.data.tfrecord --num_shards N`).

    Options travel with the data set through `map`, `batch` and `prefetch`.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF
        if sharded
        else tf.data.experimental.AutoShardPolicy.DATA
    )
    return keep_attributes(dataset, dataset.with_options(options))
