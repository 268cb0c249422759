"""Chapter 2's checkers accept the solutions, say "not done yet" for the stubs, and name each known
mistake (written here the way a learner would write it)."""

import numpy as np
import pytest
import tensorflow as tf

from bnbook.checks import ExerciseMistake
from bnbook.checks import ch02 as check

# ------------------------------------------------------------------ exercise 2.1: bn_dense --


def bn_dense(x, w, gamma, beta, eps):
    z = tf.matmul(x, w)
    mean, variance = tf.nn.moments(z, axes=[0])
    return tf.nn.batch_normalization(z, mean, variance, offset=beta, scale=gamma,
                                     variance_epsilon=eps)


def bn_dense_stub(x, w, gamma, beta, eps):
    raise NotImplementedError("your code here")


def by_hand(z, mean, variance, gamma, beta, eps):
    return gamma * (z - mean) / tf.sqrt(variance + eps) + beta


def swapped(x, w, gamma, beta, eps):
    z = x @ w
    mean, variance = tf.nn.moments(z, axes=[0])
    return tf.nn.batch_normalization(z, mean, variance, gamma, beta, eps)  # scale, offset: wrong


def axis_1(x, w, gamma, beta, eps):
    z = x @ w
    mean, variance = tf.nn.moments(z, axes=[1])
    return tf.nn.batch_normalization(z, mean, variance, beta, gamma, eps)


def axis_1_keepdims(x, w, gamma, beta, eps):
    z = x @ w
    mean, variance = tf.nn.moments(z, axes=[1], keepdims=True)
    return tf.nn.batch_normalization(z, mean, variance, beta, gamma, eps)


def all_axes(x, w, gamma, beta, eps):
    z = x @ w
    mean, variance = tf.nn.moments(z, axes=[0, 1])
    return tf.nn.batch_normalization(z, mean, variance, beta, gamma, eps)


def unbiased(x, w, gamma, beta, eps):
    z = x @ w
    n = tf.cast(tf.shape(z)[0], tf.float32)
    mean, variance = tf.nn.moments(z, axes=[0])
    return tf.nn.batch_normalization(z, mean, variance * n / (n - 1), beta, gamma, eps)


def std_as_variance(x, w, gamma, beta, eps):
    z = x @ w
    mean, variance = tf.nn.moments(z, axes=[0])
    return tf.nn.batch_normalization(z, mean, tf.sqrt(variance), beta, gamma, eps)


def no_eps(x, w, gamma, beta, eps):
    z = x @ w
    mean, variance = tf.nn.moments(z, axes=[0])
    return gamma * (z - mean) / tf.sqrt(variance) + beta


def eps_outside(x, w, gamma, beta, eps):
    z = x @ w
    mean, variance = tf.nn.moments(z, axes=[0])
    return gamma * (z - mean) / (tf.sqrt(variance) + eps) + beta


def fixed_eps(x, w, gamma, beta, eps):
    z = x @ w
    mean, variance = tf.nn.moments(z, axes=[0])
    return tf.nn.batch_normalization(z, mean, variance, beta, gamma, 1e-3)


def no_scale_shift(x, w, gamma, beta, eps):
    z = x @ w
    mean, variance = tf.nn.moments(z, axes=[0])
    return tf.nn.batch_normalization(z, mean, variance, None, None, eps)


def with_sigmoid(x, w, gamma, beta, eps):
    return tf.sigmoid(bn_dense(x, w, gamma, beta, eps))


def normalised_input(x, w, gamma, beta, eps):
    mean, variance = tf.nn.moments(x, axes=[0])
    x_hat = tf.nn.batch_normalization(x, mean, variance, None, None, eps)
    return gamma * (x_hat @ w) + beta


def no_matmul(x, w, gamma, beta, eps):
    mean, variance = tf.nn.moments(x, axes=[0])
    return tf.nn.batch_normalization(x, mean, variance, beta, gamma, eps)


def with_numpy(x, w, gamma, beta, eps):
    z = x.numpy() @ w.numpy()
    return gamma.numpy() * (z - z.mean(0)) / np.sqrt(z.var(0) + eps) + beta.numpy()


def shape_error(x, w, gamma, beta, eps):
    return tf.reshape(bn_dense(x, w, gamma, beta, eps), (5, -1))


def test_bn_dense_accepts_the_solution(capsys):
    check.bn_dense(bn_dense)
    assert capsys.readouterr().out.startswith("✓ Exercise 2.1 passed")


def test_bn_dense_accepts_the_by_hand_formula(capsys):
    def formula(x, w, gamma, beta, eps):
        z = x @ w
        mean, variance = tf.nn.moments(z, axes=[0])
        return by_hand(z, mean, variance, gamma, beta, eps)

    check.bn_dense(formula)
    assert capsys.readouterr().out.startswith("✓ Exercise 2.1 passed")


def test_bn_dense_accepts_a_bias_before_bn_because_it_cancels(capsys):
    def with_bias(x, w, gamma, beta, eps):
        z = x @ w + 3.0  # the mean subtraction removes any constant added here
        mean, variance = tf.nn.moments(z, axes=[0])
        return by_hand(z, mean, variance, gamma, beta, eps)

    check.bn_dense(with_bias)
    assert capsys.readouterr().out.startswith("✓ Exercise 2.1 passed")


def test_bn_dense_stub_is_not_done(capsys):
    assert check.bn_dense(bn_dense_stub) is None
    assert "Exercise 2.1 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (swapped, r"(?s)gamma and beta are swapped.*offset \(beta\) BEFORE the scale"),
    (axis_1, "moments over axis 1, across the units of each example"),
    (axis_1_keepdims, "moments over axis 1.*layer normalisation"),
    (all_axes, "moments over all axes"),
    (unbiased, "unbiased variance"),
    (std_as_variance, "standard deviation where the variance goes"),
    (no_eps, "epsilon is missing"),
    (eps_outside, "epsilon to the standard deviation"),
    (fixed_eps, "ignored the eps argument"),
    (no_scale_shift, "not scaled and shifted"),
    (with_sigmoid, "applied the sigmoid"),
    (normalised_input, "normalised the layer's input x"),
    (no_matmul, "multiplication by w is missing"),
    (with_numpy, "asks for a TensorFlow tensor"),
    (lambda *args: bn_dense(*args).numpy().tolist(), "Python list"),
    (lambda *args: tf.cast(bn_dense(*args), tf.float64), "dtype float64"),
    (lambda *args: bn_dense(*args) * np.nan, "NaN"),
    (lambda *args: None, "forget a `return`"),
    (shape_error, "bn_dense raised InvalidArgumentError"),
    (lambda *args: bn_dense(*args) * 1.1, "match none of the usual mistakes"),
    (lambda *args: bn_dense(*args)[:, :2], "Wrong output shape"),
])
def test_bn_dense_names_each_mistake(wrong, message):
    with pytest.raises(ExerciseMistake, match=message) as info:
        check.bn_dense(wrong)
    assert str(info.value).startswith("Exercise 2.1: ") and "\nHint: " in str(info.value)


def test_bn_dense_is_not_a_function():
    with pytest.raises(ExerciseMistake, match="Expected a function"):
        check.bn_dense(bn_dense(tf.ones((2, 2)), tf.ones((2, 2)), tf.ones(2), tf.zeros(2), 1e-3))


# ----------------------------------------------------------- exercise 2.2: the BN network --


def batch_norm(z, gamma, beta, eps):
    mean, variance = tf.nn.moments(z, axes=[0])
    return tf.nn.batch_normalization(z, mean, variance, offset=beta, scale=gamma,
                                     variance_epsilon=eps)


class BNNet(tf.Module):
    def __init__(self, weights, epsilon=1e-3):
        super().__init__()
        self.epsilon = epsilon
        w1, w2, w3 = weights
        self.w1 = tf.Variable(w1)
        self.gamma1 = tf.Variable(tf.ones(w1.shape[1]))
        self.beta1 = tf.Variable(tf.zeros(w1.shape[1]))
        self.w2 = tf.Variable(w2)
        self.gamma2 = tf.Variable(tf.ones(w2.shape[1]))
        self.beta2 = tf.Variable(tf.zeros(w2.shape[1]))
        self.w3 = tf.Variable(w3)
        self.b3 = tf.Variable(tf.zeros(w3.shape[1]))

    def hidden(self, x, w, gamma, beta):
        return tf.sigmoid(batch_norm(x @ w, gamma, beta, self.epsilon))

    def __call__(self, x, training=False):
        h1 = self.hidden(x, self.w1, self.gamma1, self.beta1)
        h2 = self.hidden(h1, self.w2, self.gamma2, self.beta2)
        return h2 @ self.w3 + self.b3


class Stub(tf.Module):
    def __init__(self, weights, epsilon=1e-3):
        super().__init__()
        self.epsilon = epsilon
        raise NotImplementedError("your code here")


class NotAModule:
    def __init__(self, weights, epsilon=1e-3):
        pass


class OtherNames(BNNet):
    def __init__(self, weights, epsilon=1e-3):
        super().__init__(weights, epsilon)
        self.g1 = self.gamma1
        del self.gamma1


class PlainTensor(BNNet):
    def __init__(self, weights, epsilon=1e-3):
        super().__init__(weights, epsilon)
        self.gamma1 = tf.ones(weights[0].shape[1])


class Frozen(BNNet):
    def __init__(self, weights, epsilon=1e-3):
        super().__init__(weights, epsilon)
        self.beta2 = tf.Variable(tf.zeros(weights[1].shape[1]), trainable=False)


class Float64(BNNet):
    def __init__(self, weights, epsilon=1e-3):
        super().__init__(weights, epsilon)
        self.gamma2 = tf.Variable(np.ones(weights[1].shape[1]))


class OneGamma(BNNet):
    def __init__(self, weights, epsilon=1e-3):
        super().__init__(weights, epsilon)
        self.gamma1 = tf.Variable(1.0)


class GammaZero(BNNet):
    def __init__(self, weights, epsilon=1e-3):
        super().__init__(weights, epsilon)
        self.gamma1 = tf.Variable(tf.zeros(weights[0].shape[1]))


class FreshWeights(BNNet):
    def __init__(self, weights, epsilon=1e-3):
        super().__init__(weights, epsilon)
        self.w1 = tf.Variable(tf.random.normal(weights[0].shape))


class BiasBeforeBN(BNNet):
    def __init__(self, weights, epsilon=1e-3):
        super().__init__(weights, epsilon)
        self.b1 = tf.Variable(tf.zeros(weights[0].shape[1]))
        self.b2 = tf.Variable(tf.zeros(weights[1].shape[1]))

    def __call__(self, x, training=False):
        h1 = tf.sigmoid(batch_norm(x @ self.w1 + self.b1, self.gamma1, self.beta1, self.epsilon))
        h2 = tf.sigmoid(batch_norm(h1 @ self.w2 + self.b2, self.gamma2, self.beta2, self.epsilon))
        return h2 @ self.w3 + self.b3


class ExtraScalar(BNNet):
    def __init__(self, weights, epsilon=1e-3):
        super().__init__(weights, epsilon)
        self.temperature = tf.Variable(1.0)


class Swapped(BNNet):
    layers = (True, True)

    def __call__(self, x, training=False):
        h = x
        for (w, gamma, beta), swap in zip([(self.w1, self.gamma1, self.beta1),
                                           (self.w2, self.gamma2, self.beta2)], self.layers):
            z = h @ w
            mean, variance = tf.nn.moments(z, axes=[0])
            if swap:
                out = tf.nn.batch_normalization(z, mean, variance, gamma, beta, self.epsilon)
            else:
                out = tf.nn.batch_normalization(z, mean, variance, beta, gamma, self.epsilon)
            h = tf.sigmoid(out)
        return h @ self.w3 + self.b3


class SwappedLayer1(Swapped):
    layers = (True, False)


class SwappedLayer2(Swapped):
    layers = (False, True)


class SigmoidThenBN(BNNet):
    def hidden(self, x, w, gamma, beta):
        return batch_norm(tf.sigmoid(x @ w), gamma, beta, self.epsilon)


class NoSigmoid(BNNet):
    def hidden(self, x, w, gamma, beta):
        return batch_norm(x @ w, gamma, beta, self.epsilon)


class NoBNLayer1(BNNet):
    def __call__(self, x, training=False):
        h1 = tf.sigmoid(x @ self.w1)
        h2 = self.hidden(h1, self.w2, self.gamma2, self.beta2)
        return h2 @ self.w3 + self.b3


class NoBNLayer2(BNNet):
    def __call__(self, x, training=False):
        h1 = self.hidden(x, self.w1, self.gamma1, self.beta1)
        return tf.sigmoid(h1 @ self.w2) @ self.w3 + self.b3


class NoOutputBias(BNNet):
    def __call__(self, x, training=False):
        return super().__call__(x, training) - self.b3


class Softmax(BNNet):
    def __call__(self, x, training=False):
        return tf.nn.softmax(super().__call__(x, training))


class FixedEps(BNNet):
    def hidden(self, x, w, gamma, beta):
        return tf.sigmoid(batch_norm(x @ w, gamma, beta, 1e-3))


class Unbiased(BNNet):
    def hidden(self, x, w, gamma, beta):
        z = x @ w
        n = tf.cast(tf.shape(z)[0], tf.float32)
        mean, variance = tf.nn.moments(z, axes=[0])
        return tf.sigmoid(tf.nn.batch_normalization(z, mean, variance * n / (n - 1), beta, gamma,
                                                    self.epsilon))


class NumpyOutput(BNNet):
    def __call__(self, x, training=False):
        return super().__call__(x, training).numpy()


class NoTrainingArgument(BNNet):
    def __call__(self, x):
        return super().__call__(x)


class OffByALittle(BNNet):
    def __call__(self, x, training=False):
        return super().__call__(x, training) + 0.1


def test_bn_network_accepts_the_solution(capsys):
    check.bn_network(BNNet)
    assert capsys.readouterr().out.startswith("✓ Exercise 2.2 passed")


def test_bn_network_stub_is_not_done(capsys):
    assert check.bn_network(Stub) is None
    assert "Exercise 2.2 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (NotAModule, "not a tf.Module"),
    (OtherNames, "no attribute `gamma1`"),
    (PlainTensor, "`self.gamma1` is a .*, not a tf.Variable"),
    (Frozen, "`self.beta2` is not trainable"),
    (Float64, "`self.gamma2` has dtype float64"),
    (OneGamma, r"`self.gamma1` has shape \(\), expected \(5,\)"),
    (GammaZero, "`self.gamma1` does not start at ones"),
    (FreshWeights, "`self.w1` does not start at the matching matrix"),
    (BiasBeforeBN, r"extra trainable variables of shape \(5,\), \(4,\): a bias before BN"),
    (ExtraScalar, r"unexpected trainable variables: \(\)"),
    (Swapped, "gamma and beta are swapped in both layers"),
    (SwappedLayer1, "gamma and beta are swapped in layer 1"),
    (SwappedLayer2, "gamma and beta are swapped in layer 2"),
    (SigmoidThenBN, "normalised AFTER the sigmoid"),
    (NoSigmoid, "sigmoid after batch normalization is missing"),
    (NoBNLayer1, "Layer 1 is not batch-normalised"),
    (NoBNLayer2, "Layer 2 is not batch-normalised"),
    (NoOutputBias, "output bias b3 is not added"),
    (Softmax, "returns probabilities"),
    (FixedEps, "ignored self.epsilon"),
    (Unbiased, "unbiased variance"),
    (NumpyOutput, "asks for a TensorFlow tensor"),
    (NoTrainingArgument, "raised TypeError"),
    (OffByALittle, "wrong logits .* match none of the usual mistakes"),
])
def test_bn_network_names_each_mistake(wrong, message):
    with pytest.raises(ExerciseMistake, match=message) as info:
        check.bn_network(wrong)
    assert str(info.value).startswith("Exercise 2.2: ") and "\nHint: " in str(info.value)


def test_bn_network_needs_the_class_not_an_instance():
    with pytest.raises(ExerciseMistake, match="the class itself"):
        check.bn_network(BNNet([np.ones((6, 5), np.float32), np.ones((5, 4), np.float32),
                                np.ones((4, 3), np.float32)]))
