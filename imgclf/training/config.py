"""The options of a training run and their check: `TrainingConfig` and `plan_training`.

    >>> plan = plan_training("MobileNetV2Model", TrainingConfig(num_epochs=20))
    >>> plan.fine_tune_epochs, plan.config.augment, plan.model_args["input_shape"]
    (10, 'light', (224, 224, 3))

`plan_training` checks every option against the model class and resolves the defaults that
depend on it (input size, learning rates, schedule, augmentation, fine-tuning epochs) before any
image is read, so a usage error never waits for data.
"""

import dataclasses
import logging

import numpy as np

from imgclf.data.augmentation import AUGMENT_LEVELS
from imgclf.models.backbone import BackboneModel
from imgclf.models.registry import get_model_class
from imgclf.training.schedules import OPTIMIZERS, SCHEDULES
from imgclf.training.strategies import LEARNING_RATE_SCALING, learning_rate_scale

logger = logging.getLogger("imgclf.training")

#: Phase 2 trains with the phase-1 learning rate divided by this (Keras' guide: 1e-3 -> 1e-5).
FINE_TUNE_LEARNING_RATE_DIVISOR = 10
CLASS_WEIGHTS = ("balanced",)


@dataclasses.dataclass
class TrainingConfig:
    """The options of a training run; `None` means "the model class's own default".

    Attributes:
        model_version: the version folder written under `<model_folder_path>/<ClassName>/`;
            None: the next free integer. One that exists is refused unless `overwrite`.
        overwrite: replace an existing `model_version`.
        augment: "none", "light" or "standard" (`imgclf.data.augmentation`), training set only;
            default "light" for backbone models, "none" for others (LeNet on small images).
        export_litert: also write `<version>.tflite` and its labels next to the SavedModel.
        input_shape: `(height, width, 3)`; by default the model class's `default_input_shape`
            (LeNet 32 x 32, backbones 224 x 224).
        batch_size, num_epochs: images per step and replica; most epochs of phase 1. The
            global batch is `batch_size` times the N replicas of the strategy, and both learning
            rates grow with N by the optimizer's rule (`scaled_learning_rates`): linearly for
            SGD (N x, Goyal et al. 2017), by the square root for Adam and AdamW (sqrt(N) x,
            Malladi et al. 2022). The rates given here are those of one replica.
        patience: epochs without a better validation accuracy before a phase stops; the best
            weights are restored.
        fine_tune_epochs: most epochs of phase 2 (backbone unfrozen). By default the model's
            `default_fine_tune_epochs` for a pretrained backbone, 0 (no phase 2) otherwise.
        unfreeze_layers: phase 2 unfreezes the backbone's top this-many layers; None: all of it.
            Batch normalisation stays frozen either way.
        learning_rate: the peak learning rate of phase 1 (default: the model's
            `default_learning_rate`); phase 2 uses a tenth of it unless `fine_tune_learning_rate`.
        fine_tune_learning_rate: the peak learning rate of phase 2; only for a pretrained
            backbone with phase 2 (`fine_tune_epochs` not 0), like `unfreeze_layers`: given
            where there is no phase 2, either is refused rather than ignored.
        schedule: "constant" or "cosine" (cosine decay after `warmup_epochs` of linear warm-up,
            per phase); default the model's `default_schedule` (cosine for backbones).
        optimizer: "adam", "adamw" or "sgd".
        label_smoothing: in [0, 1).
        class_weight: None or "balanced" (weights `total / (classes x count)` from the training
            folder's counts, as scikit-learn's "balanced").
        split_ratio, seed: the train/validation split; `seed` also seeds weights, dropout and
            shuffling (`keras.utils.set_random_seed`), so a run repeats.
        mixed_precision: compute in `mixed_float16` on a GPU, `mixed_bfloat16` on a CPU; the
            logits and every signature stay float32.
        jit_compile: XLA: True, False or "auto" (Keras': on with a GPU, off on a CPU).
        model_kwargs: more arguments of the model class, e.g. `{"weights": "imagenet"}`.
        distribution: "auto", "none", "mirrored" or "multi_worker"
            (`imgclf.training.strategies`). Every worker of a multi-worker run calls `train`;
            only the chief writes into `model_folder_path`.
        restart: discard the backup of an interrupted run (`imgclf.training.backup`) instead of
            resuming from it.
    """

    model_version: int = None
    overwrite: bool = False
    augment: str = None
    export_litert: bool = False
    input_shape: tuple = None
    batch_size: int = 32
    num_epochs: int = 100
    patience: int = 5
    fine_tune_epochs: int = None
    unfreeze_layers: int = None
    learning_rate: float = None
    fine_tune_learning_rate: float = None
    schedule: str = None
    warmup_epochs: float = 1.0
    optimizer: str = "adam"
    label_smoothing: float = 0.0
    class_weight: str = None
    split_ratio: float = 0.8
    seed: int = 42
    mixed_precision: bool = False
    jit_compile: object = "auto"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    #: None, "memory" or a directory: keep decoded images (uint8) after the first epoch.
    cache: str = None
    distribution: str = "auto"
    restart: bool = False


@dataclasses.dataclass
class TrainingPlan:
    """A validated run: the model class, its arguments and the resolved defaults.

    `learning_rate` and `fine_tune_learning_rate` are those the optimizers run with: one
    replica's until `scaled_learning_rates` multiplies them by `learning_rate_scale` for the
    replicas of the strategy.
    """

    model_class: type
    model_args: dict
    config: TrainingConfig
    learning_rate: float
    fine_tune_learning_rate: float
    schedule: str
    fine_tune_epochs: int
    #: What the learning rates were multiplied by for the replicas (1: not scaled).
    learning_rate_scale: float = 1
    num_replicas: int = 1
    #: `(learning_rate, fine_tune_learning_rate)` of one replica, as resolved before scaling.
    per_replica_learning_rates: tuple = None

    def __post_init__(self):
        if self.per_replica_learning_rates is None:
            self.per_replica_learning_rates = (self.learning_rate, self.fine_tune_learning_rate)


def plan_training(model_type, config=None):
    """Check `config` against the model class named `model_type`; resolve the defaults.

    Raises `ValueError` (or `TypeError`) naming the bad option; reads no data.
    """
    config = config or TrainingConfig()
    model_class = get_model_class(model_type)
    if config.model_version is not None:
        _check_int("model_version", config.model_version, 0)
    _check_int("batch_size", config.batch_size, 1)
    _check_int("num_epochs", config.num_epochs, 1)
    _check_int("patience", config.patience, 0)
    _check_int("seed", config.seed, 0)
    if config.fine_tune_epochs is not None:
        _check_int("fine_tune_epochs", config.fine_tune_epochs, 0)
    if config.unfreeze_layers is not None:
        _check_int("unfreeze_layers", config.unfreeze_layers, 1)
    for name in ("learning_rate", "fine_tune_learning_rate"):
        value = getattr(config, name)
        if value is not None and (not _is_number(value) or value <= 0):
            raise ValueError(f"{name} must be a positive number; received {value!r}")
    if not _is_number(config.warmup_epochs) or config.warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be a number of at least 0; received {config.warmup_epochs!r}")
    schedule = config.schedule or model_class.default_schedule
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; received {schedule!r}")
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; received {config.optimizer!r}")
    if not _is_number(config.label_smoothing) or not 0 <= config.label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1); received {config.label_smoothing!r}")
    if config.class_weight not in (None, *CLASS_WEIGHTS):
        raise ValueError(
            f"class_weight must be None or one of {', '.join(CLASS_WEIGHTS)}; received {config.class_weight!r}"
        )
    if config.jit_compile not in (True, False, "auto"):
        raise ValueError(f"jit_compile must be True, False or 'auto'; received {config.jit_compile!r}")

    model_kwargs = dict(config.model_kwargs or {})
    is_backbone = issubclass(model_class, BackboneModel)
    augment = config.augment or ("light" if is_backbone else "none")
    if augment not in AUGMENT_LEVELS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENT_LEVELS)}; received {augment!r}")
    if not is_backbone:
        for name in ("weights", "fine_tune_epochs", "unfreeze_layers", "fine_tune_learning_rate"):
            value = model_kwargs.get(name) if name == "weights" else getattr(config, name)
            if value is not None and not (name == "fine_tune_epochs" and value == 0):
                raise ValueError(
                    f"{model_class.__name__} has no pretrained backbone: {name} applies only to "
                    "backbone models (subclasses of BackboneModel)"
                )
    input_shape = model_class.validate_input_shape(config.input_shape)
    model_class.validate_arguments(**model_kwargs)
    pretrained = is_backbone and str(model_kwargs.get("weights", "imagenet")).lower() != "none"
    fine_tune_epochs = config.fine_tune_epochs
    if fine_tune_epochs is None:
        fine_tune_epochs = model_class.default_fine_tune_epochs if pretrained else 0
    if fine_tune_epochs and not pretrained:
        raise ValueError(
            f"fine_tune_epochs={fine_tune_epochs} needs pretrained weights: with weights None the "
            "backbone trains from the first epoch"
        )
    for name in ("unfreeze_layers", "fine_tune_learning_rate"):
        # Options of phase 2 where there is none would be ignored: refuse them instead.
        value = getattr(config, name)
        if value is not None and not pretrained:
            raise ValueError(
                f"{name}={value} applies to phase 2, which needs pretrained weights: with "
                "weights None the backbone trains from the first epoch, in one phase"
            )
        if value is not None and not fine_tune_epochs:
            raise ValueError(
                f"{name}={value} applies to phase 2, which fine_tune_epochs=0 skips"
            )
    learning_rate = config.learning_rate or model_class.default_learning_rate
    return TrainingPlan(
        model_class=model_class,
        model_args={"input_shape": input_shape, **model_kwargs},
        config=dataclasses.replace(config, input_shape=input_shape, augment=augment),
        learning_rate=learning_rate,
        fine_tune_learning_rate=(
            config.fine_tune_learning_rate or learning_rate / FINE_TUNE_LEARNING_RATE_DIVISOR
        ),
        schedule=schedule,
        fine_tune_epochs=fine_tune_epochs,
    )


def scaled_learning_rates(plan, num_replicas):
    """`plan` with both learning rates multiplied for `num_replicas` replicas by the rule of its
    optimizer (`imgclf.training.strategies.learning_rate_scale`: linear for SGD, square root for
    Adam and AdamW), and the rule logged.

        >>> plan = plan_training("LenetModel", TrainingConfig(learning_rate=1e-3))
        >>> scaled_learning_rates(plan, 4).learning_rate                 # Adam: sqrt(4) x
        0.002
    """
    optimizer = plan.config.optimizer
    scale = learning_rate_scale(optimizer, num_replicas)
    scaled = dataclasses.replace(
        plan, learning_rate=plan.learning_rate * scale,
        fine_tune_learning_rate=plan.fine_tune_learning_rate * scale,
        learning_rate_scale=scale, num_replicas=num_replicas,
    )
    factor = f"{num_replicas} replicas"
    if LEARNING_RATE_SCALING[optimizer] != "linear":
        factor = f"sqrt({factor})"
    logger.info("learning rate %g: %g per replica x %s (%s)", scaled.learning_rate,
                plan.learning_rate, factor, optimizer)
    return scaled


def with_options(config, options):
    """`config` (by default `TrainingConfig()`) with `options`, its field names, replaced."""
    config = config or TrainingConfig()
    names = {field.name for field in dataclasses.fields(TrainingConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"train() got unknown options {unknown}; TrainingConfig has {sorted(names)}")
    return dataclasses.replace(config, **options)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}; received {value!r}")
