"""Which `tf.distribute` strategy a training run uses, and what it means for batches and roles.

    >>> from imgclf.training.strategies import create_strategy, describe_strategy
    >>> strategy = create_strategy("auto")
    >>> plan = describe_strategy(strategy, batch_size=32)
    >>> plan.global_batch_size, plan.is_chief
    (32, True)
    >>> learning_rate_scale("adam", 4), learning_rate_scale("sgd", 4)
    (2.0, 4)

`"auto"` picks `MultiWorkerMirroredStrategy` when `TF_CONFIG` names a cluster (Kubeflow's TFJob
and `python -m imgclf.cli.cluster` set it), `MirroredStrategy` when more than one GPU is
visible, and TensorFlow's default strategy otherwise; `"none"`, `"mirrored"` and
`"multi_worker"` choose one outright.

The batch size users give is per replica (per GPU, or per worker on CPUs): the global batch is
`batch_size * num_replicas_in_sync`. The learning rate grows with the global batch by a rule
that depends on the optimizer (`LEARNING_RATE_SCALING`, `learning_rate_scale`):

- SGD: linear, `N x` with N replicas (Goyal et al., "Accurate, Large Minibatch SGD: Training
  ImageNet in 1 Hour", 2017): each step averages N times more images, so it takes an N times
  larger step.
- Adam and AdamW: square root, `sqrt(N) x` (Malladi et al., "On the SDEs and Scaling Rules for
  Adaptive Gradient Algorithms", NeurIPS 2022; Hoffer et al., "Train longer, generalize better",
  2017). An adaptive step is normalised by the gradient's own scale, so N times more images per
  step shrink its noise by sqrt(N), not its size: linear scaling would multiply Adam's rate by 8
  on 8 GPUs and diverge.

Both the global batch and the scaled rate are logged when training starts.
"""

import dataclasses
import json
import logging
import math
import os

import tensorflow as tf

from imgclf.training.multi_worker_fit import count_workers

logger = logging.getLogger("imgclf.training")

DISTRIBUTIONS = ("auto", "none", "mirrored", "multi_worker")


def create_strategy(distribution="auto"):
    """The `tf.distribute.Strategy` for `distribution` (one of `DISTRIBUTIONS`).

    Create it first thing in a process: `MultiWorkerMirroredStrategy` must exist before any other
    TensorFlow operation runs.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"distribution must be one of {', '.join(DISTRIBUTIONS)}; received {distribution!r}"
        )
    if distribution == "auto":
        distribution = auto_distribution()
    if distribution == "multi_worker":
        if not cluster_from_tf_config():
            raise ValueError(
                "distribution 'multi_worker' needs TF_CONFIG to name a cluster "
                '(e.g. {"cluster": {"worker": ["host0:2222", "host1:2222"]}, '
                '"task": {"type": "worker", "index": 0}}); TF_CONFIG is '
                + (repr(os.environ["TF_CONFIG"]) if os.environ.get("TF_CONFIG") else "not set")
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if distribution == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def auto_distribution():
    """`"multi_worker"` if TF_CONFIG names a cluster, `"mirrored"` with 2+ GPUs, else `"none"`."""
    if cluster_from_tf_config():
        return "multi_worker"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "none"


def cluster_from_tf_config():
    """The `cluster` of the `TF_CONFIG` environment variable (`{}` when unset or empty)."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return {}
    try:
        config = json.loads(text)
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not JSON ({error}); received {text!r}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    return cluster if isinstance(cluster, dict) else {}


@dataclasses.dataclass(frozen=True)
class StrategyPlan:
    """What a strategy means for one training run.

    Attributes:
        strategy: the `tf.distribute.Strategy`.
        num_replicas: replicas in sync, over every worker.
        num_workers: worker processes (1 unless multi-worker).
        task_type, task_index: this process's role in TF_CONFIG (`"worker"`, 0 when alone).
        is_chief: whether this process writes the results (the chief, or worker 0 without one).
        per_replica_batch_size, global_batch_size: images per replica and per step.
    """

    strategy: tf.distribute.Strategy
    num_replicas: int
    num_workers: int
    task_type: str
    task_index: int
    is_chief: bool
    per_replica_batch_size: int
    global_batch_size: int

    @property
    def name(self):
        """The strategy's public name: `"MirroredStrategy"`, `"MultiWorkerMirroredStrategy"`,
        or `"DefaultStrategy"` (TensorFlow's default, one device)."""
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return "MultiWorkerMirroredStrategy"  # its class is CollectiveAllReduceStrategy
        name = type(self.strategy).__name__
        return "DefaultStrategy" if name == "_DefaultDistributionStrategy" else name

    def summary(self):
        """One line for the log."""
        return (
            f"{self.name}: {self.num_replicas} replica(s) on {self.num_workers} worker(s), this is "
            f"{self.task_type} {self.task_index}{' (chief)' if self.is_chief else ''}; batch "
            f"{self.per_replica_batch_size} per replica, {self.global_batch_size} global"
        )


def describe_strategy(strategy, batch_size):
    """The `StrategyPlan` of `strategy` for `batch_size` images per replica."""
    num_replicas = strategy.num_replicas_in_sync
    task_type, task_index = task_of(strategy)
    return StrategyPlan(
        strategy=strategy,
        num_replicas=num_replicas,
        num_workers=count_workers(strategy),
        task_type=task_type,
        task_index=task_index,
        is_chief=is_chief(task_type, task_index),
        per_replica_batch_size=batch_size,
        global_batch_size=batch_size * num_replicas,
    )


#: How each optimizer's learning rate follows the number of replicas (see the module docstring).
LEARNING_RATE_SCALING = {"sgd": "linear", "adam": "sqrt", "adamw": "sqrt"}


def learning_rate_scale(optimizer, num_replicas):
    """The factor a single-replica learning rate of `optimizer` is multiplied by on
    `num_replicas` replicas: `num_replicas` for SGD, `sqrt(num_replicas)` for Adam and AdamW.

        >>> learning_rate_scale("sgd", 8), learning_rate_scale("adamw", 4)
        (8, 2.0)
    """
    if optimizer not in LEARNING_RATE_SCALING:
        raise ValueError(
            f"optimizer must be one of {', '.join(LEARNING_RATE_SCALING)}; received {optimizer!r}"
        )
    if LEARNING_RATE_SCALING[optimizer] == "linear":
        return num_replicas
    return math.sqrt(num_replicas)


def task_of(strategy):
    """`(task_type, task_index)` of this process; `("worker", 0)` outside a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "worker", 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(task_type, task_index):
    """Whether a task writes the run's results: the chief, or worker 0 in a cluster without one.

    The same rule as TensorFlow's `multi_worker_util.is_chief` and Kubeflow's TFJob.
    """
    if task_type == "chief":
        return True
    if task_type != "worker" or task_index != 0:
        return False
    return "chief" not in cluster_from_tf_config()
