"""An independent catalogue of learner answers, right and wrong, for the exercises of chapters 1-11.

Written from the exercise statements (solutions/NN_*_solutions.ipynb) as a learner would err, not
from the checkers' known-wrong variants. Each :class:`Entry` is one answer: its exercise, the
checker, the answer (a function, a class, or a tuple for a checker that takes several), what it
gets wrong (or how a right answer differs from the solution) and, for a wrong answer, the words a
good message would contain (case-insensitive), or None where no word can be said in advance.

tests/catalogue/test_catalogue.py runs them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

import bnbook
from bnbook.checks import ch01, ch02, ch03, ch04, ch05, ch06, ch07, ch08, ch09, ch10, ch11
from bnbook.lessons.tf1_graphs import bn_variables

tf1 = tf.compat.v1


@dataclass(frozen=True)
class Entry:
    label: str
    checker: Callable
    answer: Any
    description: str
    keywords: tuple[str, ...] | None = None
    right: bool = False


ENTRIES: list[Entry] = []


def wrong(label, checker, description, keywords):
    """Decorator: register the decorated answer as a wrong one."""
    def add(answer):
        ENTRIES.append(Entry(label, checker, answer, description,
                             tuple(keywords) if keywords is not None else None))
        return answer
    return add


def right(label, checker, description):
    """Decorator: register the decorated answer as a right one, written unlike the solution."""
    def add(answer):
        ENTRIES.append(Entry(label, checker, answer, description, None, True))
        return answer
    return add


def add_wrong(label, checker, answer, description, keywords):
    ENTRIES.append(Entry(label, checker, answer, description,
                         tuple(keywords) if keywords is not None else None))


def add_right(label, checker, answer, description):
    ENTRIES.append(Entry(label, checker, answer, description, None, True))


BIASED = ("biased", "n - 1", "ddof", "unbiased", "bessel")
EPS = ("eps", "epsilon")


# =================================================================================================
# Chapter 1
# =================================================================================================

def _nchw(x, gamma, beta, eps, axes=(0, 2, 3), ddof=0, eps_inside=True, sqrt=True,
          reshape=True):
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True, ddof=ddof)
    if eps_inside:
        scale = np.sqrt(var + eps) if sqrt else var + eps
    else:
        scale = np.sqrt(var) + eps
    x_hat = (x - mean) / scale
    if reshape:
        return gamma.reshape(1, -1, 1, 1) * x_hat + beta.reshape(1, -1, 1, 1)
    return gamma * x_hat + beta


add_right("1.1", ch01.transform_nchw,
          lambda x, g, b, eps: np.transpose(
              _nchw(np.transpose(x, (0, 2, 3, 1)), g, b, eps, axes=(0, 1, 2), reshape=False),
              (0, 3, 1, 2)),
          "transposes to NHWC, normalises over (0, 1, 2), transposes back")
add_right("1.1", ch01.transform_nchw,
          lambda x, g, b, eps: g[None, :, None, None] * (x - x.mean((0, 2, 3), keepdims=True))
          / np.sqrt(((x - x.mean((0, 2, 3), keepdims=True)) ** 2).mean((0, 2, 3), keepdims=True)
                    + eps) + b[None, :, None, None],
          "variance as the mean squared deviation, gamma indexed with None")
add_wrong("1.1", ch01.transform_nchw, lambda x, g, b, eps: _nchw(x, g, b, eps, axes=(0,)),
          "statistics over the batch axis only (one per channel and pixel)",
          ("axis", "axes", "pixel", "position"))
add_wrong("1.1", ch01.transform_nchw, lambda x, g, b, eps: _nchw(x, g, b, eps, axes=(0, 1, 2)),
          "NHWC's axes (0, 1, 2) used on NCHW", ("axis", "axes", "nchw", "channel"))
add_wrong("1.1", ch01.transform_nchw, lambda x, g, b, eps: _nchw(x, g, b, eps, ddof=1),
          "unbiased variance (ddof=1)", BIASED)
add_wrong("1.1", ch01.transform_nchw, lambda x, g, b, eps: _nchw(x, g, b, eps, eps_inside=False),
          "epsilon added to the standard deviation, outside the square root", EPS)
add_wrong("1.1", ch01.transform_nchw, lambda x, g, b, eps: _nchw(x, g, b, 0.0),
          "epsilon forgotten", EPS)
add_wrong("1.1", ch01.transform_nchw, lambda x, g, b, eps: _nchw(x, g, b, eps, sqrt=False),
          "divides by the variance, not its square root", ("sqrt", "square root", "standard dev"))
add_wrong("1.1", ch01.transform_nchw, lambda x, g, b, eps: _nchw(x, g, b, eps, reshape=False),
          "gamma and beta not reshaped: they broadcast along W", ("broadcast", "reshape", "line up"))
add_wrong("1.1", ch01.transform_nchw,
          lambda x, g, b, eps: _nchw(x.astype(np.float64), g, b, eps),
          "works in float64 and returns float64", ("float64", "dtype"))


def _merged(means, variances, counts, weighted=True, spread=True, normalise=True, ddof=0):
    n = tf.cast(counts, tf.float32)[:, None] if weighted else tf.ones_like(means[:, :1])
    total = tf.reduce_sum(n) if normalise else 1.0
    mean = tf.reduce_sum(n * means, axis=0) / total
    if spread:
        var = tf.reduce_sum(n * (variances + means ** 2), axis=0) / (total - ddof) - mean ** 2
    else:
        var = tf.reduce_sum(n * variances, axis=0) / total
    return mean, var


@right("1.2", ch01.merged_moments, "law of total variance with normalised weights")
def _merged_total_variance(means, variances, counts):
    w = tf.cast(counts, tf.float32) / tf.cast(tf.reduce_sum(counts), tf.float32)
    mean = tf.tensordot(w, means, 1)
    return mean, tf.tensordot(w, variances + (means - mean) ** 2, 1)


@right("1.2", ch01.merged_moments, "einsum, counts cast to float64 and back")
def _merged_einsum(means, variances, counts):
    n = tf.cast(counts, tf.float64)
    m64, v64 = tf.cast(means, tf.float64), tf.cast(variances, tf.float64)
    mean = tf.einsum("p,pc->c", n, m64) / tf.reduce_sum(n)
    sq = tf.einsum("p,pc->c", n, v64 + m64 ** 2) / tf.reduce_sum(n)
    return tf.cast(mean, tf.float32), tf.cast(sq - mean ** 2, tf.float32)


add_wrong("1.2", ch01.merged_moments, lambda m, v, c: _merged(m, v, c, weighted=False),
          "parts averaged without their counts", ("count", "weigh", "size"))
add_wrong("1.2", ch01.merged_moments, lambda m, v, c: _merged(m, v, c, spread=False),
          "variance = weighted mean of the parts' variances (the means' spread forgotten)",
          ("spread", "between", "differ", "mean squared", "means"))
add_wrong("1.2", ch01.merged_moments, lambda m, v, c: _merged(m, v, c, normalise=False),
          "weighted sums not divided by the total count", ("total", "divide", "count"))
add_wrong("1.2", ch01.merged_moments, lambda m, v, c: _merged(m, v, c, ddof=1),
          "divides E[x^2] by total - 1", BIASED)
add_wrong("1.2", ch01.merged_moments,
          lambda m, v, c: (tf.reduce_sum(c[:, None] * m, 0), tf.reduce_sum(v, 0)),
          "multiplies by the int32 counts without a cast", ("cast", "int32", "dtype"))
add_wrong("1.2", ch01.merged_moments,
          lambda m, v, c: tuple(np.asarray(t) for t in _merged(m, v, c)),
          "returns NumPy arrays instead of tensors", ("tensor",))


def _x_hat(x, eps, ddof=0):
    return (x - x.mean(0)) / np.sqrt(x.var(0, ddof=ddof) + eps)


@right("1.3", ch01.infer_gamma_beta, "sign of the covariance times the ratio of spreads")
def _gamma_beta_sign(x, y, eps):
    x_hat = _x_hat(x, eps)
    beta = y.mean(0)
    sign = np.sign(((y - beta) * x_hat).sum(0))
    return sign * y.std(0) / x_hat.std(0), beta


@right("1.3", ch01.infer_gamma_beta, "least squares per feature with np.linalg.lstsq")
def _gamma_beta_lstsq(x, y, eps):
    x_hat = _x_hat(x, eps)
    gammas, betas = [], []
    for j in range(x.shape[1]):
        a = np.stack([x_hat[:, j], np.ones(len(x), np.float32)], axis=1)
        (g, b), *_ = np.linalg.lstsq(a, y[:, j], rcond=None)
        gammas.append(g)
        betas.append(b)
    return np.array(gammas, np.float32), np.array(betas, np.float32)


add_wrong("1.3", ch01.infer_gamma_beta,
          lambda x, y, eps: (y.std(0) / _x_hat(x, eps).std(0), y.mean(0)),
          "gamma from the ratio of spreads: loses the sign", ("sign", "negative"))
add_wrong("1.3", ch01.infer_gamma_beta,
          lambda x, y, eps: (((y - y.mean(0)) * _x_hat(x, 0.0)).mean(0), y.mean(0)),
          "x_hat without epsilon", EPS)
add_wrong("1.3", ch01.infer_gamma_beta,
          lambda x, y, eps: (((y - y.mean(0)) * _x_hat(x, eps)).mean(0), y.mean(0)),
          "slope = mean(y * x_hat), as if x_hat had variance 1", EPS + ("variance",))
add_wrong("1.3", ch01.infer_gamma_beta,
          lambda x, y, eps: (((y - y.mean(0)) * (x - x.mean(0))).mean(0) / x.var(0), y.mean(0)),
          "slope of y on x, not on x_hat", ("x_hat", "normalis", "x̂"))
add_wrong("1.3", ch01.infer_gamma_beta,
          lambda x, y, eps: (((y - y.mean(0)) * _x_hat(x, eps, 1)).mean(0)
                             / (_x_hat(x, eps, 1) ** 2).mean(0), y.mean(0)),
          "unbiased variance in x_hat", BIASED)
add_wrong("1.3", ch01.infer_gamma_beta,
          lambda x, y, eps: _gamma_beta_sign(x, y, eps)[::-1],
          "returns (beta, gamma)", ("order", "swap"))


def _bn_tf(x, gamma, beta, eps, axis, stats=None, reshape=True, swap=False):
    rank = len(x.shape)
    axis_pos = axis % rank
    others = stats if stats is not None else [i for i in range(rank) if i != axis_pos]
    mean, var = tf.nn.moments(x, axes=others, keepdims=True)
    shape = [1] * rank
    shape[axis_pos] = -1
    g = tf.reshape(gamma, shape) if reshape else gamma
    b = tf.reshape(beta, shape) if reshape else beta
    if swap:
        return tf.nn.batch_normalization(x, mean, var, g, b, eps)
    return tf.nn.batch_normalization(x, mean, var, offset=b, scale=g, variance_epsilon=eps)


@right("1.4", ch01.transform_tf, "moves the feature axis last, normalises, moves it back")
def _bn_tf_transpose(x, gamma, beta, eps, axis):
    rank = len(x.shape)
    axis = axis % rank
    perm = [i for i in range(rank) if i != axis] + [axis]
    moved = tf.transpose(x, perm)
    mean, var = tf.nn.moments(moved, axes=list(range(rank - 1)))
    out = tf.nn.batch_normalization(moved, mean, var, beta, gamma, eps)
    return tf.transpose(out, np.argsort(perm))


@right("1.4", ch01.transform_tf, "gamma laid out with a broadcast shape built from x.shape")
def _bn_tf_shape(x, gamma, beta, eps, axis):
    rank = x.shape.rank
    keep = [d if i == axis % rank else 1 for i, d in enumerate(x.shape)]
    mean, var = tf.nn.moments(x, axes=[i for i in range(rank) if i != axis % rank],
                              keepdims=True)
    return tf.nn.batch_normalization(x, mean, var, tf.reshape(beta, keep),
                                     tf.reshape(gamma, keep), eps)


add_wrong("1.4", ch01.transform_tf, lambda x, g, b, eps, axis: _bn_tf(x, g, b, eps, axis,
                                                                      stats=[axis]),
          "statistics over the feature axis itself", ("axis", "axes", "other"))
add_wrong("1.4", ch01.transform_tf,
          lambda x, g, b, eps, axis: _bn_tf(x, g, b, eps, -1, stats=list(range(len(x.shape) - 1))),
          "ignores `axis`: always the last axis", ("axis", "feature axis"))
add_wrong("1.4", ch01.transform_tf,
          lambda x, g, b, eps, axis: _bn_tf(x, g, b, eps, axis,
                                            stats=[i for i in range(len(x.shape)) if i != axis]),
          "negative axis not turned positive (removes nothing from the axes)", ("negative",))
add_wrong("1.4", ch01.transform_tf,
          lambda x, g, b, eps, axis: _bn_tf(x, g, b, eps, axis, reshape=False),
          "gamma and beta not reshaped to line up with the axis", ("reshape", "broadcast", "line up",
                                                                    "shape"))
add_wrong("1.4", ch01.transform_tf,
          lambda x, g, b, eps, axis: _bn_tf(x, g, b, eps, axis, swap=True),
          "gamma and beta passed positionally in the wrong order", ("offset", "scale", "swap"))
add_wrong("1.4", ch01.transform_tf,
          lambda x, g, b, eps, axis: _bn_tf(x, g, b, eps, axis, stats=[0]),
          "statistics over the batch axis only", ("axis", "axes", "batch"))

# =================================================================================================
# Chapter 2
# =================================================================================================

def _bn_conv(x, filters, gamma, beta, eps, padding="SAME", axes=(0, 1, 2), swap=False, ddof=0,
             before=False):
    if before:
        mean, var = tf.nn.moments(x, axes=list(axes))
        x = (x - mean) / tf.sqrt(var + eps)
    z = tf.nn.conv2d(x, filters, strides=1, padding=padding)
    if before:
        return gamma * z + beta
    mean, var = tf.nn.moments(z, axes=list(axes))
    if ddof:
        n = tf.cast(tf.size(z) // tf.size(mean), tf.float32)
        var = var * n / (n - 1)
    if swap:
        return tf.nn.batch_normalization(z, mean, var, gamma, beta, eps)
    return tf.nn.batch_normalization(z, mean, var, offset=beta, scale=gamma, variance_epsilon=eps)


@right("2.1", ch02.bn_conv, "the transform written out with reduce_mean")
def _bn_conv_by_hand(x, filters, gamma, beta, eps):
    z = tf.nn.conv2d(x, filters, 1, "SAME")
    mean = tf.reduce_mean(z, axis=[0, 1, 2])
    var = tf.reduce_mean(tf.square(z - mean), axis=[0, 1, 2])
    return gamma * (z - mean) * tf.math.rsqrt(var + eps) + beta


@right("2.1", ch02.bn_conv, "tf.nn.convolution and moments with keepdims")
def _bn_conv_convolution(x, filters, gamma, beta, eps):
    z = tf.nn.convolution(x, filters, padding="SAME")
    mean, var = tf.nn.moments(z, axes=[0, 1, 2], keepdims=True)
    return tf.nn.batch_normalization(z, mean, var, beta, gamma, eps)


add_wrong("2.1", ch02.bn_conv, lambda *a: _bn_conv(*a, padding="VALID"),
          "padding VALID", ("padding", "same", "valid"))
add_wrong("2.1", ch02.bn_conv, lambda *a: _bn_conv(*a, axes=(0,)),
          "statistics over the batch axis only", ("axes", "axis", "pixel", "position"))
add_wrong("2.1", ch02.bn_conv, lambda *a: _bn_conv(*a, axes=(1, 2)),
          "statistics per image (instance norm)", ("axes", "axis", "batch", "image"))
add_wrong("2.1", ch02.bn_conv, lambda *a: _bn_conv(*a, swap=True),
          "gamma and beta positional in the wrong order", ("offset", "scale", "swap"))
add_wrong("2.1", ch02.bn_conv, lambda x, f, g, b, eps: _bn_conv(x, f, g, b, 0.0),
          "variance_epsilon=0", EPS)
add_wrong("2.1", ch02.bn_conv, lambda *a: _bn_conv(*a, ddof=1),
          "unbiased variance", BIASED)
add_wrong("2.1", ch02.bn_conv, lambda *a: _bn_conv(*a, before=True),
          "normalises the input, then convolves", ("before", "order", "feature map", "convol"))


class _Net(tf.Module):
    """A right BNNet written unlike the solution; the wrong ones below change one thing."""

    bn_out = False
    hidden_bias = False
    softmax = False

    def __init__(self, weights, epsilon=1e-3, activation=tf.sigmoid):
        super().__init__()
        self.epsilon, self.activation = epsilon, activation
        self.ws = []
        self.gammas, self.betas = [], []
        for i, w in enumerate(weights):
            self.ws.append(tf.Variable(w, name=f"w{i}"))
            if i < len(weights) - 1 or self.bn_out:
                units = int(w.shape[-1])
                self.gammas.append(self.make(tf.ones([units])))
                self.betas.append(self.make(tf.zeros([units])))
        self.b_out = tf.Variable(tf.zeros([int(weights[-1].shape[-1])]))
        if self.hidden_bias:
            self.bs = [tf.Variable(tf.zeros([int(w.shape[-1])])) for w in weights[:-1]]

    def make(self, value):
        return tf.Variable(value)

    def eps(self):
        return self.epsilon

    def act(self, z):
        return self.activation(z)

    def hidden(self):
        return self.ws[:-1]

    def __call__(self, x, training=False):
        h = x
        for i, w in enumerate(self.hidden()):
            z = tf.matmul(h, w) + (self.bs[i] if self.hidden_bias else 0.0)
            mean = tf.reduce_mean(z, axis=0)
            var = tf.reduce_mean((z - mean) ** 2, axis=0)
            h = self.act(self.gammas[i] * (z - mean) / tf.sqrt(var + self.eps()) + self.betas[i])
        out = tf.matmul(h, self.ws[-1]) + self.b_out
        if self.bn_out:
            mean, var = tf.nn.moments(out, [0])
            out = tf.nn.batch_normalization(out, mean, var, self.betas[-1], self.gammas[-1],
                                            self.eps())
        return tf.nn.softmax(out) if self.softmax else out


add_right("2.2", ch02.bn_network, _Net, "transform by hand, matmul, named variables")


class _NetMoments(_Net):
    def __call__(self, x, training=False):
        h = x
        for w, g, b in zip(self.ws, self.gammas, self.betas):
            z = h @ w
            mean, var = tf.nn.moments(z, axes=[0], keepdims=True)
            h = self.activation(tf.nn.batch_normalization(z, mean, var, b, g, self.epsilon))
        return h @ self.ws[-1] + self.b_out


add_right("2.2", ch02.bn_network, _NetMoments, "zip of ws with gammas (stops at the shortest)")
add_wrong("2.2", ch02.bn_network, type("BNOut", (_Net,), {"bn_out": True}),
          "BN (gamma, beta) on the output layer too", ("output", "logits", "last layer", "hidden"))
add_wrong("2.2", ch02.bn_network, type("HiddenBias", (_Net,), {"hidden_bias": True}),
          "a bias in every hidden layer as well", ("bias", "variable"))
add_wrong("2.2", ch02.bn_network, type("Sigmoid", (_Net,), {"act": lambda self, z: tf.sigmoid(z)}),
          "activation hard-coded to the sigmoid", ("activation", "sigmoid", "relu"))
add_wrong("2.2", ch02.bn_network, type("Softmax", (_Net,), {"softmax": True}),
          "softmax on the output", ("softmax", "logits"))
add_wrong("2.2", ch02.bn_network, type("Const", (_Net,), {"make": lambda self, v: v}),
          "gammas and betas as constants, not variables", ("variable", "trainable"))
add_wrong("2.2", ch02.bn_network, type("Eps", (_Net,), {"eps": lambda self: 1e-3}),
          "epsilon hard-coded to 1e-3", EPS)
add_wrong("2.2", ch02.bn_network, type("TwoHidden", (_Net,), {"hidden": lambda self: self.ws[:2]}),
          "hard-coded to the lesson's two hidden layers", ("layer", "depth", "hidden"))


# =================================================================================================
# Chapter 3
# =================================================================================================

class _Pop(tf.Module):
    """A right PopulationBN written unlike the solution; wrong ones override one method."""

    def __init__(self, n_units, decay=0.999, eps=1e-3):
        super().__init__()
        self.decay, self.eps = decay, eps
        self.gamma = tf.Variable(tf.ones([n_units]))
        self.beta = tf.Variable(tf.zeros([n_units]))
        self.pop_mean = tf.Variable(tf.zeros([n_units]), trainable=False)
        self.pop_var = tf.Variable(self.start_var(n_units), trainable=False)

    def start_var(self, n):
        return tf.ones([n])

    def normalise(self, z, mean, variance):
        return self.gamma * (z - mean) / tf.sqrt(variance + self.eps) + self.beta

    def axes(self, z):
        return list(range(z.shape.rank - 1))

    def stats(self, z):
        axes = self.axes(z)
        mean = tf.reduce_mean(z, axis=axes)
        return mean, tf.reduce_mean(tf.square(z - mean), axis=axes)

    def update(self, mean, var):
        self.pop_mean.assign_sub((1 - self.decay) * (self.pop_mean - mean))
        self.pop_var.assign_sub((1 - self.decay) * (self.pop_var - var))

    def __call__(self, z, training=False):
        if training:
            mean, var = self.stats(z)
            self.update(mean, var)
            return self.normalise(z, mean, var)
        return self.normalise(z, self.pop_mean, self.pop_var)


add_right("3.1", ch03.population_bn, _Pop, "assign_sub form of the update, reduce_mean statistics")


class _PopCond(_Pop):
    def __call__(self, z, training=False):
        mean, var = tf.nn.moments(z, axes=list(range(len(z.shape) - 1)))
        if not training:
            return self.normalise(z, self.pop_mean.read_value(), self.pop_var.read_value())
        d = self.decay
        self.pop_mean.assign(d * self.pop_mean + (1 - d) * mean)
        self.pop_var.assign(d * self.pop_var + (1 - d) * var)
        return self.normalise(z, mean, var)


add_right("3.1", ch03.population_bn, _PopCond, "moments first, inference branch returns early")
add_wrong("3.1", ch03.population_bn, type("Axis0", (_Pop,), {"axes": lambda self, z: [0]}),
          "statistics over axis 0 only, whatever the rank", ("axes", "axis", "nhwc", "rank", "every"))


def _swapped_update(self, mean, var):
    self.pop_mean.assign(self.decay * mean + (1 - self.decay) * self.pop_mean)
    self.pop_var.assign(self.decay * var + (1 - self.decay) * self.pop_var)


add_wrong("3.1", ch03.population_bn, type("Swap", (_Pop,), {"update": _swapped_update}),
          "decay weights the batch, not the population", ("decay", "swap"))


def _batch_at_inference(self, z, training=False):
    mean, var = self.stats(z)
    if training:
        self.update(mean, var)
    return self.normalise(z, mean, var)


add_wrong("3.1", ch03.population_bn, type("BatchInf", (_Pop,), {"__call__": _batch_at_inference}),
          "batch statistics at inference too", ("inference", "population", "training=false"))


def _update_always(self, z, training=False):
    mean, var = self.stats(z)
    self.update(mean, var)
    if training:
        return self.normalise(z, mean, var)
    return self.normalise(z, self.pop_mean, self.pop_var)


add_wrong("3.1", ch03.population_bn, type("UpdInf", (_Pop,), {"__call__": _update_always}),
          "updates the population statistics at inference too", ("inference", "update", "change"))


def _unbiased_stats(self, z):
    mean, var = tf.nn.moments(z, axes=self.axes(z))
    n = tf.cast(tf.size(z) // tf.size(mean), tf.float32)
    return mean, var * n / (n - 1)


add_wrong("3.1", ch03.population_bn, type("Unbiased", (_Pop,), {"stats": _unbiased_stats}),
          "unbiased batch variance", BIASED)
add_wrong("3.1", ch03.population_bn, type("ZeroVar", (_Pop,), {"start_var": lambda s, n: tf.zeros([n])}),
          "pop_var starts at zeros", ("ones", "start", "initial", "pop_var"))


def _normalise_with_updated(self, z, training=False):
    if training:
        self.update(*self.stats(z))
    return self.normalise(z, self.pop_mean, self.pop_var)


add_wrong("3.1", ch03.population_bn, type("PopTrain", (_Pop,), {"__call__": _normalise_with_updated}),
          "training normalises with the (updated) population statistics",
          ("batch", "training=true", "training"))


def _exact(net, x, chunk_size, how="sums", chunks=None, layer2="exact", ddof=0,
           dtype=np.float64):
    """The two-pass exact statistics, with one mistake chosen by the arguments."""
    starts = list(range(0, len(x), chunk_size))
    if chunks == "first":
        starts = starts[:1]
    elif chunks == "drop_last":
        starts = list(range(0, len(x) - chunk_size + 1, chunk_size))

    def one_pass(layer_input):
        zs = [np.asarray(layer_input(x[s:s + chunk_size])).astype(dtype) for s in starts]
        if how == "average":
            return (np.mean([z.mean(0) for z in zs], 0).astype(np.float32),
                    np.mean([z.var(0) for z in zs], 0).astype(np.float32))
        n = sum(len(z) for z in zs)
        total = sum(z.sum(0) for z in zs)
        sq = sum((z ** 2).sum(0) for z in zs)
        mean = total / n
        return mean.astype(np.float32), ((sq - n * mean ** 2) / (n - ddof)).astype(np.float32)

    def z1(chunk):
        return chunk @ net.w1

    m1, v1 = one_pass(z1)
    if layer2 == "exact":
        def z2(chunk):
            return tf.sigmoid(net.bn1.normalise(z1(chunk), m1, v1)) @ net.w2
    elif layer2 == "chunk":
        def z2(chunk):
            z = z1(chunk)
            m, v = tf.nn.moments(z, [0])
            return tf.sigmoid(net.bn1.normalise(z, m, v)) @ net.w2
    else:
        def z2(chunk):
            return tf.sigmoid(z1(chunk)) @ net.w2
    return [(m1, v1), one_pass(z2)]


@right("3.2", ch03.exact_population_statistics, "Chan's merge of per-chunk means and M2")
def _exact_chan(net, x, chunk_size):
    def one_pass(fn):
        n, mean, m2 = 0, 0.0, 0.0
        for s in range(0, len(x), chunk_size):
            z = np.asarray(fn(x[s:s + chunk_size]), np.float64)
            nb, mb = len(z), z.mean(0)
            delta = mb - mean
            mean = mean + delta * nb / (n + nb)
            m2 = m2 + ((z - mb) ** 2).sum(0) + delta ** 2 * n * nb / (n + nb)
            n += nb
        return np.float32(mean), np.float32(m2 / n)

    first = one_pass(lambda c: c @ net.w1)
    second = one_pass(lambda c: tf.sigmoid(net.bn1.normalise(c @ net.w1, *first)) @ net.w2)
    return [first, second]


add_right("3.2", ch03.exact_population_statistics,
          lambda net, x, c: [tuple(tf.constant(a) for a in pair) for pair in _exact(net, x, c)],
          "sums of z and z^2 in float64, returned as tensors")
add_wrong("3.2", ch03.exact_population_statistics,
          lambda net, x, c: _exact(net, x, c, how="average"),
          "averages the chunks' means and variances", ("chunk", "averag"))
add_wrong("3.2", ch03.exact_population_statistics,
          lambda net, x, c: _exact(net, x, c, layer2="chunk"),
          "layer 2's inputs with layer 1 normalised by each chunk's own statistics",
          ("layer 1", "test time", "exact", "chunk's own"))
add_wrong("3.2", ch03.exact_population_statistics,
          lambda net, x, c: _exact(net, x, c, layer2="raw"),
          "layer 2's inputs without layer 1's normalisation", ("normalis", "layer 1"))
add_wrong("3.2", ch03.exact_population_statistics,
          lambda net, x, c: _exact(net, x, c, chunks="first"),
          "only the first chunk", ("all rows", "first", "chunk"))
add_wrong("3.2", ch03.exact_population_statistics,
          lambda net, x, c: _exact(net, x, c, chunks="drop_last"),
          "the shorter last chunk is dropped", ("last", "shorter", "rows"))
add_wrong("3.2", ch03.exact_population_statistics,
          lambda net, x, c: _exact(net, x, c, ddof=1),
          "unbiased variance", BIASED)


def _corrected(values, decay, start, count_from=1, subtract=True, swap=False):
    out, est = [], np.array(start, copy=True)
    for t, v in enumerate(values, start=count_from):
        est = (1 - decay) * est + decay * v if swap else decay * est + (1 - decay) * v
        w = decay ** t
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append((est - w * start) / (1 - w) if subtract else est / (1 - w))
    return np.stack(out)


@right("3.3", ch03.corrected_moving_average, "closed form: the start value cancels out")
def _corrected_closed(values, decay, start):
    out = np.empty_like(values)
    acc = np.zeros_like(start)
    for t in range(len(values)):
        acc = decay * acc + (1 - decay) * values[t]
        out[t] = acc / (1 - decay ** (t + 1))
    return out


@right("3.3", ch03.corrected_moving_average, "moving average of a copy, corrected afterwards")
def _corrected_after(values, decay, start):
    est = start.copy()
    plain = []
    for v in values:
        est = est * decay + v * (1 - decay)
        plain.append(est)
    t = np.arange(1, len(values) + 1).reshape((-1,) + (1,) * start.ndim)
    w = decay ** t
    return ((np.stack(plain) - w * start) / (1 - w)).astype(values.dtype)


add_wrong("3.3", ch03.corrected_moving_average,
          lambda v, d, s: np.stack([x for x in _plain(v, d, s)]),
          "no correction: the plain moving average", ("correct", "start", "weight"))


def _plain(values, decay, start):
    est = start
    for v in values:
        est = decay * est + (1 - decay) * v
        yield est


add_wrong("3.3", ch03.corrected_moving_average, lambda v, d, s: _corrected(v, d, s, count_from=0),
          "counts steps from 0 (divides by 1 - d^0 = 0 at the first)",
          ("from 1", "nan", "infinity", "count"))
add_wrong("3.3", ch03.corrected_moving_average, lambda v, d, s: _corrected(v, d, s, subtract=False),
          "Adam's correction: divides by 1 - d^t without removing d^t * start", ("start",))
add_wrong("3.3", ch03.corrected_moving_average, lambda v, d, s: _corrected(v, d, s, swap=True),
          "decay and 1 - decay swapped", ("decay", "swap"))


@wrong("3.3", ch03.corrected_moving_average, "updates `start` in place", ("change", "in place",
                                                                           "modif", "given"))
def _corrected_in_place(values, decay, start):
    est, out = start, []
    s0 = start.copy()
    for t, v in enumerate(values, start=1):
        est *= decay
        est += (1 - decay) * v
        out.append((est - decay ** t * s0) / (1 - decay ** t))
    return np.stack(out)


add_wrong("3.3", ch03.corrected_moving_average,
          lambda v, d, s: list(_corrected(v, d, s)), "returns a list of rows", ("list", "array"))

# =================================================================================================
# Chapter 4
# =================================================================================================

def _moving(mean, var, batches, m, swap=False, ddof=0, axes0=False, concat=False, f64=False):
    if concat:
        batches = [np.concatenate([b.reshape(-1, b.shape[-1]) for b in batches])]
    for b in batches:
        b = b.astype(np.float64) if f64 else b
        axes = 0 if axes0 else tuple(range(b.ndim - 1))
        bm, bv = b.mean(axis=axes), b.var(axis=axes, ddof=ddof)
        if swap:
            mean, var = (1 - m) * mean + m * bm, (1 - m) * var + m * bv
        else:
            mean, var = m * mean + (1 - m) * bm, m * var + (1 - m) * bv
    return mean, var


@right("4.1", ch04.moving_statistics, "Keras' own form: moving -= (moving - batch) * (1 - m)")
def _moving_keras_form(mean, var, batches, momentum):
    for b in batches:
        flat = b.reshape(-1, b.shape[-1])
        mean = mean - (mean - flat.mean(0)) * (1 - momentum)
        var = var - (var - flat.var(0)) * (1 - momentum)
    return mean.astype(np.float32), var.astype(np.float32)


@right("4.1", ch04.moving_statistics, "float64 work, cast back to float32")
def _moving_f64(mean, var, batches, momentum):
    m, v = mean.astype(np.float64), var.astype(np.float64)
    for b in batches:
        axes = tuple(range(b.ndim - 1))
        m = momentum * m + (1 - momentum) * b.mean(axes, dtype=np.float64)
        v = momentum * v + (1 - momentum) * b.var(axes, dtype=np.float64)
    return m.astype(np.float32), v.astype(np.float32)


add_wrong("4.1", ch04.moving_statistics, lambda *a: _moving(*a, swap=True),
          "momentum weights the new batch", ("momentum", "swap", "old"))
add_wrong("4.1", ch04.moving_statistics, lambda *a: _moving(*a, ddof=1),
          "unbiased batch variance", BIASED)
add_wrong("4.1", ch04.moving_statistics, lambda *a: _moving(*a, axes0=True),
          "statistics over axis 0 only for image batches", ("axes", "axis", "image", "position"))
add_wrong("4.1", ch04.moving_statistics, lambda *a: _moving(*a, concat=True),
          "all batches treated as one batch (one update)", ("each batch", "per batch", "one call",
                                                             "once", "every batch"))
add_wrong("4.1", ch04.moving_statistics, lambda *a: _moving(*a, f64=True),
          "returns float64", ("float64", "dtype"))


def _acc(logits, y):
    return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1), tf.cast(y, tf.int64)),
                                  tf.float32))


def _step(model, optimizer, loss_fn, x, y, training=True, after=False, twice=False, cast=True,
          count=False, apply=True):
    with tf.GradientTape() as tape:
        logits = model(x, training=training)
        loss = loss_fn(y, logits)
    grads = tape.gradient(loss, model.trainable_variables)
    if apply:
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    if after or twice:
        logits = model(x, training=not after or training)
    if not cast:
        correct = tf.equal(tf.argmax(logits, 1), y)
    else:
        correct = tf.equal(tf.argmax(logits, 1), tf.cast(y, tf.int64))
    correct = tf.cast(correct, tf.float32)
    return loss, tf.reduce_sum(correct) if count else tf.reduce_mean(correct)


@right("4.2", ch04.train_step, "optimizer.apply and keras' sparse_categorical_accuracy")
def _step_keras_metric(model, optimizer, loss_fn, x, y):
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = loss_fn(y, logits)
    variables = model.trainable_variables
    optimizer.apply(tape.gradient(loss, variables), variables)
    return loss, tf.reduce_mean(keras.metrics.sparse_categorical_accuracy(y, logits))


@right("4.2", ch04.train_step, "argmax cast to the labels' dtype")
def _step_cast_argmax(model, optimizer, loss_fn, x, y):
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = loss_fn(y, logits)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(list(zip(grads, model.trainable_variables)))
    hits = tf.cast(tf.argmax(logits, axis=-1, output_type=y.dtype) == y, tf.float32)
    return loss, tf.reduce_sum(hits) / tf.cast(tf.shape(y)[0], tf.float32)


add_wrong("4.2", ch04.train_step, lambda *a: _step(*a, training=False),
          "forward pass in inference mode", ("training",))
add_wrong("4.2", ch04.train_step, lambda *a: _step(*a, after=True),
          "accuracy from a second, inference-mode pass after the step",
          ("after", "same forward", "second", "trained on", "again"))
add_wrong("4.2", ch04.train_step, lambda *a: _step(*a, twice=True),
          "accuracy from a second training-mode pass (two moving updates)",
          ("once", "twice", "second", "two"))
add_wrong("4.2", ch04.train_step, lambda *a: _step(*a, cast=False),
          "compares int64 argmax with int32 labels without a cast", ("int32", "int64", "dtype",
                                                                      "cast"))
add_wrong("4.2", ch04.train_step, lambda *a: _step(*a, count=True),
          "accuracy as the count of correct samples", ("fraction", "count", "sum"))
add_wrong("4.2", ch04.train_step, lambda *a: _step(*a, apply=False),
          "no optimizer step", ("step", "optimizer", "apply"))


@wrong("4.2", ch04.train_step, "np.argmax on the logits (fails in tf.function)",
       ("tf.function", "numpy", "np."))
def _step_numpy(model, optimizer, loss_fn, x, y):
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = loss_fn(y, logits)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss, np.float32(np.mean(np.argmax(logits.numpy(), 1) == y.numpy()))


def _evaluate(model, x, y, bs, training=False, batch_means=False, swap=False, drop_last=False,
              count=False):
    accs, losses, weights = [], [], []
    stop = len(x) - bs + 1 if drop_last else len(x)
    for s in range(0, stop, bs):
        logits = model(x[s:s + bs], training=training)
        labels = y[s:s + bs]
        accs.append(float(np.sum(np.argmax(logits, 1) == labels)))
        losses.append(float(tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))))
        weights.append(len(labels))
    n = sum(weights)
    if batch_means:
        acc = float(np.mean([a / w for a, w in zip(accs, weights)]))
        loss = float(np.mean([lo / w for lo, w in zip(losses, weights)]))
    else:
        acc, loss = sum(accs) / n, sum(losses) / n
    if count:
        acc = sum(accs)
    return (loss, acc) if swap else (acc, loss)


@right("4.3", ch04.evaluate, "concatenates the inference logits, then computes once")
def _evaluate_concat(model, x, y, batch_size):
    logits = np.concatenate([np.asarray(model(x[s:s + batch_size], training=False))
                             for s in range(0, len(x), batch_size)])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    return float(np.mean(np.argmax(logits, 1) == y)), float(loss)


@right("4.3", ch04.evaluate, "batch means weighted by batch length, model.predict_on_batch")
def _evaluate_weighted(model, x, y, batch_size):
    acc = loss = 0.0
    for s in range(0, len(x), batch_size):
        logits = model.predict_on_batch(x[s:s + batch_size])
        yb = y[s:s + batch_size]
        w = len(yb) / len(x)
        acc += w * np.mean(np.argmax(logits, 1) == yb)
        loss += w * float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits)))
    return float(acc), float(loss)


add_wrong("4.3", ch04.evaluate, lambda *a: _evaluate(*a, training=True),
          "BN in training mode", ("training", "inference"))
add_wrong("4.3", ch04.evaluate, lambda *a: _evaluate(*a, batch_means=True),
          "mean of the batches' means", ("last batch", "weigh", "per sample", "mean of"))
add_wrong("4.3", ch04.evaluate, lambda *a: _evaluate(*a, swap=True),
          "returns (loss, accuracy)", ("order", "swap"))
add_wrong("4.3", ch04.evaluate, lambda *a: _evaluate(*a, drop_last=True),
          "drops the smaller last batch", ("last", "all", "samples"))
add_wrong("4.3", ch04.evaluate, lambda *a: _evaluate(*a, count=True),
          "accuracy as the number of correct samples", ("fraction", "count", "between 0 and 1"))


def _is_bn(layer):
    return isinstance(layer, keras.layers.BatchNormalization)


@right("4.4", ch04.prepare_for_finetuning, "iterative stack over nested layers")
def _finetune_stack(base):
    base.trainable = True
    stack = list(base.layers)
    while stack:
        layer = stack.pop()
        if _is_bn(layer):
            layer.trainable = False
        stack.extend(getattr(layer, "layers", []))


@right("4.4", ch04.prepare_for_finetuning, "recursion that unfreezes each container first")
def _finetune_recursive(model):
    model.trainable = True
    for layer in model.layers:
        if _is_bn(layer):
            layer.trainable = False
        elif hasattr(layer, "layers"):
            _finetune_recursive(layer)
        else:
            layer.trainable = True


@wrong("4.4", ch04.prepare_for_finetuning, "only the top-level BN layers re-frozen", ("nested",))
def _finetune_top(base):
    base.trainable = True
    for layer in base.layers:
        if _is_bn(layer):
            layer.trainable = False


@wrong("4.4", ch04.prepare_for_finetuning, "BN frozen first, then base.trainable = True",
       ("order", "after", "afterwards", "unfreez"))
def _finetune_order(base):
    stack = list(base.layers)
    while stack:
        layer = stack.pop()
        if _is_bn(layer):
            layer.trainable = False
        stack.extend(getattr(layer, "layers", []))
    base.trainable = True


@wrong("4.4", ch04.prepare_for_finetuning, "base.trainable = True only: BN trains too",
       ("batchnormalization layer", "bn layer", "frozen", "moving"))
def _finetune_all(base):
    base.trainable = True


@wrong("4.4", ch04.prepare_for_finetuning, "non-BN layers unfrozen one by one, base left frozen",
       ("base", "model itself", "container", "nested model"))
def _finetune_leaves(base):
    stack = list(base.layers)
    while stack:
        layer = stack.pop()
        if hasattr(layer, "layers"):
            stack.extend(layer.layers)
        elif not _is_bn(layer):
            layer.trainable = True


@wrong("4.4", ch04.prepare_for_finetuning, "BN found by its name, not its class", ("name", "class",
                                                                                  "isinstance"))
def _finetune_by_name(base):
    base.trainable = True
    stack = list(base.layers)
    while stack:
        layer = stack.pop()
        if layer.name.startswith("batch_normalization"):
            layer.trainable = False
        stack.extend(getattr(layer, "layers", []))


# =================================================================================================
# Chapter 5
# =================================================================================================

UPDATE_OPS = tf1.GraphKeys.UPDATE_OPS


@right("5.1", ch05.train_op_with_updates, "tf.group of the step and this scope's updates")
def _train_op_group(loss, optimizer, graph, scope):
    return tf.group(optimizer.minimize(loss), *graph.get_collection(UPDATE_OPS, scope))


@right("5.1", ch05.train_op_with_updates, "updates filtered by name, tf.control_dependencies")
def _train_op_by_name(loss, optimizer, graph, scope):
    ops = [op for op in tf1.get_collection(UPDATE_OPS) if op.name.startswith(scope)]
    with tf.control_dependencies(ops):
        return optimizer.minimize(loss)


@wrong("5.1", ch05.train_op_with_updates, "every update op, both models'", ("scope", "other model",
                                                                            "other"))
def _train_op_all(loss, optimizer, graph, scope):
    with graph.control_dependencies(graph.get_collection(UPDATE_OPS)):
        return optimizer.minimize(loss)


@wrong("5.1", ch05.train_op_with_updates, "minimize created before the control_dependencies block",
       ("inside", "created", "block", "before"))
def _train_op_outside(loss, optimizer, graph, scope):
    step = optimizer.minimize(loss)
    with graph.control_dependencies(graph.get_collection(UPDATE_OPS, scope)):
        return step


@wrong("5.1", ch05.train_op_with_updates, "no update ops at all", ("update",))
def _train_op_none(loss, optimizer, graph, scope):
    return optimizer.minimize(loss)


@wrong("5.1", ch05.train_op_with_updates, "returns a list [step] + updates", ("one op", "list"))
def _train_op_list(loss, optimizer, graph, scope):
    return [optimizer.minimize(loss)] + graph.get_collection(UPDATE_OPS, scope)


@wrong("5.1", ch05.train_op_with_updates, "its own GradientDescentOptimizer", ("optimizer",))
def _train_op_own_optimizer(loss, optimizer, graph, scope):
    with graph.control_dependencies(graph.get_collection(UPDATE_OPS, scope)):
        return tf1.train.GradientDescentOptimizer(0.1).minimize(loss)


def _switch(x, is_training, decay=0.99, epsilon=1e-3, name="bn", where="inside", rate=None,
            ddof=0, identity=True, inference="moving"):
    gamma, beta, moving_mean, moving_var = bn_variables(x.shape[-1], name)
    bm, bv = tf.nn.moments(x, axes=[0])
    if ddof:
        n = tf.cast(tf.shape(x)[0], tf.float32)
        bv = bv * n / (n - 1)
    r = (1 - decay) if rate is None else rate

    def updates():
        return [tf1.assign_sub(moving_mean, (moving_mean - bm) * r),
                tf1.assign_sub(moving_var, (moving_var - bv) * r)]

    outside = updates() if where == "outside" else []

    def train():
        ups = updates() if where == "inside" else outside
        with tf.control_dependencies(ups):
            if identity:
                return tf.identity(bm), tf.identity(bv)
            return bm, bv

    def infer():
        if inference == "batch":
            return tf.identity(bm), tf.identity(bv)
        return tf.identity(moving_mean), tf.identity(moving_var)

    mean, var = tf.cond(is_training, train, infer)
    return tf.nn.batch_normalization(x, mean, var, beta, gamma, epsilon)


@right("5.2", ch05.batch_norm_switch, "variable.assign with the decay * old + (1 - decay) * new form")
def _switch_assign(x, is_training, decay=0.99, epsilon=1e-3, name="bn"):
    gamma, beta, moving_mean, moving_var = bn_variables(x.shape[-1], name)

    def train():
        m, v = tf.nn.moments(x, axes=[0])
        a = moving_mean.assign(decay * moving_mean + (1 - decay) * m)
        b = moving_var.assign(decay * moving_var + (1 - decay) * v)
        with tf.control_dependencies([a, b]):
            return m + 0.0, v + 0.0

    def infer():
        return moving_mean + 0.0, moving_var + 0.0

    mean, var = tf.cond(is_training, train, infer)
    return gamma * (x - mean) * tf.math.rsqrt(var + epsilon) + beta


add_right("5.2", ch05.batch_norm_switch, lambda *a, **k: _switch(*a, **k),
          "moments outside the cond, updates inside (assign_sub)")
add_wrong("5.2", ch05.batch_norm_switch, lambda *a, **k: _switch(*a, **k, where="outside"),
          "update ops created outside tf.cond", ("outside", "inference", "cond", "branch",
                                                  "is_training"))
add_wrong("5.2", ch05.batch_norm_switch, lambda *a, **k: _switch(*a, **k, identity=False),
          "returns the moments made before the dependency (no identity)",
          ("identity", "before", "depend"))
add_wrong("5.2", ch05.batch_norm_switch, lambda *a, **k: _switch(*a, **k, rate=k.get("decay", 0.99)),
          "moves by decay instead of 1 - decay", ("decay",))
add_wrong("5.2", ch05.batch_norm_switch, lambda *a, **k: _switch(*a, **k, ddof=1),
          "unbiased batch variance", BIASED)
add_wrong("5.2", ch05.batch_norm_switch, lambda *a, **k: _switch(*a, **k, inference="batch"),
          "batch statistics at inference too", ("moving", "inference"))


@wrong("5.2", ch05.batch_norm_switch, "Python `if is_training:` on the placeholder",
       ("python", "bool", "tf.cond"))
def _switch_python_if(x, is_training, decay=0.99, epsilon=1e-3, name="bn"):
    gamma, beta, moving_mean, moving_var = bn_variables(x.shape[-1], name)
    if is_training:
        mean, var = tf.nn.moments(x, axes=[0])
    else:
        mean, var = moving_mean, moving_var
    return tf.nn.batch_normalization(x, mean, var, beta, gamma, epsilon)


@wrong("5.2", ch05.batch_norm_switch, "updates filed in UPDATE_OPS instead of a dependency",
       ("update_ops", "collection", "depend"))
def _switch_collection(x, is_training, decay=0.99, epsilon=1e-3, name="bn"):
    gamma, beta, moving_mean, moving_var = bn_variables(x.shape[-1], name)

    def train():
        m, v = tf.nn.moments(x, axes=[0])
        for var, new in ((moving_mean, m), (moving_var, v)):
            tf1.add_to_collection(UPDATE_OPS, tf1.assign_sub(var, (var - new) * (1 - decay)))
        return m, v

    mean, var = tf.cond(is_training, train, lambda: (tf.identity(moving_mean),
                                                     tf.identity(moving_var)))
    return tf.nn.batch_normalization(x, mean, var, beta, gamma, epsilon)


@right("5.3", ch05.inference_saver, "global variables minus the optimizer's, compared by name")
def _saver_names(graph, optimizer):
    own = {v.name for v in optimizer.variables()}
    return tf1.train.Saver([v for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
                            if v.name not in own])


@right("5.3", ch05.inference_saver, "a dict var_list keyed by op name")
def _saver_dict(graph, optimizer):
    own = set(id(v) for v in optimizer.variables())
    return tf1.train.Saver({v.op.name: v for v in tf1.global_variables() if id(v) not in own})


add_wrong("5.3", ch05.inference_saver, lambda g, o: tf1.train.Saver(tf1.trainable_variables()),
          "trainable variables only: no moving statistics", ("moving",))
add_wrong("5.3", ch05.inference_saver, lambda g, o: tf1.train.Saver(),
          "the default Saver: the optimizer's variables too", ("optimizer",))
add_wrong("5.3", ch05.inference_saver,
          lambda g, o: tf1.train.Saver([v for v in tf1.global_variables()
                                        if "Momentum" not in v.name and "Adam" not in v.name]),
          "optimizer variables filtered by two optimizer names", ("optimizer", "adadelta", "name"))
add_wrong("5.3", ch05.inference_saver, lambda g, o: [v for v in tf1.global_variables()
                                                     if v not in o.variables()],
          "returns the variable list, not a Saver", ("saver",))
add_wrong("5.3", ch05.inference_saver, lambda g, o: tf1.train.Saver(o.variables()),
          "saves only the optimizer's variables", ("optimizer", "weights", "gamma"))

# =================================================================================================
# Chapter 6
# =================================================================================================

L = keras.layers


def _block(x, filters, strides=1, zero="last", relu_before_add=False, project="needed",
           second_stride=False):
    needs = strides != 1 or x.shape[-1] != filters
    shortcut = x
    if project == "always" or (project == "needed" and needs) or (project == "strides"
                                                                  and strides != 1):
        shortcut = L.Conv2D(filters, 1, strides=strides, use_bias=False)(x)
        shortcut = L.BatchNormalization(gamma_initializer="zeros" if zero == "projection"
                                        else "ones")(shortcut)
    b = L.Conv2D(filters, 3, strides=1 if second_stride else strides, padding="same",
                 use_bias=False)(x)
    b = L.BatchNormalization(gamma_initializer="zeros" if zero == "first" else "ones")(b)
    b = L.ReLU()(b)
    b = L.Conv2D(filters, 3, strides=strides if second_stride else 1, padding="same",
                 use_bias=False)(b)
    b = L.BatchNormalization(gamma_initializer="zeros" if zero in ("last", "projection_and_last")
                             else "ones")(b)
    if relu_before_add:
        b = L.ReLU()(b)
    return L.Activation("relu")(L.Add()([shortcut, b]))


@right("6.1", ch06.residual_block, "Activation('relu'), Zeros() initializer object, branch first")
def _block_right(x, filters, strides=1):
    b = L.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    b = L.Activation("relu")(L.BatchNormalization()(b))
    b = L.Conv2D(filters, (3, 3), padding="same", use_bias=False)(b)
    b = L.BatchNormalization(gamma_initializer=keras.initializers.Zeros())(b)
    s = x
    if strides > 1 or int(x.shape[-1]) != filters:
        s = L.BatchNormalization()(L.Conv2D(filters, 1, strides=strides, use_bias=False)(x))
    return L.Activation("relu")(L.Add()([s, b]))


add_right("6.1", ch06.residual_block, lambda x, f, strides=1: _block(x, f, strides),
          "the statement's order, ReLU as an Activation layer")
add_wrong("6.1", ch06.residual_block, lambda x, f, strides=1: _block(x, f, strides, zero="first"),
          "gamma = 0 on the branch's first BN", ("gamma", "zero"))
add_wrong("6.1", ch06.residual_block, lambda x, f, strides=1: _block(x, f, strides, zero="none"),
          "no BN starts with gamma = 0", ("gamma", "zero", "identity"))
add_wrong("6.1", ch06.residual_block,
          lambda x, f, strides=1: _block(x, f, strides, relu_before_add=True),
          "ReLU on the branch before the Add", ("relu", "before the add", "after the add"))
add_wrong("6.1", ch06.residual_block, lambda x, f, strides=1: _block(x, f, strides, project="always"),
          "always a projection shortcut", ("projection", "identity", "shortcut"))
add_wrong("6.1", ch06.residual_block, lambda x, f, strides=1: _block(x, f, strides, project="never"),
          "never a projection: the Add fails when shapes change", ("projection", "shape"))
add_wrong("6.1", ch06.residual_block,
          lambda x, f, strides=1: _block(x, f, strides, project="strides"),
          "projection only when strides != 1 (channels ignored)", ("channel", "projection"))
add_wrong("6.1", ch06.residual_block,
          lambda x, f, strides=1: _block(x, f, strides, second_stride=True),
          "the stride on the second convolution", ("stride",))


def _bns(layer):
    found = []
    for sub in getattr(layer, "layers", []):
        if isinstance(sub, L.BatchNormalization):
            found.append(sub)
        else:
            found += _bns(sub)
    return found


def _recorded_inputs(model, target, batches, training=False):
    seen = []
    own = target.call

    def spy(inputs, *args, **kwargs):
        seen.append(np.asarray(inputs, np.float64).reshape(-1, inputs.shape[-1]))
        return own(inputs, *args, **kwargs)

    target.call = spy
    try:
        for b in batches:
            model(b, training=training)
    finally:
        del target.call
    return seen


def _recalibrate(model, batches, layers=_bns, one_pass=False, how="pooled", ddof=0):
    targets = layers(model)
    if one_pass:
        recorded = {id(t): _recorded_inputs(model, t, batches) for t in targets}
    for t in targets:
        seen = recorded[id(t)] if one_pass else _recorded_inputs(model, t, batches)
        if how == "pooled":
            z = np.concatenate(seen)
            mean, var = z.mean(0), z.var(0, ddof=ddof)
        else:
            mean = np.mean([s.mean(0) for s in seen], 0)
            var = np.mean([s.var(0) for s in seen], 0)
        t.moving_mean.assign(mean.astype(np.float32))
        t.moving_variance.assign(var.astype(np.float32))


add_right("6.2", ch06.recalibrate, lambda m, b: _recalibrate(m, b),
          "records inputs through a patched call, concatenates, np.var")


@right("6.2", ch06.recalibrate, "bnbook.bn_layers to find them, running float64 sums")
def _recalibrate_sums(model, batches):
    for t in bnbook.bn_layers(model):
        sums = np.zeros(3, object)
        for z in _recorded_inputs(model, t, batches):
            sums += np.array([len(z), z.sum(0), (z ** 2).sum(0)], object)
        n, s, q = sums
        t.moving_mean.assign((s / n).astype(np.float32))
        t.moving_variance.assign((q / n - (s / n) ** 2).astype(np.float32))


add_wrong("6.2", ch06.recalibrate,
          lambda m, b: bnbook.recalibrate_bn(m, np.concatenate(b)),
          "calls the book's bnbook.recalibrate_bn", ("book", "yourself"))
add_wrong("6.2", ch06.recalibrate,
          lambda m, b: _recalibrate(m, b, layers=lambda mm: [x for x in mm.layers
                                                             if isinstance(x, L.BatchNormalization)]),
          "top-level BN layers only", ("nested",))
add_wrong("6.2", ch06.recalibrate, lambda m, b: _recalibrate(m, b, one_pass=True),
          "every layer's inputs recorded in one pass, before any is recalibrated",
          ("order", "before", "earlier", "one at a time", "already"))
add_wrong("6.2", ch06.recalibrate, lambda m, b: _recalibrate(m, b, how="average"),
          "unweighted mean of the batches' means and variances", ("size", "weigh", "pool",
                                                                   "average"))
add_wrong("6.2", ch06.recalibrate, lambda m, b: _recalibrate(m, b, ddof=1),
          "unbiased variance", BIASED)


@wrong("6.2", ch06.recalibrate, "momentum 0 and a training-mode pass per batch (Dropout on)",
       ("dropout", "training"))
def _recalibrate_momentum(model, batches):
    layers = _bns(model)
    saved = [(la.momentum, la.trainable) for la in layers]
    for la in layers:
        la.momentum, la.trainable = 0.0, True
    x = np.concatenate(batches)
    model(x, training=True)
    for la, (m, t) in zip(layers, saved):
        la.momentum, la.trainable = m, t


def _train(model, x, y, batch_size, epochs, learning_rate, drop="remainder", training=True):
    opt = keras.optimizers.SGD(learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    stop = {"remainder": len(x) - batch_size + 1, "none": len(x),
            "one_more": len(x) - batch_size}[drop]
    for _ in range(epochs):
        for s in range(0, stop, batch_size):
            with tf.GradientTape() as tape:
                loss = loss_fn(y[s:s + batch_size], model(x[s:s + batch_size],
                                                          training=training))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))


def _eval(model, x, y, batch_size, training=False, drop_last=False):
    correct, seen = 0, 0
    stop = len(x) - batch_size + 1 if drop_last else len(x)
    for s in range(0, stop, batch_size):
        logits = model(x[s:s + batch_size], training=training)
        correct += int(np.sum(np.argmax(logits, 1) == y[s:s + batch_size]))
        seen += len(logits)
    return correct / seen


def _train_dataset(model, x, y, batch_size, epochs, learning_rate):
    opt = keras.optimizers.SGD(learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)
    for _ in range(epochs):
        for xb, yb in data:
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                    model.trainable_variables))


add_right("6.3", ch06.fix_script, (_train, _eval), "drop the remainder, training=False")
add_right("6.3", ch06.fix_script,
          (_train_dataset,
           lambda m, x, y, bs: float(np.mean(np.argmax(m.predict(x, batch_size=bs, verbose=0), 1)
                                             == y))),
          "tf.data with drop_remainder, model.predict")
add_wrong("6.3", ch06.fix_script, (_train, lambda m, x, y, bs: _eval(m, x, y, bs, training=True)),
          "train fixed, evaluate still in training mode", ("evaluat", "inference", "training"))
add_wrong("6.3", ch06.fix_script, (lambda *a: _train(*a, drop="none"), _eval),
          "evaluate fixed, the small last batch still trained on", ("last", "small", "remainder",
                                                                   "trailing"))
add_wrong("6.3", ch06.fix_script,
          (lambda *a: _train(*a, drop="none"),
           lambda m, x, y, bs: _eval(m, x, y, bs, training=True)),
          "neither bug fixed", ("both", "trailing", "last"))
add_wrong("6.3", ch06.fix_script, (lambda *a: _train(*a, drop="one_more"), _eval),
          "off-by-one stop that drops a full last batch too", ("last", "full", "batch"))
add_wrong("6.3", ch06.fix_script,
          (_train, lambda m, x, y, bs: _eval(m, x, y, bs, drop_last=True)),
          "evaluate drops the small last batch too", ("evaluat", "all", "samples", "last"))


# =================================================================================================
# Chapter 7
# =================================================================================================

def _bw(dy, x, gamma, eps, data_format="channels_last", m_batch=False, axes0=False, reshape=True,
        use_x=False, no_eps=False, no_mean_terms=False):
    first = data_format == "channels_first"
    axes = [0] if axes0 else ([0, 2, 3] if first else [0, 1, 2])
    shape = [1, -1, 1, 1] if first and reshape else [-1]
    mean, var = tf.nn.moments(x, axes=axes, keepdims=True)
    s = tf.math.rsqrt(var + (0.0 if no_eps else eps))
    x_hat = (x - mean) * s
    m = tf.cast(tf.shape(x)[0] if m_batch else tf.size(x) // tf.size(mean), x.dtype)
    dbeta = tf.reduce_sum(dy, axes, keepdims=True)
    dgamma = tf.reduce_sum(dy * (x if use_x else x_hat), axes, keepdims=True)
    g = tf.reshape(gamma, shape)
    if no_mean_terms:
        dx = g * s * dy
    else:
        dx = g * s / m * (m * dy - dbeta - x_hat * dgamma)
    return dx, tf.reshape(dgamma, [-1]), tf.reshape(dbeta, [-1])


@right("7.1", ch07.backward_images, "the mean form: gamma * s * (dy - mean(dy) - x_hat mean(dy x_hat))")
def _bw_mean_form(dy, x, gamma, eps, data_format="channels_last"):
    axes = [0, 2, 3] if data_format == "channels_first" else [0, 1, 2]
    g = tf.reshape(gamma, [1, -1, 1, 1]) if data_format == "channels_first" else gamma
    mean, var = tf.nn.moments(x, axes, keepdims=True)
    s = 1 / tf.sqrt(var + eps)
    x_hat = (x - mean) * s
    dx = g * s * (dy - tf.reduce_mean(dy, axes, keepdims=True)
                  - x_hat * tf.reduce_mean(dy * x_hat, axes, keepdims=True))
    return dx, tf.reduce_sum(dy * x_hat, axes), tf.reduce_sum(dy, axes)


@right("7.1", ch07.backward_images, "NCHW transposed to NHWC, then the NHWC formula")
def _bw_transpose(dy, x, gamma, eps, data_format="channels_last"):
    if data_format == "channels_first":
        t = [0, 2, 3, 1]
        dx, dg, db = _bw(tf.transpose(dy, t), tf.transpose(x, t), gamma, eps)
        return tf.transpose(dx, [0, 3, 1, 2]), dg, db
    return _bw(dy, x, gamma, eps)


add_wrong("7.1", ch07.backward_images, lambda *a, **k: _bw(*a, **k, m_batch=True),
          "m = N, the batch size, not N * H * W", ("m", "values", "positions", "n * h * w", "h * w"))
add_wrong("7.1", ch07.backward_images, lambda *a, **k: _bw(*a, **k, axes0=True),
          "sums over the batch axis only", ("axes", "axis", "sum", "pixel", "position"))
add_wrong("7.1", ch07.backward_images, lambda *a, **k: _bw(*a, **k, reshape=False),
          "gamma not reshaped for NCHW", ("channels_first", "nchw", "reshape", "line up"))
add_wrong("7.1", ch07.backward_images, lambda *a, **k: _bw(*a, **k, use_x=True),
          "dgamma = sum(dy * x), not dy * x_hat", ("x_hat", "normalis", "x̂"))
add_wrong("7.1", ch07.backward_images, lambda *a, **k: _bw(*a, **k, no_eps=True),
          "epsilon forgotten", EPS)
add_wrong("7.1", ch07.backward_images, lambda *a, **k: _bw(*a, **k, no_mean_terms=True),
          "dx = gamma * s * dy: the statistics' terms forgotten", ("mean", "term", "statistics"))


@wrong("7.1", ch07.backward_images, "calls the book's bn_backward", ("book", "yourself"))
def _bw_book(dy, x, gamma, eps, data_format="channels_last"):
    from bnbook.lessons import backward_pass
    if data_format == "channels_first":
        t = [0, 2, 3, 1]
        out = backward_pass.bn_backward(tf.transpose(dy, t), tf.transpose(x, t), gamma, eps,
                                        axes=(0, 1, 2))
        return (tf.transpose(out[0], [0, 3, 1, 2]),) + tuple(out[1:])
    return backward_pass.bn_backward(dy, x, gamma, eps, axes=(0, 1, 2))


def _make_dense(eps, custom=True, dw="right", mean_terms=True, ddof=0, swap=False, three=False):
    def forward(x, w, gamma, beta):
        z = x @ w
        mean, var = tf.nn.moments(z, axes=[0])
        if ddof:
            n = tf.cast(tf.shape(z)[0], z.dtype)
            var = var * n / (n - 1)
        s = tf.math.rsqrt(var + eps)
        z_hat = (z - mean) * s

        def backward(dy):
            m = tf.cast(tf.shape(z)[0], z.dtype)
            dbeta = tf.reduce_sum(dy, 0)
            dgamma = tf.reduce_sum(dy * z_hat, 0)
            dz = gamma * s / m * (m * dy - dbeta - z_hat * dgamma) if mean_terms else gamma * s * dy
            dx = dz @ tf.transpose(w)
            dwv = tf.transpose(x) @ dz if dw == "right" else tf.transpose(tf.transpose(dz) @ x)
            if dw == "wrong":
                dwv = tf.reshape(tf.transpose(dz) @ x, tf.shape(w))
            if three:
                return dx, dwv, dgamma
            return (dx, dwv, dbeta, dgamma) if swap else (dx, dwv, dgamma, dbeta)

        return gamma * z_hat + beta, backward

    if custom:
        return tf.custom_gradient(forward)
    return lambda *a: forward(*a)[0]


@right("7.2", ch07.dense_bn_op, "mean form of dz, matmul with transpose flags")
def _make_dense_right(eps):
    @tf.custom_gradient
    def op(x, w, gamma, beta):
        z = tf.matmul(x, w)
        mu = tf.reduce_mean(z, 0)
        var = tf.reduce_mean((z - mu) ** 2, 0)
        inv = 1.0 / tf.sqrt(var + eps)
        zh = (z - mu) * inv

        def grad(dy):
            dz = gamma * inv * (dy - tf.reduce_mean(dy, 0) - zh * tf.reduce_mean(dy * zh, 0))
            return (tf.matmul(dz, w, transpose_b=True), tf.matmul(x, dz, transpose_a=True),
                    tf.reduce_sum(dy * zh, 0), tf.reduce_sum(dy, 0))

        return gamma * zh + beta, grad

    return op


add_right("7.2", ch07.dense_bn_op, lambda eps: _make_dense(eps, dw="transposed"),
          "dw as the transpose of dz^T x")
add_wrong("7.2", ch07.dense_bn_op, lambda eps: _make_dense(eps, custom=False),
          "no @tf.custom_gradient (autograd does the work)", ("custom_gradient", "custom"))
add_wrong("7.2", ch07.dense_bn_op, lambda eps: _make_dense(eps, dw="wrong"),
          "dw = dz^T x reshaped, not x^T dz", ("dw", "transpose", "x^t", "shape"))
add_wrong("7.2", ch07.dense_bn_op, lambda eps: _make_dense(eps, mean_terms=False),
          "dz = gamma * s * dy: the statistics treated as constants", ("mean", "statistics",
                                                                       "constant", "term"))
add_wrong("7.2", ch07.dense_bn_op, lambda eps: _make_dense(eps, ddof=1),
          "unbiased variance in the forward pass", BIASED)
add_wrong("7.2", ch07.dense_bn_op, lambda eps: _make_dense(eps, swap=True),
          "dgamma and dbeta returned in the wrong order", ("order", "swap"))
add_wrong("7.2", ch07.dense_bn_op, lambda eps: _make_dense(eps, three=True),
          "backward returns three gradients, dbeta forgotten", ("four", "gradients", "inputs",
                                                                 "three"))


def _numgrad(f, x, h, scheme="centred", denom=2.0, copy=True, restore=True, dtype=np.float64):
    x = np.array(x, dtype=dtype) if copy else x
    g = np.zeros(x.shape, np.float64)
    for i in np.ndindex(x.shape):
        keep = x[i]
        x[i] = keep + h
        up = f(x)
        if scheme == "forward":
            x[i] = keep
            down = f(x)
        else:
            x[i] = keep - h
            down = f(x)
        if restore:
            x[i] = keep
        g[i] = (up - down) / (denom * h if scheme == "centred" else h)
    return g


@right("7.3", ch07.numerical_gradient, "flat copy, basis vector e_i, reshape at the end")
def _numgrad_flat(f, x, h):
    flat = np.asarray(x, np.float64).ravel()
    out = np.empty_like(flat)
    for i in range(flat.size):
        e = np.zeros_like(flat)
        e[i] = h
        out[i] = (f((flat + e).reshape(x.shape)) - f((flat - e).reshape(x.shape))) / (2 * h)
    return out.reshape(x.shape)


add_right("7.3", ch07.numerical_gradient, lambda f, x, h: _numgrad(f, x, h),
          "np.ndindex on a copy, entries put back")
add_wrong("7.3", ch07.numerical_gradient, lambda f, x, h: _numgrad(f, x, h, scheme="forward"),
          "forward differences", ("forward", "centred", "centered"))
add_wrong("7.3", ch07.numerical_gradient, lambda f, x, h: _numgrad(f, x, h, denom=1.0),
          "divides by h, not 2h", ("2h", "2 * h", "twice", "half"))
add_wrong("7.3", ch07.numerical_gradient,
          lambda f, x, h: _numgrad(f, x, h, copy=False, restore=False),
          "works on the caller's x and never puts entries back", ("changed", "put", "back",
                                                                  "caller", "copy"))
add_wrong("7.3", ch07.numerical_gradient,
          lambda f, x, h: np.full(x.shape, (f(x + h) - f(x - h)) / (2 * h)),
          "moves every entry at once", ("one entry", "each entry", "every entry", "all"))
add_wrong("7.3", ch07.numerical_gradient, lambda f, x, h: _numgrad(f, x, h, dtype=np.float32),
          "works on a float32 copy", ("float64", "float32", "precision"))


@wrong("7.3", ch07.numerical_gradient, "calls the book's numerical_gradient", ("book", "yourself"))
def _numgrad_book(f, x, h):
    from bnbook.lessons import backward_pass
    return backward_pass.numerical_gradient(f, x, h)

# =================================================================================================
# Chapter 8
# =================================================================================================

def _gn(x, gamma, beta, groups, eps, interleave=False, axes=(1, 2, 4), eps_used=True):
    n, h, w, c = x.shape
    if interleave:
        g = tf.transpose(tf.reshape(x, [-1, h, w, c // groups, groups]), [0, 1, 2, 4, 3])
    else:
        g = tf.reshape(x, [-1, h, w, groups, c // groups])
    mean, var = tf.nn.moments(g, axes=list(axes), keepdims=True)
    xh = (g - mean) / tf.sqrt(var + (eps if eps_used else 0.0))
    if interleave:
        xh = tf.transpose(xh, [0, 1, 2, 4, 3])
    return gamma * tf.reshape(xh, tf.shape(x)) + beta


@right("8.1", ch08.group_norm, "(N, H*W, G, C/G) layout, moments over axes 1 and 3")
def _gn_flat(x, gamma, beta, groups, eps):
    shape = tf.shape(x)
    g = tf.reshape(x, [shape[0], -1, groups, x.shape[-1] // groups])
    mean, var = tf.nn.moments(g, axes=[1, 3], keepdims=True)
    return tf.reshape((g - mean) * tf.math.rsqrt(var + eps), shape) * gamma + beta


add_right("8.1", ch08.group_norm,
          lambda x, g, b, groups, eps: _gn(x, g, b, groups, eps, axes=(-4, -3, -1)),
          "the solution's layout with negative axes")
add_wrong("8.1", ch08.group_norm, lambda *a: _gn(*a, interleave=True),
          "groups interleaved (channel k goes to group k % G)", ("neighbo", "interleav", "order",
                                                                "consecutive", "group"))
add_wrong("8.1", ch08.group_norm, lambda *a: _gn(*a, axes=(1, 2, 3, 4)),
          "one mean over all channels (layer norm)", ("group", "layer norm", "all channels"))
add_wrong("8.1", ch08.group_norm, lambda *a: _gn(*a, axes=(0, 1, 2, 4)),
          "statistics shared across the batch", ("batch", "example"))
add_wrong("8.1", ch08.group_norm, lambda *a: _gn(*a, axes=(1, 2)),
          "statistics per channel (instance norm)", ("channel", "group", "instance"))
add_wrong("8.1", ch08.group_norm, lambda *a: _gn(*a, eps_used=False), "epsilon forgotten", EPS)


@wrong("8.1", ch08.group_norm, "uses keras.layers.GroupNormalization, which is forbidden",
       ("keras", "layer", "yourself", "forbid"))
def _gn_keras(x, gamma, beta, groups, eps):
    layer = L.GroupNormalization(groups=groups, epsilon=eps)
    layer.build(x.shape)
    layer.set_weights([np.asarray(gamma), np.asarray(beta)])
    return layer(x)


def _ln(x, gamma, beta, axes, eps, normalise_neg=True, reshape=True, extra=(), eps_out=False,
        ddof=0):
    rank = len(x.shape)
    ax = [a % rank for a in axes] if normalise_neg else list(axes)
    mean, var = tf.nn.moments(x, axes=list(extra) + ax, keepdims=True)
    if ddof:
        n = tf.cast(tf.size(x) // tf.size(mean), tf.float32)
        var = var * n / (n - 1)
    xh = (x - mean) / (tf.sqrt(var) + eps if eps_out else tf.sqrt(var + eps))
    if not reshape:
        return gamma * xh + beta
    shape = [x.shape[i] if i in ax else 1 for i in range(rank)]
    return tf.reshape(gamma, shape) * xh + tf.reshape(beta, shape)


@right("8.2", ch08.layer_norm, "expand_dims on gamma for each axis that is not normalised")
def _ln_expand(x, gamma, beta, axes, eps):
    rank = len(x.shape)
    ax = sorted(a % rank for a in axes)
    mean, var = tf.nn.moments(x, ax, keepdims=True)
    g, b = gamma, beta
    for i in range(rank):
        if i not in ax:
            g, b = tf.expand_dims(g, i), tf.expand_dims(b, i)
    return g * (x - mean) * tf.math.rsqrt(var + eps) + b


add_right("8.2", ch08.layer_norm, lambda *a: _ln(*a), "the solution's reshape, written as a helper")
add_wrong("8.2", ch08.layer_norm, lambda *a: _ln(*a, normalise_neg=False),
          "negative axes not turned positive", ("negative",))
add_wrong("8.2", ch08.layer_norm, lambda *a: _ln(*a, reshape=False),
          "gamma not given size-1 axes (broadcasts from the right)", ("broadcast", "line up",
                                                                       "reshape", "size-1"))
add_wrong("8.2", ch08.layer_norm, lambda *a: _ln(*a, extra=(0,)),
          "the batch axis normalised too", ("batch", "example", "axis 0"))
add_wrong("8.2", ch08.layer_norm, lambda *a: _ln(*a, eps_out=True),
          "epsilon added to the standard deviation", EPS)
add_wrong("8.2", ch08.layer_norm, lambda *a: _ln(*a, ddof=1), "unbiased variance", BIASED)


def _renorm(x, mm, ms, eps, step, sch, from_zero=False, clip=True, eps_used=True, invert=False,
            sign=1, axes0=False, rmin_zero=False, ddof=0):
    def done(end):
        start = 0 if from_zero else sch["warmup"]
        return float(np.clip((step - start) / (end - start), 0, 1))

    rmax = 1 + (sch["rmax"] - 1) * done(sch["rmax_step"])
    dmax = sch["dmax"] * done(sch["dmax_step"])
    axes = 0 if axes0 else tuple(range(x.ndim - 1))
    std = np.sqrt(x.var(axis=axes, ddof=ddof) + (eps if eps_used else 0))
    r = ms / std if invert else std / ms
    d = sign * (x.mean(axis=axes) - mm) / ms
    if clip:
        r = np.clip(r, 0 if rmin_zero else 1 / rmax, rmax)
        d = np.clip(d, -dmax, dmax)
    return r, d


@right("8.3", ch08.renorm_r_d, "limits with np.interp")
def _renorm_interp(x, mm, ms, eps, step, sch):
    w = sch["warmup"]
    rmax = np.interp(step, [w, sch["rmax_step"]], [1.0, sch["rmax"]])
    dmax = np.interp(step, [w, sch["dmax_step"]], [0.0, sch["dmax"]])
    flat = x.reshape(-1, x.shape[-1])
    r = np.minimum(np.maximum(np.sqrt(flat.var(0) + eps) / ms, 1 / rmax), rmax)
    d = np.minimum(np.maximum((flat.mean(0) - mm) / ms, -dmax), dmax)
    return r.astype(np.float32), d.astype(np.float32)


add_right("8.3", ch08.renorm_r_d, lambda *a: _renorm(*a), "the ramp fraction as a helper")
add_wrong("8.3", ch08.renorm_r_d, lambda *a: _renorm(*a, from_zero=True),
          "ramps start at step 0, not at the end of the warm-up", ("warm",))
add_wrong("8.3", ch08.renorm_r_d, lambda *a: _renorm(*a, clip=False), "no clipping",
          ("clip", "limit"))
add_wrong("8.3", ch08.renorm_r_d, lambda *a: _renorm(*a, eps_used=False),
          "sigma_B without epsilon", EPS)
add_wrong("8.3", ch08.renorm_r_d, lambda *a: _renorm(*a, invert=True),
          "r = sigma / sigma_B, upside down", ("invert", "upside", "sigma_b / sigma", "inverse"))
add_wrong("8.3", ch08.renorm_r_d, lambda *a: _renorm(*a, sign=-1), "d with the wrong sign",
          ("sign",))
add_wrong("8.3", ch08.renorm_r_d, lambda *a: _renorm(*a, axes0=True),
          "statistics over axis 0 only for sequences and images", ("axes", "axis", "channel"))
add_wrong("8.3", ch08.renorm_r_d, lambda *a: _renorm(*a, rmin_zero=True),
          "r clipped to [0, rmax]: no lower limit", ("1 / rmax", "rmin", "lower"))


# =================================================================================================
# Chapter 9
# =================================================================================================

def _merge(triples, skip_empty=True, between=True, weighted=True, divide=True):
    if skip_empty:
        triples = [t for t in triples if t[0] > 0]
    n, mean, m2 = triples[0]
    for nb, mb, qb in triples[1:]:
        total = n + nb
        delta = mb - mean
        mean = mean + delta * (nb / total if weighted else 0.5)
        extra = delta * delta * (n * nb / total if divide else n * nb)
        m2 = m2 + qb + (extra if between else 0)
        n = total
    return n, mean, m2


@right("9.1", ch09.merge_moments, "overall mean first, then M2 around it (two-pass form)")
def _merge_two_pass(triples):
    triples = [t for t in triples if t[0]]
    n = sum(t[0] for t in triples)
    mean = sum(np.float32(c / n) * m for c, m, _ in triples)
    m2 = sum(q + np.float32(c) * (m - mean) ** 2 for c, m, q in triples)
    return n, mean.astype(np.float32), m2.astype(np.float32)


add_right("9.1", ch09.merge_moments, lambda t: _merge(t), "Chan's pairwise merge, written again")
add_wrong("9.1", ch09.merge_moments, lambda t: _merge(t, between=False),
          "M2 = sum of the M2s (the means' difference forgotten)", ("differ", "between", "spread",
                                                                    "means"))
add_wrong("9.1", ch09.merge_moments, lambda t: _merge(t, skip_empty=False),
          "an empty replica's NaNs not skipped", ("empty", "nan", "no examples", "count 0"))
add_wrong("9.1", ch09.merge_moments, lambda t: _merge(t, weighted=False),
          "means averaged without the counts", ("count", "weigh", "size"))
add_wrong("9.1", ch09.merge_moments, lambda t: _merge(t, divide=False),
          "delta^2 * n_a * n_b not divided by the total", ("total", "divide", "n_a"))


@wrong("9.1", ch09.merge_moments, "textbook sums of squares in float32", ("precision", "float32",
                                                                          "sum of squares",
                                                                          "cancel", "x^2"))
def _merge_squares(triples):
    triples = [t for t in triples if t[0]]
    n = sum(t[0] for t in triples)
    s = sum(np.float32(c) * m for c, m, _ in triples)
    q = sum(m2 + np.float32(c) * m * m for c, m, m2 in triples)
    return n, s / np.float32(n), q - s * s / np.float32(n)


add_wrong("9.1", ch09.merge_moments,
          lambda t: (lambda r: (r[0], r[1], r[2] / r[0]))(_merge(t)),
          "returns the variance instead of M2", ("m2", "variance", "squared deviations"))
add_wrong("9.1", ch09.merge_moments,
          lambda t: (lambda r: (r[0], r[1].astype(np.float64), r[2].astype(np.float64)))(_merge(t)),
          "returns float64 arrays", ("float32", "dtype", "float64"))


def _fold_dense(g, b, m, v, eps, k, bias, row=True, shift_kernel=True, eps_used=True, sqrt=True,
                scale_mean=True):
    var = v + (eps if eps_used else 0)
    s = g / (np.sqrt(var) if sqrt else var)
    shift = b - (s * m if scale_mean else m)
    kernel = s[:, None] * k if row else k * s
    return kernel, bias + (shift @ k if shift_kernel else shift)


@right("9.2", ch09.fold_into_next_dense, "np.diag(s) @ kernel and kernel.T @ shift")
def _fold_dense_diag(g, b, m, v, eps, k, bias):
    s = g / np.sqrt(v + eps)
    return np.diag(s) @ k, bias + k.T @ (b - s * m)


add_right("9.2", ch09.fold_into_next_dense,
          lambda g, b, m, v, eps, k, bias: (np.einsum("f,fu->fu", g / np.sqrt(v + eps), k),
                                            bias + np.einsum("f,fu->u", b - g * m / np.sqrt(v + eps),
                                                             k)),
          "einsum")
add_wrong("9.2", ch09.fold_into_next_dense, lambda *a: _fold_dense(*a, row=False),
          "s multiplies the kernel's columns", ("row", "axis", "input feature", "column"))
add_wrong("9.2", ch09.fold_into_next_dense, lambda *a: _fold_dense(*a, shift_kernel=False),
          "BN's shift added to the bias without the kernel", ("kernel", "shift"))
add_wrong("9.2", ch09.fold_into_next_dense, lambda *a: _fold_dense(*a, eps_used=False),
          "epsilon forgotten", EPS)
add_wrong("9.2", ch09.fold_into_next_dense, lambda *a: _fold_dense(*a, sqrt=False),
          "divides by the variance, not the standard deviation", ("sqrt", "square root",
                                                                  "standard dev"))
add_wrong("9.2", ch09.fold_into_next_dense, lambda *a: _fold_dense(*a, scale_mean=False),
          "shift = beta - mean (the mean not scaled)", ("mean", "scale"))


@wrong("9.2", ch09.fold_into_next_dense, "calls the book's bnbook.fold_bn", ("book", "yourself"))
def _fold_dense_book(g, b, m, v, eps, k, bias):
    from bnbook import folding
    folding.fold_bn(k, bias, g, b, m, v, eps)
    return _fold_dense(g, b, m, v, eps, k, bias)


def _fold_conv(k, bias, g, b, m, v, eps, depthwise=False, dw="right", none_ok=True,
               keep_bias=True, eps_used=True, axis="out"):
    s = g / np.sqrt(v + (eps if eps_used else 0))
    if bias is None:
        if not none_ok:
            bias = bias + 0
        bias = np.zeros_like(m)
    if depthwise:
        per = {"right": s.reshape(k.shape[2], k.shape[3]),
               "transposed": s.reshape(k.shape[3], k.shape[2]).T,
               "flat": s}[dw]
    else:
        per = s if axis == "out" else s[:, None]
    new_bias = (bias - m) * s + b if keep_bias else b - m * s
    return (k * per).astype(np.float32), new_bias.astype(np.float32)


@right("9.3", ch09.fold_into_conv, "loop over output channels")
def _fold_conv_loop(k, bias, g, b, m, v, eps, depthwise=False):
    k = k.copy()
    bias = np.zeros_like(m) if bias is None else bias
    s = g / np.sqrt(v + eps)
    for o in range(len(s)):
        if depthwise:
            c, j = divmod(o, k.shape[3])
            k[:, :, c, j] *= s[o]
        else:
            k[..., o] *= s[o]
    return k, (b + (bias - m) * s).astype(np.float32)


add_right("9.3", ch09.fold_into_conv, lambda *a, **kw: _fold_conv(*a, **kw),
          "reshape (C, M) of the scale for depthwise")
add_wrong("9.3", ch09.fold_into_conv, lambda *a, depthwise=False: _fold_conv(
    *a, depthwise=depthwise, dw="flat"),
    "depthwise: the scale broadcast along the last axis as for Conv2D",
    ("depthwise", "multiplier", "axes", "order"))
add_wrong("9.3", ch09.fold_into_conv, lambda *a, depthwise=False: _fold_conv(
    *a, depthwise=depthwise, dw="transposed"),
    "depthwise: the (multiplier, channels) order", ("order", "c * depth", "depthwise", "multiplier"))
add_wrong("9.3", ch09.fold_into_conv, lambda *a, depthwise=False: _fold_conv(
    *a, depthwise=depthwise, none_ok=False),
    "bias=None not handled", ("none", "use_bias", "no bias"))
add_wrong("9.3", ch09.fold_into_conv, lambda *a, depthwise=False: _fold_conv(
    *a, depthwise=depthwise, keep_bias=False),
    "the convolution's own bias dropped", ("bias",))
add_wrong("9.3", ch09.fold_into_conv, lambda *a, depthwise=False: _fold_conv(
    *a, depthwise=depthwise, eps_used=False), "epsilon forgotten", EPS)


def _from_torch(state, eps, momentum, channels_first, mom=None, axis=None, epsilon=None,
                order=("weight", "bias", "running_mean", "running_var"), build=True):
    c = len(state["weight"])
    ax = (1 if channels_first else -1) if axis is None else axis
    layer = L.BatchNormalization(axis=ax, epsilon=eps if epsilon is None else epsilon,
                                 momentum=1 - momentum if mom is None else mom)
    if not build:
        return layer
    layer.build((None, c, None, None) if ax == 1 else (None, None, None, c))
    layer.set_weights([np.asarray(state[k], np.float32) for k in order])
    return layer


@right("9.4", ch09.bn_from_pytorch, "initializers from the state, built by a call")
def _from_torch_init(state, eps, momentum, channels_first):
    c = len(state["weight"])
    const = keras.initializers.Constant
    layer = L.BatchNormalization(axis=1 if channels_first else 3, epsilon=eps,
                                 momentum=1.0 - momentum,
                                 gamma_initializer=const(state["weight"]),
                                 beta_initializer=const(state["bias"]),
                                 moving_mean_initializer=const(state["running_mean"]),
                                 moving_variance_initializer=const(state["running_var"]))
    layer(np.zeros((1, c, 2, 2) if channels_first else (1, 2, 2, c), np.float32))
    return layer


@right("9.4", ch09.bn_from_pytorch, "assign to each weight after build")
def _from_torch_assign(state, eps, momentum, channels_first):
    layer = _from_torch(state, eps, momentum, channels_first)
    layer.gamma.assign(state["weight"])
    layer.moving_variance.assign(state["running_var"])
    return layer


add_wrong("9.4", ch09.bn_from_pytorch, lambda s, e, m, cf: _from_torch(s, e, m, cf, mom=m),
          "PyTorch's momentum passed as Keras' momentum", ("momentum",))
add_wrong("9.4", ch09.bn_from_pytorch, lambda s, e, m, cf: _from_torch(s, e, m, cf, axis=-1),
          "axis -1 for channels-first too", ("axis", "channels_first", "channels-first",
                                              "channels first"))
add_wrong("9.4", ch09.bn_from_pytorch, lambda s, e, m, cf: _from_torch(s, e, m, cf, epsilon=1e-3),
          "Keras' default epsilon", EPS)
add_wrong("9.4", ch09.bn_from_pytorch, lambda s, e, m, cf: _from_torch(
    s, e, m, cf, order=("weight", "bias", "running_var", "running_mean")),
    "moving mean and variance swapped in set_weights", ("order", "swap", "running_var",
                                                        "variance"))
add_wrong("9.4", ch09.bn_from_pytorch, lambda s, e, m, cf: _from_torch(s, e, m, cf, build=False),
          "layer returned unbuilt, no weights set", ("build",))

# =================================================================================================
# Chapter 10
# =================================================================================================

def _mix(sm, sv, batch, prior, n_values=False, swap=False, ddof=0, axes0=False):
    axes = 0 if axes0 else tuple(range(batch.ndim - 1))
    n = batch.size // batch.shape[-1] if n_values else batch.shape[0]
    w = prior / (prior + n)
    if swap:
        w = 1 - w
    return (w * sm + (1 - w) * batch.mean(axis=axes),
            w * sv + (1 - w) * batch.var(axis=axes, ddof=ddof))


@right("10.1", ch10.mixed_statistics, "(N * source + n * batch) / (N + n), in TensorFlow")
def _mix_tf(sm, sv, batch, prior):
    axes = list(range(batch.ndim - 1))
    m, v = tf.nn.moments(tf.constant(batch), axes)
    n = float(batch.shape[0])
    return ((prior * sm + n * m.numpy()) / (prior + n)).astype(np.float32), \
        ((prior * sv + n * v.numpy()) / (prior + n)).astype(np.float32)


add_right("10.1", ch10.mixed_statistics, lambda *a: _mix(*a), "weights as a helper")
add_wrong("10.1", ch10.mixed_statistics, lambda *a: _mix(*a, n_values=True),
          "n counts every value, not the examples", ("example", "position", "value"))
add_wrong("10.1", ch10.mixed_statistics, lambda *a: _mix(*a, swap=True),
          "the two weights swapped", ("swap", "weight"))
add_wrong("10.1", ch10.mixed_statistics, lambda *a: _mix(*a, ddof=1), "unbiased variance", BIASED)
add_wrong("10.1", ch10.mixed_statistics, lambda *a: _mix(*a, axes0=True),
          "statistics over axis 0 only for feature maps", ("axes", "axis", "position"))


def _kl(batch, mm, mv, reverse=False, total=False, ddof=0, array=False, no_half=False):
    axes = tuple(range(batch.ndim - 1))
    m, v = batch.mean(axes), batch.var(axes, ddof=ddof)
    if reverse:
        m, v, mm, mv = mm, mv, m, v
    kl = 0.5 * np.log(mv / v) + (v + (m - mm) ** 2) / (2 * mv) - (0 if no_half else 0.5)
    if array:
        return kl
    return float(np.sum(kl) if total else np.mean(kl))


@right("10.2", ch10.shift_score, "0.5 * (ratio + squared distance - 1 - log ratio)")
def _kl_ratio(batch, mm, mv):
    flat = batch.reshape(-1, batch.shape[-1]).astype(np.float64)
    ratio = flat.var(0) / mv
    return float(np.mean(0.5 * (ratio + (flat.mean(0) - mm) ** 2 / mv - 1 - np.log(ratio))))


add_right("10.2", ch10.shift_score, lambda *a: _kl(*a), "log of the standard deviations' ratio")
add_wrong("10.2", ch10.shift_score, lambda *a: _kl(*a, reverse=True),
          "KL the other way round (divides by the batch's variance)", ("direction", "revers",
                                                                        "other way", "divide"))
add_wrong("10.2", ch10.shift_score, lambda *a: _kl(*a, total=True), "sum over channels",
          ("mean", "average", "sum"))
add_wrong("10.2", ch10.shift_score, lambda *a: _kl(*a, ddof=1), "unbiased variance", BIASED)
add_wrong("10.2", ch10.shift_score, lambda *a: _kl(*a, array=True),
          "returns the per-channel array", ("one number", "scalar", "shape"))
add_wrong("10.2", ch10.shift_score, lambda *a: _kl(*a, no_half=True),
          "the - 1/2 forgotten: not 0 for equal moments", ("1/2", "zero", "0.5", "constant"))


def _adapt(layer, batches, how="pooled", ddof=0, axes0=False):
    flats = [np.asarray(b, np.float64).reshape(-1, b.shape[-1]) if not axes0
             else np.asarray(b, np.float64).mean(axis=tuple(range(1, b.ndim - 1)))
             for b in batches]
    if how == "last":
        flats = flats[-1:]
    if how == "average":
        mean = np.mean([f.mean(0) for f in flats], 0)
        var = np.mean([f.var(0) for f in flats], 0)
    else:
        z = np.concatenate(flats)
        mean, var = z.mean(0), z.var(0, ddof=ddof)
    layer.moving_mean.assign(mean.astype(np.float32))
    layer.moving_variance.assign(var.astype(np.float32))


@right("10.3", ch10.adapt_bn_layer, "Chan's merge per batch, nothing kept")
def _adapt_chan(layer, batches):
    n, mean, m2 = 0, 0.0, 0.0
    for b in batches:
        z = np.asarray(b, np.float64).reshape(-1, b.shape[-1])
        nb, mb = len(z), z.mean(0)
        d = mb - mean
        mean = mean + d * nb / (n + nb)
        m2 = m2 + ((z - mb) ** 2).sum(0) + d ** 2 * n * nb / (n + nb)
        n += nb
    layer.moving_mean.assign(np.float32(mean))
    layer.moving_variance.assign(np.float32(m2 / n))


add_right("10.3", ch10.adapt_bn_layer, lambda la, b: _adapt(la, b), "concatenate then np.var")
add_wrong("10.3", ch10.adapt_bn_layer, lambda la, b: _adapt(la, b, how="average"),
          "mean of the batches' statistics", ("weigh", "size", "average", "spread"))
add_wrong("10.3", ch10.adapt_bn_layer, lambda la, b: _adapt(la, b, how="last"),
          "only the last batch", ("all", "every", "stream", "last"))
add_wrong("10.3", ch10.adapt_bn_layer, lambda la, b: _adapt(la, b, ddof=1), "unbiased variance",
          BIASED)
add_wrong("10.3", ch10.adapt_bn_layer, lambda la, b: _adapt(la, b, axes0=True),
          "positions averaged away first: variance over examples only", ("position", "pixel",
                                                                          "axes", "values"))


@wrong("10.3", ch10.adapt_bn_layer, "momentum-style training calls", ("momentum", "moving average",
                                                                     "exact", "training"))
def _adapt_training(layer, batches):
    for b in batches:
        layer(b, training=True)


def _tent(model, x, lr, params="bn", restore=True, training=True, after=False, nested=True,
          sign=-1):
    layers = bnbook.bn_layers(model) if nested else [la for la in model.layers
                                                     if isinstance(la, L.BatchNormalization)]
    if params == "bn":
        ps = [v for la in layers for v in (la.gamma, la.beta) if v is not None]
    else:
        ps = list(model.trainable_variables)
    stored = [(v, v.numpy()) for la in bnbook.bn_layers(model)
              for v in (la.moving_mean, la.moving_variance)]
    with tf.GradientTape() as tape:
        p = tf.nn.softmax(model(x, training=training))
        h = tf.reduce_mean(-tf.reduce_sum(p * tf.math.log(p + 1e-12), 1))
    for v, g in zip(ps, tape.gradient(h, ps)):
        if g is not None:
            v.assign_add(sign * lr * g)
    if restore:
        for v, value in stored:
            v.assign(value)
    if after:
        p = tf.nn.softmax(model(x, training=False))
        h = tf.reduce_mean(-tf.reduce_sum(p * tf.math.log(p + 1e-12), 1))
    return float(h)


@right("10.4", ch10.tent_step, "log_softmax entropy, own recursive search for BN layers")
def _tent_logsoftmax(model, x, learning_rate):
    layers = _bns(model)
    ps = [v for la in layers for v in (la.gamma, la.beta) if v is not None]
    saved = [(v, tf.identity(v)) for la in layers for v in (la.moving_mean, la.moving_variance)]
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        h = -tf.reduce_mean(tf.reduce_sum(tf.nn.softmax(logits) * tf.nn.log_softmax(logits), 1))
    for v, g in zip(ps, tape.gradient(h, ps)):
        v.assign(v - learning_rate * g)
    for v, value in saved:
        v.assign(value)
    return float(h.numpy())


add_right("10.4", ch10.tent_step, lambda *a: _tent(*a), "the solution's steps in a helper")
add_wrong("10.4", ch10.tent_step, lambda *a: _tent(*a, params="all"),
          "steps every trainable variable", ("only", "gamma", "beta", "every"))
add_wrong("10.4", ch10.tent_step, lambda *a: _tent(*a, restore=False),
          "moving statistics not put back", ("moving",))
add_wrong("10.4", ch10.tent_step, lambda *a: _tent(*a, training=False),
          "forward pass in inference mode", ("training", "batch statistics", "batch's"))
add_wrong("10.4", ch10.tent_step, lambda *a: _tent(*a, nested=False),
          "top-level BN layers only", ("nested",))
add_wrong("10.4", ch10.tent_step, lambda *a: _tent(*a, sign=1),
          "gradient ascent", ("sign", "ascent", "minimi", "increase"))


def _prior_pass(model, x, prior, one_pass=False, n_values=False, skip_frozen=False, swap=False):
    layers = bnbook.bn_layers(model)
    if skip_frozen:
        layers = [la for la in layers if la.trainable]

    def inputs_of(targets):
        seen = {}
        for t in targets:
            own = t.call

            def spy(inputs, *args, _t=t, _own=own, training=None, **kwargs):
                seen.setdefault(id(_t), np.asarray(inputs, np.float64))
                return _own(inputs, *args, training=False, **kwargs)

            t.call = spy
        try:
            model(x, training=False)
        finally:
            for t in targets:
                del t.call
        return seen

    recorded = inputs_of(layers) if one_pass else {}
    for la in layers:
        h = recorded[id(la)] if one_pass else inputs_of([la])[id(la)]
        n = h.size // h.shape[-1] if n_values else len(x)
        w = prior / (prior + n)
        if swap:
            w = 1 - w
        axes = tuple(range(h.ndim - 1))
        la.moving_mean.assign(w * la.moving_mean.numpy() + (1 - w) * h.mean(axes))
        la.moving_variance.assign(w * la.moving_variance.numpy() + (1 - w) * h.var(axes))


add_right("10.5", ch10.adapt_with_prior, lambda *a: _prior_pass(*a),
          "one spy per pass, the weights from numpy values")


@right("10.5", ch10.adapt_with_prior, "(N * stored + n * batch) / (N + n), own layer search")
def _prior_weighted(model, x, prior):
    n = len(x)
    for la in _bns(model):
        h = []
        own = la.call

        def spy(inputs, *args, _h=h, _own=own, training=None, **kwargs):
            _h.append(np.asarray(inputs, np.float64))
            return _own(inputs, *args, training=False, **kwargs)

        la.call = spy
        try:
            model(x, training=False)
        finally:
            del la.call
        z = h[0].reshape(-1, h[0].shape[-1])
        la.moving_mean.assign(((prior * la.moving_mean.numpy() + n * z.mean(0)) / (prior + n))
                              .astype(np.float32))
        la.moving_variance.assign(((prior * la.moving_variance.numpy() + n * z.var(0))
                                   / (prior + n)).astype(np.float32))


add_wrong("10.5", ch10.adapt_with_prior, lambda *a: _prior_pass(*a, one_pass=True),
          "every layer's input recorded in one pass, before any is adapted",
          ("order", "before", "adapted", "one at a time", "already"))
add_wrong("10.5", ch10.adapt_with_prior, lambda *a: _prior_pass(*a, n_values=True),
          "n counts every value", ("example", "len(x)", "value", "position"))
add_wrong("10.5", ch10.adapt_with_prior, lambda *a: _prior_pass(*a, skip_frozen=True),
          "frozen BN layers skipped", ("frozen", "trainable"))
add_wrong("10.5", ch10.adapt_with_prior, lambda *a: _prior_pass(*a, swap=True),
          "weights swapped", ("swap", "weight"))


# =================================================================================================
# Chapter 11
# =================================================================================================

def _xent(model, x, y, training=True):
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=y, logits=model(x, training=training)))


def _ics(model, x, y, k, lr, restore=True, upto=None, training=True, reuse=False, swap=False,
         squared=False):
    kernel = model.layers[k].kernel
    lower = [v for la in model.layers[:k if upto is None else upto] for v in la.trainable_variables]

    def grads():
        with tf.GradientTape() as tape:
            loss = _xent(model, x, y, training)
        return tape.gradient(loss, [kernel] + lower)

    first = grads()
    saved = [v.numpy() for v in lower]
    for v, g in zip(lower, first[1:]):
        v.assign_sub(lr * g)
    a = tf.reshape(first[0], [-1])
    b = a if reuse else tf.reshape(grads()[0], [-1])
    if restore:
        for v, s in zip(lower, saved):
            v.assign(s)
    dist = float(tf.reduce_sum((a - b) ** 2) if squared else tf.norm(a - b))
    cos = float(tf.reduce_sum(a * b) / (tf.norm(a) * tf.norm(b)))
    return (cos, dist) if swap else (dist, cos)


@right("11.1", ch11.ics_of_layer, "NumPy norms and dot product")
def _ics_numpy(model, x, y, layer_index, learning_rate):
    kernel = model.layers[layer_index].kernel
    lower = [v for la in model.layers[:layer_index] for v in la.trainable_variables]
    with tf.GradientTape() as tape:
        loss = _xent(model, x, y)
    g = tape.gradient(loss, [kernel] + lower)
    saved = [v.numpy() for v in lower]
    for v, gv in zip(lower, g[1:]):
        v.assign(v.numpy() - learning_rate * gv.numpy())
    with tf.GradientTape() as tape:
        loss = _xent(model, x, y)
    g2 = tape.gradient(loss, kernel).numpy().ravel()
    g1 = g[0].numpy().ravel()
    for v, s in zip(lower, saved):
        v.assign(s)
    return float(np.linalg.norm(g1 - g2)), float(g1 @ g2 / np.linalg.norm(g1) / np.linalg.norm(g2))


add_right("11.1", ch11.ics_of_layer, lambda *a: _ics(*a), "the solution's steps in a helper")
add_wrong("11.1", ch11.ics_of_layer, lambda *a: _ics(*a, restore=False),
          "lower weights not restored", ("restore", "leave", "weights", "changed"))
add_wrong("11.1", ch11.ics_of_layer, lambda m, x, y, k, lr: _ics(m, x, y, k, lr, upto=k + 1),
          "the layer itself moved too", ("itself", "above", "lower", "layer k"))
add_wrong("11.1", ch11.ics_of_layer, lambda *a: _ics(*a, training=False),
          "gradients in inference mode", ("training",))
add_wrong("11.1", ch11.ics_of_layer, lambda *a: _ics(*a, reuse=True),
          "G' not recomputed after the step", ("recompute", "again", "after", "zero"))
add_wrong("11.1", ch11.ics_of_layer, lambda *a: _ics(*a, swap=True),
          "returns (cosine, distance)", ("order", "swap"))
add_wrong("11.1", ch11.ics_of_layer, lambda *a: _ics(*a, squared=True),
          "squared distance", ("square", "norm"))


def _along(model, x, y, steps, cumulative=False, restore=True, mean_change=False, sign=-1,
           per_var=False, training=True):
    vs = model.trainable_variables

    def lg():
        with tf.GradientTape() as tape:
            loss = _xent(model, x, y, training)
        return float(loss), tape.gradient(loss, vs)

    saved = [v.numpy() for v in vs]
    _, g = lg()
    losses, changes = [], []
    for eta in steps:
        for v, s, gv in zip(vs, saved, g):
            if cumulative:
                v.assign_add(sign * eta * gv)
            else:
                v.assign(s + sign * eta * gv)
        loss, moved = lg()
        losses.append(loss)
        if per_var:
            changes.append(sum(float(tf.norm(a - b)) for a, b in zip(g, moved)))
        else:
            changes.append(float(tf.sqrt(sum(tf.reduce_sum((a - b) ** 2)
                                             for a, b in zip(g, moved)))))
    if restore:
        for v, s in zip(vs, saved):
            v.assign(s)
    return max(losses) - min(losses), float(np.mean(changes) if mean_change else max(changes))


@right("11.2", ch11.along_gradient, "gradients flattened into one NumPy vector")
def _along_flat(model, x, y, step_sizes):
    vs = model.trainable_variables
    saved = [v.numpy() for v in vs]

    def flat_grad():
        with tf.GradientTape() as tape:
            loss = _xent(model, x, y)
        return float(loss), np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, vs)])

    _, g0 = flat_grad()
    sizes = np.cumsum([0] + [s.size for s in saved])
    out = []
    for eta in step_sizes:
        for v, s, a, b in zip(vs, saved, sizes[:-1], sizes[1:]):
            v.assign(s - eta * g0[a:b].reshape(s.shape))
        loss, g = flat_grad()
        out.append((loss, np.linalg.norm(g0 - g)))
    for v, s in zip(vs, saved):
        v.assign(s)
    losses = [o[0] for o in out]
    return float(max(losses) - min(losses)), float(max(o[1] for o in out))


add_right("11.2", ch11.along_gradient, lambda *a: _along(*a), "the solution's steps in a helper")
add_wrong("11.2", ch11.along_gradient, lambda *a: _along(*a, cumulative=True),
          "each step taken from the previous point, not from w", ("from w", "cumul", "each step",
                                                                   "previous"))
add_wrong("11.2", ch11.along_gradient, lambda *a: _along(*a, restore=False),
          "weights not restored", ("restore", "leave", "weights", "changed"))
add_wrong("11.2", ch11.along_gradient, lambda *a: _along(*a, mean_change=True),
          "mean gradient change instead of the max", ("max", "largest"))
add_wrong("11.2", ch11.along_gradient, lambda *a: _along(*a, sign=1),
          "steps up the gradient (w + eta g)", ("sign", "minus", "descent", "up"))
add_wrong("11.2", ch11.along_gradient, lambda *a: _along(*a, per_var=True),
          "sum of per-variable norms, not one l2 norm", ("norm", "l2", "all the variables"))


def _vsr(h, k, rate, scale=True, invert=False, ddof=0, square_after=False):
    h, k = np.asarray(h, np.float64), np.asarray(k, np.float64)
    inf = (h @ k).var(0, ddof=ddof)
    mask = ((h @ k) ** 2 if square_after else (h ** 2) @ (k ** 2)).mean(0)
    noise = (rate / (1 - rate) if scale else rate) * mask
    r = inf / (inf + noise)
    return 1 / r if invert else r


@right("11.3", ch11.variance_shift_ratio, "einsum, float32 throughout")
def _vsr_einsum(h, kernel, rate):
    z = np.einsum("nd,dc->nc", h, kernel)
    noise = rate / (1 - rate) * np.einsum("nd,dc->c", h ** 2, kernel ** 2) / len(h)
    return z.var(0) / (z.var(0) + noise)


add_right("11.3", ch11.variance_shift_ratio, lambda *a: _vsr(*a), "the solution's formula")
add_wrong("11.3", ch11.variance_shift_ratio, lambda *a: _vsr(*a, scale=False),
          "mask term without 1 / (1 - p)", ("1 - p", "inverted", "scale", "1/(1-p)"))
add_wrong("11.3", ch11.variance_shift_ratio, lambda *a: _vsr(*a, invert=True),
          "training variance / inference variance", ("invert", "upside", "ratio", "training"))
add_wrong("11.3", ch11.variance_shift_ratio, lambda *a: _vsr(*a, ddof=1), "unbiased variance",
          BIASED)
add_wrong("11.3", ch11.variance_shift_ratio, lambda *a: _vsr(*a, square_after=True),
          "(h @ k)^2 instead of h^2 @ k^2", ("h**2", "h^2", "square", "mask"))
