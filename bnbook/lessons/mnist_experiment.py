"""The classic MNIST experiment of chapters 2 and 3: data, starting weights, training loop, accuracy.

The recipe (BN2015's MNIST experiment as popularised by the r2rt walk-through): a 784-100-100-10
network with sigmoid hidden units and a softmax output; weights drawn from a standard normal
(a deliberately bad scale) so that the nets with and without BN start from the same place;
SGD with learning rate 0.01 on the *summed* cross-entropy of mini-batches of 60.

The networks themselves are written in the notebooks, because the BN parts are what the chapters
teach. Any ``tf.Module`` whose ``__call__(x, training)`` returns logits can be trained here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import tensorflow as tf

from .data import mnist_flat

LAYER_SIZES = (784, 100, 100, 10)
BATCH_SIZE = 60
LEARNING_RATE = 0.01
EPSILON = 1e-3


def load_data():
    """Full MNIST as float32 vectors in [0, 1]: ``(x_train, y_train), (x_test, y_test)``."""
    return mnist_flat()


def initial_weights(seed: int = 0) -> list[np.ndarray]:
    """Standard-normal weight matrices for 784-100-100-10 (float32), the same for every net."""
    rng = np.random.default_rng(seed)
    sizes = LAYER_SIZES
    return [rng.standard_normal((m, n)).astype(np.float32) for m, n in zip(sizes, sizes[1:])]


def batch_indices(n_examples: int, steps: int, batch_size: int = BATCH_SIZE, seed: int = 0):
    """Indices of the training examples of each step: shuffled epochs, shape (steps, batch_size)."""
    rng = np.random.default_rng(seed)
    needed = steps * batch_size
    epochs = -(-needed // n_examples)
    order = np.concatenate([rng.permutation(n_examples) for _ in range(epochs)])
    return order[:needed].reshape(steps, batch_size).astype(np.int32)


@dataclass
class History:
    """What :func:`train` recorded every ``eval_every`` steps."""

    steps: np.ndarray
    test_accuracy: np.ndarray
    probes: dict[str, np.ndarray] = field(default_factory=dict)
    step_probes: dict[str, np.ndarray] = field(default_factory=dict)


def train(model: tf.Module, train_data, test_data, steps: int, *, eval_every: int = 50,
          learning_rate: float = LEARNING_RATE, batch_size: int = BATCH_SIZE, seed: int = 0,
          probes: dict[str, Callable[[tf.Tensor], tf.Tensor]] | None = None,
          step_probes: dict[str, Callable[[tf.Tensor], tf.Tensor]] | None = None) -> History:
    """Train ``model`` with plain SGD on the summed cross-entropy; record test accuracy.

    ``model(x, training=True)`` is called for every training step (so a model that keeps
    population statistics updates them there). Every ``eval_every`` steps the test accuracy of
    ``model(x_test, training=False)`` is recorded, and so is each probe's value:
    ``probes={"name": fn}`` with ``fn(x_test) -> tensor``.

    ``step_probes={"name": fn}`` with ``fn(x_batch) -> tensor`` are recorded at EVERY step, on
    that step's training batch, before the step's update (e.g. the batch statistics the step
    normalises with); ``History.step_probes[name]`` has shape (steps, ...), float32.
    """
    x_train = tf.constant(train_data[0])
    y_train = tf.constant(train_data[1])
    x_test = tf.constant(test_data[0])
    y_test = test_data[1]
    indices = batch_indices(len(train_data[0]), steps, batch_size, seed)
    variables = model.trainable_variables
    step_probes = step_probes or {}

    @tf.function(reduce_retracing=True)
    def run_steps(step_indices):
        n_steps = tf.shape(step_indices)[0]
        step_values = [tf.TensorArray(tf.float32, size=n_steps) for _ in step_probes]
        for i in tf.range(n_steps):
            batch = step_indices[i]
            x = tf.gather(x_train, batch)
            y = tf.gather(y_train, batch)
            step_values = [values.write(i, tf.cast(fn(x), tf.float32))
                           for values, fn in zip(step_values, step_probes.values())]
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = tf.reduce_sum(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
            gradients = tape.gradient(loss, variables)
            for variable, gradient in zip(variables, gradients):
                variable.assign_sub(learning_rate * gradient)
        return [values.stack() for values in step_values]

    @tf.function
    def evaluate():
        logits = model(x_test, training=False)
        values = {name: fn(x_test) for name, fn in (probes or {}).items()}
        return tf.argmax(logits, axis=1), values

    recorded_steps, accuracies = [], []
    recorded = {name: [] for name in probes or {}}
    per_step = {name: [] for name in step_probes}
    for start in range(0, steps, eval_every):
        chunk = run_steps(tf.constant(indices[start:start + eval_every]))
        for name, values in zip(step_probes, chunk):
            per_step[name].append(values.numpy())
        predictions, values = evaluate()
        recorded_steps.append(min(start + eval_every, steps))
        accuracies.append(float(np.mean(predictions.numpy() == y_test)))
        for name, value in values.items():
            recorded[name].append(value.numpy())
    return History(np.array(recorded_steps), np.array(accuracies),
                   {name: np.stack(values) for name, values in recorded.items()},
                   {name: np.concatenate(values) for name, values in per_step.items()})


def accuracy(predict: Callable[[tf.Tensor], tf.Tensor], x: np.ndarray, y: np.ndarray,
             batch_size: int | None = None) -> float:
    """Accuracy of ``predict(x_batch) -> logits`` over ``x``, fed ``batch_size`` at a time
    (``None``: all at once). With batch statistics the batch size changes the answer."""
    return float(np.mean(predict_classes(predict, x, batch_size) == y))


def predict_classes(predict: Callable[[tf.Tensor], tf.Tensor], x: np.ndarray,
                    batch_size: int | None = None) -> np.ndarray:
    """Predicted class of each row of ``x``, computed ``batch_size`` rows at a time."""
    size = len(x) if batch_size is None else batch_size
    fn = tf.function(lambda batch: tf.argmax(predict(batch), axis=1), reduce_retracing=True)
    parts = [fn(tf.constant(x[i:i + size])).numpy() for i in range(0, len(x), size)]
    return np.concatenate(parts)


def snapshot_probes(model: tf.Module) -> dict[str, Callable[[tf.Tensor], tf.Tensor]]:
    """Probes for :func:`train` that record a copy of every trainable variable of ``model``, so
    that the network of any recorded step can be rebuilt afterwards with :func:`load_snapshot`."""
    return {f"snapshot {i}": (lambda x_test, variable=variable: tf.identity(variable))
            for i, variable in enumerate(model.trainable_variables)}


def load_snapshot(model: tf.Module, history: History, index: int) -> None:
    """Set ``model``'s trainable variables to their values at ``history.steps[index]``.

    ``model`` must have the same architecture as the trained one, and the training must have been
    run with ``probes=snapshot_probes(trained_model)``.
    """
    for i, variable in enumerate(model.trainable_variables):
        variable.assign(history.probes[f"snapshot {i}"][index])


# --- several seeds at once (chapter 2's "BN or the bad start?") ---------------------------------

INITS = ("standard normal", "glorot")


def seed_weights(seed: int, init: str = "standard normal") -> list[np.ndarray]:
    """Weights for 784-100-100-10 drawn with ``seed``: standard normal (the recipe's bad scale),
    or Glorot normal, std sqrt(2 / (fan_in + fan_out)), the scale Keras' Dense uses."""
    weights = initial_weights(seed)
    if init == "glorot":
        return [w * np.float32(np.sqrt(2.0 / sum(w.shape))) for w in weights]
    return weights


def train_seeds(bn: bool, seeds, train_data, test_data, steps: int, *,
                init: str = "standard normal", learning_rate: float = LEARNING_RATE,
                batch_size: int = BATCH_SIZE, epsilon: float = EPSILON) -> np.ndarray:
    """Test accuracy after ``steps`` of the chapter's recipe, one network per seed, all trained
    at once as one computation (every weight has a leading seed axis). Seed s draws its own
    starting weights (:func:`seed_weights`) and its own batch order (:func:`batch_indices`).

    ``bn=False``: sigmoid layers with biases; ``bn=True``: BN (gamma 1, beta 0 at the start, no
    bias) before both sigmoids, with the statistics of the batch it is given, the test set as one
    batch included, as the chapter's BNNet does.
    """
    x_train, y_train = tf.constant(train_data[0]), tf.constant(train_data[1])
    x_test = tf.constant(test_data[0])
    weights = [np.stack(ws) for ws in zip(*(seed_weights(s, init) for s in seeds))]
    kernels = [tf.Variable(w) for w in weights]
    shifts = [tf.Variable(tf.zeros((len(seeds), w.shape[-1]))) for w in weights]  # bias or beta
    scales = [tf.Variable(tf.ones((len(seeds), w.shape[-1]))) for w in weights[:2]]  # gamma
    variables = kernels + shifts + (scales if bn else [])
    indices = np.stack([batch_indices(len(train_data[0]), steps, batch_size, s) for s in seeds])

    def logits(x):                      # x: (seeds, batch, 784)
        h = x
        for layer in range(3):
            z = tf.einsum("sbi,sio->sbo", h, kernels[layer])
            if layer == 2:
                return z + shifts[2][:, None]
            if bn:
                mean, variance = tf.nn.moments(z, axes=[1], keepdims=True)
                z = tf.nn.batch_normalization(z, mean, variance, offset=shifts[layer][:, None],
                                              scale=scales[layer][:, None],
                                              variance_epsilon=epsilon)
            else:
                z = z + shifts[layer][:, None]
            h = tf.sigmoid(z)

    @tf.function(jit_compile=True)      # XLA: a third faster here, same accuracies
    def run(step_indices):              # (steps, seeds, batch)
        for i in tf.range(tf.shape(step_indices)[0]):
            x = tf.gather(x_train, step_indices[i])
            y = tf.gather(y_train, step_indices[i])
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits(x)))
            for variable, gradient in zip(variables, tape.gradient(loss, variables)):
                variable.assign_sub(learning_rate * gradient)

    run(tf.constant(np.transpose(indices, (1, 0, 2))))
    test = tf.tile(x_test[None], [len(seeds), 1, 1])
    predictions = tf.argmax(logits(test), axis=-1).numpy()
    return np.mean(predictions == test_data[1][None], axis=1)
