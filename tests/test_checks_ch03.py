"""Chapter 3 checkers: each accepts the solution and right answers written another way, says "not
done yet" for the stub, and rejects plausible wrong answers (hard-coded decay, epsilon, axes,
chunk sizes included) with the message meant for them."""

import numpy as np
import pytest
import tensorflow as tf

from bnbook.checks import ExerciseMistake
from bnbook.checks import ch03 as check

LOCATED = "matches no mistake this check knows"


def stub(*args, **kwargs):
    raise NotImplementedError("your code here")


# ---- 3.1: PopulationBN for any rank ------------------------------------------------------------

def make_bn(axes="all_but_last", update="right", decay_fixed=None, eps_fixed=None, infer="pop",
            default_training=False, start_var=1.0, trainable_pop=False, assign="assign",
            ddof=0, norm_with="batch", numpy=False):
    class PopulationBN(tf.Module):
        def __init__(self, n_units, decay=0.999, eps=1e-3):
            super().__init__()
            self.decay = decay if decay_fixed is None else decay_fixed
            self.eps = eps if eps_fixed is None else eps_fixed
            self.gamma = tf.Variable(tf.ones([n_units]))
            self.beta = tf.Variable(tf.zeros([n_units]))
            self.pop_mean = tf.Variable(tf.zeros([n_units]), trainable=trainable_pop)
            self.pop_var = tf.Variable(tf.fill([n_units], start_var), trainable=trainable_pop)

        def normalise(self, z, mean, variance):
            return self.gamma * (z - mean) / tf.sqrt(variance + self.eps) + self.beta

        def __call__(self, z, training=default_training):
            if training:
                over = {"all_but_last": list(range(len(z.shape) - 1)), "zero": [0]}[axes]
                if numpy == "dot":
                    mean = tf.constant(z.numpy().mean(axis=tuple(over)))
                    variance = tf.constant(z.numpy().var(axis=tuple(over)))
                elif numpy:
                    mean = np.mean(z, axis=tuple(over))
                    variance = np.var(z, axis=tuple(over))
                else:
                    mean, variance = tf.nn.moments(z, axes=over)
                n = tf.cast(tf.size(z) // z.shape[-1], tf.float32)
                var_update = variance * n / (n - 1) if ddof else variance
                d = self.decay
                new_mean = {"right": self.pop_mean * d + mean * (1 - d),
                            "swapped": mean * d + self.pop_mean * (1 - d),
                            "overwrite": mean, "none": self.pop_mean,
                            "mean_only": self.pop_mean * d + mean * (1 - d)}[update]
                new_var = {"right": self.pop_var * d + var_update * (1 - d),
                           "swapped": var_update * d + self.pop_var * (1 - d),
                           "overwrite": var_update, "none": self.pop_var,
                           "mean_only": self.pop_var}[update]
                if assign == "assign":
                    self.pop_mean.assign(new_mean)
                    self.pop_var.assign(new_var)
                else:
                    self.pop_mean = tf.Variable(new_mean, trainable=False)
                    self.pop_var = tf.Variable(new_var, trainable=False)
                if norm_with == "pop":
                    return self.normalise(z, self.pop_mean, self.pop_var)
                return self.normalise(z, mean, variance)
            if infer == "batch":
                return self.normalise(z, *tf.nn.moments(z, axes=list(range(len(z.shape) - 1))))
            if infer == "update":
                mean, variance = tf.nn.moments(z, axes=list(range(len(z.shape) - 1)))
                self.pop_mean.assign(self.pop_mean * self.decay + mean * (1 - self.decay))
                self.pop_var.assign(self.pop_var * self.decay + variance * (1 - self.decay))
            return self.normalise(z, self.pop_mean, self.pop_var)
    return PopulationBN


class KerasStyleBN(tf.Module):  # momentum-style update and reduce_mean/reduce_variance
    def __init__(self, n_units, decay=0.999, eps=1e-3):
        super().__init__()
        self.decay, self.eps = decay, eps
        self.gamma = tf.Variable(tf.ones(n_units))
        self.beta = tf.Variable(tf.zeros(n_units))
        self.pop_mean = tf.Variable(tf.zeros(n_units), trainable=False)
        self.pop_var = tf.Variable(tf.ones(n_units), trainable=False)

    def normalise(self, z, mean, variance):
        return self.gamma * (z - mean) / tf.sqrt(variance + self.eps) + self.beta

    def __call__(self, z, training=False):
        if not training:
            return self.normalise(z, self.pop_mean, self.pop_var)
        flat = tf.reshape(z, [-1, z.shape[-1]])
        mean = tf.reduce_mean(flat, axis=0)
        variance = tf.math.reduce_variance(flat, axis=0)
        self.pop_mean.assign_sub((self.pop_mean - mean) * (1 - self.decay))
        self.pop_var.assign_sub((self.pop_var - variance) * (1 - self.decay))
        return self.normalise(z, mean, variance)


RIGHT_3_1 = [make_bn(), KerasStyleBN]
WRONG_3_1 = [
    (make_bn(axes="zero"), r"In case 2 of 3 .*raised|statistics"),
    (make_bn(update="swapped"), "moving-average weights are swapped"),
    (make_bn(update="overwrite"), "overwritten, not averaged"),
    (make_bn(update="none"), "never updated"),
    (make_bn(update="mean_only"), "population variance did not"),
    (make_bn(decay_fixed=0.999), "used decay 0.999, not the layer's own decay"),
    (make_bn(decay_fixed=0.9), "used decay 0.9, not the layer's own decay"),
    (make_bn(eps_fixed=1e-3), "used epsilon 1e-3, not self.eps"),
    (make_bn(infer="batch"), "At inference \\(training=False\\) the layer used the batch"),
    (make_bn(infer="update"), "changed the population statistics: they were updated at inference"),
    (make_bn(default_training=True), "without a `training` argument trained"),
    (make_bn(start_var=0.0), "population variance starts at 0"),
    (make_bn(trainable_pop=True), "`self.pop_mean` is trainable"),
    (make_bn(assign="replace"), "creates a new tf.Variable on every call"),
    (make_bn(ddof=1), "unbiased batch variance \\(divisor n - 1\\), not the one"),
    (make_bn(norm_with="pop"), "normalised with the freshly updated population statistics"),
    (make_bn(numpy=True), "fails inside a tf.function"),
    (make_bn(numpy="dot"), "fails inside a tf.function .*calls .numpy\\(\\) or NumPy"),
    (make_bn(start_var=2.0), "your pop_var is wrong at 4 of 4 elements.*" + LOCATED),
]


# ---- 3.2: exact_population_statistics(net, x, chunk_size) -----------------------------------

def exact(net, x, chunk_size):
    def one_pass(layer_input):
        count, total, total_sq = 0, 0.0, 0.0
        for start in range(0, len(x), chunk_size):
            z = layer_input(x[start:start + chunk_size]).numpy().astype(np.float64)
            count += len(z)
            total = total + z.sum(axis=0)
            total_sq = total_sq + (z ** 2).sum(axis=0)
        mean = total / count
        return mean.astype(np.float32), (total_sq / count - mean ** 2).astype(np.float32)

    mean1, var1 = one_pass(lambda chunk: chunk @ net.w1)
    mean2, var2 = one_pass(
        lambda chunk: tf.sigmoid(net.bn1.normalise(chunk @ net.w1, mean1, var1)) @ net.w2)
    return [(mean1, var1), (mean2, var2)]


def exact_tf(net, x, chunk_size):  # tensors, merged chunk moments
    def one_pass(layer_input):
        n, mean, m2 = 0.0, None, None
        for start in range(0, len(x), chunk_size):
            z = layer_input(tf.constant(x[start:start + chunk_size]))
            k = float(z.shape[0])
            m, v = tf.nn.moments(z, axes=[0])
            if mean is None:
                n, mean, m2 = k, m, v * k
                continue
            delta = m - mean
            total = n + k
            mean = mean + delta * k / total
            m2 = m2 + v * k + delta ** 2 * n * k / total
            n = total
        return mean, m2 / n

    mean1, var1 = one_pass(lambda chunk: chunk @ net.w1)
    mean2, var2 = one_pass(
        lambda chunk: tf.sigmoid(net.bn1.normalise(chunk @ net.w1, mean1, var1)) @ net.w2)
    return [(mean1, var1), (mean2, var2)]


def exact_with(layer1="right", layer2="right", ddof=0):
    def fn(net, x, chunk_size):
        chunks = [x[i:i + chunk_size] for i in range(0, len(x), chunk_size)]

        def pooled(zs, how):
            z = np.concatenate(zs)
            if how == "chunk_var":
                return z.mean(axis=0), np.mean([c.var(axis=0) for c in zs], axis=0)
            if how == "chunk_var_weighted":  # each chunk's variance weighted by its rows
                return z.mean(axis=0), sum(len(c) * c.var(axis=0) for c in zs) / len(z)
            if how == "equal":
                means = np.mean([c.mean(axis=0) for c in zs], axis=0)
                return means, np.mean([(c ** 2).mean(axis=0) for c in zs], axis=0) - means ** 2
            if how == "first":
                return zs[0].mean(axis=0), zs[0].var(axis=0)
            if how == "last":
                return zs[-1].mean(axis=0), zs[-1].var(axis=0)
            if how == "std":
                return z.mean(axis=0), z.std(axis=0)
            return z.mean(axis=0), z.var(axis=0, ddof=ddof)

        z1 = [(c @ net.w1).numpy().astype(np.float64) for c in chunks]
        mean1, var1 = pooled(z1, layer1)
        m1, v1 = tf.constant(mean1, tf.float32), tf.constant(var1, tf.float32)
        if layer2 == "per_chunk":
            z2 = [(tf.sigmoid(net.bn1.normalise(c @ net.w1, *tf.nn.moments(c @ net.w1, [0])))
                   @ net.w2).numpy() for c in chunks]
        elif layer2 == "moving":
            z2 = [(tf.sigmoid(net.bn1(c @ net.w1)) @ net.w2).numpy() for c in chunks]
        elif layer2 == "no_sigmoid":
            z2 = [(net.bn1.normalise(c @ net.w1, m1, v1) @ net.w2).numpy() for c in chunks]
        elif layer2 == "no_w2":
            z2 = [tf.sigmoid(net.bn1.normalise(c @ net.w1, m1, v1)).numpy() for c in chunks]
        elif layer2 == "raw":
            z2 = [(tf.sigmoid(c @ net.w1) @ net.w2).numpy() for c in chunks]
        elif layer2 == "float64":
            z2 = [(tf.sigmoid(net.bn1.normalise(c @ net.w1, mean1, var1)) @ net.w2).numpy()
                  for c in chunks]
        else:
            z2 = [(tf.sigmoid(net.bn1.normalise(c @ net.w1, m1, v1)) @ net.w2).numpy()
                  for c in chunks]
        mean2, var2 = pooled([z.astype(np.float64) for z in z2],
                             layer1 if layer2 == "same" else "right")
        return [(mean1, var1), (mean2, var2)]
    return fn


RIGHT_3_2 = [exact, exact_tf]
WRONG_3_2 = [
    (exact_with(layer1="chunk_var"), "Layer 1: you averaged the chunks' own variances"),
    (exact_with(layer1="chunk_var", layer2="same"), "Both layers: you averaged the chunks' own"),
    (exact_with(layer1="chunk_var_weighted"), r"Layer 1: you averaged the chunks' variances: that "
                                              r"misses how far the chunks' means lie from the "
                                              r"overall mean.*\nHint: each chunk's values spread"),
    (exact_with(layer1="chunk_var_weighted", layer2="same"), r"Both layers: you averaged the "
                                                             r"chunks' variances: that misses"),
    (exact_with(layer1="equal"), "gave every chunk the same weight"),
    (exact_with(layer1="first"), "used only the first chunk"),
    (exact_with(layer1="last", layer2="same"), "kept only the last chunk's statistics"),
    (exact_with(layer1="std"), "returned the standard deviation"),
    (exact_with(ddof=1), "Both layers: you used the unbiased variance"),
    (exact_with(layer2="per_chunk"), "layer 1 normalised by each chunk's own statistics"),
    (exact_with(layer2="moving"), "normalised by the moving averages"),
    (exact_with(layer2="no_sigmoid"), "without the sigmoid"),
    (exact_with(layer2="no_w2"), "forgot `@ net.w2`"),
    (exact_with(layer2="raw"), "layer 1 not normalised at all"),
    (exact_with(layer2="float64"), r"raised TypeError.*\nHint: cast what you "
                                   r"accumulate in float64 back to float32"),
    (lambda net, x, chunk_size: exact(net, x, chunk_size)[0], "expected \\[\\(mean1, var1\\)"),
    (lambda net, x, chunk_size: [exact(net, x[:26], chunk_size)[0],
                                 exact(net, x[:26], chunk_size)[1]], r"In case 2 of 3|In case 3 of 3"),
]


# ---- 3.3: corrected_moving_average(batch_values, decay, start) --------------------------------

def corrected(batch_values, decay, start):
    estimates, estimate = [], start
    for t, value in enumerate(batch_values, start=1):
        estimate = decay * estimate + (1 - decay) * value
        estimates.append((estimate - decay ** t * start) / (1 - decay ** t))
    return np.stack(estimates)


def corrected_closed_form(batch_values, decay, start):
    steps = len(batch_values)
    out = []
    for t in range(1, steps + 1):
        weights = (1 - decay) * decay ** np.arange(t - 1, -1, -1)
        shape = (-1,) + (1,) * (batch_values.ndim - 1)
        out.append((weights.reshape(shape) * batch_values[:t]).sum(axis=0) / (1 - decay ** t))
    return np.array(out)


def corrected_with(form):
    def fn(batch_values, decay, start):
        estimates, estimate = [], start
        for t, value in enumerate(batch_values, start=1):
            if form == "inplace":
                if t == 1:
                    estimate = start
                estimate *= decay
                estimate += (1 - decay) * value
                estimates.append((estimate - decay ** t * start) / (1 - decay ** t))
                continue
            d = 0.9 if form == "fixed" else decay
            estimate = (d * value + (1 - d) * estimate) if form == "swapped" else \
                d * estimate + (1 - d) * value
            correct = {"plain": estimate, "adam": estimate / (1 - d ** t),
                       "off": (estimate - d ** (t + 1) * start) / (1 - d ** (t + 1))}
            estimates.append(correct.get(form, (estimate - d ** t * start) / (1 - d ** t)))
        if form == "t_minus_1":
            return np.stack([start] + estimates[:-1])
        if form == "list":
            return estimates
        return np.stack(estimates)
    return fn


RIGHT_3_3 = [corrected, corrected_closed_form]
WRONG_3_3 = [
    (corrected_with("plain"), "plain moving average, without the correction"),
    (corrected_with("adam"), "Adam's form"),
    (corrected_with("off"), r"off by one step \(t \+ 1\)"),
    (corrected_with("t_minus_1"), r"off by one step \(t - 1\)"),
    (corrected_with("swapped"), "weights are swapped"),
    (corrected_with("fixed"), "used decay 0.9, not the `decay` argument"),
    (corrected_with("inplace"), "changed its input `start` in place"),
    (corrected_with("list"), "Python list"),
    (lambda v, d, s: np.cumsum(v, axis=0) / np.arange(1, len(v) + 1).reshape(-1, *[1] * (v.ndim - 1)),
     "running plain average"),
    (lambda v, d, s: corrected(v, d, s)[-1], r"has shape \(3,\), expected \(8, 3\)"),
    (lambda v, d, s: corrected(v[:, :1] if v.ndim == 2 and v.shape[1] == 3 else v, d, s[:1])
     if v.ndim == 2 and v.shape[1] == 3 else corrected(v, d, s) * 1.01, LOCATED),
]


# ---- the tests --------------------------------------------------------------------------------

CHECKS = {"3.1": (check.population_bn, RIGHT_3_1, WRONG_3_1),
          "3.2": (check.exact_population_statistics, RIGHT_3_2, WRONG_3_2),
          "3.3": (check.corrected_moving_average, RIGHT_3_3, WRONG_3_3)}
RIGHT = [(label, fn) for label, (_, right, _) in CHECKS.items() for fn in right]
WRONG = [(label, fn, message) for label, (_, _, wrong) in CHECKS.items() for fn, message in wrong]


class StubBN(tf.Module):
    def __init__(self, n_units, decay=0.999, eps=1e-3):
        super().__init__()
        raise NotImplementedError("your code here")


@pytest.mark.parametrize("label", CHECKS)
def test_stub_is_not_done(label, capsys):
    assert CHECKS[label][0](StubBN if label == "3.1" else stub) is None
    assert f"Exercise {label} is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("label, fn", RIGHT, ids=[f"{lab}-{fn.__name__}" for lab, fn in RIGHT])
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


def test_3_1_passes_an_instance_gets_a_clear_message():
    with pytest.raises(ExerciseMistake, match="pass the class itself"):
        check.population_bn(make_bn()(3))
