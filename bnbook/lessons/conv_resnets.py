"""Small convolutional and residual networks on subsampled MNIST (chapter 6; chapter 8 reuses them).

Everything is sized for a 2-core CPU: a few thousand 28x28 images, networks with tens of thousands of
weights, training runs of about a hundred steps. The public API:

* :func:`mnist_images` -- a seeded random subsample of MNIST as NHWC float32 images in [0, 1];
* :func:`make_norm` -- the normalisation layer a builder puts after a conv or dense layer
  (``"batch"``, ``"layer"``, ``"group"``, ``None`` or your own factory);
* :func:`make_cnn` -- Conv -> norm -> ReLU blocks (stride 2), then Dense -> norm -> ReLU and logits;
* :func:`residual_block`, :func:`make_resnet` -- a small ResNet with BN before the ``Add``;
* :func:`train` -- the one training loop of the chapter (plain SGD or any Keras optimizer, all
  steps inside one ``tf.function``), returning the loss of every step;
* :func:`predict_classes`, :func:`accuracy` -- inference-mode (or training-mode) predictions and
  accuracy, batch by batch (a float16 model through XLA, like its training);

Exact recalibration (``bnbook.recalibrate_bn``) and ``bnbook.bn_layers`` / ``bnbook.moving_stats``
are the practitioner API's (:mod:`bnbook.statistics`); ``same_arrays`` comes from
:mod:`bnbook.lessons.keras_layer` and is re-exported here.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf

from .keras_layer import same_arrays
from .mnist_experiment import batch_indices

__all__ = ["IMAGE_SHAPE", "mnist_images", "make_norm", "make_cnn", "residual_block", "make_resnet",
           "train", "predict_classes", "accuracy", "same_arrays"]

IMAGE_SHAPE = (28, 28, 1)
BatchNorm = keras.layers.BatchNormalization


# --- data ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _mnist_once(path):
    from .data import load_mnist

    return load_mnist(path)


def mnist_images(n_train: int = 2000, n_test: int = 1000, seed: int = 0, path=None):
    """A random subsample of MNIST as NHWC images: ``(x_train, y_train), (x_test, y_test)``.

    ``n_train`` images drawn without replacement from the 60,000 training images and ``n_test``
    from the 10,000 test images, in random order, with a NumPy generator seeded by ``seed`` (the
    same arguments always give the same images). Images are float32 in [0, 1] with shape
    ``(n, 28, 28, 1)`` (channels last, Keras' default); labels are int64 digits 0..9.
    """
    (x_train, y_train), (x_test, y_test) = _mnist_once(path)
    rng = np.random.default_rng(seed)

    def pick(x, y, n):
        index = rng.choice(len(x), size=n, replace=False)
        return (x[index, :, :, None] / np.float32(255.0)).astype(np.float32), \
            y[index].astype(np.int64)

    return pick(x_train, y_train, n_train), pick(x_test, y_test, n_test)


# --- models -------------------------------------------------------------------------------------

def make_norm(norm, channels: int, *, momentum: float = 0.99, dtype=None):
    """The normalisation layer for ``channels`` channels, or ``None`` for no normalisation.

    ``norm`` is ``None``/``"none"``, ``"batch"`` (``BatchNormalization(momentum=momentum)``),
    ``"layer"``, ``"group"`` (``GroupNormalization`` with 4 groups, or fewer if ``channels`` is
    not a multiple of 4), or a callable ``norm(channels) -> keras layer``.
    """
    if norm is None or norm == "none":
        return None
    if callable(norm):
        return norm(channels)
    if norm == "batch":
        return BatchNorm(momentum=momentum, dtype=dtype)
    if norm == "layer":
        return keras.layers.LayerNormalization(dtype=dtype)
    if norm == "group":
        groups = max(g for g in (4, 2, 1) if channels % g == 0)
        return keras.layers.GroupNormalization(groups=groups, dtype=dtype)
    raise ValueError(f"unknown norm {norm!r}: use None, 'batch', 'layer', 'group' or a callable")


def _he_initializer(init_scale: float):
    """He-normal weights (std sqrt(2 / fan_in)) multiplied by ``init_scale``."""
    return keras.initializers.VarianceScaling(scale=2.0 * init_scale ** 2, mode="fan_in",
                                              distribution="untruncated_normal")


def make_cnn(norm="batch", filters=(8, 16), dense_units: int = 32, *, init_scale: float = 1.0,
             momentum: float = 0.99, seed: int = 0, input_shape=IMAGE_SHAPE, n_classes: int = 10,
             dtype=None, name: str = "cnn"):
    """A small CNN: for each entry of ``filters``, Conv2D(3x3, stride 2) -> norm -> ReLU; then
    Flatten -> Dense(dense_units) -> norm -> ReLU (skipped if ``dense_units=0``) -> Dense logits.

    ``norm`` is anything :func:`make_norm` takes (``"batch"``, ``None``, ...). With a
    normalisation layer the convolution or Dense layer before it has no bias (``use_bias=False``;
    BN's beta does that job); with ``norm=None`` it has one. ``init_scale`` multiplies the
    He-normal weights of every hidden layer (1: He initialisation). ``dtype`` is a Keras dtype
    policy for every layer (e.g. ``"mixed_float16"``); the logits are always float32. The same
    ``seed`` gives the same initial weights. For 28x28 inputs and ``filters=(8, 16)`` the feature
    maps are 14x14x8 and 7x7x16.
    """
    keras.utils.set_random_seed(seed)
    layers = [keras.Input(input_shape)]

    def block(make_layer, width):
        normaliser = make_norm(norm, width, momentum=momentum, dtype=dtype)
        layers.append(make_layer(width, use_bias=normaliser is None,
                                 kernel_initializer=_he_initializer(init_scale), dtype=dtype))
        if normaliser is not None:
            layers.append(normaliser)
        layers.append(keras.layers.ReLU(dtype=dtype))

    for width in filters:
        block(functools.partial(keras.layers.Conv2D, kernel_size=3, strides=2, padding="same"),
              width)
    layers.append(keras.layers.Flatten(dtype=dtype))
    if dense_units:
        block(keras.layers.Dense, dense_units)
    layers.append(keras.layers.Dense(n_classes, dtype="float32"))
    return keras.Sequential(layers, name=name)


def residual_block(x, gamma_zero: bool = True, momentum: float = 0.99):
    """A basic residual block with an identity shortcut, the way Keras' ResNet places BN:

    ``x -> Conv -> BN -> ReLU -> Conv -> BN -> (+ x) -> ReLU``: BN before the ``Add``, the
    activation after it. ``gamma_zero=True`` starts the last BN's gamma at 0, so the branch
    outputs 0 and the block starts as the identity on its (non-negative, post-ReLU) input.
    """
    channels = x.shape[-1]
    branch = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(x)
    branch = keras.layers.BatchNormalization(momentum=momentum)(branch)
    branch = keras.layers.ReLU()(branch)
    branch = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(branch)
    branch = keras.layers.BatchNormalization(
        momentum=momentum, gamma_initializer="zeros" if gamma_zero else "ones")(branch)
    return keras.layers.ReLU()(keras.layers.Add()([x, branch]))


def make_resnet(blocks: int = 2, filters: int = 8, *, gamma_zero: bool = True,
                momentum: float = 0.99, seed: int = 0, input_shape=IMAGE_SHAPE,
                n_classes: int = 10, name: str = "resnet"):
    """A small ResNet: a stem Conv(3x3, stride 2, no bias) -> BN -> ReLU, then ``blocks``
    :func:`residual_block` s of ``filters`` channels, then Flatten -> Dense logits."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(BatchNorm(momentum=momentum)(x))
    for _ in range(blocks):
        x = residual_block(x, gamma_zero=gamma_zero, momentum=momentum)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(n_classes)(x), name=name)


# --- training and evaluation --------------------------------------------------------------------

def _uses_float16(model) -> bool:
    return any(getattr(layer, "compute_dtype", "float32") == "float16"
               for layer in model._flatten_layers())


def _architecture(model) -> str:
    """The model's layer classes, settings and connections, without names and initialisers: two
    models with the same architecture (whatever their initial weights) give the same string.

    A functional model's config names its layers where it connects them (``inbound_nodes``,
    ``input_layers``, ...), and Keras numbers those names afresh for every model it builds
    (``conv2d_7``): every layer name is replaced by the layer's position in the config."""
    import json

    config = model.get_config()
    positions: dict = {}

    def collect(value):
        if isinstance(value, dict):
            for layer in value.get("layers", []) if isinstance(value.get("layers"), list) else []:
                name = layer.get("name", layer.get("config", {}).get("name")) \
                    if isinstance(layer, dict) else None
                if isinstance(name, str):
                    positions.setdefault(name, f"layer {len(positions)}")
            for item in value.values():
                collect(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                collect(item)

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in sorted(value.items())
                    if k != "name" and not k.endswith("_initializer")}
        if isinstance(value, (list, tuple)):            # keras_history is a tuple
            return [strip(v) for v in value]
        if isinstance(value, str):
            return positions.get(value, value)
        return value

    collect(config)
    return json.dumps(strip(config), default=str)


def _dtype_policies(model) -> tuple:
    """The dtype policy of every layer, in order (``_architecture`` drops every ``name`` key,
    the policies' names included, so they are listed here)."""
    return tuple(layer.dtype_policy.name for layer in model._flatten_layers())


_SGD_RUNNERS: dict = {}   # (architecture, batch size, dtypes) -> (worker model, optimizer, step fn)


def _sgd_runner(model, batch_size):
    """A traced SGD loop for models of this architecture, traced once and reused: the weights
    are copied into a private twin of ``model``, trained there and copied back. Tracing costs
    more than 100 steps of these small networks, and a sweep trains the same architecture often.
    Models that differ only in a layer's dtype policy (``"float32"`` or ``"mixed_float16"``) get
    runners of their own: the policy decides the compute dtype and the loss scaling, and a float16
    runner is compiled with XLA (see :func:`_make_loop`).
    """
    key = (_architecture(model), batch_size, _dtype_policies(model))
    if key not in _SGD_RUNNERS:
        worker = keras.models.clone_model(model)
        optimizer = keras.optimizers.SGD(0.01)
        if _uses_float16(worker):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        _SGD_RUNNERS[key] = (worker, optimizer, _make_loop(worker, optimizer))
    return _SGD_RUNNERS[key]


def _make_loop(model, optimizer):
    """All the SGD steps in one ``tf.function``. A model that computes in float16 gets an
    XLA-compiled one (``jit_compile=True``): on a CPU, TensorFlow's own float16 kernels are
    several times slower than XLA's, and its oneDNN ones fail outright when oneDNN is capped
    below the CPU's instruction set (``ONEDNN_MAX_CPU_ISA``), as a stability check does."""
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(reduce_retracing=True, jit_compile=_uses_float16(model))
    def run(x_all, y_all, step_indices):
        variables = model.trainable_variables
        losses = tf.TensorArray(tf.float32, size=tf.shape(step_indices)[0])
        for i in tf.range(tf.shape(step_indices)[0]):
            x_batch = tf.gather(x_all, step_indices[i])
            y_batch = tf.gather(y_all, step_indices[i])
            with tf.GradientTape() as tape:
                loss = loss_fn(y_batch, model(x_batch, training=True))
                scaled_loss = optimizer.scale_loss(loss) if scaled else loss
            optimizer.apply_gradients(zip(tape.gradient(scaled_loss, variables), variables))
            losses = losses.write(i, tf.cast(loss, tf.float32))
        return losses.stack()

    return run


def train(model, x, y, *, steps: int, batch_size: int = 64, learning_rate: float = 0.05,
          optimizer=None, seed: int = 0, shuffle: bool = True) -> np.ndarray:
    """Train ``model`` on ``(x, y)`` for ``steps`` mini-batch steps; return every step's loss.

    The loss is the mean sparse cross-entropy of the logits. ``optimizer`` defaults to plain SGD
    with ``learning_rate``; pass any Keras optimizer instead (``learning_rate`` is then ignored).
    Batches have exactly ``batch_size`` examples: with ``shuffle=True`` each epoch is a fresh
    permutation (seeded by ``seed``); with ``shuffle=False`` the examples are taken in the order
    given, cycling. The model is called with ``training=True`` (BN uses batch statistics and
    updates its moving ones). Under a float16 dtype policy the loss is scaled
    (``LossScaleOptimizer``) and the steps are compiled with XLA. All steps run inside one
    ``tf.function``; with the default SGD it is traced once per architecture and batch size and
    reused (on a private twin of the model, whose weights are copied in and out), which makes
    sweeps cheap.
    Returns float32 losses of shape ``(steps,)``; a diverged run has inf or NaN entries.
    """
    if shuffle:
        indices = batch_indices(len(x), steps, batch_size, seed)
    else:
        indices = (np.arange(steps * batch_size) % len(x)).reshape(steps, batch_size)
    arguments = (tf.constant(x), tf.constant(y), tf.constant(indices, dtype=tf.int32))
    if optimizer is not None:
        if _uses_float16(model) and not isinstance(optimizer,
                                                   keras.optimizers.LossScaleOptimizer):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return _make_loop(model, optimizer)(*arguments).numpy()
    worker, sgd, run = _sgd_runner(model, batch_size)
    worker.set_weights(model.get_weights())
    inner = sgd.inner_optimizer if isinstance(sgd, keras.optimizers.LossScaleOptimizer) else sgd
    inner.learning_rate.assign(learning_rate)
    losses = run(*arguments).numpy()
    model.set_weights(worker.get_weights())
    return losses


_PREDICTORS: dict = {}    # (architecture, dtypes, training) -> (worker model, XLA-compiled call)


def _logits(model, x, training: bool):
    """``model(x, training=training)``; for a model that computes in float16, through an
    XLA-compiled twin (for the reasons given in :func:`_make_loop`), whose weights are copied in
    (and, in training mode, where BN moves its moving statistics, copied back)."""
    if not _uses_float16(model):
        return model(x, training=training)
    key = (_architecture(model), _dtype_policies(model), training)
    if key not in _PREDICTORS:
        worker = keras.models.clone_model(model)
        _PREDICTORS[key] = (worker, tf.function(lambda images: worker(images, training=training),
                                                jit_compile=True, reduce_retracing=True))
    worker, call = _PREDICTORS[key]
    worker.set_weights(model.get_weights())
    logits = call(tf.constant(x))
    if training:
        model.set_weights(worker.get_weights())
    return logits


def predict_classes(model, x, batch_size: int = 500, training: bool = False) -> np.ndarray:
    """The predicted class of every image, ``batch_size`` images at a time.

    ``training=True`` runs BN on each batch's own statistics (and moves the moving statistics):
    only for demonstrations of that mistake.
    """
    parts = [np.argmax(_logits(model, x[i:i + batch_size], training), axis=1)
             for i in range(0, len(x), batch_size)]
    return np.concatenate(parts)


def accuracy(model, x, y, batch_size: int = 500, training: bool = False) -> float:
    """Fraction of correct predictions, computed ``batch_size`` images at a time (inference mode
    unless ``training=True``)."""
    return float(np.mean(predict_classes(model, x, batch_size, training) == y))
