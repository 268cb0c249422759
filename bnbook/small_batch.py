"""Chapter 8: small training batches, and the normalisations that replace BN there.

Everything is sized for a 2-core CPU. The networks are :func:`bnbook.convnets.make_cnn`'s small CNN
(two stride-2 convolutions, then a dense layer, each followed by the normalisation under test) on
MNIST digits shrunk to 14x14, so that a training step costs little more than its fixed overhead:
a batch-size sweep over 5 normalisations and 6 batch sizes makes about 20,000 steps.

* :func:`small_images` -- :func:`bnbook.convnets.mnist_images`, average-pooled to 14x14;
* :data:`NORMALIZATIONS` -- the five normalisations the chapter compares, as layer factories;
* :class:`Trainer` -- one model and ONE compiled training loop per normalisation, retrained from
  scratch for any batch size and seed (a new batch size needs no new trace);
* :func:`sweep` -- test accuracy for every normalisation, batch size and seed, with the same
  number of training examples seen in every run; :func:`plot_sweep` draws it;
* :class:`GhostBatchNormalization` -- BN whose statistics come from sub-batches ("ghost batches")
  of the batch;
* :func:`batch_stat_spread` -- how much the batch mean and variance of one channel vary between
  batches of a given size;
* :func:`renorm_reference` -- one training-mode step of ``BatchNormalization(renorm=True)``
  written out in NumPy: r, d, their clipping, the output and the updated statistics;
* :func:`padded_sequences` -- a batch of variable-length sequences, zero-padded, with its mask.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from . import convnets

__all__ = ["BATCH_SIZES", "EXAMPLES_SEEN", "LR_PER_EXAMPLE", "BN_MOMENTUM", "IMAGE_SHAPE",
           "NORMALIZATIONS", "small_images", "make_net", "layer_output", "Trainer", "sweep",
           "plot_sweep", "GhostBatchNormalization", "ghost_norm", "batch_stat_spread",
           "renorm_reference", "padded_sequences"]

BATCH_SIZES = (2, 4, 8, 16, 32, 64)
EXAMPLES_SEEN = 4096       # training examples every run sees, whatever its batch size
LR_PER_EXAMPLE = 0.002     # SGD learning rate = LR_PER_EXAMPLE * batch size (linear scaling)
SGD_MOMENTUM = 0.9
BN_MOMENTUM = 0.9          # moving averages that settle within the 64 steps of the largest batch
RENORM_CLIPPING = {"rmin": 1 / 3, "rmax": 3.0, "dmax": 5.0}   # the paper's final limits
IMAGE_SHAPE = (14, 14, 1)


# --- data ---------------------------------------------------------------------------------------

def small_images(n_train: int = EXAMPLES_SEEN, n_test: int = 2000, seed: int = 0):
    """:func:`bnbook.convnets.mnist_images`, each image average-pooled 2x2 to 14x14.

    Returns ``(x_train, y_train), (x_test, y_test)``: float32 NHWC images in [0, 1] of shape
    ``(n, 14, 14, 1)`` and int64 labels.
    """
    (x_train, y_train), (x_test, y_test) = convnets.mnist_images(n_train, n_test, seed=seed)

    def shrink(x):
        return x.reshape(len(x), 14, 2, 14, 2, 1).mean(axis=(2, 4)).astype(np.float32)

    return (shrink(x_train), y_train), (shrink(x_test), y_test)


# --- the normalisations -------------------------------------------------------------------------

def _batch_norm(channels):
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM)


def _batch_renorm(channels):
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, renorm=True,
                                           renorm_momentum=BN_MOMENTUM,
                                           renorm_clipping=dict(RENORM_CLIPPING))


def _group_norm(channels):
    return keras.layers.GroupNormalization(groups=4)


def _layer_norm(channels):
    # One mean and variance per example over all of (H, W, C) (or all features of a dense layer),
    # with one gamma and beta per channel.
    return keras.layers.GroupNormalization(groups=1)


NORMALIZATIONS = {
    "none": None,
    "batch norm": _batch_norm,
    "batch renorm": _batch_renorm,
    "group norm": _group_norm,
    "layer norm": _layer_norm,
}
"""name -> ``factory(channels) -> Keras layer`` (``None``: no normalisation), for
:func:`make_net`. Group norm uses 4 groups (2, 4 and 8 channels per group in the three layers)."""


def make_net(norm, seed: int = 0):
    """The chapter's CNN for 14x14 images: Conv(8, 3x3, stride 2) -> norm -> ReLU ->
    Conv(16, stride 2) -> norm -> ReLU -> Flatten -> Dense(32) -> norm -> ReLU -> Dense(10).

    ``norm`` is a :data:`NORMALIZATIONS` value (or anything :func:`bnbook.convnets.make_norm`
    takes). Feature maps are 7x7x8 and 4x4x16.
    """
    return convnets.make_cnn(norm, filters=(8, 16), dense_units=32, seed=seed,
                             input_shape=IMAGE_SHAPE)


# --- training -----------------------------------------------------------------------------------

def layer_output(model, index: int, x, batch_size: int = 1024) -> np.ndarray:
    """The output of ``model.layers[index]`` for the images ``x``, every layer up to it in
    inference mode (e.g. the inputs of a BN layer: the output of the layer before it)."""
    parts = []
    for start in range(0, len(x), batch_size):
        h = tf.constant(x[start:start + batch_size])
        for layer in model.layers[:index + 1]:
            h = layer(h, training=False)
        parts.append(h.numpy())
    return np.concatenate(parts)


class Trainer:
    """One network and one compiled training loop, retrained from scratch as often as needed.

    ``fit(x, y, batch_size, seed)`` starts from the initial weights of ``make_net(norm, seed)``
    (BN's moving statistics and the optimizer's momentum included), then makes one pass over
    ``(x, y)`` in a seeded random order, in batches of ``batch_size``, with SGD (momentum 0.9) at
    learning rate ``lr_per_example * batch_size``. All steps run inside one ``tf.function`` whose
    input shapes are left open, so every batch size and seed reuses the same trace.
    """

    def __init__(self, norm, lr_per_example: float = LR_PER_EXAMPLE, build=make_net):
        self.norm, self.lr_per_example, self.build = norm, lr_per_example, build
        self.model = build(norm, seed=0)
        self.optimizer = keras.optimizers.SGD(0.01, momentum=SGD_MOMENTUM)
        self.optimizer.build(self.model.trainable_variables)
        self._optimizer_start = [v.numpy() for v in self.optimizer.variables]
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model, optimizer = self.model, self.optimizer
        image = tf.TensorSpec((None, None) + IMAGE_SHAPE, tf.float32)
        label = tf.TensorSpec((None, None), tf.int64)

        @tf.function(input_signature=[image, label])
        def run(x_batches, y_batches):
            for i in tf.range(tf.shape(x_batches)[0]):
                with tf.GradientTape() as tape:
                    loss = loss_fn(y_batches[i], model(x_batches[i], training=True))
                variables = model.trainable_variables
                optimizer.apply(tape.gradient(loss, variables), variables)
            return loss

        @tf.function(input_signature=[image])
        def predict_training_mode(x_batches):
            # Each batch normalised with its own statistics; the moving ones are restored after.
            def one(batch):
                return tf.argmax(model(batch, training=True), axis=-1)
            return tf.map_fn(one, x_batches, fn_output_signature=tf.int64)

        self._run, self._predict_training_mode = run, predict_training_mode
        self._starts = {}

    def reset(self, seed: int = 0) -> None:
        """Initial weights of ``build(norm, seed)``; the optimizer's state back to its start."""
        if seed not in self._starts:
            self._starts[seed] = [v.numpy() for v in self.build(self.norm, seed=seed).variables]
        for variable, value in zip(self.model.variables, self._starts[seed]):
            variable.assign(value)
        for variable, value in zip(self.optimizer.variables, self._optimizer_start):
            variable.assign(value)

    def fit(self, x, y, batch_size: int, seed: int = 0) -> "Trainer":
        """Train from scratch on one pass over ``(x, y)`` (``len(x)`` must be a multiple of
        ``batch_size``)."""
        if len(x) % batch_size:
            raise ValueError(f"{len(x)} examples do not split into batches of {batch_size}")
        self.reset(seed)
        self.optimizer.learning_rate.assign(self.lr_per_example * batch_size)
        order = np.random.default_rng(seed).permutation(len(x))
        steps = len(x) // batch_size
        self._run(tf.constant(x[order].reshape((steps, batch_size) + IMAGE_SHAPE)),
                  tf.constant(y[order].reshape(steps, batch_size).astype(np.int64)))
        return self

    def predictions(self, x, training: bool = False, batch_size: int = 500) -> np.ndarray:
        """The predicted class of each image. ``training=False``: inference mode (BN uses its moving
        statistics). ``training=True``: BN normalises each batch of ``batch_size`` images with that
        batch's own statistics, as in training (a last incomplete batch is dropped); the moving
        statistics are restored afterwards."""
        if not training:
            return convnets.predict_classes(self.model, x, batch_size=batch_size)
        n = len(x) - len(x) % batch_size
        saved = [v.numpy() for v in self.model.non_trainable_variables]
        predicted = self._predict_training_mode(
            tf.constant(x[:n].reshape((n // batch_size, batch_size) + x.shape[1:]))).numpy()
        for variable, value in zip(self.model.non_trainable_variables, saved):
            variable.assign(value)
        return predicted.reshape(-1)

    def accuracy(self, x, y, training: bool = False, batch_size: int = 500) -> float:
        """Test accuracy of :meth:`predictions` (inference mode unless ``training=True``)."""
        predicted = self.predictions(x, training=training, batch_size=batch_size)
        return float(np.mean(predicted == y[:len(predicted)]))


def sweep(norms: dict, train, test, batch_sizes=BATCH_SIZES, seeds=(0,), keep=()):
    """Test accuracy (inference mode) after training with every normalisation, batch size, seed.

    norms: ``{name: factory}`` (e.g. :data:`NORMALIZATIONS`); train, test: ``(x, y)`` pairs.
    ``seeds`` may be a dict ``{seed: batch_sizes}`` to run extra seeds at chosen sizes only.
    Every run sees each training example once. Returns ``(accuracy, trainers, kept)``:
    ``accuracy[name][seed][batch_size]``, the :class:`Trainer` of each name, and
    ``kept[name][batch_size]``: copies of the trained weights of seed 0, for the names in ``keep``.
    """
    if not isinstance(seeds, dict):
        seeds = {seed: tuple(batch_sizes) for seed in seeds}
    accuracy, trainers, kept = {}, {}, {}
    for name, norm in norms.items():
        trainer = trainers[name] = Trainer(norm)
        accuracy[name] = {}
        for seed, sizes in seeds.items():
            accuracy[name][seed] = {}
            for batch_size in sizes:
                trainer.fit(*train, batch_size=batch_size, seed=seed)
                accuracy[name][seed][batch_size] = trainer.accuracy(*test)
                if name in keep and seed == 0:
                    kept.setdefault(name, {})[batch_size] = trainer.model.get_weights()
    return accuracy, trainers, kept


def plot_sweep(accuracy: dict, batch_sizes=BATCH_SIZES, seed: int = 0,
               highlight: str = "batch norm") -> None:
    """Test accuracy against training batch size, one line per normalisation (``accuracy`` as
    returned by :func:`sweep`), on a log-2 axis labelled with the batch sizes themselves;
    ``highlight`` is drawn in black."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    for name, by_seed in accuracy.items():
        style = {"color": "black", "linewidth": 2.0} if name == highlight else {"linewidth": 1.2}
        ax.plot(batch_sizes, [by_seed[seed][b] for b in batch_sizes], marker="o", markersize=3,
                label=name, **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    ax.minorticks_off()
    ax.set_ylim(0.4, 1.0)
    ax.set_xlabel("training batch size (log scale)")
    ax.set_ylabel("test accuracy (inference mode)")
    ax.set_title("Test accuracy after one pass over the training images")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    plt.show()


# --- ghost batches ------------------------------------------------------------------------------

class GhostBatchNormalization(keras.layers.Layer):
    """Batch normalisation over "ghost" sub-batches of ``ghost_size`` examples.

    In training mode the batch (whose size must be a multiple of ``ghost_size``) is cut into
    consecutive groups of ``ghost_size`` examples, and each group is normalised with its own mean
    and variance (over its examples and, for images, all positions). The moving statistics move
    towards the average of the groups' statistics, once per call. Inference mode is plain BN:
    the moving statistics. ``ghost_size`` equal to the batch size is ordinary BN.
    """

    def __init__(self, ghost_size: int, momentum: float = BN_MOMENTUM, epsilon: float = 1e-3,
                 **kwargs):
        super().__init__(**kwargs)
        self.ghost_size, self.momentum, self.epsilon = int(ghost_size), momentum, epsilon

    def build(self, input_shape):
        shape = (input_shape[-1],)
        self.gamma = self.add_weight(shape=shape, initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=shape, initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(shape=shape, initializer="zeros", trainable=False,
                                           name="moving_mean")
        self.moving_variance = self.add_weight(shape=shape, initializer="ones", trainable=False,
                                               name="moving_variance")

    def call(self, x, training=None):
        if not training:
            return tf.nn.batch_normalization(x, self.moving_mean, self.moving_variance,
                                             self.beta, self.gamma, self.epsilon)
        shape = tf.shape(x)
        ghosts = tf.reshape(x, tf.concat([[-1, self.ghost_size], shape[1:]], axis=0))
        axes = list(range(1, len(x.shape)))        # within a ghost: its examples and positions
        mean, variance = tf.nn.moments(ghosts, axes=axes, keepdims=True)
        out = tf.nn.batch_normalization(ghosts, mean, variance, self.beta, self.gamma,
                                        self.epsilon)
        m = self.momentum
        self.moving_mean.assign(m * self.moving_mean + (1 - m) * tf.reshape(
            tf.reduce_mean(mean, axis=0), [-1]))
        self.moving_variance.assign(m * self.moving_variance + (1 - m) * tf.reshape(
            tf.reduce_mean(variance, axis=0), [-1]))
        return tf.reshape(out, shape)

    def get_config(self):
        return {**super().get_config(), "ghost_size": self.ghost_size,
                "momentum": self.momentum, "epsilon": self.epsilon}


def ghost_norm(ghost_size: int):
    """A :data:`NORMALIZATIONS`-style factory: ``GhostBatchNormalization(ghost_size)``."""
    def factory(channels):
        return GhostBatchNormalization(ghost_size)
    factory.__name__ = f"ghost_norm_{ghost_size}"
    return factory


# --- why BN suffers: the noise of batch statistics ----------------------------------------------

def batch_stat_spread(values, batch_sizes=BATCH_SIZES, draws: int = 2000, seed: int = 0):
    """How much one channel's batch statistics vary between random batches.

    values: one channel's activations, shape ``(n_examples, ...)`` (the positions of an example,
    if any, count towards its batch's statistics, as in BN). For each batch size, ``draws`` random
    batches are drawn without replacement. Returns ``{batch_size: (std of the batch mean,
    mean of the batch variance, std of the batch variance)}``, all divided by the channel's
    standard deviation (or variance) over all examples, so 0 means "no noise".
    """
    values = np.asarray(values, np.float64).reshape(len(values), -1)
    rng = np.random.default_rng(seed)
    mean_all, var_all = values.mean(), values.var()
    spread = {}
    for batch_size in batch_sizes:
        index = np.stack([rng.choice(len(values), batch_size, replace=False)
                          for _ in range(draws)])
        batches = values[index].reshape(draws, -1)
        means, variances = batches.mean(axis=1), batches.var(axis=1)
        spread[batch_size] = (float(np.std(means - mean_all) / np.sqrt(var_all)),
                              float(np.mean(variances) / var_all),
                              float(np.std(variances) / var_all))
    return spread


# --- batch renormalization, written out ---------------------------------------------------------

def renorm_reference(x, gamma, beta, renorm_mean, renorm_stddev, moving_mean, moving_stddev, *,
                     epsilon=1e-3, momentum=0.99, renorm_momentum=0.99, rmin=None, rmax=None,
                     dmax=None):
    """One training-mode call of ``keras.layers.BatchNormalization(renorm=True)``, in float64.

    Statistics per channel (the last axis) over every other axis. Returns a dict with ``r``,
    ``d`` (after clipping), ``output`` and the four updated statistics ``renorm_mean``,
    ``renorm_stddev``, ``moving_mean``, ``moving_stddev`` (Keras derives ``moving_variance`` from
    the last as ``moving_stddev**2 - epsilon``).

    As in Keras: sigma_B = sqrt(var_B + eps); r = sigma_B / sigma, d = (mu_B - mu) / sigma with
    sigma = max(renorm_stddev, sqrt(eps)); r clipped to [rmin, rmax], d to [-dmax, dmax] (a missing
    limit: no clipping); output = gamma * (x_hat * r + d) + beta with x_hat normalised by the
    batch statistics. Gradients would treat r and d as constants.
    """
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    batch_std = np.sqrt(var + epsilon)
    sigma = np.maximum(np.asarray(renorm_stddev, np.float64), np.sqrt(epsilon))
    r = batch_std / sigma
    d = (mean - renorm_mean) / sigma
    if rmin is not None:
        r = np.maximum(r, rmin)
    if rmax is not None:
        r = np.minimum(r, rmax)
    if dmax is not None:
        d = np.clip(d, -dmax, dmax)
    x_hat = (x - mean) / batch_std
    return {
        "r": r, "d": d, "output": gamma * (x_hat * r + d) + beta,
        "renorm_mean": renorm_momentum * renorm_mean + (1 - renorm_momentum) * mean,
        "renorm_stddev": renorm_momentum * renorm_stddev + (1 - renorm_momentum) * batch_std,
        "moving_mean": momentum * moving_mean + (1 - momentum) * mean,
        "moving_stddev": momentum * moving_stddev + (1 - momentum) * batch_std,
    }


# --- sequences ----------------------------------------------------------------------------------

def padded_sequences(lengths, features: int = 6, max_length: int | None = None, seed: int = 0):
    """A batch of sequences of the given lengths, zero-padded at the end to ``max_length``
    (default: the longest). Returns ``(x, mask)``: float32 ``(batch, time, features)`` and a bool
    ``(batch, time)`` mask, True on real time steps. The same seed and length give the same
    sequence, whatever else is in the batch (each sequence has its own generator)."""
    max_length = max_length or max(lengths)
    x = np.zeros((len(lengths), max_length, features), np.float32)
    mask = np.zeros((len(lengths), max_length), bool)
    for i, length in enumerate(lengths):
        rng = np.random.default_rng([seed, length])
        scale = np.linspace(0.5, 3.0, features)
        x[i, :length] = 2.0 + scale * rng.standard_normal((length, features))
        mask[i, :length] = True
    return x, mask
