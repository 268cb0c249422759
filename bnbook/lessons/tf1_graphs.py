"""Chapter 5: legacy TF1 graph code with batch norm, run on TF 2 through ``tf.compat.v1``.

Every graph here is built inside ``with tf.Graph().as_default():`` and run in a
``tf.compat.v1.Session``; eager execution stays on everywhere else.

    bn_variables      -- gamma, beta and the moving statistics of one BN layer
    batch_norm        -- BN as the old ``tf.compat.v1.layers.batch_normalization`` did it: the
                         moving-average updates go into the UPDATE_OPS collection, and nothing runs
                         them unless you do
    build_mlp         -- the chapter's 784-100-100-10 sigmoid network, weights drawn from NumPy
    train, evaluate   -- the feed-dict training loop and accuracy on a data set
    moving_stats      -- read one BN layer's moving mean and variance out of a session
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1


def bn_variables(units: int, name: str = "bn"):
    """Create gamma, beta, moving_mean and moving_variance for ``units`` features.

    The moving statistics are not trainable: the optimizer never touches them,
    only assign ops do.
    """
    ones, zeros = tf1.ones_initializer(), tf1.zeros_initializer()
    with tf1.variable_scope(name):
        gamma = tf1.get_variable("gamma", [units], initializer=ones)
        beta = tf1.get_variable("beta", [units], initializer=zeros)
        moving_mean = tf1.get_variable("moving_mean", [units],
                                       initializer=zeros, trainable=False)
        moving_variance = tf1.get_variable("moving_variance", [units],
                                           initializer=ones, trainable=False)
    return gamma, beta, moving_mean, moving_variance


def batch_norm(x, is_training, decay=0.99, epsilon=1e-3, name="bn"):
    """Dense-layer BN, wired as tf.compat.v1.layers.batch_normalization was."""
    gamma, beta, moving_mean, moving_variance = bn_variables(x.shape[-1], name)
    batch_mean, batch_variance = tf.nn.moments(x, axes=[0])
    # The moving-average updates: moving -= (moving - batch) * (1 - decay).
    rate = 1 - decay
    update_mean = tf1.assign_sub(moving_mean,
                                 (moving_mean - batch_mean) * rate)
    update_variance = tf1.assign_sub(moving_variance,
                                     (moving_variance - batch_variance) * rate)
    # Filed in a collection, attached to nothing: someone has to run them.
    tf1.add_to_collection(tf1.GraphKeys.UPDATE_OPS, update_mean)
    tf1.add_to_collection(tf1.GraphKeys.UPDATE_OPS, update_variance)
    # A Python `if` cannot test a placeholder's value (it has none yet);
    # tf.cond picks a branch at run time.
    mean, variance = tf.cond(
        is_training,
        lambda: (batch_mean, batch_variance),
        lambda: (tf.identity(moving_mean), tf.identity(moving_variance)))
    return tf.nn.batch_normalization(x, mean, variance, beta, gamma, epsilon)


class Model(NamedTuple):
    """The tensors of one network that a session feeds or fetches."""

    x: tf.Tensor            # placeholder, (batch, 784) float32 pixels in [0, 1]
    labels: tf.Tensor       # placeholder, (batch,) int64
    is_training: tf.Tensor  # placeholder, scalar bool: batch statistics (True) or moving ones
    logits: tf.Tensor
    loss: tf.Tensor         # summed cross-entropy of the batch
    accuracy: tf.Tensor


def build_mlp(bn_layer: Callable = batch_norm, hidden=(100, 100), seed: int = 0) -> Model:
    """Build the 784-100-100-10 sigmoid network in the current default graph.

    Each hidden layer is ``sigmoid(bn_layer(h @ w, is_training, name=...))``, with no bias before
    BN (beta plays its role). The weights start as standard-normal draws from NumPy with ``seed``,
    a deliberately poor scale that BN copes with, and every network built with the same seed
    starts from the same numbers.
    """
    rng = np.random.default_rng(seed)
    x = tf1.placeholder(tf.float32, [None, 784], name="x")
    labels = tf1.placeholder(tf.int64, [None], name="labels")
    is_training = tf1.placeholder(tf.bool, [], name="is_training")
    h = x
    for layer, units in enumerate(hidden):
        w = tf1.Variable(rng.standard_normal((h.shape[-1], units)).astype(np.float32),
                         name=f"w{layer}")
        h = tf.sigmoid(bn_layer(h @ w, is_training, name=f"bn{layer}"))
    w_out = tf1.Variable(rng.standard_normal((h.shape[-1], 10)).astype(np.float32), name="w_out")
    b_out = tf1.Variable(np.zeros(10, np.float32), name="b_out")
    logits = h @ w_out + b_out
    loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                                        logits=logits))
    correct = tf.equal(tf.argmax(logits, axis=1), labels)
    accuracy = tf.reduce_mean(tf.cast(correct, tf.float32))
    return Model(x, labels, is_training, logits, loss, accuracy)


def train(sess, model: Model, fetches, data, steps: int, batch_size: int = 60,
          seed: int = 0) -> None:
    """Run ``fetches`` (a train op, or a list such as [train_op, update_ops]) for ``steps`` steps.

    Mini-batches are drawn from ``data = (x, y)`` by a NumPy generator seeded with ``seed``, so two
    runs with the same seed see the same batches in the same order.
    """
    x, y = data
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        batch = rng.integers(0, len(x), batch_size)
        sess.run(fetches, {model.x: x[batch], model.labels: y[batch], model.is_training: True})


def evaluate(sess, model: Model, data, is_training: bool) -> float:
    """Accuracy on all of ``data`` fed as one batch, with batch (True) or moving (False) statistics."""
    x, y = data
    return float(sess.run(model.accuracy,
                          {model.x: x, model.labels: y, model.is_training: is_training}))


def variable(graph, name: str):
    """The global variable of ``graph`` named ``name`` (e.g. "bn0/moving_mean")."""
    for var in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES):
        if var.op.name == name:
            return var
    raise KeyError(f"no variable named {name!r} in this graph")


def moving_stats(sess, layer: str = "bn0") -> tuple[np.ndarray, np.ndarray]:
    """The current (moving_mean, moving_variance) of BN layer ``layer``, read from ``sess``."""
    return tuple(sess.run([variable(sess.graph, f"{layer}/moving_mean"),
                           variable(sess.graph, f"{layer}/moving_variance")]))
