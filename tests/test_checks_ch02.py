"""Chapter 2 checkers: each accepts the solution and right answers written another way, says "not
done yet" for the stub, and rejects plausible wrong answers (hard-coded depth, activation,
epsilon and sizes included) with the message meant for them."""

import keras
import pytest
import tensorflow as tf

from bnbook.checks import ExerciseMistake
from bnbook.checks import ch02 as check

LOCATED = "matches no mistake this check knows"


def stub(*args, **kwargs):
    raise NotImplementedError("your code here")


# ---- 2.1: bn_conv(x, filters, gamma, beta, eps) -----------------------------------------------

def bn_conv(x, filters, gamma, beta, eps):
    z = tf.nn.conv2d(x, filters, strides=1, padding="SAME")
    mean, variance = tf.nn.moments(z, axes=[0, 1, 2])
    return tf.nn.batch_normalization(z, mean, variance, offset=beta, scale=gamma,
                                     variance_epsilon=eps)


def bn_conv_by_hand(x, filters, gamma, beta, eps):
    z = tf.nn.convolution(x, filters, padding="SAME")
    mean = tf.reduce_mean(z, axis=[0, 1, 2], keepdims=True)
    variance = tf.reduce_mean(tf.square(z - mean), axis=[0, 1, 2], keepdims=True)
    return gamma * (z - mean) * tf.math.rsqrt(variance + eps) + beta


def bn_conv_keras(x, filters, gamma, beta, eps):
    conv = keras.layers.Conv2D(filters.shape[-1], filters.shape[:2], padding="same",
                               use_bias=False)
    conv.build(x.shape)
    conv.kernel.assign(filters)
    bn = keras.layers.BatchNormalization(epsilon=eps)
    bn.build((None, None, None, filters.shape[-1]))
    bn.gamma.assign(gamma)
    bn.beta.assign(beta)
    return bn(conv(x), training=True)


def conv_with(axes=(0, 1, 2), padding="SAME", eps_fixed=None, form="right"):
    def fn(x, filters, gamma, beta, eps):
        eps = eps if eps_fixed is None else eps_fixed
        z = tf.nn.conv2d(x, filters, strides=1, padding=padding)
        mean, variance = tf.nn.moments(z, axes=list(axes), keepdims=True)
        if form == "unbiased":
            n = tf.cast(tf.size(z) // z.shape[-1], tf.float32)
            variance = variance * n / (n - 1)
        return {
            "right": lambda: tf.nn.batch_normalization(z, mean, variance, beta, gamma, eps),
            "unbiased": lambda: tf.nn.batch_normalization(z, mean, variance, beta, gamma, eps),
            "swapped": lambda: tf.nn.batch_normalization(z, mean, variance, gamma, beta, eps),
            "std": lambda: tf.nn.batch_normalization(z, mean, tf.sqrt(variance), beta, gamma, eps),
            "no_bn": lambda: z,
            "numpy": lambda: tf.nn.batch_normalization(z, mean, variance, beta, gamma, eps).numpy(),
            "bias": lambda: tf.nn.batch_normalization(z + 3.0, *tf.nn.moments(z + 3.0, [0, 1, 2]),
                                                      beta, gamma, eps),
            "stride2": lambda: tf.nn.conv2d(x, filters, strides=2, padding="SAME"),
        }[form]()
    return fn


RIGHT_2_1 = [bn_conv, bn_conv_by_hand, bn_conv_keras, conv_with(form="bias")]
WRONG_2_1 = [
    (conv_with(axes=(0,)), "batch axis only"),
    (conv_with(axes=(1, 2)), "instance normalisation"),
    (conv_with(axes=(1, 2, 3)), "layer normalisation"),
    (conv_with(axes=(0, 1, 2, 3)), "a single mean for the whole batch"),
    (conv_with(padding="VALID"), "padding 'VALID'"),
    (conv_with(eps_fixed=1e-3), "Forgot epsilon"),
    (conv_with(eps_fixed=0.0), "Forgot epsilon"),
    (conv_with(form="unbiased"), "unbiased variance"),
    (conv_with(form="swapped"), "gamma and beta are swapped"),
    (conv_with(form="std"), "passed a standard deviation"),
    (conv_with(form="no_bn"), "without batch normalization"),
    (conv_with(form="numpy"), "asks for a TensorFlow tensor"),
    (conv_with(form="stride2"), r"has shape \(2, 3, 2, 4\), expected \(2, 5, 4, 4\)"),
    (lambda x, f, g, b, eps: bn_conv(x, f, g, b, eps) * 1.001, r"In case 1 of 3 .*" + LOCATED),
]


# ---- 2.2: BNNet(weights, epsilon, activation) -------------------------------------------------

def make_net(where="right", eps_fixed=None, act_fixed=None, layers=None, extra_bias=False,
             start="right", ddof=0, store="list"):
    class BNNet(tf.Module):
        def __init__(self, weights, epsilon=1e-3, activation=tf.sigmoid):
            super().__init__()
            self.epsilon = epsilon if eps_fixed is None else eps_fixed
            self.activation = activation if act_fixed is None else act_fixed
            hidden = weights[:-1] if layers is None else weights[:layers]
            self.ws = [tf.Variable(w) for w in (weights if layers is None else weights[:layers + 1])]
            ones, zeros = (tf.zeros, tf.ones) if start == "swapped" else (tf.ones, tf.zeros)
            self.gammas = [tf.Variable(ones(w.shape[1])) for w in hidden]
            self.betas = [tf.Variable(zeros(w.shape[1])) for w in hidden]
            if extra_bias:
                self.biases = [tf.Variable(tf.zeros(w.shape[1])) for w in hidden]
            self.b_out = tf.Variable(tf.zeros(weights[-1].shape[1]))
            if store == "dict":
                self.ws = {i: w for i, w in enumerate(self.ws)}

        def __call__(self, x, training=False):
            h = x
            for i, (w, gamma, beta) in enumerate(zip(self.ws, self.gammas, self.betas)):
                z = h @ w
                mean, variance = tf.nn.moments(z, axes=[0])
                if ddof:
                    n = tf.cast(tf.shape(z)[0], tf.float32)
                    variance = variance * n / (n - 1)
                if where == "bn_after":
                    a = self.activation(z)
                    m, v = tf.nn.moments(a, axes=[0])
                    h = tf.nn.batch_normalization(a, m, v, beta, gamma, self.epsilon)
                    continue
                bn = tf.nn.batch_normalization(z, mean, variance, beta, gamma, self.epsilon)
                if where == "swapped":
                    bn = tf.nn.batch_normalization(z, mean, variance, gamma, beta, self.epsilon)
                last = i == len(self.gammas) - 1
                h = bn if where == "no_act_last" and last else self.activation(bn)
            logits = h @ self.ws[-1]
            if where == "bn_out":
                m, v = tf.nn.moments(logits, axes=[0])
                return tf.nn.batch_normalization(logits, m, v, None, None, self.epsilon) + \
                    self.b_out
            if where == "no_b_out":
                return logits
            if where == "softmax":
                return tf.nn.softmax(logits + self.b_out)
            return logits + self.b_out
    return BNNet


class BNNetKerasStyle(tf.Module):  # one helper per layer, by-hand BN
    def __init__(self, weights, epsilon=1e-3, activation=tf.sigmoid):
        super().__init__()
        self.epsilon, self.activation = epsilon, activation
        self.ws = [tf.Variable(w, name=f"w{i}") for i, w in enumerate(weights)]
        self.gammas = [tf.Variable(tf.ones([w.shape[1]])) for w in weights[:-1]]
        self.betas = [tf.Variable(tf.zeros([w.shape[1]])) for w in weights[:-1]]
        self.b_out = tf.Variable(tf.zeros([weights[-1].shape[1]]))

    def layer(self, h, i):
        z = tf.matmul(h, self.ws[i])
        mean = tf.reduce_mean(z, axis=0)
        var = tf.reduce_mean((z - mean) ** 2, axis=0)
        return self.activation(self.gammas[i] * (z - mean) / tf.sqrt(var + self.epsilon)
                               + self.betas[i])

    def __call__(self, x, training=False):
        h = x
        for i in range(len(self.gammas)):
            h = self.layer(h, i)
        return h @ self.ws[-1] + self.b_out


RIGHT_2_2 = [make_net(), BNNetKerasStyle]
WRONG_2_2 = [
    (make_net(where="bn_after"), "BN after the activation"),
    (make_net(where="no_act_last"), "last hidden layer has no activation"),
    (make_net(where="swapped"), "gamma and beta are swapped"),
    (make_net(where="bn_out"), "batch-normalised the output layer too"),
    (make_net(where="no_b_out"), "output layer has no bias b_out"),
    (make_net(where="softmax"), "applied a softmax"),
    (make_net(ddof=1), "unbiased variance"),
    (make_net(eps_fixed=1e-3), "fixed epsilon instead of the `epsilon` argument"),
    (make_net(act_fixed=tf.sigmoid), "always uses the sigmoid"),
    (make_net(layers=2), r"In case 2 of 3 .*`self.ws` is a list of 3; expected a list of 4"),
    (make_net(extra_bias=True), r"has 10 trainable variables; expected 8 .*\nHint: no bias before BN"),
    (make_net(start="swapped"), "gamma starts at 0 and beta at 1"),
    (make_net(store="dict"), "`self.ws` is a _DictWrapper; expected a list of 3"),
]


# ---- the tests --------------------------------------------------------------------------------

CHECKS = {"2.1": (check.bn_conv, RIGHT_2_1, WRONG_2_1),
          "2.2": (check.bn_network, RIGHT_2_2, WRONG_2_2)}
RIGHT = [(label, fn) for label, (_, right, _) in CHECKS.items() for fn in right]
WRONG = [(label, fn, message) for label, (_, _, wrong) in CHECKS.items() for fn, message in wrong]


class StubNet(tf.Module):
    def __init__(self, weights, epsilon=1e-3, activation=tf.sigmoid):
        super().__init__()
        raise NotImplementedError("your code here")


@pytest.mark.parametrize("label", CHECKS)
def test_stub_is_not_done(label, capsys):
    assert CHECKS[label][0](StubNet if label == "2.2" else stub) is None
    assert f"Exercise {label} is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("label, fn", RIGHT, ids=[f"{lab}-{i}" for i, (lab, _) in enumerate(RIGHT)])
def test_right_answers_pass(label, fn, capsys):
    CHECKS[label][0](fn)
    assert capsys.readouterr().out.startswith(f"✓ Exercise {label} passed")


@pytest.mark.parametrize("label, fn, message", WRONG,
                         ids=[f"{lab}-{i}" for i, (lab, _, _) in enumerate(WRONG)])
def test_wrong_answers_are_rejected_with_their_message(label, fn, message):
    with pytest.raises(ExerciseMistake, match=message) as info:
        CHECKS[label][0](fn)
    text = str(info.value)
    assert text.startswith(f"Exercise {label}: ")
    assert "function_node" not in text and "Traceback" not in text


def test_2_2_stub_in_call_only_is_not_done(capsys):
    class HalfDone(make_net()):
        def __call__(self, x, training=False):
            raise NotImplementedError("your code here")

    check.bn_network(HalfDone)
    assert "Exercise 2.2 is not done yet" in capsys.readouterr().out
