"""Small data sets, tiny models and helpers for chapter 4 (the Keras BatchNormalization layer).

Everything here is deliberately small so a notebook cell or an exercise check runs in a second:
synthetic Gaussian clusters, a few-unit dense network, and MNIST subsets of a few thousand images.
"""

from __future__ import annotations

import functools

import keras
import numpy as np

BatchNorm = keras.layers.BatchNormalization


# --- data ---------------------------------------------------------------------------------------

def far_clusters(n: int = 512, n_features: int = 4, n_classes: int = 3, seed: int = 0,
                 offset: float = 20.0, spread: float = 8.0):
    """Gaussian class clusters whose features sit far from 0 with a large spread.

    Unnormalised inputs like these are where BN earns its keep: the network sees the same data
    at mean 0 and variance 1 only if BN normalises it. Returns float32 x (n, n_features) and
    int64 labels y (n,).
    """
    rng = np.random.default_rng(seed)
    centres = offset + spread * rng.normal(size=(n_classes, n_features))
    y = rng.integers(0, n_classes, size=n)
    x = centres[y] + spread * 0.6 * rng.normal(size=(n, n_features))
    return x.astype(np.float32), y.astype(np.int64)


def mnist_digits(digits, n_train: int, n_test: int, path=None):
    """Flat MNIST images of the given digits, labels renumbered 0..len(digits)-1.

    Returns (x_train, y_train), (x_test, y_test): the first n_train / n_test such images, as
    float32 vectors in [0, 1] (the same numbers as ``bnbook.lessons.data.mnist_flat``).
    """
    (x_train, y_train), (x_test, y_test) = _mnist_once(path)
    lookup = np.full(10, -1, dtype=np.int64)
    lookup[list(digits)] = np.arange(len(digits))

    def pick(x, y, n):
        keep = np.flatnonzero(np.isin(y, digits))[:n]
        # Only the picked images are converted: converting all 70,000 takes a second or two.
        return (x[keep].reshape(len(keep), -1) / 255.0).astype(np.float32), lookup[y[keep]]

    return pick(x_train, y_train, n_train), pick(x_test, y_test, n_test)


@functools.lru_cache(maxsize=1)
def _mnist_once(path):
    """MNIST as Keras returns it (uint8 images), read once per process."""
    from .data import load_mnist

    return load_mnist(path)


def shuffled_batches(x, y, batch_size: int, seed: int):
    """A tf.data pipeline of mini-batches, reshuffled every epoch in an order fixed by ``seed``.

    ``fit`` on NumPy arrays prepares the data anew every epoch, which for the small models here
    can take longer than the epoch's training steps; ``fit`` on this pipeline does not. Pass
    ``shuffle=False`` to ``fit`` with it (the pipeline shuffles).
    """
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y))
    return data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size)


def batches(x, y, batch_size: int):
    """Consecutive mini-batches (x_batch, y_batch), in order, the last one possibly smaller."""
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size], y[start:start + batch_size]


# --- models -------------------------------------------------------------------------------------

def dense_bn_model(n_features: int = 4, n_classes: int = 3, units: int = 16, seed: int = 0,
                   momentum: float = 0.99):
    """Input -> BN -> Dense(no bias) -> BN -> ReLU -> Dense(logits): two BN layers, 3 classes."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((n_features,)),
        BatchNorm(momentum=momentum),
        keras.layers.Dense(units, use_bias=False),
        BatchNorm(momentum=momentum),
        keras.layers.ReLU(),
        keras.layers.Dense(n_classes),
    ])


def mnist_base(units: int = 64, seed: int = 1):
    """A feature extractor for flat MNIST: two Dense(no bias) -> BN -> ReLU blocks."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(units, use_bias=False), BatchNorm(), keras.layers.ReLU(),
        keras.layers.Dense(units, use_bias=False), BatchNorm(), keras.layers.ReLU(),
    ], name="base")


def compile_classifier(model, optimizer, run_eagerly: bool = False, metrics=("accuracy",),
                       steps_per_execution: int = 1):
    """Compile for integer labels and logits, with accuracy as the metric.

    run_eagerly=True skips building a graph: faster for the few-step fits of the small demos.
    metrics=() and steps_per_execution > 1 (several steps per graph call) make fits of a few
    hundred steps faster when nothing reads fit's own accuracy.
    """
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=list(metrics), run_eagerly=run_eagerly, jit_compile=False,
                  steps_per_execution=steps_per_execution)
    return model


# --- inspection ---------------------------------------------------------------------------------

def layer_links(model):
    """(class of the producing layer, class of the consuming layer) for every connection of a
    functional model, read from ``model.get_config()``: e.g. ("Conv2D", "BatchNormalization")."""
    config = model.get_config()["layers"]
    kind = {layer["name"]: layer["class_name"] for layer in config}
    links = []
    for layer in config:
        for node in layer["inbound_nodes"]:
            for arg in node["args"]:
                for tensor in arg if isinstance(arg, list) else [arg]:
                    links.append((kind[tensor["config"]["keras_history"][0]], layer["class_name"]))
    return links


def same_arrays(a, b) -> bool:
    """True if two lists of arrays are exactly equal, element by element."""
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


def count_params(variables) -> int:
    """Number of scalars in a list of variables."""
    return int(sum(np.prod(v.shape) for v in variables))


def inference_accuracy(model, x, y, batch_size: int = 1000) -> float:
    """Accuracy with BN in inference mode (moving statistics), batch by batch."""
    correct = 0
    for xb, yb in batches(x, y, batch_size):
        correct += int(np.sum(np.argmax(model(xb, training=False), axis=1) == yb))
    return correct / len(x)


def initial_weights(model, seed: int):
    """New starting values for every weight of ``model``, in ``model.get_weights()`` order: each
    drawn by its layer's own initializer (``kernel_initializer``, ``gamma_initializer``, ...), the
    random ones seeded from ``seed``; so moving statistics start at 0 and 1 again. The start of a
    new run, for :func:`restart`. (Faster than building a fresh copy of the model.)"""
    initializer = {}
    for index, layer in enumerate(_leaf_layers(model)):
        for variable in layer.weights:
            chosen = getattr(layer, f"{variable.name}_initializer")
            config = chosen.get_config()
            if "seed" in config:   # a random initializer: give each weight its own seed
                chosen = type(chosen).from_config({**config, "seed": 1000 * seed + index})
            initializer[id(variable)] = chosen
    return [np.asarray(initializer[id(v)](v.shape, dtype=v.dtype)) for v in model.weights]


def _leaf_layers(model):
    """The layers that own weights themselves, nested models opened, in order."""
    found = []
    for layer in model.layers:
        found.extend(_leaf_layers(layer) if hasattr(layer, "layers") else [layer])
    return found


def restart(model, weights):
    """Begin a new run on an already compiled model: load ``weights`` and zero the optimizer's
    state (its step count and, for Adam, its moments).

    ``compile`` would do the same for the optimizer but throws away the traced train step, and for
    these small models tracing it again takes longer than the training itself. For optimizers
    whose state starts at zero (SGD, SGD with momentum, Adam); the learning rate is kept.
    """
    model.set_weights(weights)
    for variable in model.optimizer.variables:
        if variable.name != "learning_rate":
            variable.assign(np.zeros(variable.shape, dtype=variable.dtype))


def spread(values, digits: int = 2) -> str:
    """Mean and range of a quantity measured once per seed, e.g. "0.73 (0.72 to 0.75)"."""
    values = np.asarray(values, dtype=float)
    mean, low, high = (round(float(v), digits) + 0.0 for v in (values.mean(), values.min(),
                                                             values.max()))  # + 0.0: no "-0.00"
    return f"{mean:.{digits}f} ({low:.{digits}f} to {high:.{digits}f})"


def run_epochs(train_step, model, optimizer, loss_fn, x, y, batch_size: int = 32,
               epochs: int = 1):
    """Call ``train_step(model, optimizer, loss_fn, x_batch, y_batch)`` on every mini-batch.

    Batches come in order (no shuffling), so a loop here and ``fit(shuffle=False)`` see the same
    batches. Returns the loss of the last step as a float.
    """
    loss = None
    for _ in range(epochs):
        for xb, yb in batches(x, y, batch_size):
            loss = train_step(model, optimizer, loss_fn, xb, yb)
    return float(loss)
