"""Chapter 7: BN's backward pass by hand, BN as a TensorFlow op with that gradient, and its cost.

* :func:`bn_forward` -- the transform, written with ``tf.nn.moments`` (autograd differentiates it);
* :func:`bn_backward` -- the closed-form gradient ``(dx, dgamma, dbeta)`` of that transform;
* :func:`make_bn_op` -- the transform as a ``tf.custom_gradient`` op whose backward pass is
  :func:`bn_backward` instead of the one autograd would build;
* :func:`numerical_gradient`, :func:`relative_error` -- centred finite differences in float64 and
  CS231n's relative error, for gradient checks;
* :class:`MLP` -- chapter 2's 784-100-100-10 sigmoid network (weights from
  :func:`.mnist_experiment.initial_weights`, trained by :func:`.mnist_experiment.train`) with the
  BN transform passed in, so the same network runs with autograd's BN, the custom op, or none;
  :func:`keras_mlp` is the same network built from Keras layers;
* :func:`sgd_step`, :func:`sgd_loop`, :func:`time_training`, :func:`bench_ratios` -- the timing
  harness: one SGD step per call or many steps in one call, with or without XLA
  (``jit_compile=True``); ``make bench`` prints :func:`bench_ratios`.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from . import mnist_experiment as mnist_mlp

EPSILON = mnist_mlp.EPSILON  # 1e-3, chapter 2's epsilon

BNFunction = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


# ---------------------------------------------------------------------------------------------
# The transform, its closed-form gradient, and the op that uses it
# ---------------------------------------------------------------------------------------------

def bn_forward(x, gamma, beta, eps: float = EPSILON, axes: Sequence[int] = (0,)):
    """gamma * (x - mean) / sqrt(var + eps) + beta, statistics over ``axes`` (biased variance)."""
    mean, variance = tf.nn.moments(x, axes=list(axes), keepdims=True)
    return gamma * (x - mean) * tf.math.rsqrt(variance + eps) + beta


def bn_backward(dy, x, gamma, eps: float = EPSILON, axes: Sequence[int] = (0,)):
    """The gradient of :func:`bn_forward` in closed form: ``(dx, dgamma, dbeta)``.

    With m the number of values each statistic averages, x_hat the normalised input and
    s = 1 / sqrt(var + eps)::

        dbeta  = sum(dy)
        dgamma = sum(dy * x_hat)
        dx     = gamma * s / m * (m * dy - sum(dy) - x_hat * sum(dy * x_hat))

    the sums taken over ``axes``. ``dgamma`` and ``dbeta`` have ``gamma``'s shape.
    """
    axes = list(axes)
    mean, variance = tf.nn.moments(x, axes=axes, keepdims=True)
    inv_std = tf.math.rsqrt(variance + eps)
    x_hat = (x - mean) * inv_std
    sum_dy = tf.reduce_sum(dy, axis=axes, keepdims=True)
    sum_dy_x_hat = tf.reduce_sum(dy * x_hat, axis=axes, keepdims=True)
    m = tf.cast(tf.size(x) // tf.size(mean), x.dtype)
    dx = gamma * inv_std / m * (m * dy - sum_dy - x_hat * sum_dy_x_hat)
    shape = tf.shape(gamma)
    return dx, tf.reshape(sum_dy_x_hat, shape), tf.reshape(sum_dy, shape)


def make_bn_op(eps: float = EPSILON, axes: Sequence[int] = (0,)) -> BNFunction:
    """BN as an op ``bn(x, gamma, beta)`` whose gradient is :func:`bn_backward`'s closed form.

    The forward pass keeps x_hat and 1 / sqrt(var + eps) for the backward pass, which then needs
    two reductions and a few elementwise operations (autograd's version re-traces every step of
    the forward computation).
    """
    axes = list(axes)

    @tf.custom_gradient
    def bn(x, gamma, beta):
        mean, variance = tf.nn.moments(x, axes=axes, keepdims=True)
        inv_std = tf.math.rsqrt(variance + eps)
        x_hat = (x - mean) * inv_std

        def backward(dy):
            sum_dy = tf.reduce_sum(dy, axis=axes, keepdims=True)
            sum_dy_x_hat = tf.reduce_sum(dy * x_hat, axis=axes, keepdims=True)
            m = tf.cast(tf.size(x) // tf.size(mean), x.dtype)
            dx = gamma * inv_std / m * (m * dy - sum_dy - x_hat * sum_dy_x_hat)
            shape = tf.shape(gamma)
            return dx, tf.reshape(sum_dy_x_hat, shape), tf.reshape(sum_dy, shape)

        return gamma * x_hat + beta, backward

    return bn


def autograd_bn(eps: float = EPSILON, axes: Sequence[int] = (0,)) -> BNFunction:
    """:func:`bn_forward` as a function of ``(x, gamma, beta)``, differentiated by autograd."""
    return lambda x, gamma, beta: bn_forward(x, gamma, beta, eps, axes)


# ---------------------------------------------------------------------------------------------
# Gradient checks
# ---------------------------------------------------------------------------------------------

def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-5):
    """Centred finite differences: d f / d x[i] ~ (f(x + h e_i) - f(x - h e_i)) / 2h, for each i.

    ``f`` maps an array of ``x``'s shape to a scalar; ``x`` is not changed. Use float64: in float32
    the rounding error of f, divided by 2h, swamps the derivative.
    """
    x = np.array(x, dtype=np.float64)  # a copy
    gradient = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + h
        f_plus = float(f(x))
        x[index] = original - h
        f_minus = float(f(x))
        x[index] = original
        gradient[index] = (f_plus - f_minus) / (2 * h)
    return gradient


def relative_error(a, b) -> float:
    """CS231n's relative error: max over elements of |a - b| / max(1e-8, |a| + |b|)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


# ---------------------------------------------------------------------------------------------
# Chapter 2's network with a pluggable BN, and the same network in Keras
# ---------------------------------------------------------------------------------------------

class MLP(tf.Module):
    """Chapter 2's 784-100-100-10 sigmoid network; ``bn(z, gamma, beta)`` on both hidden layers.

    With ``bn=None`` it is chapter 2's network without BN (hidden layers with biases); otherwise
    the hidden layers have no bias (BN removes it) but a gamma and a beta per unit.
    """

    def __init__(self, weights, bn: BNFunction | None = None):
        super().__init__()
        self.bn = bn
        w1, w2, w3 = weights
        self.w1, self.w2, self.w3 = tf.Variable(w1), tf.Variable(w2), tf.Variable(w3)
        units1, units2 = w1.shape[1], w2.shape[1]
        if bn is None:
            self.b1, self.b2 = tf.Variable(tf.zeros(units1)), tf.Variable(tf.zeros(units2))
        else:
            self.gamma1, self.beta1 = tf.Variable(tf.ones(units1)), tf.Variable(tf.zeros(units1))
            self.gamma2, self.beta2 = tf.Variable(tf.ones(units2)), tf.Variable(tf.zeros(units2))
        self.b3 = tf.Variable(tf.zeros(w3.shape[1]))

    def hidden(self, x):
        """The two hidden layers' outputs (after the sigmoids)."""
        if self.bn is None:
            h1 = tf.sigmoid(x @ self.w1 + self.b1)
            return h1, tf.sigmoid(h1 @ self.w2 + self.b2)
        h1 = tf.sigmoid(self.bn(x @ self.w1, self.gamma1, self.beta1))
        return h1, tf.sigmoid(self.bn(h1 @ self.w2, self.gamma2, self.beta2))

    def __call__(self, x, training=False):
        return self.hidden(x)[1] @ self.w3 + self.b3  # logits


def keras_mlp(weights, bn: bool = True, eps: float = EPSILON):
    """The same network from Keras layers: Dense (no bias before BN), BatchNormalization, sigmoid.

    Keras' layer also updates its moving mean and variance on every training step.
    """
    import keras

    layers = [keras.Input((weights[0].shape[0],))]
    for w in weights[:-1]:
        layers.append(keras.layers.Dense(w.shape[1], use_bias=not bn))
        if bn:
            layers.append(keras.layers.BatchNormalization(epsilon=eps))
        layers.append(keras.layers.Activation("sigmoid"))
    layers.append(keras.layers.Dense(weights[-1].shape[1]))
    model = keras.Sequential(layers)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    for layer, w in zip(dense, weights):
        layer.kernel.assign(w)
    return model


# ---------------------------------------------------------------------------------------------
# The timing harness
# ---------------------------------------------------------------------------------------------

def _loss(model, x, y):
    logits = model(x, training=True)
    return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))


def _apply_sgd(model, x, y, learning_rate):
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        loss = _loss(model, x, y)
    for variable, gradient in zip(variables, tape.gradient(loss, variables)):
        variable.assign_sub(learning_rate * gradient)
    return loss


def sgd_step(model, learning_rate: float = mnist_mlp.LEARNING_RATE, jit_compile: bool = False):
    """``step(x, y)``: one SGD step of ``mnist_mlp.train``'s recipe, as one ``tf.function`` call."""
    return tf.function(lambda x, y: _apply_sgd(model, x, y, learning_rate),
                       jit_compile=jit_compile)


def sgd_loop(model, x_train, y_train, learning_rate: float = mnist_mlp.LEARNING_RATE,
             jit_compile: bool = False):
    """``loop(indices)``: one SGD step per row of ``indices`` (steps, batch), all in ONE call.

    The whole loop is one TensorFlow graph; with ``jit_compile=True`` XLA compiles all of it.
    """
    x_train, y_train = tf.constant(x_train), tf.constant(y_train)

    def loop(indices):
        loss = tf.constant(0.0)
        for i in tf.range(tf.shape(indices)[0]):
            batch = indices[i]
            loss = _apply_sgd(model, tf.gather(x_train, batch), tf.gather(y_train, batch),
                              learning_rate)
        return loss

    return tf.function(loop, jit_compile=jit_compile)


NETWORKS = {
    "no BN": lambda weights: MLP(weights, None),
    "BN, autograd": lambda weights: MLP(weights, autograd_bn()),
    "BN, custom gradient": lambda weights: MLP(weights, make_bn_op()),
    "BN, Keras layers": lambda weights: keras_mlp(weights),
}
ONE_STEP, ONE_STEP_XLA = "one step per call", "one step per call, XLA"
LOOP, LOOP_XLA = "all steps in one call", "all steps in one call, XLA"
MODES = (ONE_STEP, ONE_STEP_XLA, LOOP, LOOP_XLA)


def time_training(weights, x_train, y_train, configs, steps: int = 100, repeats: int = 3,
                  seed: int = 0) -> dict[tuple[str, str], tuple[float, object]]:
    """Seconds per SGD step of chapter 2's network for each ``(network, mode)`` in ``configs``.

    ``network`` is a key of :data:`NETWORKS`, ``mode`` one of :data:`MODES`. Each configuration
    builds its network from ``weights`` and trains it on the same ``steps`` mini-batches
    ``1 + repeats`` times: once untimed (tracing, XLA compilation), then ``repeats`` timed runs.
    The timed runs go round the configurations in turn, so that a burst of load from elsewhere on
    the machine hits all of them alike, and each keeps its fastest run.

    Returns ``{(network, mode): (seconds per step, model)}``: every model has then taken the same
    SGD steps, so their weights can be compared.
    """
    indices = mnist_mlp.batch_indices(len(x_train), steps, seed=seed)
    batches = [(tf.constant(x_train[i]), tf.constant(y_train[i])) for i in indices]
    runs, models = {}, {}
    for network, mode in configs:
        model = NETWORKS[network](weights)
        jit = mode in (ONE_STEP_XLA, LOOP_XLA)
        if mode in (ONE_STEP, ONE_STEP_XLA):
            step = sgd_step(model, jit_compile=jit)
            run = lambda step=step: [step(x, y) for x, y in batches][-1].numpy()  # noqa: E731
        elif mode in (LOOP, LOOP_XLA):
            loop = sgd_loop(model, x_train, y_train, jit_compile=jit)
            run = lambda loop=loop: loop(tf.constant(indices)).numpy()  # noqa: E731
        else:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        run()  # untimed: traces (and compiles) the function
        runs[network, mode], models[network, mode] = run, model
    best = {config: float("inf") for config in runs}
    for _ in range(repeats):
        for config, run in runs.items():
            start = time.perf_counter()
            run()
            best[config] = min(best[config], time.perf_counter() - start)
    return {config: (best[config] / steps, models[config]) for config in runs}


def first_kernel(model) -> np.ndarray:
    """The first layer's weight matrix of an :class:`MLP` or a :func:`keras_mlp` model."""
    if isinstance(model, MLP):
        return model.w1.numpy()
    return np.asarray(model.layers[0].kernel)


BENCH_CONFIGS = [
    ("no BN", ONE_STEP), ("BN, autograd", ONE_STEP), ("BN, custom gradient", ONE_STEP),
    ("BN, Keras layers", ONE_STEP), ("BN, autograd", ONE_STEP_XLA),
    ("no BN", LOOP), ("BN, autograd", LOOP), ("no BN", LOOP_XLA), ("BN, autograd", LOOP_XLA),
]


def bench_ratios(steps: int = 100, repeats: int = 3) -> list[tuple[str, float]]:
    """Chapter 7's cost table as ratios of seconds per step, for ``make bench``.

    Each ratio is "time of A / time of B" for chapter 2's network; ratios travel between machines
    better than seconds do.
    """
    (x_train, y_train), _ = mnist_mlp.load_data()
    results = time_training(mnist_mlp.initial_weights(0), x_train, y_train, BENCH_CONFIGS,
                            steps, repeats)
    t = {config: seconds for config, (seconds, _) in results.items()}
    return [
        ("BN autograd / no BN, one step per call",
         t["BN, autograd", ONE_STEP] / t["no BN", ONE_STEP]),
        ("BN custom gradient / BN autograd, one step per call",
         t["BN, custom gradient", ONE_STEP] / t["BN, autograd", ONE_STEP]),
        ("BN Keras layers / BN autograd, one step per call",
         t["BN, Keras layers", ONE_STEP] / t["BN, autograd", ONE_STEP]),
        ("BN autograd, XLA / no XLA, one step per call",
         t["BN, autograd", ONE_STEP_XLA] / t["BN, autograd", ONE_STEP]),
        (f"BN autograd, {steps} steps in one call / one step per call",
         t["BN, autograd", LOOP] / t["BN, autograd", ONE_STEP]),
        (f"BN autograd / no BN, {steps} steps in one call",
         t["BN, autograd", LOOP] / t["no BN", LOOP]),
        (f"BN autograd, {steps} steps in one call, XLA / no XLA",
         t["BN, autograd", LOOP_XLA] / t["BN, autograd", LOOP]),
        (f"BN autograd / no BN, {steps} steps in one call, XLA",
         t["BN, autograd", LOOP_XLA] / t["no BN", LOOP_XLA]),
    ]
