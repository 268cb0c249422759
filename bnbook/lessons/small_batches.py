"""Chapter 8: small training batches, and the normalisations that replace BN there.

Everything is sized for a 2-core CPU. The networks are :func:`.conv_resnets.make_cnn`'s small CNN
(two stride-2 convolutions, then a dense layer, each followed by the normalisation under test) on
MNIST digits shrunk to 14x14, so that a training step costs little more than its fixed overhead.
Runs this short are chaotic (a last-bit difference in one kernel changes a batch-2 run's accuracy
by 0.1), so every setting is trained with several seeds, and the seeds are trained side by side.

* :func:`small_images` -- :func:`bnbook.lessons.conv_resnets.mnist_images`, average-pooled to 14x14;
* :data:`NORMALIZATIONS` -- the five normalisations the chapter compares, as layer factories;
  :func:`conv_and_dense` -- one normalisation in the convolutions, another in the dense layer;
* :func:`make_net` -- one network; :func:`make_stack` -- one network per seed, side by side, as
  one wide network whose parts never touch (grouped convolutions, block-diagonal dense layers);
* :class:`Trainer` -- a stack and ONE compiled training loop, retrained from scratch for any batch
  size (a new batch size needs no new trace); accuracies and predictions per seed;
* :func:`sweep` -- test accuracy for every normalisation, batch size and seed, with the same
  number of training examples seen in every run; :func:`plot_sweep` draws the mean and range;
  :func:`mean_range` formats one result over seeds;
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

from . import conv_resnets as convnets

__all__ = ["BATCH_SIZES", "EXAMPLES_SEEN", "LR_PER_EXAMPLE", "BN_MOMENTUM", "IMAGE_SHAPE",
           "NORMALIZATIONS", "small_images", "make_net", "make_stack", "layer_output", "Trainer",
           "mean_range", "SEEDS", "DENSE_UNITS", "conv_and_dense", "sweep",
           "plot_sweep", "GhostBatchNormalization", "ghost_norm", "batch_stat_spread",
           "renorm_reference", "padded_sequences"]

BATCH_SIZES = (2, 4, 8, 16, 32, 64)
EXAMPLES_SEEN = 4096       # training examples every run sees, whatever its batch size
LR_PER_EXAMPLE = 0.002     # SGD learning rate = LR_PER_EXAMPLE * batch size (linear scaling)
SGD_MOMENTUM = 0.9
BN_MOMENTUM = 0.9          # moving averages that settle within the 64 steps of the largest batch
RENORM_CLIPPING = {"rmin": 1 / 3, "rmax": 3.0, "dmax": 5.0}   # the paper's final limits
SEEDS = tuple(range(8))    # networks per configuration: enough to see the spread of a chaotic run
DENSE_UNITS = 32
IMAGE_SHAPE = (14, 14, 1)


# --- data ---------------------------------------------------------------------------------------

def small_images(n_train: int = EXAMPLES_SEEN, n_test: int = 2000, seed: int = 0):
    """:func:`bnbook.lessons.conv_resnets.mnist_images`, each image average-pooled 2x2 to 14x14.

    Returns ``(x_train, y_train), (x_test, y_test)``: float32 NHWC images in [0, 1] of shape
    ``(n, 14, 14, 1)`` and int64 labels.
    """
    (x_train, y_train), (x_test, y_test) = convnets.mnist_images(n_train, n_test, seed=seed)

    def shrink(x):
        return x.reshape(len(x), 14, 2, 14, 2, 1).mean(axis=(2, 4)).astype(np.float32)

    return (shrink(x_train), y_train), (shrink(x_test), y_test)


# --- the normalisations -------------------------------------------------------------------------
# Every factory takes the channels of ONE network and ``stack``, the number of networks trained
# side by side as one (see :class:`Trainer`): a per-example normalisation over groups of channels
# then needs ``stack`` times as many groups, so that no group spans two networks.

def _batch_norm(channels, stack=1):
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM)


def _batch_renorm(channels, stack=1):
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, renorm=True,
                                           renorm_momentum=BN_MOMENTUM,
                                           renorm_clipping=dict(RENORM_CLIPPING))


def _group_norm(channels, stack=1):
    return keras.layers.GroupNormalization(groups=4 * stack)


def _layer_norm(channels, stack=1):
    # One mean and variance per example over all of (H, W, C) (or all features of a dense layer),
    # with one gamma and beta per channel.
    return keras.layers.GroupNormalization(groups=stack)


NORMALIZATIONS = {
    "none": None,
    "batch norm": _batch_norm,
    "batch renorm": _batch_renorm,
    "group norm": _group_norm,
    "layer norm": _layer_norm,
}
"""name -> ``factory(channels, stack=1) -> Keras layer`` (``None``: no normalisation), for
:func:`make_net` and :func:`make_stack`. Group norm uses 4 groups (2, 4 and 8 channels per group
in the three layers)."""


def conv_and_dense(conv, dense):
    """A factory that puts the normalisation ``conv`` after the two convolutions and ``dense``
    after the hidden dense layer (both :data:`NORMALIZATIONS` values): to find which layer's
    normalisation a result depends on. (The layers are told apart by their width: the dense
    layer has :data:`DENSE_UNITS` units, the convolutions 8 and 16 channels.)"""
    def factory(channels, stack=1):
        chosen = dense if channels == DENSE_UNITS else conv
        return chosen(channels, stack) if chosen is not None else None
    return factory


def make_net(norm, seed: int = 0):
    """The chapter's CNN for 14x14 images: Conv(8, 3x3, stride 2) -> norm -> ReLU ->
    Conv(16, stride 2) -> norm -> ReLU -> Flatten -> Dense(32) -> norm -> ReLU -> Dense(10).

    ``norm`` is a :data:`NORMALIZATIONS` value (or anything :func:`bnbook.lessons.conv_resnets.make_norm`
    takes). Feature maps are 7x7x8 and 4x4x16.
    """
    return convnets.make_cnn(norm, filters=(8, 16), dense_units=DENSE_UNITS, seed=seed,
                             input_shape=IMAGE_SHAPE)


# --- several networks trained as one ------------------------------------------------------------
# A short run with batches of 2 is chaotic: one run says little, and a run of the tiny network
# costs its per-step overhead, not its arithmetic. So the Trainer trains one network per seed
# side by side, as one wide network whose parts never touch: network k owns channels
# [k*C, (k+1)*C) of every layer, the convolutions are grouped (one group per network), the dense
# layers are block-diagonal. BN's statistics are per channel and group norm's groups stay within
# a network, so each network computes exactly what it would compute alone.

class StackedConv2D(keras.layers.Layer):
    """``stack`` independent Conv2D(filters, 3x3, stride 2, same), network k on input channels
    [k*C_in, (k+1)*C_in). The kernel is the networks' kernels side by side on the output axis,
    shape ``(3, 3, C_in, stack * filters)``. Written as image patches times a per-network kernel
    (not as a grouped convolution, whose gradient some CPU builds of TensorFlow lack)."""

    def __init__(self, filters: int, stack: int, use_bias: bool, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.stack, self.use_bias = filters, stack, use_bias

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(3, 3, input_shape[-1] // self.stack, self.filters * self.stack), name="kernel")
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.filters * self.stack,), initializer="zeros",
                                        name="bias")

    def call(self, x):
        patches = tf.image.extract_patches(x, sizes=[1, 3, 3, 1], strides=[1, 2, 2, 1],
                                           rates=[1, 1, 1, 1], padding="SAME")
        _, height, width, _ = patches.shape
        channels = x.shape[-1] // self.stack
        patches = tf.reshape(patches, [-1, height, width, 3, 3, self.stack, channels])
        kernel = tf.reshape(self.kernel, [3, 3, channels, self.stack, self.filters])
        y = tf.reshape(tf.einsum("bhwijkc,ijcko->bhwko", patches, kernel),
                       [-1, height, width, self.stack * self.filters])
        return y + self.bias if self.use_bias else y


class StackedFlatten(keras.layers.Layer):
    """Flatten each network's (H, W, C) feature map, in Flatten's order, networks side by side."""

    def __init__(self, stack: int, **kwargs):
        super().__init__(**kwargs)
        self.stack = stack

    def call(self, x):
        _, height, width, channels = x.shape
        per_net = tf.reshape(x, [-1, height, width, self.stack, channels // self.stack])
        return tf.reshape(tf.transpose(per_net, [0, 3, 1, 2, 4]),
                          [-1, self.stack * height * width * (channels // self.stack)])


class StackedDense(keras.layers.Layer):
    """``stack`` independent Dense(units) layers: a block-diagonal kernel of shape
    ``(stack, features per network, units)``."""

    def __init__(self, units: int, stack: int, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.units, self.stack, self.use_bias = units, stack, use_bias

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(self.stack, input_shape[-1] // self.stack, self.units), name="kernel")
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.stack * self.units,), initializer="zeros",
                                        name="bias")

    def call(self, x):
        per_net = tf.reshape(x, [-1, self.stack, x.shape[-1] // self.stack])
        y = tf.reshape(tf.einsum("bkf,kfo->bko", per_net, self.kernel),
                       [-1, self.stack * self.units])
        return y + self.bias if self.use_bias else y


def make_stack(norm, seeds=(0,)):
    """One network per seed, side by side (see the comment above): the input has one channel
    per network, the logits are ``(batch, len(seeds) * 10)``. Network k starts from the
    initial weights of ``make_net(norm, seeds[k])``."""
    stack = len(seeds)
    layers = [keras.Input(IMAGE_SHAPE[:2] + (stack,))]

    def block(make_layer, width):
        normaliser = norm(width, stack=stack) if norm is not None else None
        layers.append(make_layer(width, stack=stack, use_bias=normaliser is None))
        if normaliser is not None:
            layers.append(normaliser)
        layers.append(keras.layers.ReLU())

    block(StackedConv2D, 8)
    block(StackedConv2D, 16)
    layers.append(StackedFlatten(stack))
    block(StackedDense, DENSE_UNITS)
    layers.append(StackedDense(10, stack=stack))
    model = keras.Sequential(layers, name="stacked_nets")
    nets = [make_net(norm, seed=seed) for seed in seeds]
    model.set_weights([_stack(layer, parts) for layer, parts in
                       zip(_weight_owners(model), zip(*[net.get_weights() for net in nets]))])
    return model


def _weight_owners(model):
    """The layer that owns each of ``model.get_weights()``, in order."""
    return [layer for layer in model.layers for _ in layer.weights]


def _stack(layer, parts):
    if isinstance(layer, StackedDense) and parts[0].ndim == 2:
        return np.stack(parts)                  # block-diagonal dense kernel
    return np.concatenate(parts, axis=-1)       # conv kernels (output channels), all vectors


def _unstack(layer, value, stack, index):
    if isinstance(layer, StackedDense) and value.ndim == 3:
        return value[index]
    size = value.shape[-1] // stack
    return value[..., index * size:(index + 1) * size]


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


# --- training -----------------------------------------------------------------------------------

class Trainer:
    """One network per seed, trained side by side (:func:`make_stack`) by ONE compiled loop,
    retrained from scratch as often as needed.

    ``fit(x, y, batch_size)`` starts every network from the initial weights of
    ``make_net(norm, seed)`` (BN's moving statistics and the optimizer's momentum included), then
    makes one pass over ``(x, y)`` for each network in its own seeded random order, in batches of
    ``batch_size``, with SGD (momentum 0.9) at learning rate ``lr_per_example * batch_size``. The
    loss is the sum of the networks' mean cross-entropies, so each network gets the gradient of
    its own loss. All steps run inside one ``tf.function`` whose batch shapes are left open, so
    every batch size reuses the same trace. ``accuracy`` returns one test accuracy per seed;
    ``network(i)`` is seed i's network as a plain :func:`make_net` model.
    """

    def __init__(self, norm, seeds=(0,), lr_per_example: float = LR_PER_EXAMPLE):
        self.norm, self.seeds, self.lr_per_example = norm, tuple(seeds), lr_per_example
        self.model = make_stack(norm, self.seeds)
        self._start = [v.numpy() for v in self.model.variables]
        self.optimizer = keras.optimizers.SGD(0.01, momentum=SGD_MOMENTUM)
        self.optimizer.build(self.model.trainable_variables)
        self._optimizer_start = [v.numpy() for v in self.optimizer.variables]
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
        model, optimizer, stack = self.model, self.optimizer, len(self.seeds)
        image = tf.TensorSpec((None, None) + IMAGE_SHAPE[:2] + (stack,), tf.float32)
        label = tf.TensorSpec((None, None, stack), tf.int64)

        @tf.function(input_signature=[image, label])
        def run(x_batches, y_batches):
            for i in tf.range(tf.shape(x_batches)[0]):
                with tf.GradientTape() as tape:
                    logits = tf.reshape(model(x_batches[i], training=True), [-1, stack, 10])
                    loss = tf.reduce_sum(tf.reduce_mean(loss_fn(y_batches[i], logits), axis=0))
                variables = model.trainable_variables
                optimizer.apply(tape.gradient(loss, variables), variables)
            return loss

        @tf.function(input_signature=[image])
        def predict_training_mode(x_batches):
            # Each batch normalised with its own statistics (the caller restores the moving ones).
            def one(batch):
                return tf.argmax(tf.reshape(model(batch, training=True), [-1, stack, 10]), axis=-1)
            return tf.map_fn(one, x_batches, fn_output_signature=tf.int64)

        self._run, self._predict_training_mode = run, predict_training_mode

    def reset(self) -> None:
        """Every network back to its initial weights; the optimizer's state back to its start."""
        for variable, value in zip(self.model.variables, self._start):
            variable.assign(value)
        for variable, value in zip(self.optimizer.variables, self._optimizer_start):
            variable.assign(value)

    def fit(self, x, y, batch_size: int) -> "Trainer":
        """Train every network from scratch on one pass over ``(x, y)`` (``len(x)`` must be a
        multiple of ``batch_size``); network k sees the examples in the order of seed k."""
        if len(x) % batch_size:
            raise ValueError(f"{len(x)} examples do not split into batches of {batch_size}")
        self.reset()
        self.optimizer.learning_rate.assign(self.lr_per_example * batch_size)
        orders = [np.random.default_rng(seed).permutation(len(x)) for seed in self.seeds]
        steps = len(x) // batch_size
        images = np.concatenate([x[order] for order in orders], axis=-1)   # a channel per network
        labels = np.stack([y[order] for order in orders], axis=-1).astype(np.int64)
        self._run(tf.constant(images.reshape((steps, batch_size) + images.shape[1:])),
                  tf.constant(labels.reshape(steps, batch_size, len(self.seeds))))
        return self

    def predictions(self, x, training: bool = False, batch_size: int = 500) -> np.ndarray:
        """The predicted class of each image by every network: shape ``(len(x), seeds)``.

        ``training=False``: inference mode (BN uses its moving statistics). ``training=True``: BN
        normalises each batch of ``batch_size`` images with that batch's own statistics, as in
        training (each network its own statistics; a last incomplete batch is dropped); the
        moving statistics are restored afterwards."""
        stack = len(self.seeds)
        if not training:
            parts = [self.model(np.repeat(x[start:start + batch_size], stack, axis=-1))
                     for start in range(0, len(x), batch_size)]
            return np.argmax(np.concatenate(parts).reshape(-1, stack, 10), axis=-1)
        n = len(x) - len(x) % batch_size
        batches = np.repeat(x[:n], stack, axis=-1).reshape((n // batch_size, batch_size)
                                                            + x.shape[1:3] + (stack,))
        saved = [v.numpy() for v in self.model.non_trainable_variables]
        predicted = self._predict_training_mode(tf.constant(batches)).numpy()
        for variable, value in zip(self.model.non_trainable_variables, saved):
            variable.assign(value)
        return predicted.reshape(n, stack)

    def accuracy(self, x, y, training: bool = False, batch_size: int = 500) -> np.ndarray:
        """Test accuracy of every network (one per seed, in order) of :meth:`predictions`
        (inference mode unless ``training=True``)."""
        predicted = self.predictions(x, training=training, batch_size=batch_size)
        return np.mean(predicted == y[:len(predicted), None], axis=0)

    def network(self, index: int = 0):
        """Seed ``seeds[index]``'s network, with its current weights, as a :func:`make_net`
        model."""
        net = make_net(self.norm, seed=self.seeds[index])
        stack = len(self.seeds)
        net.set_weights([_unstack(layer, value, stack, index) for layer, value in
                         zip(_weight_owners(self.model), self.model.get_weights())])
        return net


def mean_range(values, digits: int = 2) -> str:
    """``"mean (lowest–highest)"`` of one result over seeds, e.g. ``"0.55 (0.47–0.66)"``."""
    values = np.asarray(values)
    return f"{values.mean():.{digits}f} ({values.min():.{digits}f}–{values.max():.{digits}f})"


def sweep(norms: dict, train, test, batch_sizes=BATCH_SIZES, seeds=SEEDS, keep=()):
    """Test accuracy (inference mode) after training with every normalisation and batch size,
    one network per seed (all seeds of a normalisation trained at once by one :class:`Trainer`).

    norms: ``{name: factory}`` (e.g. :data:`NORMALIZATIONS`); train, test: ``(x, y)`` pairs.
    Every run sees each training example once. Returns ``(accuracy, trainers, kept)``:
    ``accuracy[name][batch_size]``, an array of one accuracy per seed; the :class:`Trainer` of
    each name; and ``kept[name][batch_size]``, the trained weights of that trainer's model (all
    seeds), for the names in ``keep``: ``trainers[name].model.set_weights(...)`` restores them.
    """
    accuracy, trainers, kept = {}, {}, {}
    for name, norm in norms.items():
        trainer = trainers[name] = Trainer(norm, seeds)
        accuracy[name] = {}
        for batch_size in batch_sizes:
            accuracy[name][batch_size] = trainer.fit(*train, batch_size=batch_size).accuracy(*test)
            if name in keep:
                kept.setdefault(name, {})[batch_size] = trainer.model.get_weights()
    return accuracy, trainers, kept


def plot_sweep(accuracy: dict, batch_sizes=BATCH_SIZES, highlight: str = "batch norm") -> None:
    """Mean test accuracy over the seeds against training batch size, one line per
    normalisation (``accuracy`` as returned by :func:`sweep`), with a band from the lowest to the
    highest seed, on a log-2 axis labelled with the batch sizes themselves; ``highlight`` is
    drawn in black."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    for name, by_size in accuracy.items():
        style = {"color": "black", "linewidth": 2.0} if name == highlight else {"linewidth": 1.2}
        runs = np.array([by_size[b] for b in batch_sizes])          # (sizes, seeds)
        line, = ax.plot(batch_sizes, runs.mean(axis=1), marker="o", markersize=3, label=name,
                        **style)
        ax.fill_between(batch_sizes, runs.min(axis=1), runs.max(axis=1), alpha=0.15,
                        color=line.get_color(), linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    ax.minorticks_off()
    ax.set_ylim(0.3, 1.0)
    ax.set_xlabel("training batch size (log scale)")
    ax.set_ylabel("test accuracy (inference mode)")
    ax.set_title(f"Test accuracy after one pass over the training images "
                 f"(mean and range of {runs.shape[1]} seeds)", fontsize="medium")
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
    def factory(channels, stack=1):
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
