"""Chapter 12's lesson helper: the layer against the NumPy reference, the statistics helpers, the
batch-of-one failure and a short training run."""

import os

import numpy as np
import pytest

from bnbook.lessons import recurrent_bn as rb


def _random_population(layer, steps, rng):
    return {k: (rng.normal(0, 0.3, (steps, layer.stack, w)).astype(np.float32),
                rng.uniform(0.5, 2.0, (steps, layer.stack, w)).astype(np.float32))
            for k, w in layer.widths.items()}


@pytest.mark.parametrize("norms", [("batch", "batch"), ("none", "batch", "layer", "batch")])
def test_layer_matches_reference(norms):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 6, 3)).astype(np.float32)
    layer = rb.NormLSTM(5, norms, gamma=[0.1 + 0.3 * k for k in range(len(norms))],
                        seeds=range(len(norms)))
    h = layer(x, batch_stats=True).numpy()
    population = _random_population(layer, 4, rng)             # steps 4, 5 reuse step 3's
    h_pop = layer(x, population=population).numpy()
    for k, norm in enumerate(norms):
        if norm != "batch":
            continue
        weights = layer.weights_of(k)
        want = rb.bn_lstm_reference(x, **weights)
        np.testing.assert_allclose(h[k], want, rtol=1e-5, atol=1e-6)
        stats = {n: (m[:, k], v[:, k]) for n, (m, v) in population.items()}
        want = rb.bn_lstm_reference(x, population=stats, **weights)
        np.testing.assert_allclose(h_pop[k], want, rtol=1e-5, atol=1e-6)


def test_plain_and_layer_norm_networks():
    """A "none" network is a plain LSTM: its output equals an unnormalised NumPy LSTM; a
    "layer" network does not depend on the rest of the batch."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 4, 3)).astype(np.float32)
    layer = rb.NormLSTM(4, ("none", "layer"), seeds=(0, 1))
    h = layer(x, batch_stats=True).numpy()
    w = layer.weights_of(0)
    hh, c = np.zeros((5, 4)), np.zeros((5, 4))
    for t in range(4):
        z = x[:, t] @ w["kernel_x"] + hh @ w["kernel_h"] + w["bias"]
        i, f, g, o = np.split(z, 4, axis=-1)
        c = rb._sigmoid(f) * c + rb._sigmoid(i) * np.tanh(g)
        hh = rb._sigmoid(o) * np.tanh(c)
    np.testing.assert_allclose(h[0], hh, rtol=1e-5, atol=1e-6)
    alone = layer(x[:1], batch_stats=True).numpy()
    np.testing.assert_allclose(alone[1], h[1][:1], rtol=1e-5, atol=1e-6)


def test_population_statistics_pool_batches_exactly():
    rng = np.random.default_rng(3)
    layer = rb.SequenceModel("batch", units=4, seeds=(0,))
    x = rng.standard_normal((30, 5, 3)).astype(np.float32)
    whole = rb.population_statistics(layer, [x])
    parts = rb.population_statistics(layer, [x[:10], x[10:]])
    # the gate input term does not depend on the batch: pooling two batches is exact
    np.testing.assert_allclose(parts["x"][0], whole["x"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(parts["x"][1], whole["x"][1], rtol=1e-4, atol=1e-5)
    assert whole["c"][0].shape == (5, 1, 4)


def test_extend_and_shared_statistics():
    means = np.arange(6, dtype=np.float32).reshape(3, 1, 2)
    variances = means + 1
    long = rb.extend_statistics({"x": (means, variances)}, 5)["x"]
    np.testing.assert_array_equal(long[0][3:], means[[2, 2]])
    shared = rb.shared_statistics({"x": (means, variances)})["x"]
    np.testing.assert_allclose(shared[0], np.repeat(means.mean(0, keepdims=True), 3, 0))
    pooled_var = (variances + (means - means.mean(0)) ** 2).mean(0)
    np.testing.assert_allclose(shared[1][0], pooled_var, rtol=1e-6)


def test_batch_of_one_gives_one_answer():
    rng = np.random.default_rng(4)
    model = rb.SequenceModel(("none", "batch"), units=4, seeds=(0, 1))
    x = rng.uniform(0, 1, (6, 5, 3)).astype(np.float32)
    model.head.assign(rng.normal(0, 1, model.head.shape).astype(np.float32))
    predictions = rb.predict_alone(model, x)
    assert len(set(predictions[1])) == 1


def test_inference_without_population_raises():
    model = rb.SequenceModel("batch", units=3, seeds=(0,))
    with pytest.raises(ValueError, match="population"):
        model(np.zeros((2, 3, 4), np.float32))


def test_short_training_lowers_the_loss():
    x, y = rb.adding_problem(256, 6, seed=0)
    model = rb.SequenceModel(("batch", "layer"), units=8, outputs=1, seeds=(0, 1))
    curve = rb.train(model, x, y, steps=40, batch_size=32, learning_rate=1e-2)
    assert curve.shape == (40, 2)
    assert np.all(curve[-10:].mean(0) < curve[:5].mean(0))
    model.lstm.set_population(rb.population_statistics(model, [x]))
    mse, _ = rb.evaluate(model, x, y)
    assert mse.shape == (2,) and np.all(np.isfinite(mse))


def test_adding_problem():
    x, y = rb.adding_problem(50, 10, seed=1)
    assert x.shape == (50, 10, 2) and np.all(x[..., 1].sum(1) == 2)
    np.testing.assert_allclose(y, (x[..., 0] * x[..., 1]).sum(1), rtol=1e-6)


@pytest.mark.skipif(not os.environ.get("MNIST_NPZ"), reason="needs MNIST_NPZ")
def test_row_mnist():
    (xt, yt), (xs, ys) = rb.row_mnist(n_train=20, n_test=10)
    assert xt.shape == (20, 28, 28) and xs.shape == (10, 28, 28)
    assert xt.dtype == np.float32 and 0 <= xt.min() and xt.max() <= 1 and yt.dtype == np.int64
