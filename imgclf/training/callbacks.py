"""Training callbacks.

`ModelCheckpoint` is Keras' own with one difference: besides `.keras` files it saves SavedModel
directories through the model's `save`, so every checkpoint carries the serving signatures and
TensorFlow Serving can serve it as it is.

    >>> checkpoint = ModelCheckpoint("checkpoints/epoch-{epoch:03d}", monitor="val_accuracy",
    ...                              save_best_only=True)
    >>> model.fit(train, validation_data=val, epochs=10, callbacks=[checkpoint])
"""

import os

import keras

from imgclf.data.epochs import reseed_layers
from imgclf.models.base import ImageClassifierModel


class ModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' `ModelCheckpoint` that also accepts a SavedModel directory as `filepath`.

    A `filepath` ending in `.keras`, `.h5` or (with `save_weights_only`) `.weights.h5` behaves
    exactly as in Keras. Any other path is a directory written by `ImageClassifierModel.save`:
    a servable SavedModel, written atomically. `{epoch}` and `{<metric>}` formatting,
    `save_best_only`, `monitor`, `mode`, `save_freq` and `initial_value_threshold` work as in Keras.
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch",
                 initial_value_threshold=None):
        filepath = os.fspath(filepath)
        self.saves_servable = not save_weights_only and not filepath.endswith((".keras", ".h5"))
        # Keras refuses paths without a Keras extension; satisfy its check, then keep ours.
        super().__init__(
            filepath + ".keras" if self.saves_servable else filepath,
            monitor=monitor,
            verbose=verbose,
            save_best_only=save_best_only,
            save_weights_only=save_weights_only,
            mode=mode,
            save_freq=save_freq,
            initial_value_threshold=initial_value_threshold,
        )
        self.filepath = filepath

    def set_model(self, model):
        if self.saves_servable and not isinstance(model, ImageClassifierModel):
            raise TypeError(
                "ModelCheckpoint writes SavedModel directories through ImageClassifierModel.save; "
                f"received a {type(model).__name__}: use a .keras filepath for other models"
            )
        super().set_model(model)


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' `EarlyStopping` that can go on where a killed run's left off.

        >>> stopping = EarlyStopping(monitor="val_accuracy", patience=3, restore_best_weights=True)
        >>> stopping.resume({"wait": 1, "best": 0.9, "best_epoch": 4, "stopped_epoch": 0}, weights)
        >>> model.fit(..., initial_epoch=6, callbacks=[stopping])

    `resume(state, best_weights)` (before `fit`) sets what `on_train_begin` would reset: the
    epochs waited, the best value, its epoch and weights. Without it, it is Keras' own.
    """

    _resumed = None

    def resume(self, state, best_weights=None):
        self._resumed = (dict(state), best_weights)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resumed is not None:
            state, self.best_weights = self._resumed
            self.wait, self.best = state["wait"], state["best"]
            self.best_epoch, self.stopped_epoch = state["best_epoch"], state["stopped_epoch"]


class EpochSeeds(keras.callbacks.Callback):
    """Makes every random draw of an epoch a function of `(seed, epoch)`: the training set's
    order and augmentation (`dataset.start_epoch`, `imgclf.data.epochs`) and the model's own
    random layers (dropout). A run resumed at epoch k then draws what the unkilled run drew in
    epoch k, instead of replaying epoch 0's draws from a freshly seeded process.

        >>> model.fit(train_ds, epochs=10, callbacks=[EpochSeeds(42, train_ds)])

    Keras opens an epoch's iterator after `on_epoch_begin`, so the new seeds apply to the whole
    epoch. (With an endless, repeated training set, as multi-worker TFRecord training uses, the
    pipeline may run ahead into the next epoch: its order is then new but not exactly the
    unkilled run's.)
    """

    def __init__(self, seed, train_ds):
        super().__init__()
        self.seed = seed
        self.start_data_epoch = getattr(train_ds, "start_epoch", None)

    def on_epoch_begin(self, epoch, logs=None):
        if self.start_data_epoch is not None:
            self.start_data_epoch(epoch)
        reseed_layers(self.model._flatten_layers(), self.seed, epoch, "model")
