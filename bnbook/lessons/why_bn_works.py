"""Chapter 11: why BN works -- testing the explanations, and BN with dropout and depth.

Everything is sized for a 2-core CPU. The chapter's network is a small ReLU MLP on a subsample of
MNIST, written as plain TensorFlow functions of an explicit list of parameters, so that a
measurement can evaluate the loss and its gradient at weights that are not the network's own
(the layers below updated, a step along the gradient) without touching the network.

Several seeds train at once: every parameter has a leading seed axis, the data a leading seed
axis too (each seed its own batches), and the loss is the sum of the seeds' mean losses, so each
seed's parameters get exactly the gradient of its own loss. BN's statistics are per seed and unit.

* :func:`mnist_flat_subsample` -- flat MNIST images, a seeded subsample;
* :class:`StackedMLP` -- one MLP per seed, side by side: ``"plain"``, ``"bn"`` (Dense -> BN ->
  ReLU) or ``"noisy bn"`` (BN followed by a random shift and scaling of every unit, drawn anew at
  every step: Santurkar et al.'s covariate shift on purpose);
* :func:`train` -- SGD on all seeds at once, with measurements at chosen steps: one unit's
  values on a probe batch, the ICS of one layer (:func:`ics`), the loss and gradient along the
  gradient (:func:`along_gradient`), test accuracy;
* :func:`ics` -- Santurkar et al.'s internal covariate shift of one layer: how much its gradient
  changes when the layers below it take their step (l2 distance and cosine);
* :func:`along_gradient` -- loss variation, gradient predictiveness and effective beta-smoothness
  for steps along the gradient;
* :func:`input_gradient_norms` -- at initialisation, the norm of the loss gradient with respect
  to every layer's input, for deep MLPs without BN, with BN, and with BN in residual blocks;
* :func:`dropout_mlp`, :func:`bn_inputs` -- Keras MLPs with dropout before or after BN, and what
  each BN layer receives in inference mode (for the variance shift);
* :func:`plot_unit_percentiles`, :func:`plot_bands` -- the chapter's figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from .conv_resnets import mnist_images
from .mnist_experiment import batch_indices

__all__ = ["KINDS", "mnist_flat_subsample", "StackedMLP", "train", "Record", "ics",
           "along_gradient", "input_gradient_norms", "DEPTH_KINDS", "dropout_mlp", "bn_inputs",
           "percentile_movement", "plot_unit_percentiles", "plot_bands"]

KINDS = ("plain", "bn", "noisy bn")
EPSILON = 1e-3
BN_MOMENTUM = 0.9
NOISE_SCALE = 2.0     # noisy BN: every unit multiplied by a factor log-uniform in [1/2, 2] ...
NOISE_SHIFT = 1.0     # ... and shifted by an offset uniform in [-1, 1], both drawn every step


def mnist_flat_subsample(n_train: int = 4000, n_test: int = 2000, seed: int = 0):
    """:func:`bnbook.lessons.conv_resnets.mnist_images` as flat float32 vectors of 784 pixels."""
    (x_train, y_train), (x_test, y_test) = mnist_images(n_train, n_test, seed=seed)
    return (x_train.reshape(len(x_train), -1), y_train), (x_test.reshape(len(x_test), -1), y_test)


# --- the network: one MLP per seed, side by side -----------------------------------------------

class StackedMLP(tf.Module):
    """One ReLU MLP per seed, ``sizes`` e.g. (784, 100, 100, 100, 10), trained side by side.

    ``kind``: ``"plain"`` (Dense with bias -> ReLU), ``"bn"`` (Dense without bias -> BN with
    gamma and beta -> ReLU) or ``"noisy bn"`` (as ``"bn"``, then every unit multiplied by a random
    factor and shifted by a random offset, the same for every example of the batch and drawn anew
    at every training step; none at inference). Weights are He-normal, drawn by NumPy from each
    seed, so that the three kinds start from the same weights. ``params`` lists every trainable
    variable, each with a leading seed axis, in the order :meth:`forward` takes them.
    """

    def __init__(self, kind: str, seeds=(0,), sizes=(784, 100, 100, 100, 10),
                 ghost: int | None = None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.seeds, self.sizes, self.ghost = kind, tuple(seeds), tuple(sizes), ghost
        self.normalised = kind != "plain"
        stack = len(self.seeds)
        kernels = [[] for _ in sizes[1:]]
        for seed in self.seeds:
            rng = np.random.default_rng(seed)
            for i, (m, n) in enumerate(zip(sizes, sizes[1:])):
                kernels[i].append(rng.standard_normal((m, n)) * np.sqrt(2.0 / m))
        self.params, self.moving = [], []
        for i, n in enumerate(sizes[1:]):
            self.params.append(tf.Variable(np.stack(kernels[i]).astype(np.float32)))
            hidden = i < len(sizes) - 2
            if hidden and self.normalised:
                self.params.append(tf.Variable(tf.ones((stack, n))))      # gamma
                self.params.append(tf.Variable(tf.zeros((stack, n))))     # beta
                self.moving.append([tf.Variable(tf.zeros((stack, n))),
                                    tf.Variable(tf.ones((stack, n)))])
            else:
                self.params.append(tf.Variable(tf.zeros((stack, n))))     # bias
        self.start = [v.numpy() for v in self.params + [m for pair in self.moving for m in pair]]

    def reset(self):
        """Back to the initial weights and moving statistics."""
        for variable, value in zip(self.params + [m for pair in self.moving for m in pair],
                                   self.start):
            variable.assign(value)

    def layer_of(self):
        """For every entry of ``params``, the index of the layer (0 = first) that owns it."""
        owners = []
        for i in range(len(self.sizes) - 1):
            hidden = i < len(self.sizes) - 2
            owners += [i] * (3 if hidden and self.normalised else 2)
        return owners

    def forward(self, params, x, training=True, noise=None, record=None, stats=None):
        """Logits ``(seeds, batch, classes)`` of inputs ``x`` ``(seeds, batch, features)``.

        ``params``: tensors in the order of ``self.params``. In training mode BN uses the batch's
        statistics per seed and unit; otherwise the moving ones. ``noise``: a list of
        ``(scale, shift)`` pairs ``(seeds, units)`` per hidden layer, for ``"noisy bn"``.
        ``record``: a list to which every hidden layer's pre-ReLU values are appended;
        ``stats``: a list to which every BN layer's batch (mean, variance) is appended.
        """
        h, position, n_layers = x, 0, len(self.sizes) - 1
        for i in range(n_layers):
            z = tf.einsum("sbi,sio->sbo", h, params[position])
            if i == n_layers - 1:
                return z + params[position + 1][:, None, :]
            if self.normalised:
                gamma, beta = params[position + 1], params[position + 2]
                position += 3
                if training and self.ghost:
                    groups = tf.reshape(z, [tf.shape(z)[0], -1, self.ghost, z.shape[-1]])
                    mean, var = tf.nn.moments(groups, axes=[2], keepdims=True)
                    groups = (groups - mean) / tf.sqrt(var + EPSILON)
                    if stats is not None:
                        stats.append((tf.reduce_mean(mean, [1, 2]), tf.reduce_mean(var, [1, 2])))
                    z, mean, var = tf.reshape(groups, tf.shape(z)), 0.0, 1.0 - EPSILON
                elif training:
                    mean, var = tf.nn.moments(z, axes=[1], keepdims=True)
                    if stats is not None:
                        stats.append((mean[:, 0], var[:, 0]))
                else:
                    mean = self.moving[i][0][:, None, :]
                    var = self.moving[i][1][:, None, :]
                z = gamma[:, None, :] * (z - mean) / tf.sqrt(var + EPSILON) + beta[:, None, :]
                if noise is not None:
                    scale, shift = noise[i]
                    z = z * scale[:, None, :] + shift[:, None, :]
            else:
                z = z + params[position + 1][:, None, :]
                position += 2
            if record is not None:
                record.append(z)
            h = tf.nn.relu(z)

    def loss(self, params, x, y, training=True, noise=None, stats=None):
        """Per-seed mean cross-entropy, shape (seeds,)."""
        logits = self.forward(params, x, training, noise, stats=stats)
        return tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits), axis=1)

    def noise(self, step):
        """The noisy net's (scale, shift) per hidden layer for training step ``step`` (stateless:
        the same step always gets the same noise); ``None`` for the other kinds."""
        if self.kind != "noisy bn":
            return None
        pairs = []
        for i, n in enumerate(self.sizes[1:-1]):
            shape = (len(self.seeds), n)
            seed = tf.stack([tf.cast(step, tf.int32), i])
            log_scale = tf.random.stateless_uniform(shape, seed, -1.0, 1.0)
            shift = tf.random.stateless_uniform(shape, seed + [0, 1000], -1.0, 1.0)
            pairs.append((tf.exp(log_scale * np.log(NOISE_SCALE)), shift * NOISE_SHIFT))
        return pairs

    def update_moving(self, stats):
        """Move BN's moving statistics towards the batch's ``stats`` (from :meth:`forward`),
        with momentum :data:`BN_MOMENTUM`, as a Keras BN layer does in training mode."""
        for (mean, var), moving in zip(stats, self.moving):
            moving[0].assign(BN_MOMENTUM * moving[0] + (1 - BN_MOMENTUM) * mean)
            moving[1].assign(BN_MOMENTUM * moving[1] + (1 - BN_MOMENTUM) * var)


# --- measurements -------------------------------------------------------------------------------

def _global(tensors, reduce):
    """Per seed: ``reduce`` summed over a list of (seeds, ...) tensors."""
    return tf.add_n([tf.reduce_sum(reduce(t), axis=list(range(1, len(t.shape)))) for t in tensors])


def ics(net: StackedMLP, x, y, layer: int, learning_rate: float):
    """Santurkar et al.'s ICS of hidden layer ``layer`` (0 = first) on the batch ``(x, y)``, per
    seed: G, the gradient of the loss with respect to the layer's kernel, and G', the same
    gradient after every layer below it has taken its SGD step (its own and the layers above
    unchanged). Returns ``(l2, relative, cosine)``: ||G - G'||, ||G - G'|| / ||G|| and
    cos(G, G'), each of shape (seeds,). BN in training mode; no noise. Changes nothing."""
    params = [tf.convert_to_tensor(v) for v in net.params]
    owners = net.layer_of()
    kernel = owners.index(layer)
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = tf.reduce_sum(net.loss(params, x, y))
    grads = tape.gradient(loss, params)
    moved = [p - learning_rate * g if owner < layer else p
             for p, g, owner in zip(params, grads, owners)]
    with tf.GradientTape() as tape:
        tape.watch(moved)
        loss = tf.reduce_sum(net.loss(moved, x, y))
    before, after = grads[kernel], tape.gradient(loss, moved)[kernel]
    l2 = tf.sqrt(_global([before - after], tf.square))
    norm_before = tf.sqrt(_global([before], tf.square))
    norm_after = tf.sqrt(_global([after], tf.square))
    cosine = _global([before * after], tf.identity) / (norm_before * norm_after)
    return l2, l2 / norm_before, cosine


def along_gradient(net: StackedMLP, x, y, step_sizes):
    """The loss landscape along the gradient on the batch ``(x, y)``, per seed.

    With g the gradient of the loss at the current weights w, for every step size eta in
    ``step_sizes``: the loss L(w - eta g) and the gradient there. Returns a dict of (seeds,)
    arrays: ``loss variation`` (max - min of the losses over the steps), ``gradient
    predictiveness`` (max over the steps of ||grad L(w) - grad L(w - eta g)||, lower is more
    predictive), ``beta`` (the effective beta-smoothness: max of that change divided by the
    distance moved, ||eta g||) and ``gradient norm`` (||g||). BN in training mode; no noise.
    Changes nothing."""
    return {name: value.numpy() for name, value in _along(net, x, y, step_sizes).items()}


def _along(net, x, y, step_sizes):
    """:func:`along_gradient` as tensors (for a ``tf.function``)."""
    params = [tf.convert_to_tensor(v) for v in net.params]
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = tf.reduce_sum(net.loss(params, x, y))
    grads = tape.gradient(loss, params)
    grad_norm = tf.sqrt(_global(grads, tf.square))
    losses, changes, betas = [], [], []
    for eta in step_sizes:
        moved = [p - eta * g for p, g in zip(params, grads)]
        with tf.GradientTape() as tape:
            tape.watch(moved)
            per_seed = net.loss(moved, x, y)
            loss = tf.reduce_sum(per_seed)
        moved_grads = tape.gradient(loss, moved)
        change = tf.sqrt(_global([a - b for a, b in zip(grads, moved_grads)], tf.square))
        losses.append(per_seed)
        changes.append(change)
        betas.append(change / (eta * grad_norm))
    losses = tf.stack(losses)
    return {"loss variation": (tf.reduce_max(losses, 0) - tf.reduce_min(losses, 0)),
            "gradient predictiveness": tf.reduce_max(tf.stack(changes), 0),
            "beta": tf.reduce_max(tf.stack(betas), 0),
            "gradient norm": grad_norm}


def percentile_movement(values, percentiles=(15, 50, 85)) -> np.ndarray:
    """How far one unit's distribution moves over training: ``values`` (records, seeds, batch)
    -> per seed, the mean over consecutive records of the largest change of any of the
    ``percentiles``, in units of the unit's spread (85th - 15th percentile) averaged over
    training."""
    bands = np.percentile(values, percentiles, axis=2)            # (percentiles, records, seeds)
    width = np.mean(bands[-1] - bands[0], axis=0)                 # (seeds,)
    steps = np.max(np.abs(np.diff(bands, axis=1)), axis=0)        # (records - 1, seeds)
    return np.mean(steps, axis=0) / width


# --- training -----------------------------------------------------------------------------------

@dataclass
class Record:
    """What :func:`train` measured at each recorded step: ``array(name)`` stacks a list into
    (records, seeds) (``unit``: (records, seeds, probe examples); ``ics``: (records, 3, seeds))."""

    steps: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    unit: list = field(default_factory=list)
    ics: list = field(default_factory=list)
    smoothness: list = field(default_factory=list)

    def array(self, name):
        return np.array(getattr(self, name))


def _gather(x, indices):
    """``x[indices]`` for indices (seeds, batch): (seeds, batch, features)."""
    return tf.gather(x, indices)


def train(net: StackedMLP, train_data, test_data, *, steps: int, learning_rate: float,
          batch_size: int = 64, record_every: int = 50, probe=None, unit=(1, 0),
          ics_layer: int | None = None, step_sizes=None) -> Record:
    """Train every seed of ``net`` with plain SGD on its own batches (seeded by its seed) for
    ``steps`` steps, and measure at step 0 and every ``record_every`` steps:

    * ``accuracy``: test accuracy per seed, in inference mode (BN's moving statistics, no noise);
      ``train_accuracy``: the same on (at most) the first 2,000 training images;
    * ``unit`` (if ``probe`` is given): the values of hidden unit ``unit = (layer, index)``
      before its ReLU, on the probe images, in training mode with that step's noise: what the
      layer above receives;
    * ``ics`` (if ``ics_layer`` is given): :func:`ics` of that layer on the step's batch, with
      the training learning rate, as (l2, relative, cosine);
    * ``smoothness`` (if ``step_sizes`` is given): :func:`along_gradient` on the step's batch.
    """
    x_train, y_train = tf.constant(train_data[0]), tf.constant(train_data[1])
    x_test = tf.constant(np.broadcast_to(test_data[0], (len(net.seeds),) + test_data[0].shape))
    order = np.stack([batch_indices(len(train_data[0]), steps + 1, batch_size, seed)
                      for seed in net.seeds], axis=1)             # (steps + 1, seeds, batch)
    order = tf.constant(order)
    probe_x = None if probe is None else tf.constant(
        np.broadcast_to(probe, (len(net.seeds),) + probe.shape))

    @tf.function(reduce_retracing=True)
    def run(start, stop):
        for step in tf.range(start, stop):
            x, y = _gather(x_train, order[step]), tf.gather(y_train, order[step])
            noise = net.noise(step)
            stats = []
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(net.loss(net.params, x, y, noise=noise, stats=stats))
            grads = tape.gradient(loss, net.params)
            net.update_moving(stats)
            for variable, grad in zip(net.params, grads):
                variable.assign_sub(learning_rate * grad)

    x_seen = tf.constant(np.broadcast_to(train_data[0][:2000],
                                         (len(net.seeds),) + train_data[0][:2000].shape))

    @tf.function
    def evaluate(x):
        logits = net.forward(net.params, x, training=False)
        return tf.argmax(logits, axis=2)

    @tf.function
    def unit_values(step):
        values = []
        net.forward(net.params, probe_x, training=True, noise=net.noise(step), record=values)
        return values[unit[0]][:, :, unit[1]]

    measure_ics = tf.function(lambda x, y: ics(net, x, y, ics_layer, learning_rate))
    measure_along = tf.function(lambda x, y: _along(net, x, y, step_sizes))
    record = Record()
    for start in range(0, steps + 1, record_every):
        x, y = _gather(x_train, order[start]), tf.gather(y_train, order[start])
        record.steps.append(start)
        record.accuracy.append(np.mean(evaluate(x_test).numpy() == test_data[1][None], axis=1))
        record.train_accuracy.append(
            np.mean(evaluate(x_seen).numpy() == train_data[1][None, :2000], axis=1))
        if probe is not None:
            record.unit.append(unit_values(tf.constant(start)).numpy())
        if ics_layer is not None:
            record.ics.append([v.numpy() for v in measure_ics(x, y)])
        if step_sizes is not None:
            record.smoothness.append({name: value.numpy()
                                      for name, value in measure_along(x, y).items()})
        if start < steps:
            run(tf.constant(start), tf.constant(min(start + record_every, steps)))
    return record


# --- depth at initialisation --------------------------------------------------------------------

DEPTH_KINDS = ("plain", "bn", "residual bn, gamma 0", "residual bn, gamma 1")


def input_gradient_norms(kind: str, depth: int, x, y, seeds=(0,), width: int = 64):
    """At initialisation, per seed and layer, the norm of the gradient of the mean cross-entropy
    of the batch ``(x, y)`` with respect to the input of each of ``depth`` hidden layers of width
    ``width`` (after a first Dense layer from the pixels). Shape (seeds, depth); column 0 is
    nearest the input. He-normal weights (NumPy, per seed), BN in training mode.

    kinds: ``"plain"``: h <- ReLU(Dense(h)); ``"bn"``: h <- ReLU(BN(Dense(h))); residual:
    h <- h + BN(Dense(ReLU(h))) with BN's gamma 0 or 1 (zero-gamma makes every block the
    identity at initialisation).
    """
    if kind not in DEPTH_KINDS:
        raise ValueError(f"kind must be one of {DEPTH_KINDS}, got {kind!r}")
    rng = [np.random.default_rng(seed) for seed in seeds]

    def kernel(m, n):
        return tf.constant(np.stack([r.standard_normal((m, n)) * np.sqrt(2.0 / m)
                                     for r in rng]).astype(np.float32))

    first = kernel(x.shape[1], width)
    kernels = [kernel(width, width) for _ in range(depth)]
    last = kernel(width, 10)
    gamma = 0.0 if kind.endswith("gamma 0") else 1.0
    xs = tf.constant(np.broadcast_to(x, (len(seeds),) + x.shape))
    with tf.GradientTape() as tape:
        h = tf.einsum("sbi,sio->sbo", xs, first)
        inputs = []
        for w in kernels:
            tape.watch(h)
            inputs.append(h)
            if kind == "plain":
                h = tf.nn.relu(tf.einsum("sbi,sio->sbo", h, w))
            elif kind == "bn":
                h = tf.nn.relu(_bn(tf.einsum("sbi,sio->sbo", h, w)))
            else:
                h = h + gamma * _bn(tf.einsum("sbi,sio->sbo", tf.nn.relu(h), w))
        logits = tf.einsum("sbi,sio->sbo", tf.nn.relu(h), last)
        loss = tf.reduce_sum(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.constant(np.broadcast_to(y, (len(seeds),) + y.shape)), logits=logits), 1))
    grads = tape.gradient(loss, inputs)
    return np.stack([tf.norm(g, axis=[1, 2]).numpy() for g in grads], axis=1)


def _bn(z):
    mean, var = tf.nn.moments(z, axes=[1], keepdims=True)
    return (z - mean) / tf.sqrt(var + EPSILON)


# --- dropout and BN -----------------------------------------------------------------------------

def dropout_mlp(placement: str, rate: float = 0.5, units: int = 128, hidden: int = 3,
                seed: int = 0):
    """A Keras MLP of ``hidden`` blocks Dense(no bias) -> BN -> ReLU, then Dense(10) logits.

    ``placement="before bn"``: Dropout(rate) after every block's ReLU, so every BN but the first
    receives dropped-out inputs (Li et al.'s disharmony); ``"after last bn"``: one Dropout(rate),
    after the last block only, where no BN follows it. BN momentum :data:`BN_MOMENTUM`."""
    if placement not in ("before bn", "after last bn"):
        raise ValueError(f"placement must be 'before bn' or 'after last bn', got {placement!r}")
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((784,))]
    for i in range(hidden):
        layers += [keras.layers.Dense(units, use_bias=False),
                   keras.layers.BatchNormalization(momentum=BN_MOMENTUM), keras.layers.ReLU()]
        if placement == "before bn" or i == hidden - 1:
            layers.append(keras.layers.Dropout(rate, seed=seed))
    layers.append(keras.layers.Dense(10))
    return keras.Sequential(layers)


def bn_inputs(model, x, training: bool = False) -> list[np.ndarray]:
    """What every BN layer of a ``Sequential`` model receives for the inputs ``x``: each layer
    called in turn, in inference mode (``training=False``: Dropout off) or training mode
    (Dropout on, each BN with the batch's statistics; the moving statistics are restored)."""
    saved = [v.numpy() for v in model.non_trainable_variables]
    found, h = [], tf.constant(x)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(h.numpy())
        h = layer(h, training=training)
    for variable, value in zip(model.non_trainable_variables, saved):
        variable.assign(value)
    return found


# --- figures ------------------------------------------------------------------------------------

def plot_unit_percentiles(steps, panels: dict, percentiles=(15, 50, 85),
                          title: str = "One hidden unit over training (seed 0)") -> None:
    """Chapter 2's percentile bands for one unit, one panel per network, a shared y axis.

    ``panels={"title": values}``, ``values`` of shape (len(steps), probe examples)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), sharey=True, figsize=(9.6, 3.4))
    for ax, (panel_title, values) in zip(np.atleast_1d(axes), panels.items()):
        for percentile, band in zip(percentiles, np.percentile(values, percentiles, axis=1)):
            ax.plot(steps, band, linewidth=1.0, label=f"{percentile}th percentile")
        ax.set_title(panel_title)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("what the next layer receives")
    np.atleast_1d(axes)[-1].legend(loc="lower right", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    plt.show()


def plot_bands(x, curves: dict, *, title: str, xlabel: str, ylabel: str, log_y: bool = False,
               panels: dict | None = None) -> None:
    """Mean over seeds with the range shaded. ``curves={"label": values}``, ``values`` of shape
    (len(x), seeds); ``panels={"panel title": curves}`` draws several side by side instead."""
    import matplotlib.pyplot as plt

    panels = panels or {title: curves}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False)
    for ax, (panel_title, panel_curves) in zip(axes[0], panels.items()):
        for label, values in panel_curves.items():
            values = np.asarray(values)
            (line,) = ax.plot(x, values.mean(axis=1), label=label, linewidth=1.2)
            ax.fill_between(x, values.min(axis=1), values.max(axis=1), color=line.get_color(),
                            alpha=0.2, linewidth=0)
        if log_y:
            ax.set_yscale("log")
        ax.set_title(panel_title if len(panels) > 1 else title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="best", fontsize="small")
    if len(panels) > 1:
        fig.suptitle(title)
    fig.tight_layout()
    plt.show()
