"""Train an imgclf model on a folder of labelled images and save it for TensorFlow Serving.

    python train_model.py --train_dataset_path data/train --test_dataset_path data/test \
        --model_folder_path models --model_type LenetModel --input_width 28 --input_height 28
    python train_model.py --train_dataset_path data/train --test_dataset_path data/test \
        --model_type MobileNetV2Model --weights imagenet --fine_tune_epochs 10

The model lands in <model_folder_path>/<ClassName>/<model_version>/ as a SavedModel. A model with a
pretrained backbone trains in two phases: the head alone (backbone frozen), then the backbone too
(--fine_tune_epochs, --unfreeze_layers) at a tenth of the learning rate.
"""

from imgclf import cli
from imgclf.tensorflow_import import import_tensorflow

parser = cli.ArgumentParser(prog="train_model.py", description=__doc__.split("\n")[0])
parser.add_argument("--train_dataset_path", required=True,
                    help="folder of <class>/<image>, or TFRecord directory (python -m imgclf.data.tfrecord), to train on")
parser.add_argument("--test_dataset_path", required=True,
                    help="folder of <class>/<image>, or TFRecord directory, to test on")
parser.add_argument("--model_folder_path", default="models", help="where <ClassName>/<version>/ is written (default: models)")
parser.add_argument("--model_type", "--model_name", dest="model_type", default="LenetModel",
                    help="LenetModel, MobileNetV2Model, MobileNetV3SmallModel, EfficientNetV2B0Model, "
                         "ConvNeXtTinyModel, ResnetModel, or package.module:ClassName (default: LenetModel)")
parser.add_argument("--model_version", type=int, default=None,
                    help="version folder name (default: the next free integer); one that exists "
                         "is refused unless --overwrite")
parser.add_argument("--overwrite", action="store_true", help="replace an existing --model_version")
parser.add_argument("--augment", choices=["none", "light", "standard"], default=None,
                    help="training-set augmentation in tf.data: random resized crop, flip, rotation, "
                         "brightness, contrast (default: light for backbones, none for LeNet)")
parser.add_argument("--export_litert", action="store_true",
                    help="also write <version>.tflite and <version>.labels.txt next to the SavedModel")
parser.add_argument("--input_width", type=int, default=None,
                    help="model input width (default: the model's own: LeNet 32, backbones 224)")
parser.add_argument("--input_height", type=int, default=None,
                    help="model input height (default: the model's own: LeNet 32, backbones 224)")
parser.add_argument("--batch_size", type=int, default=32,
                    help="images per replica (GPU or worker); the global batch is this times the "
                         "replicas, and the learning rate scales with it (default: 32)")
parser.add_argument("--num_epochs", type=int, default=100, help="most epochs of phase 1 (default: 100)")
parser.add_argument("--patience", type=int, default=5,
                    help="epochs without better validation accuracy before a phase stops (default: 5)")
parser.add_argument("--weights", default=None,
                    help="backbone weights: imagenet (Keras' download), none (random), or a local "
                         "weights file of the keras.applications backbone built with "
                         "include_top=False (default: imagenet)")
parser.add_argument("--fine_tune_epochs", type=int, default=None,
                    help="most epochs of phase 2, backbone unfrozen (default: 10 with pretrained "
                         "weights; 0 skips it)")
parser.add_argument("--unfreeze_layers", type=int, default=None,
                    help="phase 2 unfreezes only the backbone's top K layers (default: all); "
                         "batch normalisation stays frozen")
parser.add_argument("--learning_rate", type=float, default=None,
                    help="peak learning rate of phase 1; phase 2 uses a tenth (default: the model's, 1e-3)")
parser.add_argument("--fine_tune_learning_rate", type=float, default=None,
                    help="peak learning rate of phase 2 (default: a tenth of --learning_rate); "
                         "only with a pretrained backbone and phase 2")
parser.add_argument("--schedule", choices=["constant", "cosine"], default=None,
                    help="learning-rate schedule; cosine warms up linearly for an epoch "
                         "(default: cosine for backbones, constant for LeNet)")
parser.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adam", help="default: adam")
parser.add_argument("--label_smoothing", type=float, default=0.0, help="default: 0")
parser.add_argument("--class_weight", choices=["none", "balanced"], default="none",
                    help="balanced: weigh classes by the inverse of their image counts (default: none)")
parser.add_argument("--split_ratio", type=float, default=0.8,
                    help="fraction of the training folder trained on; the rest validates (default: 0.8)")
parser.add_argument("--seed", type=int, default=42,
                    help="seeds the split, shuffling, weights and dropout: a run repeats (default: 42)")
parser.add_argument("--mixed_precision", action="store_true",
                    help="compute in mixed_float16 on a GPU, mixed_bfloat16 on a CPU; outputs stay float32")
parser.add_argument("--cache", default=None, metavar="memory|DIR",
                    help="keep decoded images (uint8) after the first epoch in memory or in DIR "
                         "instead of decoding every epoch (default: decode every epoch)")
parser.add_argument("--jit_compile", action="store_true",
                    help="compile the training step with XLA (default: Keras' choice, on only with a GPU)")
parser.add_argument("--distribution", default="auto",
                    choices=("auto", "none", "mirrored", "multi_worker", "spark"),
                    help="auto: multi_worker when TF_CONFIG names a cluster, mirrored with 2+ GPUs, "
                         "else none; spark: --num_workers tasks of a Spark barrier stage, the "
                         "session of spark-submit or a local one (default: auto)")
parser.add_argument("--num_workers", type=int, default=None,
                    help="with --distribution spark: how many workers (Spark tasks); default 2")
parser.add_argument("--restart", action="store_true",
                    help="discard the backup of an interrupted run instead of resuming it (a re-run "
                         "with other settings is refused without it; see docs/resume.md)")


def config_from_args(args):
    """The `TrainingConfig` of parsed command-line arguments."""
    from imgclf.training import TrainingConfig

    model_kwargs = {}
    if args.weights is not None:
        model_kwargs["weights"] = None if args.weights.lower() == "none" else args.weights
    if (args.input_width is None) != (args.input_height is None):
        raise ValueError(
            "give both --input_width and --input_height, or neither (the model's own size); "
            f"received --input_width {args.input_width}, --input_height {args.input_height}"
        )
    input_shape = None if args.input_width is None else (args.input_height, args.input_width, 3)
    return TrainingConfig(
        model_version=args.model_version, overwrite=args.overwrite, augment=args.augment,
        export_litert=args.export_litert, input_shape=input_shape, batch_size=args.batch_size,
        num_epochs=args.num_epochs, patience=args.patience,
        fine_tune_epochs=args.fine_tune_epochs, unfreeze_layers=args.unfreeze_layers,
        learning_rate=args.learning_rate, fine_tune_learning_rate=args.fine_tune_learning_rate,
        schedule=args.schedule, optimizer=args.optimizer,
        label_smoothing=args.label_smoothing,
        class_weight=None if args.class_weight == "none" else args.class_weight,
        split_ratio=args.split_ratio, seed=args.seed, mixed_precision=args.mixed_precision,
        jit_compile=True if args.jit_compile else "auto", model_kwargs=model_kwargs,
        cache=args.cache, restart=args.restart,
        distribution="multi_worker" if args.distribution == "spark" else args.distribution,
    )


def main(argv=None):
    args = parser.parse_args(argv)
    if args.num_workers is not None and args.distribution != "spark":
        parser.error("--num_workers applies only with --distribution spark")

    def work():
        import logging

        import_tensorflow()
        from imgclf.training import train

        # The strategy, global batch and learning-rate scaling are logged when training starts.
        logging.basicConfig(format="%(name)s: %(message)s")
        logging.getLogger("imgclf.training").setLevel(logging.INFO)
        if args.distribution == "spark":
            from imgclf.spark import train
            kwargs = {"num_workers": 2 if args.num_workers is None else args.num_workers}
        else:
            kwargs = {}
        result = train(
            args.model_type, args.train_dataset_path, args.test_dataset_path,
            args.model_folder_path, config_from_args(args), **kwargs,
        )
        if result.export_path is None:
            print("worker done: the chief saved the model")
            return
        print(f"saved model: {result.export_path}")
        if result.litert_path:
            print(f"LiteRT model: {result.litert_path}")
        print(f"test accuracy: {result.test_metrics['accuracy']:.4f}")

    return cli.run(parser, work)
