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
