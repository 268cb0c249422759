"""Chapter 12: batch normalization inside a recurrent network (Cooijmans et al., 2016,
https://arxiv.org/abs/1603.09025).

Everything is sized for a 2-core CPU: LSTMs of 32 units, a few hundred training steps, and many
networks trained side by side as one (a leading "stack" axis on every weight, one network per
seed, as chapter 8's ``Trainer`` does for CNNs). The networks of one stack may differ in their
normalisation and in BN's initial gamma, so that one run trains every configuration a
claim compares, with every seed, in one compiled training step.

* :func:`row_mnist` -- MNIST read row by row (28 steps of 28 pixels, ``bnbook.lessons.data``);
  :func:`adding_problem` -- Hochreiter & Schmidhuber's adding task at any length;
* :func:`bn_lstm_step` -- one BN-LSTM step in NumPy (float64), batch or given statistics;
  :func:`bn_lstm_reference` -- a whole sequence, one step after another;
* :class:`NormLSTM` -- an LSTM layer that loops over time itself, so that it knows the step t:
  per network no normalisation, batch norm with statistics per time step (Cooijmans et al.), or
  layer norm (Ba et al., 2016), on W_x x_t, on W_h h_{t-1} and on the cell state before its tanh;
* :class:`SequenceModel` -- a NormLSTM and a dense head on its last state; :func:`train` -- one
  compiled (XLA) step, looped over the training steps; :func:`evaluate` -- accuracy and loss,
  or the MSE; :func:`predict_alone` -- each sequence as a batch of one, with batch statistics;
* :func:`population_statistics` -- per-step population statistics pooled over training batches;
  :func:`extend_statistics` -- the t > T_max rule; :func:`shared_statistics` -- one set for all
  steps;
* :func:`gate_saturation` -- the share of saturated gate pre-activations;
  :func:`input_gradient_norms` -- how much gradient reaches each time step's input.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from .data import load_mnist

__all__ = ["NORMALISED", "NORMS", "row_mnist", "adding_problem", "bn_lstm_step",
           "bn_lstm_reference", "NormLSTM", "SequenceModel", "train", "evaluate",
           "population_statistics", "extend_statistics", "shared_statistics", "gate_saturation",
           "input_gradient_norms", "predict_alone", "mean_range", "SIGMOID_SATURATED", "TANH_SATURATED"]

NORMALISED = ("x", "h", "c")   # the three places BN acts: W_x x_t, W_h h_{t-1}, c_t
NORMS = ("none", "batch", "layer")
EPSILON = 1e-3
# A sigmoid's slope is below a tenth of its maximum beyond |z| = 3.6, tanh's beyond |z| = 1.8.
SIGMOID_SATURATED = 3.6
TANH_SATURATED = 1.8


# --- data ---------------------------------------------------------------------------------------

def row_mnist(n_train: int = 4096, n_test: int = 2000, seed: int = 0, path=None):
    """MNIST as sequences: ``(x_train, y_train), (x_test, y_test)`` with x of shape (n, 28, 28),
    28 steps (rows, top to bottom) of 28 pixels, float32 in [0, 1], and int64 labels: ``n_train``
    and ``n_test`` examples drawn without replacement by a NumPy generator seeded by ``seed``."""
    (x_train, y_train), (x_test, y_test) = load_mnist(path)
    rng = np.random.default_rng(seed)

    def pick(x, y, n):
        index = rng.choice(len(x), size=n, replace=False)
        return (x[index] / np.float32(255.0)).astype(np.float32), y[index].astype(np.int64)

    return pick(x_train, y_train, n_train), pick(x_test, y_test, n_test)


def adding_problem(n: int, length: int, seed: int = 0):
    """The adding problem: ``n`` sequences of ``length`` steps of two inputs, a value uniform in
    [0, 1] and a marker that is 1 at two steps (one in each half of the sequence) and 0 elsewhere.
    The target is the sum of the two marked values. Predicting 1 always scores an MSE of 1/6."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 1, (n, length))
    first = rng.integers(0, length // 2, n)
    second = rng.integers(length // 2, length, n)
    markers = np.zeros((n, length))
    markers[np.arange(n), first] = 1.0
    markers[np.arange(n), second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    y = (values[np.arange(n), first] + values[np.arange(n), second]).astype(np.float32)
    return x, y


# --- the reference, in NumPy --------------------------------------------------------------------

def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def _bn(z, gamma, beta, epsilon, stats=None):
    """gamma (z - mean) / sqrt(var + epsilon) + beta over the batch (axis 0), or with stats."""
    mean, var = (z.mean(axis=0), z.var(axis=0)) if stats is None else stats
    return gamma * (z - mean) / np.sqrt(var + epsilon) + beta


def bn_lstm_step(x_t, h, c, kernel_x, kernel_h, bias, gamma_x, gamma_h, gamma_c, beta_c,
                 epsilon=EPSILON, stats=None):
    """One BN-LSTM step in float64 NumPy (gates in the order i, f, g, o)::

        z   = BN(x_t W_x; gamma_x) + BN(h W_h; gamma_h) + bias
        c'  = sigmoid(f) c + sigmoid(i) tanh(g)
        h'  = sigmoid(o) tanh(BN(c'; gamma_c, beta_c))

    Each BN uses the batch's mean and biased variance at this step (``stats=None``) or the given
    ``stats = {"x"|"h"|"c": (mean, var)}``. Returns ``(h', c')``: c' is not normalised, the next
    step adds to the raw cell state."""
    x_t, h, c = (np.asarray(a, np.float64) for a in (x_t, h, c))
    stats = stats or {}
    z = (_bn(x_t @ kernel_x, gamma_x, 0.0, epsilon, stats.get("x"))
         + _bn(h @ kernel_h, gamma_h, 0.0, epsilon, stats.get("h")) + bias)
    i, f, g, o = np.split(z, 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(_bn(c, gamma_c, beta_c, epsilon, stats.get("c")))
    return h, c


def bn_lstm_reference(x, kernel_x, kernel_h, bias, gammas, beta_c, epsilon=EPSILON,
                      population=None):
    """One network's BN-LSTM on x (batch, time, features), one :func:`bn_lstm_step` after
    another; gammas {"x", "h", "c"}; population None (each step's batch statistics) or
    {"x"|"h"|"c": (means, variances)} of shape (steps, width), step t using step
    min(t, steps - 1)'s. Returns the last hidden state h_T, float64."""
    batch, length, _ = np.shape(x)
    units = np.shape(kernel_h)[0]
    h, c = np.zeros((batch, units)), np.zeros((batch, units))
    for t in range(length):
        stats = None
        if population is not None:
            stats = {k: (m[min(t, len(m) - 1)], v[min(t, len(v) - 1)])
                     for k, (m, v) in population.items()}
        h, c = bn_lstm_step(np.asarray(x)[:, t], h, c, kernel_x, kernel_h, bias, gammas["x"],
                            gammas["h"], gammas["c"], beta_c, epsilon, stats)
    return h


# --- the layer ----------------------------------------------------------------------------------

def _initial_weights(seed: int, n_inputs: int, units: int):
    """One network's kernels (Glorot-uniform input kernel, orthogonal recurrent kernel per gate,
    as Keras' LSTM) and bias (1 for the forget gate, 0 elsewhere), from a NumPy generator."""
    rng = np.random.default_rng(seed)
    limit = np.sqrt(6 / (n_inputs + 4 * units))
    kernel_x = rng.uniform(-limit, limit, (n_inputs, 4 * units))
    kernel_h = np.concatenate([np.linalg.qr(rng.standard_normal((units, units)))[0]
                               for _ in range(4)], axis=1)
    bias = np.zeros(4 * units)
    bias[units:2 * units] = 1.0               # gate order: input, forget, cell candidate, output
    return kernel_x.astype(np.float32), kernel_h.astype(np.float32), bias.astype(np.float32)


def _per_network(value, stack: int, name: str) -> tuple:
    values = (value,) * stack if isinstance(value, (str, int, float)) else tuple(value)
    if len(values) != stack:
        raise ValueError(f"{len(values)} {name} for {stack} networks")
    return values


class NormLSTM(keras.layers.Layer):
    """LSTMs that loop over time themselves, one network per entry of ``seeds``, side by side.

    ``norm`` (one for all networks, or one per network): "none" (a plain LSTM), "batch"
    (Cooijmans et al.'s BN-LSTM) or "layer" (Ba et al.'s LN-LSTM). With a normalisation N the
    step is (gates in the order i, f, g, o)::

        z_t = N(W_x x_t; gamma_x) + N(W_h h_{t-1}; gamma_h) + b
        c_t = sigmoid(f_t) * c_{t-1} + sigmoid(i_t) * tanh(g_t)
        h_t = sigmoid(o_t) * tanh(N(c_t; gamma_c, beta_c))

    No beta on the two gate terms: the bias b already shifts their sum. ``gamma`` (one, or one
    per network) initialises the three gammas. Batch norm uses, when ``batch_stats`` (default:
    when training), the batch's statistics at step t; otherwise the population statistics
    ``population`` (or those stored by :meth:`set_population`), {"x"|"h"|"c": (means, variances)}
    of shape (steps, stack, width), step t using those of step min(t, steps - 1).

    Inputs have shape (stack, batch, time, features): network k reads x[k]; a (batch, time,
    features) input goes to every network. Returns the last hidden state, (stack, batch, units).
    """

    def __init__(self, units: int, norm="batch", *, gamma=0.1, epsilon: float = EPSILON,
                 seeds=(0,), **kwargs):
        super().__init__(**kwargs)
        self.units, self.epsilon, self.seeds = units, epsilon, tuple(seeds)
        self.norms = _per_network(norm, self.stack, "norms")
        unknown = set(self.norms) - set(NORMS)
        if unknown:
            raise ValueError(f"norm must be one of {NORMS}, not {sorted(unknown)}")
        self.gamma_init = _per_network(float(gamma) if np.isscalar(gamma) else gamma,
                                       self.stack, "gammas")
        self.population = None

    @property
    def stack(self) -> int:
        return len(self.seeds)

    def build(self, input_shape):
        n_inputs, units, stack = input_shape[-1], self.units, self.stack
        parts = [_initial_weights(seed, n_inputs, units) for seed in self.seeds]
        constant = keras.initializers.Constant
        self.kernel_x = self.add_weight(shape=(stack, n_inputs, 4 * units), name="kernel_x",
                                        initializer=constant(np.stack([p[0] for p in parts])))
        self.kernel_h = self.add_weight(shape=(stack, units, 4 * units), name="kernel_h",
                                        initializer=constant(np.stack([p[1] for p in parts])))
        self.bias = self.add_weight(shape=(stack, 4 * units), name="bias",
                                    initializer=constant(np.stack([p[2] for p in parts])))
        self.widths = {"x": 4 * units, "h": 4 * units, "c": units}
        gammas = np.asarray(self.gamma_init, np.float32)[:, None]
        self.gammas = {k: self.add_weight(shape=(stack, w), name=f"gamma_{k}",
                                          initializer=constant(np.repeat(gammas, w, axis=1)))
                       for k, w in self.widths.items()}
        self.beta_c = self.add_weight(shape=(stack, units), name="beta_c", initializer="zeros")
        # Which networks use which normalisation: their indices, and the order that puts the
        # groups' results back in the order of the networks.
        self._groups = {n: [k for k, m in enumerate(self.norms) if m == n] for n in NORMS}
        order = [k for n in NORMS for k in self._groups[n]]
        self._inverse = tf.constant(np.argsort(order), tf.int32)
        # Networks sorted by normalisation (the usual case): slices instead of gathers.
        self._sorted = order == list(range(self.stack))

    def weights_of(self, k: int) -> dict:
        """Network k's weights as float64 NumPy arrays, for :func:`bn_lstm_reference`."""
        return dict(kernel_x=self.kernel_x.numpy()[k].astype(np.float64),
                    kernel_h=self.kernel_h.numpy()[k].astype(np.float64),
                    bias=self.bias.numpy()[k].astype(np.float64),
                    gammas={n: g.numpy()[k].astype(np.float64) for n, g in self.gammas.items()},
                    beta_c=self.beta_c.numpy()[k].astype(np.float64), epsilon=self.epsilon)

    def set_population(self, population) -> None:
        """Store population statistics {"x"|"h"|"c": (means, variances)}, each (steps, stack,
        width), for inference."""
        self.population = {k: (tf.constant(m, tf.float32), tf.constant(v, tf.float32))
                           for k, (m, v) in population.items()}

    def _normalise(self, z, key, t, batch_stats, population):
        """N(z) for one of the three places at step t (a scalar tensor), each network its own
        way. z: (stack, batch, width). Returns (N(z), (batch mean, batch variance) or None)."""
        gamma = self.gammas[key][:, None, :]
        beta = self.beta_c[:, None, :] if key == "c" else tf.zeros_like(gamma)
        parts, stats = [], None
        if "batch" in self.norms and batch_stats:   # per feature, over the batch at this step
            stats = tf.nn.moments(z, axes=[1], keepdims=True)
        for norm in NORMS:
            index = self._groups[norm]
            if not index:
                continue
            if self._sorted:
                def pick(v, index=index):
                    return v[index[0]:index[-1] + 1]
            else:
                def pick(v, index=index):
                    return tf.gather(v, index)
            zg = pick(z)
            if norm == "none":
                parts.append(zg)
                continue
            if norm == "layer":                      # per example, over the features
                mean, var = tf.nn.moments(zg, axes=[2], keepdims=True)
            elif batch_stats:
                mean, var = (pick(s) for s in stats)
            else:                                    # step t's population statistics, or the
                means, variances = population[key]   # last stored step's for t > T_max
                last = tf.shape(means)[0] - 1
                step = tf.minimum(t, last)
                mean = pick(tf.gather(means, step))[:, None, :]
                var = pick(tf.gather(variances, step))[:, None, :]
            parts.append(pick(gamma) * (zg - mean) * tf.math.rsqrt(var + self.epsilon)
                         + pick(beta))
        out = parts[0] if len(parts) == 1 else tf.concat(parts, 0)
        if len(parts) > 1 and not self._sorted:
            out = tf.gather(out, self._inverse)
        return out, None if stats is None else (stats[0][:, 0], stats[1][:, 0])

    def call(self, x, training=False, batch_stats=None, population=None, record=False):
        """Run the sequences; return the last hidden state, (stack, batch, units). ``record``:
        also return {"gates": z_t stacked over time, (stack, batch, time, 4 units), "stats":
        {"x"|"h"|"c": (means, variances)}, each step's batch statistics, (time, stack, width)}."""
        x = tf.convert_to_tensor(x, tf.float32)
        if x.shape.rank == 3:
            x = tf.broadcast_to(x[None], [self.stack, *x.shape])
        batch_stats = bool(training if batch_stats is None else batch_stats)
        population = population if population is not None else self.population
        if "batch" in self.norms and not batch_stats:
            if population is None:
                raise ValueError("no population statistics: call set_population first, or pass "
                                 "population= or batch_stats=True")
            population = {k: (tf.convert_to_tensor(m, tf.float32),
                              tf.convert_to_tensor(v, tf.float32))
                          for k, (m, v) in population.items()}
        keep_stats = batch_stats and "batch" in self.norms
        batch, length = tf.shape(x)[1], tf.shape(x)[2]
        wx = tf.einsum("sbtd,sdg->tsbg", x, self.kernel_x)      # W_x x_t for every t at once
        h = tf.zeros([self.stack, batch, self.units])
        c = tf.zeros([self.stack, batch, self.units])

        def arrays(n):
            return [tf.TensorArray(tf.float32, size=length) for _ in range(n)]

        def step(t, h, c, gates, stats):
            zx, sx = self._normalise(wx[t], "x", t, batch_stats, population)
            zh, sh = self._normalise(tf.einsum("sbu,sug->sbg", h, self.kernel_h), "h", t,
                                     batch_stats, population)
            z = zx + zh + self.bias[:, None, :]
            i, f, g, o = tf.split(z, 4, axis=-1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            zc, sc = self._normalise(c, "c", t, batch_stats, population)
            h = tf.sigmoid(o) * tf.tanh(zc)
            if record:
                gates = [gates[0].write(t, z)]
            if keep_stats and record:
                stats = [a.write(t, v) for a, v in zip(stats, (*sx, *sh, *sc))]
            return t + 1, h, c, gates, stats

        gates, stats = arrays(1 if record else 0), arrays(6 if keep_stats and record else 0)
        _, h, c, gates, stats = tf.while_loop(
            lambda t, *_: t < length, step, (tf.constant(0), h, c, gates, stats),
            maximum_iterations=x.shape[2])           # a bound XLA needs for the TensorArrays
        if not record:
            return h
        stats = [a.stack() for a in stats]
        return h, {"gates": tf.transpose(gates[0].stack(), [1, 2, 0, 3]) if gates else None,
                   "stats": {k: (stats[2 * j], stats[2 * j + 1])
                             for j, k in enumerate(NORMALISED)} if stats else {}}


# --- the model and its training loop ------------------------------------------------------------

class SequenceModel(keras.Model):
    """A :class:`NormLSTM` and a dense head on its last hidden state, one network per seed.
    outputs=10 for classification (logits), 1 for regression. Returns (stack, batch, outputs)."""

    def __init__(self, norm="batch", units: int = 32, outputs: int = 10, *, seeds=(0,),
                 gamma=0.1, **kwargs):
        super().__init__(**kwargs)
        self.lstm = NormLSTM(units, norm, gamma=gamma, seeds=seeds)
        self.n_outputs = outputs
        limit = np.sqrt(6 / (units + outputs))
        head = np.stack([np.random.default_rng(10_000 + s).uniform(-limit, limit,
                                                                    (units, outputs))
                         for s in seeds]).astype(np.float32)
        self.head = self.add_weight(shape=head.shape, name="head",
                                    initializer=keras.initializers.Constant(head))
        self.head_bias = self.add_weight(shape=(len(seeds), outputs), name="head_bias",
                                         initializer="zeros")

    def call(self, x, training=False, **kwargs):
        h = self.lstm(x, training=training, **kwargs)
        return tf.einsum("sbu,suo->sbo", h, self.head) + self.head_bias[:, None, :]


def _loss(model, outputs, y):
    """Per-network mean loss, shape (stack,): cross-entropy with integer labels, or the MSE."""
    if model.n_outputs == 1:
        return tf.reduce_mean((outputs[..., 0] - y) ** 2, axis=1)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=outputs)
    return tf.reduce_mean(ce, axis=1)


def _batch_indices(n: int, steps: int, batch_size: int, seeds) -> np.ndarray:
    """(steps, stack, batch) example indices: each seed shuffles the data its own way."""
    out = np.empty((steps, len(seeds), batch_size), np.int64)
    for k, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        order = np.concatenate([rng.permutation(n) for _ in range(steps * batch_size // n + 1)])
        out[:, k] = order[:steps * batch_size].reshape(steps, batch_size)
    return out


def train(model: SequenceModel, x, y, *, steps: int, batch_size: int = 64,
          learning_rate: float = 2e-3, clipnorm: float | None = None) -> np.ndarray:
    """Train every network of ``model`` with Adam for ``steps`` steps, all of them in one
    compiled loop; network k draws its batches in the order of seed k. Each network's loss is
    its own mean; their sum is minimised, so each network gets exactly its own gradient
    (``clipnorm`` clips each variable's gradient, all networks' parts together).
    Returns the training loss per step and network, (steps, stack)."""
    seeds = model.lstm.seeds
    index = _batch_indices(len(x), steps, batch_size, seeds)
    optimizer = keras.optimizers.Adam(learning_rate, clipnorm=clipnorm)
    x_all, y_all = tf.constant(x), tf.constant(y)
    model(x_all[:2], training=True)                       # build the weights
    variables = model.trainable_variables
    optimizer.build(variables)

    # XLA fuses the time loop's many small ops; no AutoGraph: the loops are written as TF ops.
    @tf.function(jit_compile=True, autograph=False)
    def step(indices):
        xb = tf.gather(x_all, indices)                    # (stack, batch, time, features)
        yb = tf.gather(y_all, indices)
        with tf.GradientTape() as tape:
            loss = _loss(model, model(xb, training=True), yb)
            total = tf.reduce_sum(loss)
        grads = tape.gradient(total, variables)
        # A plain LSTM has no use for its gammas: give them a zero gradient, not None.
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
        optimizer.apply(grads, variables)
        return loss

    return np.stack([step(tf.constant(i)).numpy() for i in index])


def evaluate(model: SequenceModel, x, y, **kwargs):
    """Per network, in inference mode unless kwargs say otherwise (``batch_stats=True``,
    ``population=...``): (accuracy, cross-entropy) for a classifier, (MSE, MSE) for a regression;
    each an array of shape (stack,)."""
    outputs = model(x, **kwargs)
    y = np.broadcast_to(np.asarray(y), outputs.shape[:2])
    loss = _loss(model, outputs, tf.constant(y)).numpy()
    if model.n_outputs == 1:
        return loss, loss
    return (outputs.numpy().argmax(-1) == y).mean(axis=1), loss


def predict_alone(model: SequenceModel, x) -> np.ndarray:
    """Each sequence of ``x`` run on its own, a batch of one, with BN normalising by the batch's
    statistics (training mode without any update): the predicted class of every sequence by
    every network, shape (stack, len(x))."""
    @tf.function(autograph=False)
    def one(sequence):
        return tf.argmax(model(sequence[None], batch_stats=True)[:, 0], axis=-1)

    return np.stack([one(tf.constant(s)).numpy() for s in np.asarray(x)], axis=1)


# --- statistics ---------------------------------------------------------------------------------

def population_statistics(model: SequenceModel, batches):
    """Population statistics per time step, pooled over ``batches`` (a list of input batches,
    (batch, time, features) or stacked): each batch runs as in training (every step normalised
    with that batch's statistics), and for each step and place the batches' means and variances
    are merged exactly, every example counting once. Returns {"x"|"h"|"c": (means, variances)},
    float32 arrays of shape (time, stack, width), for :meth:`NormLSTM.set_population`."""
    sums = {}
    count = 0
    for batch in batches:
        n = np.shape(batch)[-3]
        _, record = model.lstm(batch, batch_stats=True, record=True)
        for k, (mean, var) in record["stats"].items():
            mean, var = mean.numpy().astype(np.float64), var.numpy().astype(np.float64)
            s, q = sums.get(k, (0.0, 0.0))
            sums[k] = (s + n * mean, q + n * (var + mean ** 2))
        count += n
    out = {}
    for k, (s, q) in sums.items():
        mean = s / count
        out[k] = (mean.astype(np.float32), np.maximum(q / count - mean ** 2, 0).astype(np.float32))
    return out


def extend_statistics(population, length: int):
    """Statistics for ``length`` steps: steps beyond the last stored one, t > T_max, reuse the
    last stored step's (Cooijmans et al., section 4); fewer steps keep the first ``length``."""
    out = {}
    for k, (means, variances) in population.items():
        index = np.minimum(np.arange(length), len(means) - 1)
        out[k] = (np.asarray(means)[index], np.asarray(variances)[index])
    return out


def shared_statistics(population, length: int | None = None):
    """One set of statistics for every step: the mean and the variance of all steps' values
    pooled (each step weighted equally), repeated ``length`` times (default: as many as given)."""
    out = {}
    for k, (means, variances) in population.items():
        means, variances = np.asarray(means, np.float64), np.asarray(variances, np.float64)
        mean = means.mean(axis=0)
        var = (variances + (means - mean) ** 2).mean(axis=0)
        n = length or len(means)
        out[k] = (np.repeat(mean[None], n, 0).astype(np.float32),
                  np.repeat(var[None], n, 0).astype(np.float32))
    return out


def gate_saturation(model: SequenceModel, x, **kwargs):
    """Per network, the share of gate pre-activations (over the batch, the steps and the units)
    beyond the point where the nonlinearity's slope falls below a tenth of its maximum: |z| >
    3.6 for the sigmoid gates i, f, o, |z| > 1.8 for the candidate's tanh. Returns
    {"sigmoid gates": (stack,), "tanh(g)": (stack,)}."""
    _, record = model.lstm(x, record=True, **kwargs)
    i, f, g, o = np.split(record["gates"].numpy(), 4, axis=-1)
    sigmoid = np.abs(np.concatenate([i, f, o], axis=-1)) > SIGMOID_SATURATED
    tanh = np.abs(g) > TANH_SATURATED
    return {"sigmoid gates": sigmoid.mean(axis=(1, 2, 3)), "tanh(g)": tanh.mean(axis=(1, 2, 3))}


def input_gradient_norms(model: SequenceModel, x, y):
    """Per network and step, the norm of the loss's gradient with respect to the input at that
    step, each step normalised with the batch's statistics: (stack, time). How much of the loss's
    gradient flows back to step t."""
    x = tf.broadcast_to(tf.constant(x)[None], [model.lstm.stack, *np.shape(x)])
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = model(x, batch_stats=True)
        labels = tf.constant(np.broadcast_to(np.asarray(y), outputs.shape[:2]))
        loss = tf.reduce_sum(_loss(model, outputs, labels))
    grad = tape.gradient(loss, x).numpy().astype(np.float64)
    return np.sqrt((grad ** 2).sum(axis=(1, 3)))


def mean_range(values, digits: int = 2) -> str:
    """``"mean (lowest–highest)"`` over seeds."""
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.{digits}f} ({values.min():.{digits}f}–{values.max():.{digits}f})"
