"""`ImageClassifierModel`: the abstract base of every imgclf model.

A subclass describes its network once, in `create_model_io`; the base class gives it what every
image classifier needs around that network: validated construction, a Keras config so the model
round-trips through `.keras` files, the serving functions, and a `save` that writes a SavedModel
TensorFlow Serving loads as it is.

    >>> import keras
    >>> from imgclf import ImageClassifierModel, register_model
    >>> @register_model
    ... class TinyModel(ImageClassifierModel):
    ...     def create_model_io(self, input_shape, num_classes):
    ...         inputs = keras.Input(shape=input_shape)
    ...         x = keras.layers.Rescaling(1 / 255)(inputs)
    ...         x = keras.layers.GlobalAveragePooling2D()(x)
    ...         return inputs, keras.layers.Dense(num_classes)(x)
    >>> model = TinyModel(input_shape=(32, 32, 3), num_classes=2, class_names=["cat", "dog"])
    >>> model.save("tiny/1")   # a servable SavedModel; "tiny.keras" writes Keras' own file
"""

import os

import keras
import tensorflow as tf

from imgclf import images
from imgclf.export import signatures
from imgclf.export.litert import LITERT_SUFFIX, save_litert
from imgclf.export.savedmodel import save_servable


class ImageClassifierModel(keras.Model):
    """A Keras functional model that classifies images and knows how to be served.

    Args:
        input_shape: `(height, width, 3)` of the images the network takes (default: the class's
            `default_input_shape`). Images of other sizes are resized to it by the serving
            functions and the data set loader.
        num_classes: how many classes the model tells apart (at least 2).
        class_names: the name of each class, in the order of the model's outputs. They travel in
            the saved model; by default `"0"`, `"1"`, ...
        **kwargs: `keras.Model` arguments such as `name`.

    The network takes raw 0-255 pixels and returns logits `[batch, num_classes]`; any rescaling or
    normalisation is a layer inside it.
    """

    #: The peak learning rate when `imgclf.training` compiles the model.
    default_learning_rate = 1e-3
    #: `(height, width, 3)` when no `input_shape` is given (the training scripts' default too).
    default_input_shape = (224, 224, 3)
    #: The smallest height and width the network takes.
    min_input_size = 1
    #: The learning-rate schedule `imgclf.training` uses by default: "constant" or "cosine".
    default_schedule = "constant"

    def __init__(self, input_shape=None, num_classes=10, class_names=None, **kwargs):
        if type(self).create_model_io is ImageClassifierModel.create_model_io:
            raise TypeError(
                f"{type(self).__name__} must implement create_model_io(input_shape, num_classes); "
                "ImageClassifierModel itself is abstract"
            )
        input_shape = type(self).validate_input_shape(input_shape)
        num_classes = _validate_num_classes(num_classes)
        class_names = _validate_class_names(class_names, num_classes)
        inputs, outputs = self.create_model_io(input_shape, num_classes)
        if getattr(outputs, "dtype", "float32") != "float32":
            # Under a mixed-precision policy the logits are float16/bfloat16: every signature
            # still returns float32 (Keras' mixed-precision guide casts the last layer too).
            outputs = keras.layers.Activation("linear", dtype="float32", name="logits_float32")(
                outputs
            )
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.image_shape = input_shape
        self.num_classes = num_classes
        self.class_names = class_names
        output_shape = tuple(self.outputs[0].shape)
        if len(self.outputs) != 1 or output_shape[1:] != (num_classes,):
            raise ValueError(
                f"{type(self).__name__}.create_model_io must return one output of shape "
                f"(batch, {num_classes}); received {[tuple(o.shape) for o in self.outputs]}"
            )

    @classmethod
    def validate_input_shape(cls, input_shape):
        """`input_shape` as a tuple, or the class's `default_input_shape` for None.

        Raises `ValueError` naming what arrived if it is not `(height, width, 3)` of at least
        `min_input_size`. The training function calls it before it reads any data.
        """
        if input_shape is None:
            return tuple(cls.default_input_shape)
        shape = _validate_input_shape(input_shape)
        if min(shape[:2]) < cls.min_input_size:
            raise ValueError(
                f"{cls.__name__} needs images of at least {cls.min_input_size} x "
                f"{cls.min_input_size}; received input_shape {shape}"
            )
        return shape

    @classmethod
    def validate_arguments(cls, **kwargs):
        """Check constructor arguments of the subclass's own (besides `input_shape`,
        `num_classes`, `class_names`) before a model is built; raise `ValueError` naming a bad one.

        The base checks nothing (a wrong name still fails when the model is built); a subclass
        with arguments of its own overrides it, as `BackboneModel` does for `weights`.
        """

    def create_model_io(self, input_shape, num_classes):
        """Build the network; return `(inputs, outputs)` of a functional graph.

        `inputs` is a `keras.Input(shape=input_shape)` taking raw 0-255 pixels; `outputs` gives
        logits of shape `(batch, num_classes)`.
        """
        raise NotImplementedError

    @property
    def image_size(self):
        """`(height, width)` the network takes."""
        return self.image_shape[:2]

    def get_config(self):
        # A subclass with constructor arguments of its own adds them to this dict.
        return {
            "name": self.name,
            "trainable": self.trainable,
            "input_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)

    # Keras 3 cannot `fit` under MultiWorkerMirroredStrategy (keras-team/keras#20585): the
    # fix lives in imgclf/training/multi_worker_fit.py; these hooks only hand over to it, and
    # do nothing in any other setting. `call` guards a replica's empty part of a global batch,
    # which TensorFlow's oneDNN convolution mis-shapes (`multi_worker_fit.replica_call`). (Methods here rather than a mixin class from
    # imgclf.training: as a base class it would be imported with this module, and importing
    # the training package imports the models: a cycle.)

    def train_step(self, data):
        from imgclf.training import multi_worker_fit

        return multi_worker_fit.train_step(self, super().train_step, data)

    def test_step(self, data):
        from imgclf.training import multi_worker_fit

        return multi_worker_fit.test_step(self, super().test_step, data)

    def call(self, inputs, training=None, mask=None, **kwargs):
        from imgclf.training import multi_worker_fit

        return multi_worker_fit.replica_call(self, super().call, inputs, training=training,
                                             mask=mask, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        from imgclf.training import multi_worker_fit

        return multi_worker_fit.symbolic_build(self, super()._maybe_symbolic_build, iterator,
                                               data_batch)

    # The serving functions. They are the SavedModel's signatures and stay callable on the model
    # object reloaded by `tf.saved_model.load`; a server calls them through the signatures. Each
    # prepares its images and calls `_serving_forward`, so the network is traced once per model
    # and a SavedModel holds its graph once (an EfficientNetV2B0 at 224 px saved in 13-15 CPU s
    # with a trace per function, 10-11 with one; its saved_model.pb is 2.0 MB instead of 3.4).

    @tf.function(input_signature=[signatures.INPUT_TENSOR_SPEC], autograph=False)
    def predict_numpy_image(self, input_tensor):
        """Logits `[N, num_classes]` for float32 images `[N, H, W, 3]` of 0-255 pixels, any H and W."""
        return self._forward(images.resize_images(input_tensor, self.image_size))["logits"]

    @tf.function(input_signature=[signatures.IMAGE_BYTES_SPEC], autograph=False)
    def predict_bytes_image(self, image_bytes_string):
        """Logits `[N, num_classes]` for encoded images: one (a scalar string) or a 1-D batch."""
        batch = images.decode_image_batch(image_bytes_string, self.image_size)
        return self._forward(batch)["logits"]

    @tf.function(input_signature=[signatures.IMAGE_BYTES_SPEC], autograph=False)
    def predict_labels(self, image_bytes_string):
        """The most probable classes of encoded images, best first.

        Returns `classes` (class names, string `[N, k]`), `class_ids` (int64 `[N, k]`) and
        `probabilities` (float32 `[N, k]`), with `k = min(5, num_classes)`.
        """
        probabilities = tf.nn.softmax(self.predict_bytes_image(image_bytes_string), axis=-1)
        top = tf.math.top_k(probabilities, k=min(signatures.TOP_K, self.num_classes))
        class_names = tf.constant(self.class_names, dtype=tf.string)
        return {
            "classes": tf.gather(class_names, top.indices),
            "class_ids": tf.cast(top.indices, tf.int64),
            "probabilities": top.values,
        }

    @tf.function(input_signature=[signatures.INPUT_TENSOR_SPEC], autograph=False)
    def predict_embeddings(self, input_tensor):
        """Logits and the penultimate layer's output for float32 images `[N, H, W, 3]`, 0-255.

        Returns `{"logits": [N, num_classes], "embedding": [N, D]}` from one forward pass; the
        embedding is what the classifier head reads (`embedding_tensor`), for search and
        deduplication. Saved in the SavedModel as a function, not a signature (the serving
        contract is unchanged): `tf.saved_model.load(path).predict_embeddings(images)`.
        """
        self.embedding_tensor()  # a network without a penultimate layer: its ValueError
        return self._forward(images.resize_images(input_tensor, self.image_size))

    def _forward(self, batch):
        """`_serving_forward` on `batch`, images of the model's size whose static shape may not
        say so: given `[N, height, width, 3]`, every serving function calls it with one
        signature."""
        return self._serving_forward(tf.ensure_shape(batch, [None, *self.image_shape]))

    @tf.function(autograph=False)
    def _serving_forward(self, batch):
        """The network in inference mode on `[N, height, width, 3]` images: `{"logits"}`, and
        `"embedding"` (flattened to `[N, D]`) where the network has a penultimate layer."""
        try:
            embedding = self.embedding_tensor()
        except ValueError:
            return {"logits": self(batch, training=False)}
        network = keras.Model(self.inputs, [self.outputs[0], embedding])
        logits, embedding = network(batch, training=False)
        return {"logits": logits, "embedding": tf.reshape(embedding, [tf.shape(embedding)[0], -1])}

    def embedding_tensor(self):
        """The penultimate layer's output: the input of the last layer with weights (the
        classifier head), found by walking back from the logits past weightless layers such as
        the float32 cast of mixed precision."""
        tensor = self.outputs[0]
        while True:
            layer, node_index, _ = tensor._keras_history
            inputs = layer._inbound_nodes[node_index].input_tensors
            if not inputs:
                raise ValueError(f"{type(self).__name__} has no layer with weights before its "
                                 "logits: it has no penultimate layer")
            if layer.weights or len(inputs) != 1:
                return inputs[0]
            tensor = inputs[0]

    def save(self, filepath, overwrite=True, **kwargs):
        """Save the model.

        A path ending in `.keras` or `.h5` writes Keras' own file (reload it with
        `keras.models.load_model`). Any other path is a directory that receives a SavedModel with
        the serving signatures (`serving_default`, `serving_bytes`, `serving_labels`), written
        beside it and renamed into place so that a polling TensorFlow Serving never sees half of
        it. Reload it with `tf.saved_model.load`. A path ending in `.tflite` writes a LiteRT
        flatbuffer and its `.labels.txt` (`imgclf.export.litert`).
        """
        if os.fspath(filepath).endswith((".keras", ".h5")):
            return super().save(filepath, overwrite=overwrite, **kwargs)
        if os.fspath(filepath).endswith(LITERT_SUFFIX):
            return save_litert(self, filepath, overwrite=overwrite)
        return save_servable(self, filepath, overwrite=overwrite, **kwargs)


def _validate_input_shape(input_shape):
    try:
        shape = tuple(int(d) for d in input_shape)
        valid = all(float(d) == int(d) for d in input_shape)
    except (TypeError, ValueError):
        valid = False
    if not valid or len(shape) != 3 or shape[2] != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (height, width, 3); received {input_shape!r}")
    return shape


def _validate_num_classes(num_classes):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer of at least 2; received {num_classes!r}")
    return num_classes


def _validate_class_names(class_names, num_classes):
    if class_names is None:
        return tuple(str(i) for i in range(num_classes))
    class_names = tuple(class_names)
    if len(class_names) != num_classes or not all(isinstance(c, str) for c in class_names):
        raise ValueError(
            f"class_names must be {num_classes} strings, one per class; received {class_names!r}"
        )
    return class_names
