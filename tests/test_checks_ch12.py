"""Chapter 12's checkers: the solutions pass, stubs are "not done", every known mistake is named,
hard-coded values are located, the book's own implementations are refused, and right answers
written another way pass."""

import numpy as np
import pytest
import tensorflow as tf

from bnbook.checks import ch12 as check
from bnbook.checks._core import ExerciseMistake
from bnbook.lessons import recurrent_bn as rb


def stub(*args, **kwargs):
    raise NotImplementedError("your code here")


def passes(capsys, checker, fn, label):
    checker(fn)
    assert capsys.readouterr().out.startswith(f"✓ Exercise {label} passed")


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


# ---- 12.1: bn_lstm_step(...) -> (h_new, c_new) ------------------------------------------------

def bn_lstm_step(x_t, h, c, kernel_x, kernel_h, bias, gamma_x, gamma_h, gamma_c, beta_c, epsilon,
                 how="right"):
    """The solution in NumPy, and (through `how`) the mistakes learners make."""
    eps = 1e-3 if how == "hard_eps" else epsilon

    def bn(z, gamma, beta=0.0):
        mean = z.mean(axis=1 if how == "over_units" else 0,
                      keepdims=True)
        var = z.var(axis=1 if how == "over_units" else 0, keepdims=True,
                    ddof=1 if how == "unbiased" else 0)
        if how == "eps_outside":
            return gamma * (z - mean) / (np.sqrt(var) + eps) + beta
        return gamma * (z - mean) / np.sqrt(var + eps) + beta

    zx, zh = x_t @ kernel_x, h @ kernel_h
    if how == "one_bn":
        z = bn(zx + zh, gamma_x) + bias
    elif how == "bias_inside":
        z = bn(zx + bias, gamma_x) + bn(zh, gamma_h)
    else:
        z = bn(zx, gamma_x) + bn(zh, gamma_h) + bias
    if how == "beta_everywhere":
        z = z + np.tile(beta_c, 4)
    i, f, g, o = np.split(z, 4, axis=-1)
    if how == "gate_order":
        i, f, o, g = np.split(z, 4, axis=-1)
    cand = sigmoid(g) if how == "sigmoid_g" else np.tanh(g)
    c_new = sigmoid(f) * c + sigmoid(i) * cand
    c_in = c_new if how == "no_c_bn" else bn(c_new, gamma_c, beta_c)
    h_new = sigmoid(o) * np.tanh(c_in)
    return h_new, (c_in if how == "c_normalised" else c_new)


def test_12_1_solution_passes(capsys):
    passes(capsys, check.bn_lstm_step, bn_lstm_step, "12.1")


def test_12_1_tensorflow_passes(capsys):
    def with_tf(x_t, h, c, kernel_x, kernel_h, bias, gamma_x, gamma_h, gamma_c, beta_c,
                epsilon):
        def bn(z, gamma, beta=0.0):
            mean, var = tf.nn.moments(z, axes=[0])
            return tf.nn.batch_normalization(z, mean, var, beta, gamma, epsilon)
        z = bn(tf.matmul(x_t, kernel_x), gamma_x) + bn(tf.matmul(h, kernel_h), gamma_h) + bias
        i, f, g, o = tf.split(z, 4, axis=-1)
        c_new = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        return tf.sigmoid(o) * tf.tanh(bn(c_new, gamma_c, beta_c)), c_new
    passes(capsys, check.bn_lstm_step, with_tf, "12.1")


def test_12_1_stub_is_not_done(capsys):
    check.bn_lstm_step(stub)
    assert "Exercise 12.1 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("how, message", [
    ("one_bn", "with one BN"), ("bias_inside", "bias disappeared"),
    ("no_c_bn", "without normalising c'"), ("c_normalised", "new cell state is the normalised"),
    ("unbiased", "unbiased variance"), ("eps_outside", "epsilon to the standard deviation"),
    ("over_units", "layer norm"), ("gate_order", "another order"),
    ("sigmoid_g", "through a sigmoid"), ("beta_everywhere", "gate terms as well"),
    ("hard_eps", "hard-coded epsilon"),
])
def test_12_1_mistakes_are_named(how, message):
    def wrong(*args):
        return bn_lstm_step(*args, how=how)
    with pytest.raises(ExerciseMistake, match=message):
        check.bn_lstm_step(wrong)


def test_12_1_book_helper_is_refused():
    def book(x_t, h, c, kernel_x, kernel_h, bias, gamma_x, gamma_h, gamma_c, beta_c, epsilon):
        return rb.bn_lstm_step(x_t, h, c, kernel_x, kernel_h, bias, gamma_x, gamma_h, gamma_c,
                               beta_c, epsilon)
    with pytest.raises(ExerciseMistake, match="calls the book's own"):
        check.bn_lstm_step(book)


def test_12_1_unknown_mistake_is_located():
    def off(*args):
        h, c = bn_lstm_step(*args)
        return h + 0.01, c
    with pytest.raises(ExerciseMistake, match="new hidden state"):
        check.bn_lstm_step(off)


# ---- 12.2: population_per_step(batches, length) -> (means, variances) -------------------------

def population_per_step(batches, length, how="right"):
    values = np.concatenate(batches)
    steps = values.shape[1]
    if how == "equal_weights":
        means = np.mean([b.mean(axis=0) for b in batches], axis=0)
        variances = np.mean([b.var(axis=0) for b in batches], axis=0)
    elif how == "mean_of_variances":
        means = values.mean(axis=0)
        variances = sum(len(b) * b.var(axis=0) for b in batches) / len(values)
    elif how == "shared":
        means = np.broadcast_to(values.mean(axis=(0, 1)), values.shape[1:])
        variances = np.broadcast_to(values.var(axis=(0, 1)), values.shape[1:])
    else:
        means = values.mean(axis=0)
        variances = values.var(axis=0, ddof=1 if how == "unbiased" else 0)
    t = np.arange(length)
    index = {"wrapped": t % steps, "first_after": np.where(t < steps, t, 0)}.get(
        how, np.minimum(t, steps - 1))
    means, variances = np.array(means[index]), np.array(variances[index])
    if how == "initial_after":
        means[t >= steps], variances[t >= steps] = 0.0, 1.0
    if how == "not_extended":
        return values.mean(axis=0), values.var(axis=0)
    return means, variances


def test_12_2_solution_passes(capsys):
    passes(capsys, check.population_per_step, population_per_step, "12.2")


def test_12_2_streaming_sums_pass(capsys):
    """Right answer written another way: running sums in float64, one batch at a time."""
    def streaming(batches, length):
        n, s, q = 0, 0.0, 0.0
        for b in batches:
            b = b.astype(np.float64)
            n, s, q = n + len(b), s + b.sum(axis=0), q + (b ** 2).sum(axis=0)
        mean = s / n
        var = q / n - mean ** 2
        index = [min(t, len(mean) - 1) for t in range(length)]
        return mean[index], var[index]
    passes(capsys, check.population_per_step, streaming, "12.2")


def test_12_2_stub_is_not_done(capsys):
    check.population_per_step(stub)
    assert "Exercise 12.2 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("how, message", [
    ("equal_weights", "weighted every batch equally"),
    ("mean_of_variances", "average of the batches' variances"),
    ("shared", "pooled over time"), ("unbiased", "unbiased variance"),
    ("initial_after", "mean 0 and variance 1"), ("wrapped", "t mod"),
    ("first_after", "first step's statistics"), ("not_extended", "has shape"),
])
def test_12_2_mistakes_are_named(how, message):
    def wrong(batches, length):
        return population_per_step(batches, length, how=how)
    with pytest.raises(ExerciseMistake, match=message):
        check.population_per_step(wrong)


def test_12_2_hard_coded_length_is_located():
    def fixed(batches, length):
        return population_per_step(batches, 7)
    with pytest.raises(ExerciseMistake, match="length"):
        check.population_per_step(fixed)


def test_12_2_book_helper_is_refused():
    def book(batches, length):
        pop = {"x": population_per_step(batches, batches[0].shape[1])}
        return rb.extend_statistics(pop, length)["x"]
    with pytest.raises(ExerciseMistake, match="calls the book's own"):
        check.population_per_step(book)


# ---- 12.3: masked_sequence_bn(x, mask, gamma, beta, epsilon) -> y -----------------------------

def masked_sequence_bn(x, mask, gamma, beta, epsilon, how="right"):
    real = mask > 0
    eps = 1e-3 if how == "hard_eps" else epsilon
    if how == "pads_counted":
        values = x.reshape(-1, x.shape[-1])
    else:
        values = x[real]
    mean, var = values.mean(axis=0), values.var(axis=0, ddof=1 if how == "unbiased" else 0)
    if how == "wrong_count":
        mean = values.sum(axis=0) / mask.size
        var = (values ** 2).sum(axis=0) / mask.size - mean ** 2
    if how == "per_step":
        count = np.maximum(real.sum(axis=0), 1)[:, None]
        mean = (x * real[..., None]).sum(axis=0) / count
        var = ((x - mean) ** 2 * real[..., None]).sum(axis=0) / count
    if how == "eps_outside":
        y = gamma * (x - mean) / (np.sqrt(var) + eps) + beta
    else:
        y = gamma * (x - mean) / np.sqrt(var + eps) + beta
    return y if how == "pads_kept" else y * mask[..., None]


def test_12_3_solution_passes(capsys):
    passes(capsys, check.masked_sequence_bn, masked_sequence_bn, "12.3")


def test_12_3_tensorflow_passes(capsys):
    def with_tf(x, mask, gamma, beta, epsilon):
        real = tf.constant(mask > 0)
        mean, var = tf.nn.moments(tf.boolean_mask(x, real), axes=[0])
        y = tf.nn.batch_normalization(x, mean, var, beta, gamma, epsilon)
        return tf.where(real[..., None], y, 0.0)
    passes(capsys, check.masked_sequence_bn, with_tf, "12.3")


def test_12_3_stub_is_not_done(capsys):
    check.masked_sequence_bn(stub)
    assert "Exercise 12.3 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("how, message", [
    ("pads_counted", "include the padded steps"), ("wrong_count", "divided by every position"),
    ("per_step", "per time step"), ("pads_kept", "padded steps are not 0"),
    ("unbiased", "unbiased variance"), ("eps_outside", "epsilon to the standard deviation"),
    ("hard_eps", "hard-coded epsilon"),
])
def test_12_3_mistakes_are_named(how, message):
    def wrong(x, mask, gamma, beta, epsilon):
        return masked_sequence_bn(x, mask, gamma, beta, epsilon, how=how)
    with pytest.raises(ExerciseMistake, match=message):
        check.masked_sequence_bn(wrong)


def test_12_3_other_mistakes_are_named():
    def per_sequence(x, mask, gamma, beta, epsilon):
        out = np.zeros_like(x)
        for k in range(len(x)):
            v = x[k][mask[k] > 0]
            out[k][mask[k] > 0] = gamma * (v - v.mean(0)) / np.sqrt(v.var(0) + epsilon) + beta
        return out

    def sequence_weights(x, mask, gamma, beta, epsilon):
        real = mask > 0
        means = np.stack([x[k][real[k]].mean(0) for k in range(len(x))])
        mean = means.mean(0)
        var = np.stack([((x[k][real[k]] - mean) ** 2).mean(0) for k in range(len(x))]).mean(0)
        return np.where(real[..., None], gamma * (x - mean) / np.sqrt(var + epsilon) + beta, 0)
    with pytest.raises(ExerciseMistake, match="each sequence with its own"):
        check.masked_sequence_bn(per_sequence)
    with pytest.raises(ExerciseMistake, match="averaged the sequences' means"):
        check.masked_sequence_bn(sequence_weights)


def test_checks_are_fast():
    import time
    for checker, fn in ((check.bn_lstm_step, bn_lstm_step),
                        (check.population_per_step, population_per_step),
                        (check.masked_sequence_bn, masked_sequence_bn)):
        start = time.perf_counter()
        checker(fn)
        assert time.perf_counter() - start < 1.0
