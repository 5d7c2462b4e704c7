"""Fine-tuning a pretrained backbone in two phases, as Keras' transfer-learning guide does."""

import hashlib
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from imgclf import BackboneModel, MobileNetV2Model, info
from imgclf.data import create_train_val_datasets
from imgclf.data.sample_data import write_sample_dataset
from imgclf.export import read_model_metadata
from imgclf.training import TrainingConfig, build_model, plan_training, start_fine_tuning, train
from imgclf.training import fit_phase


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A MobileNetV2 (alpha 0.35, 32 px) backbone's weights as a user saves them."""
    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35, pooling="avg"
    )
    # Like trained weights, batch norm's moving statistics fit the activations (fresh ones, mean
    # 0 and variance 1, saturate ReLU6 units, which then get no gradient): one training-mode
    # pass with momentum 0 sets them to the statistics of a batch.
    batch_norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in batch_norms:
        layer.momentum = 0.0
    backbone(np.random.default_rng(1).uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32), training=True)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_0.35_32.weights.h5"
    backbone.save_weights(path)
    return str(path)


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    write_sample_dataset(folder, num_classes=2, image_size=32, train_per_class=16, test_per_class=3)
    return folder


class TinyBackboneModel(BackboneModel):
    """A user's own backbone: two convolutions with batch normalisation."""

    min_input_size = 8

    def create_backbone(self, input_shape, weights):
        return make_tiny_backbone(input_shape)


def make_tiny_backbone(input_shape):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for filters in (8, 16):
        x = keras.layers.Conv2D(filters, 3, strides=2, use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="tiny_backbone")


def values(variables):
    return {v.path: v.numpy().copy() for v in variables}


def batch_norm_paths(model):
    return {
        v.path for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
        for v in layer.weights
    }


def test_phase_1_keeps_the_backbone_and_its_batch_norm_phase_2_trains_all_but_batch_norm(weights_file, rng):
    plan = plan_training("MobileNetV2Model", TrainingConfig(
        input_shape=(32, 32, 3), fine_tune_epochs=1, model_kwargs={"weights": weights_file, "alpha": 0.35},
    ))
    model = build_model(plan, ["a", "b"], steps_per_epoch=1)
    model.run_eagerly = True  # three steps: tracing each phase's step would cost more
    # Images unlike ImageNet's: training-mode batch norm would move the moving statistics a lot.
    pixels = rng.integers(200, 256, size=(8, 32, 32, 3)).astype(np.float32)
    labels = np.array([0, 1] * 4)
    backbone = values(model.backbone.weights)
    assert any("moving_mean" in path for path in backbone)
    head = values(model.get_layer("logits").weights)

    model.fit(pixels, labels, batch_size=8, epochs=1, verbose=0)
    after_1 = values(model.backbone.weights)
    for path, value in backbone.items():
        np.testing.assert_array_equal(after_1[path], value, err_msg=f"phase 1 changed {path}")
    assert any(not np.array_equal(v, head[p]) for p, v in values(model.get_layer("logits").weights).items())

    start_fine_tuning(model, plan, steps_per_epoch=1)
    model.run_eagerly = True  # start_fine_tuning compiled the model again
    model.fit(pixels, labels, batch_size=8, epochs=2, verbose=0)
    after_2 = values(model.backbone.weights)
    changed = {path for path in backbone if not np.array_equal(after_2[path], after_1[path])}
    batch_norm = batch_norm_paths(model.backbone)
    assert batch_norm and not changed & batch_norm, f"phase 2 changed batch norm: {sorted(changed & batch_norm)[:3]}"
    assert {v.path for v in model.backbone.trainable_weights} == set(backbone) - batch_norm
    print(f"phase 2 changed {len(changed)} of {len(set(backbone) - batch_norm)}")
    assert changed == set(backbone) - batch_norm


def test_phase_1_backbone_computes_what_it_serves_dropout_and_stochastic_depth_included(tmp_path, rng):
    # EfficientNetV2B0 has 15 stochastic-depth Dropout layers (rates up to 0.19); Keras 3's fit
    # passes training=True into the backbone, so a frozen backbone must still not drop.
    keras.utils.set_random_seed(0)
    keras.applications.EfficientNetV2B0(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg",
    ).save_weights(tmp_path / "b0.weights.h5")
    plan = plan_training("EfficientNetV2B0Model", TrainingConfig(
        input_shape=(32, 32, 3), fine_tune_epochs=1,
        model_kwargs={"weights": str(tmp_path / "b0.weights.h5"), "dropout": 0.0},
    ))
    model = build_model(plan, ["a", "b"], steps_per_epoch=1)
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in model.backbone.layers) == 15
    pixels = rng.integers(0, 256, size=(4, 32, 32, 3)).astype(np.float32)
    serving = model.backbone(pixels, training=False).numpy()
    np.testing.assert_array_equal(model.backbone(pixels, training=True).numpy(), serving)
    # The whole model as fit calls it (the head's dropout is 0 here): the same as serving.
    np.testing.assert_array_equal(model(pixels, training=True).numpy(), model(pixels, training=False).numpy())
    model.fit(pixels, np.array([0, 1, 0, 1]), batch_size=4, epochs=1, verbose=0)  # traces fine

    # Phase 2 trains the backbone as Keras' guide does: its stochastic depth drops again.
    start_fine_tuning(model, plan, steps_per_epoch=1)
    assert not np.array_equal(model.backbone(pixels, training=True).numpy(),
                              model.backbone(pixels, training=False).numpy())


def test_unfreeze_top_layers_keeps_lower_layers_and_batch_norm_frozen(weights_file):
    model = MobileNetV2Model(input_shape=(32, 32, 3), num_classes=2, weights=weights_file, alpha=0.35)
    model.freeze_backbone()
    assert not model.backbone.trainable_weights
    assert model.unfreeze_backbone(10) == sum(
        1 for layer in model.backbone.layers[-10:] if not isinstance(layer, keras.layers.BatchNormalization)
    )
    trainable = {v.path for v in model.backbone.trainable_weights}
    top = {v.path for layer in model.backbone.layers[-10:] for v in layer.weights}
    assert trainable and trainable <= top
    assert not trainable & batch_norm_paths(model.backbone)


def test_a_second_fit_after_backup_and_restore_runs_its_epochs(tmp_path, rng):
    # BackupAndRestore leaves model._initial_epoch set after it restores; fit_phase must not
    # let a later fit start there (here: at epoch 2 of a 2-epoch fit, i.e. run nothing).
    pixels = rng.integers(0, 256, size=(8, 16, 16, 3)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((pixels, np.array([0, 1] * 4))).batch(4)
    plan = plan_training("LenetModel", TrainingConfig(input_shape=(16, 16, 3)))
    model = build_model(plan, ["a", "b"], steps_per_epoch=2)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    backup = str(tmp_path / "backup")
    fit = dict(train_ds=data, val_ds=data, patience=5, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        fit_phase(model, epochs=3, callbacks=[keras.callbacks.BackupAndRestore(backup), Interrupt()], **fit)
    resumed = fit_phase(model, epochs=3, callbacks=[keras.callbacks.BackupAndRestore(backup)], **fit)
    assert len(resumed["loss"]) == 1  # restored after epoch 2 of 3: one left
    assert model._initial_epoch == 2
    second = fit_phase(model, epochs=2, callbacks=[], **fit)
    assert len(second["loss"]) == 2


class PhaseRecorder(keras.callbacks.Callback):
    """Per fit (phase): the learning rates of its steps and the weights it ended with (after
    EarlyStopping, which runs first, restored the phase's best)."""

    def __init__(self):
        super().__init__()
        self.rates, self.weights = [], []

    def on_train_begin(self, logs=None):
        self.rates.append([])

    def on_train_batch_begin(self, batch, logs=None):
        self.rates[-1].append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    def on_train_end(self, logs=None):
        self.weights.append([w.copy() for w in self.model.get_weights()])


def test_train_fine_tunes_a_user_backbone_in_two_phases_in_mixed_precision(sample_data, tmp_path, capsys):
    make_tiny_backbone((32, 32, 3)).save_weights(tmp_path / "tiny.weights.h5")
    recorder = PhaseRecorder()
    result = train(
        f"{__name__}:TinyBackboneModel", sample_data / "train", sample_data / "test",
        tmp_path / "models", input_shape=(32, 32, 3), batch_size=8, num_epochs=2, patience=2,
        fine_tune_epochs=2, model_kwargs={"weights": str(tmp_path / "tiny.weights.h5")},
        mixed_precision=True, optimizer="adamw", label_smoothing=0.1, class_weight="balanced",
        learning_rate=2e-3, split_ratio=0.5, verbose=0, callbacks=[recorder],
    )
    assert result.phase_epochs == [2, 2]
    assert len(result.history["val_accuracy"]) == 4
    # Phase 2 runs at a tenth of phase 1's learning rate (both warm up, then decay: the peaks).
    assert len(recorder.rates) == 2 and all(recorder.rates)
    assert max(recorder.rates[0]) == pytest.approx(2e-3)
    assert max(recorder.rates[1]) == pytest.approx(2e-4)
    # Phase 2 trained the backbone, except its batch normalisation.
    assert {v.path for v in result.model.backbone.trainable_weights} == {
        v.path for v in result.model.backbone.weights if "conv2d" in v.path
    }
    assert result.model.get_layer("logits").compute_dtype == "bfloat16"  # mixed_bfloat16 on a CPU
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    run = tmp_path / "models" / "TinyBackboneModel"
    assert (run / "checkpoints" / "best" / "saved_model.pb").exists()
    loaded = tf.saved_model.load(str(run / "1"))
    for name, signature in loaded.signatures.items():
        for key, spec in signature.structured_outputs.items():
            if spec.dtype.is_floating:
                assert spec.dtype == tf.float32, f"{name} {key} is {spec.dtype.name}"
    assert loaded.signatures["serving_default"].structured_outputs["output_0"].dtype == tf.float32
    # The weights kept are those of the best epoch of either phase, phase 1's on a tie, decided
    # on 16 validation images.
    phase_1_best, phase_2_best = max(result.history["val_accuracy"][:2]), max(result.history["val_accuracy"][2:])
    kept = recorder.weights[1] if phase_2_best > phase_1_best else recorder.weights[0]
    assert not all(np.array_equal(a, b) for a, b in zip(*recorder.weights))  # phase 2 moved them
    for final, expected in zip(result.model.get_weights(), kept):
        np.testing.assert_array_equal(final, expected)
    _, val_ds = create_train_val_datasets(sample_data / "train", (32, 32, 3), 8, split_ratio=0.5)
    assert sum(int(labels.shape[0]) for _, labels in val_ds) == 16
    accuracy = result.model.evaluate(val_ds, return_dict=True, verbose=0)["accuracy"]
    assert accuracy == pytest.approx(max(phase_1_best, phase_2_best))

    # How it was made, as it ran (issue 12 §4): resolved flags, the weights file, the strategy.
    metadata = read_model_metadata(run / "1")
    digest = hashlib.sha256((tmp_path / "tiny.weights.h5").read_bytes()).hexdigest()
    assert metadata["model_arguments"]["weights"] == {"file": "tiny.weights.h5", "sha256": digest}
    flags = metadata["training"]["flags"]
    assert (flags["learning_rate"], flags["fine_tune_learning_rate"]) == (2e-3, pytest.approx(2e-4))
    assert (flags["schedule"], flags["fine_tune_epochs"], flags["augment"]) == ("cosine", 2, "light")
    assert flags["model_type"] == f"{__name__}:TinyBackboneModel" and flags["model_version"] == 1
    assert metadata["training"]["distribution"] == {
        "strategy": "DefaultStrategy", "num_workers": 1, "num_replicas": 1,
        "per_replica_batch_size": 8, "global_batch_size": 8, "learning_rate_scaling": "sqrt",
        "learning_rate_scale": 1.0, "learning_rate": 2e-3, "fine_tune_learning_rate": pytest.approx(2e-4),
    }
    capsys.readouterr()
    assert info.main([str(run), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)[0]["metadata"]
    assert shown["training"]["distribution"]["strategy"] == "DefaultStrategy"
    assert shown["model_arguments"]["weights"]["sha256"] == digest
    assert shown["training"]["flags"]["learning_rate"] == 2e-3
