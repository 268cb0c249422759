"""Chapter 1 checkers: each accepts the solution and right answers written another way, says "not
done yet" for the stub, and rejects plausible wrong answers (hard-coded sizes and epsilons included)
with the message meant for them. LOCATED marks a wrong answer no check can name: its message must
locate the difference instead."""

import numpy as np
import pytest
import tensorflow as tf

from bnbook.checks import ExerciseMistake
from bnbook.checks import ch01 as check

LOCATED = "matches no mistake this check knows"


def stub(*args):
    raise NotImplementedError("your code here")


def run(checker, fn, capsys):
    checker(fn)
    return capsys.readouterr().out


# ---- 1.1: batch_norm_nchw(x, gamma, beta, eps) ------------------------------------------------

def nchw(x, gamma, beta, eps):
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    return gamma.reshape(1, -1, 1, 1) * (x - mean) / np.sqrt(var + eps) + beta.reshape(1, -1, 1, 1)


def nchw_transpose(x, gamma, beta, eps):
    nhwc = x.transpose(0, 2, 3, 1)
    mean, var = nhwc.mean(axis=(0, 1, 2)), nhwc.var(axis=(0, 1, 2))
    return (gamma * (nhwc - mean) / np.sqrt(var + eps) + beta).transpose(0, 3, 1, 2)


def nchw_loop(x, gamma, beta, eps):
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        channel = x[:, c]
        out[:, c] = gamma[c] * (channel - channel.mean()) / np.sqrt(channel.var() + eps) + beta[c]
    return out


def nchw_newaxis(x, gamma, beta, eps):
    mean = x.mean(axis=(0, 2, 3))[:, None, None]
    var = ((x - mean) ** 2).mean(axis=(0, 2, 3))[:, None, None]
    return gamma[:, None, None] * (x - mean) / np.sqrt(var + eps) + beta[:, None, None]


def nchw_with(axes=(0, 2, 3), ddof=0, eps_fixed=None, form="right", align="channel"):
    def fn(x, gamma, beta, eps):
        eps = eps if eps_fixed is None else eps_fixed
        if align == "last":
            mean, var = x.mean(axis=axes), x.var(axis=axes, ddof=ddof)
            g, b = gamma, beta
        else:
            mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, ddof=ddof, keepdims=True)
            g, b = (gamma, beta) if align == "gamma_last" else \
                (gamma.reshape(1, -1, 1, 1), beta.reshape(1, -1, 1, 1))
        std = np.sqrt(var)
        x_hat = (x - mean) / np.sqrt(var + eps)
        return {
            "right": g * x_hat + b,
            "swapped": b * x_hat + g,
            "no_sqrt": g * (x - mean) / (var + eps) + b,
            "std_plus_eps": g * (x - mean) / (std + eps) + b,
            "no_scale": x_hat,
            "not_centred": g * x / np.sqrt(var + eps) + b,
            "float64": (g * x_hat + b).astype(np.float64),
            "list": (g * x_hat + b).tolist(),
            "nan": x_hat * np.nan,
            "shape": (g * x_hat + b)[0],
            "tensor": tf.constant(g * x_hat + b),
            "half_eps": g * (x - mean) / np.sqrt(var + eps / 2) + b,
        }[form]
    return fn


def nchw_hardcoded_channels(x, gamma, beta, eps):  # written for 3 channels
    return nchw(x[:, :3], gamma[:3], beta[:3], eps) if x.shape[1] >= 3 else nchw(x, gamma, beta, eps)


def nchw_reshape_not_transpose(x, gamma, beta, eps):  # reshape does not move the channel axis
    n, c, h, w = x.shape
    nhwc = x.reshape(n, h, w, c)
    mean, var = nhwc.mean(axis=(0, 1, 2)), nhwc.var(axis=(0, 1, 2))
    return (gamma * (nhwc - mean) / np.sqrt(var + eps) + beta).reshape(n, c, h, w)


RIGHT_1_1 = [nchw, nchw_transpose, nchw_loop, nchw_newaxis]
WRONG_1_1 = [
    (nchw_with(axes=(0, 1, 2)), r"Wrong axes: you normalised over axes \[0, 1, 2\], which gives the "
                                r"NHWC axes"),
    (nchw_with(axes=(0,)), r"Wrong axes: .*\[0\]"),
    (nchw_with(axes=(2, 3)), "instance normalisation"),
    (nchw_with(axes=(1, 2, 3)), "layer normalisation"),
    (nchw_with(axes=(0, 2)), r"the width axis \(3\) is missing"),
    (nchw_with(axes=None), "a single mean for the whole batch"),
    (nchw_with(align="last"), "Right statistics, lined up with the wrong axis"),
    (nchw_with(align="gamma_last"), "gamma and beta were applied along the last axis"),
    (nchw_with(ddof=1), r"unbiased variance \(divided by n - 1\)"),
    (nchw_with(eps_fixed=1e-3), "Forgot epsilon"),
    (nchw_with(eps_fixed=1e-5), "Forgot epsilon"),
    (nchw_with(eps_fixed=0.1), "Forgot epsilon"),  # case 1's epsilon
    (nchw_with(eps_fixed=0.0), "Forgot epsilon|NaN"),
    (nchw_with(form="swapped"), "gamma and beta are swapped"),
    (nchw_with(form="no_sqrt"), "not by its square root"),
    (nchw_with(form="std_plus_eps"), "added epsilon to the standard deviation"),
    (nchw_with(form="no_scale"), "without the scale and shift"),
    (nchw_with(form="not_centred"), "did not subtract the mean"),
    (nchw_with(form="float64"), "dtype float64; expected float32"),
    (nchw_with(form="list"), "Python list"),
    (nchw_with(form="nan"), "NaN"),
    (nchw_with(form="shape"), r"has shape \(3, 5, 3\), expected \(4, 3, 5, 3\)"),
    (nchw_with(form="tensor"), "asks for a NumPy array"),
    (nchw_with(form="half_eps"), LOCATED + r".*\nHint: on your result, each channel"),
    (nchw_hardcoded_channels, r"In case 2 of 3 \(shape=\(2, 5, 3, 4\), eps=0.01\): .*" + LOCATED),
    (nchw_reshape_not_transpose, LOCATED),
]


# ---- 1.2: merged_moments(means, variances, counts) --------------------------------------------

def merged(means, variances, counts):
    n = tf.cast(counts, tf.float32)[:, None]
    total = tf.reduce_sum(n)
    mean = tf.reduce_sum(n * means, axis=0) / total
    second = tf.reduce_sum(n * (variances + means ** 2), axis=0) / total
    return mean, second - mean ** 2


def merged_total_variance(means, variances, counts):
    n = tf.cast(counts, tf.float32)[:, None]
    w = n / tf.reduce_sum(n)
    mean = tf.reduce_sum(w * means, axis=0)
    return mean, tf.reduce_sum(w * (variances + (means - mean) ** 2), axis=0)


def merged_pairwise(means, variances, counts):  # Chan et al.: merge one part at a time
    counts = tf.cast(counts, tf.float32)
    n, mean, m2 = counts[0], means[0], variances[0] * counts[0]
    for i in range(1, means.shape[0]):
        delta = means[i] - mean
        total = n + counts[i]
        mean = mean + delta * counts[i] / total
        m2 = m2 + variances[i] * counts[i] + delta ** 2 * n * counts[i] / total
        n = total
    return mean, m2 / n


def merged_with(form):
    def fn(means, variances, counts):
        n = tf.cast(counts, tf.float32)[:, None]
        total = tf.reduce_sum(n)
        mean = tf.reduce_sum(n * means, axis=0) / total
        second = tf.reduce_sum(n * (variances + means ** 2), axis=0) / total
        plain = tf.reduce_mean(means, axis=0)
        return {
            "swapped": (second - mean ** 2, mean),
            "within": (mean, tf.reduce_sum(n * variances, axis=0) / total),
            "plain_both": (plain, tf.reduce_mean(variances, axis=0)),
            "plain_total": (plain, tf.reduce_mean(variances + (means - plain) ** 2, axis=0)),
            "plain_mean": (plain, second - mean ** 2),
            "unbiased": (mean, (second - mean ** 2) * total / (total - 1)),
            "numpy": (mean.numpy(), (second - mean ** 2).numpy()),
            "only_mean": mean,
            "three": (mean, second - mean ** 2, total),
            "std": (mean, tf.sqrt(second - mean ** 2)),
            "first_two": (tf.reduce_sum(n[:2] * means[:2], axis=0) / tf.reduce_sum(n[:2]),
                          tf.reduce_sum(n[:2] * (variances[:2] + means[:2] ** 2), axis=0)
                          / tf.reduce_sum(n[:2]) - (tf.reduce_sum(n[:2] * means[:2], axis=0)
                                                    / tf.reduce_sum(n[:2])) ** 2),
            "float64": (tf.cast(mean, tf.float64), tf.cast(second - mean ** 2, tf.float64)),
        }[form]
    return fn


def merged_no_cast(means, variances, counts):  # int32 counts times float32 means
    mean = tf.reduce_sum(counts[:, None] * means, axis=0) / tf.reduce_sum(counts)
    return mean, mean


RIGHT_1_2 = [merged, merged_total_variance, merged_pairwise]
WRONG_1_2 = [
    (merged_with("swapped"), "Mean and variance are swapped"),
    (merged_with("within"), "You averaged the parts' variances"),
    (merged_with("plain_both"), "equal weights, and averaged the variances"),
    (merged_with("plain_total"), "You gave every part the same weight"),
    (merged_with("plain_mean"), "Your mean gives every part the same weight"),
    (merged_with("unbiased"), r"unbiased variance"),
    (merged_with("numpy"), "is a numpy.ndarray; this exercise asks for a TensorFlow tensor"),
    (merged_with("only_mean"), r"is a single array; expected 2 results: \(mean, variance\)"),
    (merged_with("three"), "has 3 parts; expected 2"),
    (merged_with("std"), r"your variance is wrong at .*" + LOCATED),
    (merged_with("first_two"), r"In case 2 of 3 \(parts=3, .*cases? 1 passed; this one changes "
                               r"parts, channels, counts"),
    (merged_with("float64"), "dtype float64; expected float32"),
    (merged_no_cast, r"merged_moments raised InvalidArgumentError: .*int32"),
]


# ---- 1.3: infer_gamma_beta(x, y, eps) ---------------------------------------------------------

def infer(x, y, eps):
    x_hat = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps)
    beta = y.mean(axis=0)
    gamma = ((y - beta) * x_hat).mean(axis=0) / (x_hat ** 2).mean(axis=0)
    return gamma, beta


def infer_spread_sign(x, y, eps):
    var = x.var(axis=0)
    sign = np.sign(((y - y.mean(axis=0)) * (x - x.mean(axis=0))).sum(axis=0))
    return (sign * y.std(axis=0) * np.sqrt((var + eps) / var)).astype(np.float32), y.mean(axis=0)


def infer_lstsq(x, y, eps):
    x_hat = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps)
    gammas, betas = [], []
    for f in range(x.shape[1]):
        a = np.stack([x_hat[:, f], np.ones(len(x))], axis=1)
        (g, b), *_ = np.linalg.lstsq(a, y[:, f], rcond=None)
        gammas.append(g)
        betas.append(b)
    return np.array(gammas, np.float32), np.array(betas, np.float32)


def infer_with(form):
    def fn(x, y, eps):
        x_hat = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps)
        beta = y.mean(axis=0)
        gamma = ((y - beta) * x_hat).mean(axis=0) / (x_hat ** 2).mean(axis=0)
        x_hat_no_eps = (x - x.mean(axis=0)) / x.std(axis=0)
        return {
            "swapped": (beta, gamma),
            "abs": (np.abs(gamma), beta),
            "spread": (y.std(axis=0), beta),
            "signed_spread": (np.sign(gamma) * y.std(axis=0), beta),
            "ratio": (y.std(axis=0) / x.std(axis=0), beta),
            "no_eps": (((y - beta) * x_hat_no_eps).mean(axis=0), beta),
            "beta_minus": (gamma, beta - x.mean(axis=0)),
            "first_row": ((y[0] - beta) / x_hat[0], beta),
            "eps_fixed": (((y - beta) * ((x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + 0.1)))
                          .mean(axis=0) / (((x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + 0.1))
                                           ** 2).mean(axis=0), beta),
            "tensor": (tf.constant(gamma), tf.constant(beta)),
            "per_row": (gamma * np.ones_like(x), beta),
            "one_result": np.stack([gamma, beta]),
        }[form]
    return fn


RIGHT_1_3 = [infer, infer_spread_sign, infer_lstsq, infer_with("first_row")]
WRONG_1_3 = [
    (infer_with("swapped"), "gamma and beta are swapped"),
    (infer_with("abs"), "always a positive sign"),
    (infer_with("spread"), "Your gamma is the standard deviation of y: that ignores epsilon"),
    (infer_with("signed_spread"), "standard deviation of y with a sign"),
    (infer_with("ratio"), r"std\(y\) / std\(x\)"),
    (infer_with("no_eps"), "standard deviation of y with a sign"),
    (infer_with("beta_minus"), "Your beta subtracts the mean of x"),
    (infer_with("eps_fixed"), r"In case 2 of 3 .*changes shape, eps.*" + LOCATED),
    (infer_with("tensor"), "asks for a NumPy array"),
    (infer_with("per_row"), r"your gamma has shape \(6, 4\), expected \(4,\)"),
    (infer_with("one_result"), r"is a single array; expected 2 results: \(gamma, beta\)"),
    (lambda x, y, eps: (np.ones(x.shape[1], np.float32), y.mean(axis=0)), "your gamma " + ".*" + LOCATED),
]


# ---- 1.4: batch_norm_tf(x, gamma, beta, eps, axis) --------------------------------------------

def bn_tf(x, gamma, beta, eps, axis):
    axis = axis % len(x.shape)
    axes = [i for i in range(len(x.shape)) if i != axis]
    mean, variance = tf.nn.moments(x, axes=axes, keepdims=True)
    shape = [1] * len(x.shape)
    shape[axis] = -1
    return tf.nn.batch_normalization(x, mean, variance, offset=tf.reshape(beta, shape),
                                     scale=tf.reshape(gamma, shape), variance_epsilon=eps)


def bn_tf_transpose(x, gamma, beta, eps, axis):
    rank = len(x.shape)
    axis = axis % rank
    order = [i for i in range(rank) if i != axis] + [axis]
    moved = tf.transpose(x, order)
    mean, variance = tf.nn.moments(moved, axes=list(range(rank - 1)))
    out = tf.nn.batch_normalization(moved, mean, variance, beta, gamma, eps)
    return tf.transpose(out, np.argsort(order))


def bn_tf_keras(x, gamma, beta, eps, axis):
    import keras
    layer = keras.layers.BatchNormalization(axis=axis, epsilon=eps)
    layer.build(x.shape)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    return layer(x, training=True)


def bn_tf_with(stats="others", eps_fixed=None, form="right"):
    def fn(x, gamma, beta, eps, axis):
        rank = len(x.shape)
        axis = axis % rank
        eps = eps if eps_fixed is None else eps_fixed
        axes = {"others": [i for i in range(rank) if i != axis], "all_but_last": list(range(rank - 1)),
                "axis": [axis], "zero": [0]}[stats]
        mean, variance = tf.nn.moments(x, axes=axes, keepdims=True)
        shape = [1] * rank
        shape[axis] = -1
        g, b = tf.reshape(gamma, shape), tf.reshape(beta, shape)
        return {
            "right": lambda: tf.nn.batch_normalization(x, mean, variance, b, g, eps),
            "swapped": lambda: tf.nn.batch_normalization(x, mean, variance, g, b, eps),
            "std": lambda: tf.nn.batch_normalization(x, mean, tf.sqrt(variance), b, g, eps),
            "numpy": lambda: tf.nn.batch_normalization(x, mean, variance, b, g, eps).numpy(),
            "no_reshape": lambda: tf.nn.batch_normalization(x, mean, variance, beta, gamma, eps),
            "unbiased": lambda: tf.nn.batch_normalization(
                x, mean, variance * x.shape[0] / (x.shape[0] - 1), b, g, eps),
        }[form]()
    return fn


def bn_tf_negative_axis(x, gamma, beta, eps, axis):  # forgot axis % rank
    rank = len(x.shape)
    axes = [i for i in range(rank) if i != axis]
    mean, variance = tf.nn.moments(x, axes=axes, keepdims=True)
    shape = [1] * rank
    shape[axis] = -1
    return tf.nn.batch_normalization(x, mean, variance, tf.reshape(beta, shape),
                                     tf.reshape(gamma, shape), eps)


def bn_tf_plus_rank(x, gamma, beta, eps, axis):  # axis + rank instead of axis % rank
    rank = x.shape.rank
    axis = axis + rank if axis < 0 else axis
    mean, variance = tf.nn.moments(x, axes=[i for i in range(rank) if i != axis])
    moved = [1] * rank
    moved[axis] = x.shape[axis]
    return tf.nn.batch_normalization(x, tf.reshape(mean, moved), tf.reshape(variance, moved),
                                     tf.reshape(beta, moved), tf.reshape(gamma, moved), eps)


def bn_tf_last_if_negative(x, gamma, beta, eps, axis):  # fitted to axis=-1, the only one it saw
    return bn_tf(x, gamma, beta, eps, len(x.shape) - 1 if axis < 0 else axis)


def bn_tf_transpose_no_mod(x, gamma, beta, eps, axis):  # a transpose order with a negative axis
    rank = len(x.shape)
    order = [i for i in range(rank) if i != axis] + [axis]
    moved = tf.transpose(x, order)
    mean, variance = tf.nn.moments(moved, axes=list(range(rank - 1)))
    return tf.transpose(tf.nn.batch_normalization(moved, mean, variance, beta, gamma, eps),
                        np.argsort(order))


def bn_tf_layouts(x, gamma, beta, eps, axis):  # a rule per layout it saw: NCHW, else the last
    rank = len(x.shape)
    if axis in (-1, rank - 1):
        return bn_tf(x, gamma, beta, eps, -1)
    mean, variance = tf.nn.moments(x, axes=[0, 2, 3], keepdims=True)
    shape = [1, -1, 1, 1]
    return tf.nn.batch_normalization(x, mean, variance, tf.reshape(beta, shape),
                                     tf.reshape(gamma, shape), eps)


RIGHT_1_4 = [bn_tf, bn_tf_transpose, bn_tf_keras, bn_tf_plus_rank]
WRONG_1_4 = [
    (bn_tf_with(stats="all_but_last"), "You ignored `axis`"),
    (bn_tf_with(stats="axis"), "You took the statistics over `axis` itself"),
    (bn_tf_with(stats="zero"), r"You reduced over axis 0 only"),
    (bn_tf_with(eps_fixed=1e-3), "Forgot epsilon"),
    (bn_tf_with(eps_fixed=0.1), "Forgot epsilon"),
    (bn_tf_with(eps_fixed=0.05), r"In case 1 of 7 .*" + LOCATED),
    (bn_tf_with(form="swapped"), "tf.nn.batch_normalization got gamma as the offset"),
    (bn_tf_with(form="std"), "passed a standard deviation where"),
    (bn_tf_with(form="numpy"), "asks for a TensorFlow tensor"),
    (bn_tf_with(form="no_reshape"), r"batch_norm_tf failed: Incompatible shapes.*lined up with the "
                                    r"wrong axis"),
    (bn_tf_with(form="unbiased"), "unbiased variance"),
    (bn_tf_negative_axis, r"In case 1 of 7 .*right for axis=1 but not for axis=-1.*not turned "
                          r"into a positive index.*\nHint: start with axis = axis % rank"),
    (lambda x, gamma, beta, eps, axis: bn_tf(x, gamma, beta, eps, -1),
     r"In case 2 of 7 .*failed: Incompatible shapes.*\(case 1 passed; this one changes shape, "
     r"axis, eps: a hard-coded value\?.*\nHint: `axis` is the feature axis"),
    (bn_tf_last_if_negative, r"In case 6 of 7 \(shape=\(2, 4, 3, 5, 6\), axis=-4, .*right for "
                             r"axis=1 but not for axis=-4.*not turned into a positive index"),
    (bn_tf_transpose_no_mod, r"In case 1 of 7 .*right for axis=1 but not for axis=-1"),
    (bn_tf_layouts, r"In case 5 of 7 \(shape=\(4, 5, 3\), axis=1, .*raised .*\. Cases 1-4 "
                    r"passed; this one changes shape, axis, eps: a hard-coded value\?"),
]


# ---- the tests --------------------------------------------------------------------------------

CHECKS = {"1.1": (check.transform_nchw, RIGHT_1_1, WRONG_1_1),
          "1.2": (check.merged_moments, RIGHT_1_2, WRONG_1_2),
          "1.3": (check.infer_gamma_beta, RIGHT_1_3, WRONG_1_3),
          "1.4": (check.transform_tf, RIGHT_1_4, WRONG_1_4)}
RIGHT = [(label, fn) for label, (_, right, _) in CHECKS.items() for fn in right]
WRONG = [(label, fn, message) for label, (_, _, wrong) in CHECKS.items() for fn, message in wrong]


@pytest.mark.parametrize("label", CHECKS)
def test_stub_is_not_done(label, capsys):
    assert CHECKS[label][0](stub) is None
    assert f"Exercise {label} is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("label, fn", RIGHT, ids=[f"{lab}-{fn.__name__}" for lab, fn in RIGHT])
def test_right_answers_pass(label, fn, capsys):
    assert run(CHECKS[label][0], fn, capsys).startswith(f"✓ Exercise {label} passed")


@pytest.mark.parametrize("label, fn, message", WRONG,
                         ids=[f"{lab}-{i}" for i, (lab, _, _) in enumerate(WRONG)])
def test_wrong_answers_are_rejected_with_their_message(label, fn, message):
    with pytest.raises(ExerciseMistake, match=message) as info:
        CHECKS[label][0](fn)
    text = str(info.value)
    assert text.startswith(f"Exercise {label}: ")
    assert "function_node" not in text and "Traceback" not in text
