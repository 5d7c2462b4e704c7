"""The two phases of a training run, as Keras' transfer-learning guide runs them.

`build_model` builds the model and compiles it for phase 1, with a pretrained backbone frozen
(`BackboneModel.freeze_backbone`: not trainable, and in inference mode, its batch normalisation
on the moving statistics and its dropout and stochastic depth off, which
`backbone(x, training=False)` at build time alone does not ensure under Keras 3's `fit`). `start_fine_tuning`
begins phase 2: the backbone (or its top layers) unfrozen, batch normalisation still frozen, a
new optimizer at a tenth of the learning rate. `fit_phase` runs one phase.

    >>> model = build_model(plan, class_names, steps_per_epoch)
    >>> fit_phase(model, train_ds, val_ds, epochs=10, callbacks=[], patience=3)
    >>> start_fine_tuning(model, plan, steps_per_epoch)
    >>> fit_phase(model, train_ds, val_ds, epochs=10, callbacks=[], patience=3, initial_epoch=10)
"""

import contextlib
import math

import keras
import tensorflow as tf

from imgclf.data import first_pass_errors
from imgclf.models.backbone import BackboneModel
from imgclf.training.callbacks import EarlyStopping
from imgclf.training.losses import SparseCategoricalCrossentropy
from imgclf.training.schedules import create_optimizer, learning_rate_schedule

#: What `fit` monitors for early stopping, checkpoints and the best weights.
MONITOR = "val_accuracy"


@contextlib.contextmanager
def model_building_scope(config):
    """Where the model and its optimizer are created: under the mixed-precision policy if asked.

    (A distribution strategy's `scope()` belongs here too.)
    """
    if not config.mixed_precision:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(mixed_precision_policy())
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def mixed_precision_policy():
    """`"mixed_float16"` with a GPU (its tensor cores), `"mixed_bfloat16"` on a CPU."""
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def build_model(plan, class_names, steps_per_epoch):
    """Build the model for `class_names` and compile it for phase 1.

    A pretrained backbone is frozen for phase 1 (the head trains alone, on the features the
    backbone computes when serving).
    """
    with model_building_scope(plan.config):
        model = plan.model_class(
            num_classes=len(class_names), class_names=class_names, **plan.model_args
        )
        if isinstance(model, BackboneModel) and model.pretrained:
            model.freeze_backbone()
        compile_model(
            model, plan.learning_rate, optimizer=plan.config.optimizer, schedule=plan.schedule,
            total_steps=steps_per_epoch * plan.config.num_epochs,
            warmup_steps=round(plan.config.warmup_epochs * steps_per_epoch),
            label_smoothing=plan.config.label_smoothing, jit_compile=plan.config.jit_compile,
        )
    return model


def start_fine_tuning(model, plan, steps_per_epoch):
    """Phase 2: unfreeze the backbone (or its top `unfreeze_layers`; batch normalisation stays
    frozen) and recompile with the lower learning rate and a new optimizer."""
    with model_building_scope(plan.config):
        model.unfreeze_backbone(plan.config.unfreeze_layers)
        compile_model(
            model, plan.fine_tune_learning_rate, optimizer=plan.config.optimizer,
            schedule=plan.schedule, total_steps=steps_per_epoch * plan.fine_tune_epochs,
            warmup_steps=round(plan.config.warmup_epochs * steps_per_epoch),
            label_smoothing=plan.config.label_smoothing, jit_compile=plan.config.jit_compile,
        )
    return model


def compile_model(model, learning_rate=None, optimizer="adam", schedule="constant",
                  total_steps=1, warmup_steps=0, label_smoothing=0.0, jit_compile="auto"):
    """Compile `model` for integer labels and logits outputs.

        >>> compile_model(model)                       # Adam at the model's learning rate
        >>> compile_model(model, 1e-3, "adamw", "cosine", total_steps=1000, warmup_steps=50)
    """
    rate = learning_rate_schedule(
        schedule, learning_rate or model.default_learning_rate, total_steps, warmup_steps
    )
    model.compile(
        optimizer=create_optimizer(optimizer, rate),
        loss=SparseCategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def fit_phase(model, train_ds, val_ds, epochs, callbacks, patience, initial_epoch=0,
              class_weight=None, verbose="auto", steps_per_epoch=None, early_stopping=None):
    """One `fit` of at most `epochs` epochs, numbered from `initial_epoch`, stopping early after
    `patience` epochs without a better validation accuracy and restoring the phase's best
    weights. `steps_per_epoch` is for an endless (repeated) `train_ds`; `early_stopping`, one
    from `phase_early_stopping` (e.g. resumed from a backup). Returns Keras' history dict."""
    # BackupAndRestore sets model._initial_epoch when it restores and nothing resets it: a
    # second fit would start at that stale epoch (and run no epoch at all if it is past the
    # end). Clear it; a BackupAndRestore of this fit sets it again in on_train_begin.
    model._initial_epoch = None
    early_stopping = early_stopping or phase_early_stopping(patience)
    with first_pass_errors(train_ds, val_ds):  # a data set found unusable: a ValueError
        history = model.fit(
            train_ds, validation_data=val_ds, initial_epoch=initial_epoch,
            epochs=initial_epoch + epochs, callbacks=[early_stopping, *callbacks],
            class_weight=class_weight, verbose=verbose, steps_per_epoch=steps_per_epoch,
            shuffle=False,  # the data set reshuffles itself every epoch
        )
    return history.history


def phase_early_stopping(patience):
    """The `EarlyStopping` of a phase: on `MONITOR`, restoring the phase's best weights."""
    return EarlyStopping(monitor=MONITOR, patience=patience, restore_best_weights=True, verbose=1)


def best_of(history):
    """The best validation accuracy of a phase's history (-inf for an empty one)."""
    return max(history.get(MONITOR) or [-math.inf])
