"""bnbook.lessons.backward_pass: the closed-form gradient, the custom-gradient op, gradient checks, the
network
with a pluggable BN and the timing harness (tiny runs, fast)."""

import numpy as np
import pytest
import tensorflow as tf

from bnbook.lessons import backward_pass as backward
from bnbook.lessons import mnist_experiment as mnist_mlp


def batch(shape, seed=0):
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    x = rng.normal(1.5, 2.5, shape)
    gamma, beta = rng.uniform(0.5, 2.0, channels), rng.normal(0.0, 1.0, channels)
    dy = rng.standard_normal(shape)
    return [tf.constant(a) for a in (x, gamma, beta, dy)]  # float64


def autograd_gradients(x, gamma, beta, dy, eps, axes):
    with tf.GradientTape() as tape:
        tape.watch([x, gamma, beta])
        y = backward.bn_forward(x, gamma, beta, eps, axes)
    return tape.gradient(y, [x, gamma, beta], output_gradients=dy)


@pytest.mark.parametrize("shape, axes, eps", [((8, 5), (0,), 1e-3), ((3, 4, 5, 2), (0, 1, 2), 0.1),
                                              ((2, 3, 6), (0, 1), 0.0)])
def test_closed_form_matches_autograd(shape, axes, eps):
    x, gamma, beta, dy = batch(shape)
    closed = backward.bn_backward(dy, x, gamma, eps, axes)
    for a, b, like in zip(closed, autograd_gradients(x, gamma, beta, dy, eps, axes),
                          (x, gamma, gamma)):
        assert a.shape == like.shape
        assert backward.relative_error(a, b) < 1e-10


@pytest.mark.parametrize("shape, axes", [((8, 5), (0,)), ((3, 4, 5, 2), (0, 1, 2))])
def test_custom_gradient_op_matches_autograd(shape, axes):
    x, gamma, beta, dy = batch(shape, seed=1)
    op = backward.make_bn_op(0.01, axes)
    with tf.GradientTape() as tape:
        tape.watch([x, gamma, beta])
        y = op(x, gamma, beta)
    assert backward.relative_error(y, backward.bn_forward(x, gamma, beta, 0.01, axes)) < 1e-12
    through_op = tape.gradient(y, [x, gamma, beta], output_gradients=dy)
    for a, b in zip(through_op, autograd_gradients(x, gamma, beta, dy, 0.01, axes)):
        assert backward.relative_error(a, b) < 1e-10


def test_custom_gradient_op_works_for_any_batch_size_in_a_tf_function():
    op = backward.make_bn_op()

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = op(x, tf.ones(3), tf.zeros(3))
            loss = tf.reduce_sum(y * tf.range(3, dtype=tf.float32))
        return tape.gradient(loss, x)

    for n in (4, 7):
        dx = gradient(tf.random.stateless_normal((n, 3), seed=(1, n)))
        assert dx.shape == (n, 3)
        assert np.allclose(tf.reduce_sum(dx, axis=0), 0.0, atol=1e-5)  # sums to zero over the batch


def test_numerical_gradient_is_centred_and_leaves_x_alone():
    x = np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]])
    copy = x.copy()
    f = lambda v: float(np.sum(np.sin(v)) + np.sum(v) ** 2)  # noqa: E731
    numeric = backward.numerical_gradient(f, x, 1e-5)
    assert numeric.shape == x.shape and numeric.dtype == np.float64
    assert np.array_equal(x, copy)
    assert backward.relative_error(numeric, np.cos(x) + 2 * np.sum(x)) < 1e-8


def test_numerical_gradient_checks_bn_and_catches_a_missing_term():
    x, gamma, beta, dy = batch((6, 3), seed=2)
    loss = lambda v: float(tf.reduce_sum(dy * backward.bn_forward(tf.constant(v), gamma, beta)))  # noqa: E731
    numeric = backward.numerical_gradient(loss, x.numpy(), 1e-5)
    assert backward.relative_error(numeric, backward.bn_backward(dy, x, gamma)[0]) < 1e-7
    mean, variance = tf.nn.moments(x, axes=[0])
    s = tf.math.rsqrt(variance + backward.EPSILON)
    x_hat = (x - mean) * s
    no_mean_term = gamma * s * (dy - x_hat * tf.reduce_mean(dy * x_hat, axis=0))
    assert backward.relative_error(numeric, no_mean_term) > 1e-2


def test_relative_error():
    assert backward.relative_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert backward.relative_error([1.0], [3.0]) == pytest.approx(0.5)
    assert backward.relative_error([0.0], [0.0]) == 0.0


def small_weights(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in ((12, 6), (6, 5), (5, 3))]


def test_mlp_with_and_without_bn():
    weights = small_weights()
    plain, with_bn = backward.MLP(weights), backward.MLP(weights, backward.make_bn_op())
    assert len(plain.trainable_variables) == 6 and len(with_bn.trainable_variables) == 8
    x = tf.random.stateless_normal((7, 12), seed=(0, 1))
    assert plain(x).shape == with_bn(x).shape == (7, 3)
    h1, _ = with_bn.hidden(x)  # BN with gamma 1, beta 0 then sigmoid: mean near 0.5 per unit
    assert np.allclose(tf.reduce_mean(h1, axis=0), 0.5, atol=0.1)


def test_keras_mlp_starts_from_the_given_weights_and_matches_the_mlp():
    weights = small_weights(1)
    model = backward.keras_mlp(weights)
    assert np.array_equal(backward.first_kernel(model), weights[0])
    x = tf.random.stateless_normal((9, 12), seed=(2, 3))
    mlp = backward.MLP(weights, backward.autograd_bn())
    assert np.allclose(model(x, training=True), mlp(x, training=True), atol=1e-4)


def test_time_training_runs_the_same_steps_in_every_mode():
    weights = small_weights(2)
    rng = np.random.default_rng(0)
    x = rng.random((120, 12), dtype=np.float32)
    y = rng.integers(0, 3, 120).astype(np.int32)
    configs = [("BN, autograd", backward.ONE_STEP), ("BN, custom gradient", backward.LOOP),
               ("no BN", backward.ONE_STEP)]
    results = backward.time_training(weights, x, y, configs, steps=3, repeats=1)
    assert list(results) == configs
    assert all(seconds > 0 for seconds, _ in results.values())
    first = [backward.first_kernel(model) for _, model in results.values()]
    assert not np.array_equal(first[0], weights[0])                   # the steps moved it
    assert np.allclose(first[0], first[1], atol=1e-5)                 # same steps, same result
    with pytest.raises(ValueError, match="unknown mode"):
        backward.time_training(weights, x, y, [("no BN", "fast")], steps=1, repeats=1)


def test_bench_ratios_labels_and_values(monkeypatch):
    seen = {}

    def fake_time_training(weights, x_train, y_train, configs, steps, repeats):
        seen["configs"] = list(configs)
        return {config: (0.001 * (i + 1), None) for i, config in enumerate(configs)}

    monkeypatch.setattr(backward, "time_training", fake_time_training)
    monkeypatch.setattr(mnist_mlp, "load_data",
                        lambda: ((np.zeros((10, 784), np.float32), np.zeros(10, np.int32)),
                                 (None, None)))
    ratios = backward.bench_ratios(steps=5, repeats=1)
    assert seen["configs"] == backward.BENCH_CONFIGS
    assert len(ratios) == 8
    assert all(isinstance(label, str) and ratio > 0 for label, ratio in ratios)
    assert any("XLA" in label for label, _ in ratios)
