"""The shared MNIST training loop of chapters 2 and 3, on tiny synthetic data (fast)."""

import numpy as np
import tensorflow as tf

from bnbook.lessons import mnist_experiment as mnist_mlp


def test_initial_weights_are_standard_normal_and_repeatable():
    first, again = mnist_mlp.initial_weights(0), mnist_mlp.initial_weights(0)
    assert [w.shape for w in first] == [(784, 100), (100, 100), (100, 10)]
    assert all(w.dtype == np.float32 for w in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert abs(float(first[0].std()) - 1.0) < 0.01


def test_batch_indices_cover_each_epoch_once():
    indices = mnist_mlp.batch_indices(100, steps=10, batch_size=20, seed=1)
    assert indices.shape == (10, 20)
    for epoch in indices.reshape(2, 100):
        assert sorted(epoch.tolist()) == list(range(100))


class Linear(tf.Module):
    def __init__(self):
        self.w = tf.Variable(tf.zeros((2, 2)))
        self.calls_with_training = tf.Variable(0, trainable=False)

    def __call__(self, x, training=False):
        if training:
            self.calls_with_training.assign_add(1)
        return x @ self.w


def test_train_learns_records_and_calls_training_mode():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = Linear()
    history = mnist_mlp.train(model, (x, y), (x, y), steps=40, eval_every=10, batch_size=20,
                              probes={"w00": lambda x_test: model.w[0, 0] + 0 * x_test[0, 0]})
    assert history.steps.tolist() == [10, 20, 30, 40]
    assert history.test_accuracy[-1] > 0.9
    assert history.probes["w00"].shape == (4,)
    assert int(model.calls_with_training.numpy()) == 40


def test_accuracy_feeds_the_requested_batch_size():
    def predict(batch):  # predicts (batch size mod 3) for every row: depends on the batching
        size = tf.shape(batch)[0]
        return tf.one_hot(tf.fill([size], size % 3), 3)

    x = np.zeros((10, 4), np.float32)
    assert mnist_mlp.predict_classes(predict, x, batch_size=4).tolist() == [1] * 8 + [2] * 2
    assert mnist_mlp.accuracy(predict, x, np.ones(10), batch_size=4) == 0.8
    assert mnist_mlp.predict_classes(predict, x).tolist() == [1] * 10


class SigmoidNet(tf.Module):
    """Chapter 2's networks, written one seed at a time (plain, or BN on both hidden layers)."""

    def __init__(self, weights, bn):
        super().__init__()
        self.bn = bn
        self.kernels = [tf.Variable(w) for w in weights]
        self.shifts = [tf.Variable(tf.zeros(w.shape[1])) for w in weights]
        self.scales = [tf.Variable(tf.ones(w.shape[1])) for w in weights[:2]] if bn else []

    def __call__(self, x, training=False):
        h = x
        for layer, (w, b) in enumerate(zip(self.kernels, self.shifts)):
            z = h @ w
            if layer == 2:
                return z + b
            if self.bn:
                mean, variance = tf.nn.moments(z, axes=[0])
                z = tf.nn.batch_normalization(z, mean, variance, b, self.scales[layer],
                                              mnist_mlp.EPSILON)
            else:
                z = z + b
            h = tf.sigmoid(z)


def test_train_seeds_trains_each_seed_as_train_does():
    """Seed by seed, the side-by-side networks end where one network per seed ends."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(240, 784)).astype(np.float32)
    x[:, :10] *= 20                                   # learnable labels, well-separated logits
    y = x[:, :10].argmax(axis=1)
    for bn, init in ((False, "glorot"), (True, "standard normal")):
        together = mnist_mlp.train_seeds(bn, (3, 7), (x, y), (x[:100], y[:100]), steps=120,
                                         init=init)
        alone = [mnist_mlp.train(SigmoidNet(mnist_mlp.seed_weights(seed, init), bn), (x, y),
                                 (x[:100], y[:100]), steps=120, eval_every=120, seed=seed
                                 ).test_accuracy[-1] for seed in (3, 7)]
        np.testing.assert_allclose(together, alone, atol=0.021)   # at most 2 of 100 flip
        assert together.shape == (2,) and together.min() > 0.3    # both learned something


def test_glorot_weights_have_the_glorot_scale():
    for w in mnist_mlp.seed_weights(1, "glorot"):
        assert abs(w.std() / np.sqrt(2 / sum(w.shape)) - 1) < 0.05
