"""Chapter 3's checkers: the solutions pass, stubs are "not done yet", each known mistake is named."""

import numpy as np
import pytest
import tensorflow as tf

from bnbook.checks import ExerciseMistake
from bnbook.checks import ch03 as check

# --- Exercise 3.1: PopulationBN -------------------------------------------------------------

class PopulationBN(tf.Module):
    """The solution."""

    def __init__(self, n_units, decay=0.999, eps=1e-3):
        self.decay, self.eps = decay, eps
        self.gamma = tf.Variable(tf.ones([n_units]))
        self.beta = tf.Variable(tf.zeros([n_units]))
        self.pop_mean = tf.Variable(tf.zeros([n_units]), trainable=False)
        self.pop_var = tf.Variable(tf.ones([n_units]), trainable=False)

    def normalise(self, z, mean, variance):
        return self.gamma * (z - mean) / tf.sqrt(variance + self.eps) + self.beta

    def statistics(self, z):  # the batch statistics a step normalises with; wrong variants change it
        return tf.nn.moments(z, axes=[0])

    def update(self, mean, variance):
        self.pop_mean.assign(self.pop_mean * self.decay + mean * (1 - self.decay))
        self.pop_var.assign(self.pop_var * self.decay + variance * (1 - self.decay))

    def __call__(self, z, training=False):
        if training:
            mean, variance = self.statistics(z)
            self.update(mean, variance)
            return self.normalise(z, mean, variance)
        return self.normalise(z, self.pop_mean, self.pop_var)


def unbiased_moments(z):
    mean, variance = tf.nn.moments(z, axes=[0])
    n = tf.cast(tf.shape(z)[0], z.dtype)
    return mean, variance * n / (n - 1)


class Stub(PopulationBN):
    def __call__(self, z, training=False):
        raise NotImplementedError("your code here")


class StubInit(PopulationBN):
    def __init__(self, n_units, decay=0.999, eps=1e-3):
        self.decay, self.eps = decay, eps
        raise NotImplementedError("your code here")


class Swapped(PopulationBN):
    def update(self, mean, variance):
        self.pop_mean.assign(mean * self.decay + self.pop_mean * (1 - self.decay))
        self.pop_var.assign(variance * self.decay + self.pop_var * (1 - self.decay))


class UpdatesAtInference(PopulationBN):
    def __call__(self, z, training=False):
        mean, variance = self.statistics(z)
        self.update(mean, variance)
        if training:
            return self.normalise(z, mean, variance)
        return self.normalise(z, self.pop_mean, self.pop_var)


class NeverUpdated(PopulationBN):
    def update(self, mean, variance):
        pass


class BatchStatisticsAtInference(PopulationBN):
    def __call__(self, z, training=False):
        mean, variance = self.statistics(z)
        if training:
            self.update(mean, variance)
        return self.normalise(z, mean, variance)


class TrainingByDefault(PopulationBN):
    def __call__(self, z, training=True):
        return super().__call__(z, training)


class PopulationInTraining(PopulationBN):
    def __call__(self, z, training=False):
        if training:
            self.update(*self.statistics(z))
        return self.normalise(z, self.pop_mean, self.pop_var)


class VarianceStartsAtZero(PopulationBN):
    def __init__(self, n_units, decay=0.999, eps=1e-3):
        super().__init__(n_units, decay, eps)
        self.pop_var = tf.Variable(tf.zeros([n_units]), trainable=False)


class MeanStartsAtOne(PopulationBN):
    def __init__(self, n_units, decay=0.999, eps=1e-3):
        super().__init__(n_units, decay, eps)
        self.pop_mean = tf.Variable(tf.ones([n_units]), trainable=False)


class TrainablePopulation(PopulationBN):
    def __init__(self, n_units, decay=0.999, eps=1e-3):
        super().__init__(n_units, decay, eps)
        self.pop_mean = tf.Variable(tf.zeros([n_units]))
        self.pop_var = tf.Variable(tf.ones([n_units]))


class UnbiasedEverywhere(PopulationBN):
    def statistics(self, z):
        return unbiased_moments(z)


class UnbiasedInUpdateOnly(PopulationBN):
    def __call__(self, z, training=False):
        if training:
            mean, variance = self.statistics(z)
            self.update(*unbiased_moments(z))
            return self.normalise(z, mean, variance)
        return self.normalise(z, self.pop_mean, self.pop_var)


class ReplacesVariable(PopulationBN):
    def update(self, mean, variance):
        self.pop_mean = self.pop_mean * self.decay + mean * (1 - self.decay)
        self.pop_var = self.pop_var * self.decay + variance * (1 - self.decay)


class HardCodedDecay(PopulationBN):
    def update(self, mean, variance):
        self.pop_mean.assign(self.pop_mean * 0.999 + mean * 0.001)
        self.pop_var.assign(self.pop_var * 0.999 + variance * 0.001)


class Overwrites(PopulationBN):
    def update(self, mean, variance):
        self.pop_mean.assign(mean)
        self.pop_var.assign(variance)


class NumpyUpdate(PopulationBN):  # works eagerly, breaks inside tf.function
    def update(self, mean, variance):
        self.pop_mean.assign(self.pop_mean.numpy() * self.decay + mean.numpy() * (1 - self.decay))
        self.pop_var.assign(self.pop_var.numpy() * self.decay + variance.numpy() * (1 - self.decay))


class ReturnsNumpy(PopulationBN):
    def __call__(self, z, training=False):
        return super().__call__(z, training).numpy()


class NoEps(PopulationBN):
    def normalise(self, z, mean, variance):
        return self.gamma * (z - mean) / tf.sqrt(variance) + self.beta


class NoGamma(PopulationBN):
    def __init__(self, n_units, decay=0.999, eps=1e-3):
        super().__init__(n_units, decay, eps)
        del self.gamma


def test_population_bn_accepts_the_solution(capsys):
    check.population_bn(PopulationBN)
    assert capsys.readouterr().out.startswith("✓ Exercise 3.1 passed")


@pytest.mark.parametrize("stub", [Stub, StubInit])
def test_population_bn_stub_is_not_done(stub, capsys):
    assert check.population_bn(stub) is None
    assert "Exercise 3.1 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (Swapped, "weights are swapped"),
    (UpdatesAtInference, "updated at inference"),
    (NeverUpdated, "never updated"),
    (BatchStatisticsAtInference, r"At inference \(training=False\) the layer used the batch"),
    (TrainingByDefault, "without a `training` argument used batch statistics"),
    (PopulationInTraining, "normalised with the population statistics"),
    (VarianceStartsAtZero, "population variance starts at 0"),
    (MeanStartsAtOne, r"`self.pop_mean` starts at \[1.0, 1.0, 1.0, 1.0\]"),
    (TrainablePopulation, "`self.pop_mean` is trainable"),
    (UnbiasedEverywhere, "divided by the unbiased batch variance"),
    (UnbiasedInUpdateOnly, "updated with the unbiased batch variance"),
    (ReplacesVariable, "not a tf.Variable.*replaced it"),
    (HardCodedDecay, "used decay 0.999, not the layer's own decay"),
    (Overwrites, "overwritten, not averaged"),
    (NumpyUpdate, "inside a tf.function"),
    (ReturnsNumpy, "asks for a TensorFlow tensor"),
    (NoEps, r"does not give gamma \* \(z - pop_mean\)"),
    (NoGamma, "no attribute `gamma`"),
])
def test_population_bn_names_each_mistake(wrong, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.population_bn(wrong)


def test_population_bn_needs_a_class():
    with pytest.raises(ExerciseMistake, match="Expected the class PopulationBN"):
        check.population_bn(PopulationBN(4))  # an instance, not the class


# --- Exercise 3.2: exact population statistics --------------------------------------------------

def exact_population_statistics(net, x, chunk_size):
    """The solution: two passes over x in chunks, sums in float64."""
    def pass_over(layer_input):
        total = total_sq = 0.0
        for start in range(0, len(x), chunk_size):
            z = layer_input(x[start:start + chunk_size]).numpy().astype(np.float64)
            total = total + z.sum(axis=0)
            total_sq = total_sq + (z ** 2).sum(axis=0)
        mean = total / len(x)
        return mean.astype(np.float32), (total_sq / len(x) - mean ** 2).astype(np.float32)

    mean1, var1 = pass_over(lambda chunk: chunk @ net.w1)
    mean2, var2 = pass_over(
        lambda chunk: tf.sigmoid(net.bn1.normalise(chunk @ net.w1, mean1, var1)) @ net.w2)
    return [(mean1, var1), (mean2, var2)]


def whole_batch(net, x, chunk_size):
    """Also right: all rows at once with tf.nn.moments (ignores chunk_size)."""
    z1 = x @ net.w1
    mean1, var1 = tf.nn.moments(z1, axes=[0])
    mean2, var2 = tf.nn.moments(tf.sigmoid(net.bn1.normalise(z1, mean1, var1)) @ net.w2, axes=[0])
    return [(mean1, var1), (mean2, var2)]


def statistics_stub(net, x, chunk_size):
    raise NotImplementedError("your code here")


def chunk_normalised(net, x, chunk_size):
    """One pass: layer 1 normalised by each chunk's own statistics."""
    z1s, z2s = [], []
    for start in range(0, len(x), chunk_size):
        z1 = x[start:start + chunk_size] @ net.w1
        z1s.append(z1)
        z2s.append(tf.sigmoid(net.bn1.normalise(z1, *tf.nn.moments(z1, axes=[0]))) @ net.w2)
    return [tf.nn.moments(tf.concat(z1s, 0), axes=[0]), tf.nn.moments(tf.concat(z2s, 0), axes=[0])]


def moving_average_layer1(net, x, chunk_size):
    z1 = x @ net.w1
    z2 = tf.sigmoid(net.bn1.normalise(z1, net.bn1.pop_mean, net.bn1.pop_var)) @ net.w2
    return [tf.nn.moments(z1, axes=[0]), tf.nn.moments(z2, axes=[0])]


def unbiased(net, x, chunk_size):
    return [(mean, var * len(x) / (len(x) - 1)) for mean, var in whole_batch(net, x, chunk_size)]


def unbiased_layer2(net, x, chunk_size):
    (first, (mean2, var2)) = whole_batch(net, x, chunk_size)
    return [first, (mean2, var2 * len(x) / (len(x) - 1))]


def standard_deviation(net, x, chunk_size):
    return [(mean, tf.sqrt(var)) for mean, var in whole_batch(net, x, chunk_size)]


def average_of_chunk_variances(net, x, chunk_size):
    def combine(z):
        parts = [z[i:i + chunk_size] for i in range(0, len(x), chunk_size)]
        return (tf.reduce_mean(z, axis=0),
                tf.reduce_mean(tf.stack([tf.nn.moments(p, axes=[0])[1] for p in parts]), axis=0))
    z1 = x @ net.w1
    mean1, var1 = combine(z1)
    return [(mean1, var1), combine(tf.sigmoid(net.bn1.normalise(z1, mean1, var1)) @ net.w2)]


def paper_estimate(net, x, chunk_size):
    """m/(m-1) times the average chunk variance: the paper's estimate, not the exact one."""
    z1 = x @ net.w1
    parts = [z1[i:i + chunk_size] for i in range(0, len(x), chunk_size)]
    var1 = tf.reduce_mean(tf.stack([tf.nn.moments(p, axes=[0])[1] * len(p) / (len(p) - 1)
                                    for p in parts]), axis=0)
    return [(tf.reduce_mean(z1, axis=0), var1), whole_batch(net, x, chunk_size)[1]]


def equal_chunk_weights(net, x, chunk_size):
    parts = [x[i:i + chunk_size] @ net.w1 for i in range(0, len(x), chunk_size)]
    mean1 = tf.reduce_mean(tf.stack([tf.reduce_mean(p, axis=0) for p in parts]), axis=0)
    square1 = tf.reduce_mean(tf.stack([tf.reduce_mean(p ** 2, axis=0) for p in parts]), axis=0)
    return [(mean1, square1 - mean1 ** 2), whole_batch(net, x, chunk_size)[1]]


def first_chunk_only(net, x, chunk_size):
    return whole_batch(net, x[:chunk_size], chunk_size)


def no_sigmoid(net, x, chunk_size):
    z1 = x @ net.w1
    mean1, var1 = tf.nn.moments(z1, axes=[0])
    return [(mean1, var1), tf.nn.moments(net.bn1.normalise(z1, mean1, var1) @ net.w2, axes=[0])]


def no_gamma_beta(net, x, chunk_size):
    z1 = x @ net.w1
    mean1, var1 = tf.nn.moments(z1, axes=[0])
    h1 = tf.sigmoid((z1 - mean1) / tf.sqrt(var1 + net.bn1.eps))
    return [(mean1, var1), tf.nn.moments(h1 @ net.w2, axes=[0])]


def one_layer_only(net, x, chunk_size):
    return [tf.nn.moments(x @ net.w1, axes=[0])]


def wrong_shape(net, x, chunk_size):
    z1 = x @ net.w1
    return [tf.nn.moments(z1, axes=[0], keepdims=True), tf.nn.moments(z1, axes=[0])]


def test_exact_statistics_accepts_the_solutions(capsys):
    check.exact_population_statistics(exact_population_statistics)
    check.exact_population_statistics(whole_batch)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.startswith("✓ Exercise 3.2 passed") for line in out)


def test_exact_statistics_stub_is_not_done(capsys):
    assert check.exact_population_statistics(statistics_stub) is None
    assert "Exercise 3.2 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (chunk_normalised, "layer 1 normalised by each chunk's own statistics"),
    (moving_average_layer1, "normalised by the moving averages"),
    (unbiased, r"Layer 1: you used the unbiased variance \(divisor n - 1\)"),
    (unbiased_layer2, r"Layer 2: you used the unbiased variance"),
    (standard_deviation, "standard deviation, not the variance"),
    (average_of_chunk_variances, "averaged the chunks' own variances"),
    (paper_estimate, "the paper's estimate from mini-batches"),
    (equal_chunk_weights, "same weight, but the last chunk is smaller"),
    (first_chunk_only, "only the first chunk"),
    (no_sigmoid, "without the sigmoid"),
    (no_gamma_beta, "not scaled and shifted by gamma and beta"),
    (one_layer_only, r"Expected \[\(mean1, var1\), \(mean2, var2\)\]; got a list of length 1"),
    (wrong_shape, r"Layer 1's mean has shape \(1, 4\)"),
])
def test_exact_statistics_names_each_mistake(wrong, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.exact_population_statistics(wrong)


def test_exact_statistics_variants_all_differ_from_the_answer():
    """Guards the checker itself: every recognised mistake gives numbers unlike the answer's."""
    net, x = check._TinyNet(), check._tiny_data()
    expected, layer2 = check._reference(net, x)
    z1 = x.astype(np.float64) @ net.w1.numpy()
    for name, values in check._layer_variants(z1).items():
        assert not check._same(values, expected[0]), name
    for name, (_, values) in layer2.items():
        assert not check._same(values, expected[1]), name


@pytest.mark.parametrize("answer, message", [
    (lambda net, x, c: None, "Expected"),
    (lambda net, x, c: [(np.zeros(4, np.float32), np.full(4, np.nan, np.float32))] * 2,
     "NaN or infinity"),
    (lambda net, x, c: [([0.0] * 4, [1.0] * 4)] * 2, "Python list"),
    (lambda net, x, c: [(np.zeros(4, np.int64), np.ones(4, np.int64))] * 2, "dtype int64"),
    (lambda net, x, c: 1 / 0, "raised ZeroDivisionError"),
])
def test_exact_statistics_bad_input(answer, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.exact_population_statistics(answer)


# --- Exercise 3.3: the bias-corrected moving average --------------------------------------------

def corrected_moving_average(batch_values, decay, start):
    estimates, estimate = [], start
    for t, value in enumerate(batch_values, start=1):
        estimate = decay * estimate + (1 - decay) * value
        estimates.append((estimate - decay ** t * start) / (1 - decay ** t))
    return np.stack(estimates)


def plain_average(batch_values, decay, start):
    estimates, estimate = [], start
    for value in batch_values:
        estimate = decay * estimate + (1 - decay) * value
        estimates.append(estimate)
    return np.stack(estimates)


def adam_form(batch_values, decay, start):
    t = np.arange(1, len(batch_values) + 1)[:, None]
    return plain_average(batch_values, decay, start) / (1 - decay ** t)


def off_by_one(batch_values, decay, start):
    t = np.arange(2, len(batch_values) + 2)[:, None]
    return (plain_average(batch_values, decay, start) - decay ** t * start) / (1 - decay ** t)


def from_step_zero(batch_values, decay, start):  # t = 0 first: divides by zero
    t = np.arange(0, len(batch_values))[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (plain_average(batch_values, decay, start) - decay ** t * start) / (1 - decay ** t)


def swapped_weights(batch_values, decay, start):
    t = np.arange(1, len(batch_values) + 1)[:, None]
    return (plain_average(batch_values, 1 - decay, start) - decay ** t * start) / (1 - decay ** t)


def last_only(batch_values, decay, start):
    return corrected_moving_average(batch_values, decay, start)[-1]


def corrected_stub(batch_values, decay, start):
    raise NotImplementedError("your code here")


def test_corrected_average_accepts_the_solution(capsys):
    check.corrected_moving_average(corrected_moving_average)
    assert capsys.readouterr().out.startswith("✓ Exercise 3.3 passed")


def test_corrected_average_stub_is_not_done(capsys):
    assert check.corrected_moving_average(corrected_stub) is None
    assert "Exercise 3.3 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (plain_average, "plain moving average, without the correction"),
    (adam_form, "did not remove the start value"),
    (off_by_one, "exponent is off by one"),
    (from_step_zero, "NaN or infinity"),
    (swapped_weights, "weights are swapped"),
    (lambda v, d, s: corrected_moving_average(v, d, s) + 0.01, "The corrected estimates are wrong"),
    (last_only, r"shape \(3,\); expected \(8, 3\)"),
    (lambda v, d, s: tf.constant(corrected_moving_average(v, d, s)), "asks for a NumPy array"),
])
def test_corrected_average_names_each_mistake(wrong, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.corrected_moving_average(wrong)


# --- What chapter 3 added to bnbook.mnist_mlp: step probes and snapshots -------------------------

class Linear(tf.Module):
    def __init__(self):
        self.w = tf.Variable(tf.zeros((2, 2)))

    def __call__(self, x, training=False):
        return x @ self.w


def test_step_probes_see_every_batch_before_its_update_and_snapshots_restore():
    from bnbook import mnist_mlp

    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = Linear()
    history = mnist_mlp.train(
        model, (x, y), (x, y), steps=12, eval_every=4, batch_size=10,
        probes=mnist_mlp.snapshot_probes(model),
        step_probes={"batch mean": lambda batch: tf.reduce_mean(batch, axis=0),
                     "w before": lambda batch: model.w[0, 0] + 0 * batch[0, 0]})
    indices = mnist_mlp.batch_indices(100, steps=12, batch_size=10, seed=0)
    assert history.step_probes["batch mean"].shape == (12, 2)
    np.testing.assert_allclose(history.step_probes["batch mean"], x[indices].mean(axis=1),
                               rtol=1e-5)
    assert history.step_probes["w before"][0] == 0.0  # recorded before the first update
    assert history.step_probes["w before"][1] != 0.0

    replay = Linear()
    mnist_mlp.load_snapshot(replay, history, 0)  # the weights after step 4
    assert history.steps[0] == 4
    np.testing.assert_array_equal(replay.w.numpy()[0, 0], history.step_probes["w before"][4])
    mnist_mlp.load_snapshot(replay, history, len(history.steps) - 1)
    np.testing.assert_array_equal(replay.w.numpy(), model.w.numpy())
