"""Checkers of chapter 3 (test time: population statistics). Small synthetic data only."""

from __future__ import annotations

import numpy as np

from ._core import ExerciseMistake, as_array, call, checker

N_UNITS = 4
DECAY = 0.9  # not 0.5: with 0.5 swapped weights would give the same answer
EPS = 1e-3
ATOL = 1e-4
VARIABLES = ("gamma", "beta", "pop_mean", "pop_var")
START = {"gamma": 1.0, "beta": 0.0, "pop_mean": 0.0, "pop_var": 1.0}

# Values the check gives the layer before calling it: batch and population statistics differ a lot.
STATE = {
    "gamma": np.array([1.5, 0.5, 2.0, 1.0], np.float32),
    "beta": np.array([0.1, -0.2, 0.3, 0.0], np.float32),
    "pop_mean": np.array([1.0, -1.0, 0.5, 2.0], np.float32),
    "pop_var": np.array([2.0, 0.5, 4.0, 1.0], np.float32),
}


def _batch() -> np.ndarray:
    rng = np.random.default_rng(3)
    return (rng.normal(size=(6, N_UNITS)) * [1.0, 2.0, 0.5, 3.0] + [3.0, -2.0, 0.0, 1.0]) \
        .astype(np.float32)


def _transform(z, mean, var, state, eps=EPS):
    z = z.astype(np.float64)
    return state["gamma"] * (z - mean) / np.sqrt(var + eps) + state["beta"]


def _read_state(layer) -> dict[str, np.ndarray]:
    """The layer's four variables as NumPy arrays; a clear message if one is missing or replaced."""
    __tracebackhide__ = True
    import tensorflow as tf

    values = {}
    for name in VARIABLES:
        if not hasattr(layer, name):
            raise ExerciseMistake(
                f"The layer has no attribute `{name}`.",
                "create gamma, beta, pop_mean and pop_var in __init__ as self.<name> = "
                "tf.Variable(...).")
        value = getattr(layer, name)
        if not isinstance(value, tf.Variable):
            raise ExerciseMistake(
                f"`self.{name}` is a {type(value).__name__}, not a tf.Variable. If it was a "
                f"variable before the call, your code replaced it (`self.{name} = ...`) instead of "
                "updating it.",
                "a variable keeps its identity (the optimizer and tf.function hold on to it): "
                "change its value with self.<name>.assign(new_value).")
        values[name] = value.numpy()
    return values


def _set_state(layer, state: dict) -> None:
    for name in VARIABLES:
        getattr(layer, name).assign(state[name])


def _new_layer(layer_class):
    __tracebackhide__ = True
    import tensorflow as tf

    if not isinstance(layer_class, type):
        raise ExerciseMistake(
            f"Expected the class PopulationBN, got {type(layer_class).__name__!r} object.",
            "pass the class itself, check.population_bn(PopulationBN), not an instance of it.")
    layer = call(layer_class, N_UNITS, decay=DECAY, eps=EPS,
                 what=f"PopulationBN({N_UNITS}, decay={DECAY}, eps={EPS})")
    state = _read_state(layer)
    for name, value in state.items():
        variable = getattr(layer, name)
        if value.shape != (N_UNITS,) or variable.dtype != tf.float32:
            raise ExerciseMistake(
                f"`self.{name}` has shape {value.shape} and dtype {variable.dtype.name}; expected "
                f"shape ({N_UNITS},) (one value per unit) and float32.",
                "size the variables with n_units, e.g. tf.ones([n_units]).")
    return layer, state


def _check_start(layer, state) -> None:
    __tracebackhide__ = True
    for name in ("gamma", "beta"):
        if not getattr(layer, name).trainable:
            raise ExerciseMistake(f"`self.{name}` is not trainable.",
                                  "gamma and beta are learned by gradient descent.")
    for name in ("pop_mean", "pop_var"):
        if getattr(layer, name).trainable:
            raise ExerciseMistake(
                f"`self.{name}` is trainable: the optimizer would try to change it with "
                "gradients (and the loss has no gradient for it).",
                "population statistics are updated by the moving average only: create them "
                "with trainable=False.")
    if np.allclose(state["pop_var"], 0.0):
        raise ExerciseMistake(
            "The population variance starts at 0.",
            "start it at 1, like the variance of standardised data. Started at 0, an early "
            "evaluation divides by sqrt(0 + eps) and blows every input up about 30 times.")
    for name, start in START.items():
        if not np.allclose(state[name], start):
            raise ExerciseMistake(
                f"`self.{name}` starts at {np.round(state[name], 3).tolist()}; expected all "
                f"{start:g}.",
                "gamma starts at 1, beta at 0, the population mean at 0, the population "
                "variance at 1.")


def _check_inference(layer, z) -> None:
    __tracebackhide__ = True
    import tensorflow as tf

    mean, var = z.mean(axis=0), z.var(axis=0)
    expected = _transform(z, STATE["pop_mean"], STATE["pop_var"], STATE)
    for kwargs, how in [({"training": False}, "layer(z, training=False)"), ({}, "layer(z)")]:
        _set_state(layer, STATE)
        out = as_array(call(layer, tf.constant(z), what=how, **kwargs), f"the output of {how}",
                       want_tensor=True)
        if out.shape != z.shape:
            raise ExerciseMistake(f"{how} returned shape {out.shape}; expected {z.shape}.",
                                  "normalise each unit's input; keep the batch axis.")
        after = _read_state(layer)
        if np.allclose(out, _transform(z, mean, var, STATE), atol=ATOL):
            if not kwargs:  # training=False was right: only the default is wrong
                raise ExerciseMistake(
                    "layer(z) without a `training` argument used batch statistics.",
                    "the default must be inference: def __call__(self, z, training=False).")
            raise ExerciseMistake(
                "At inference (training=False) the layer used the batch statistics.",
                "inference must use self.pop_mean and self.pop_var, so that one example's "
                "output does not depend on the rest of the batch.")
        if any(not np.allclose(after[name], STATE[name]) for name in ("pop_mean", "pop_var")):
            raise ExerciseMistake(
                f"{how} changed the population statistics: they were updated at inference.",
                "update them only when training is True; evaluation must not change the model.")
        if not np.allclose(out, expected, atol=ATOL):
            raise ExerciseMistake(
                f"{how} does not give gamma * (z - pop_mean) / sqrt(pop_var + eps) + beta.",
                "at inference normalise with the population statistics, then scale by gamma "
                "and shift by beta; use self.eps.")


def _check_training_output(out, z, after) -> None:
    __tracebackhide__ = True
    mean, var = z.mean(axis=0), z.var(axis=0)
    if out.shape != z.shape:
        raise ExerciseMistake(f"layer(z, training=True) returned shape {out.shape}; expected "
                              f"{z.shape}.", "normalise each unit's input; keep the batch axis.")
    if np.allclose(out, _transform(z, mean, var, STATE), atol=ATOL):
        return
    if np.allclose(out, _transform(z, STATE["pop_mean"], STATE["pop_var"], STATE), atol=ATOL) \
            or np.allclose(out, _transform(z, after["pop_mean"], after["pop_var"], STATE),
                           atol=ATOL):
        raise ExerciseMistake(
            "In training (training=True) the layer normalised with the population statistics.",
            "a training step normalises with the batch's own mean and variance "
            "(tf.nn.moments over axis 0); the population ones are only updated.")
    unbiased = var * len(z) / (len(z) - 1)
    if np.allclose(out, _transform(z, mean, unbiased, STATE), atol=ATOL):
        raise ExerciseMistake(
            "In training the layer divided by the unbiased batch variance (divisor n - 1).",
            "BN normalises with the biased batch variance, as tf.nn.moments returns it.")
    raise ExerciseMistake(
        "layer(z, training=True) does not give gamma * (z - batch mean) / sqrt(batch var + eps) "
        "+ beta.",
        "use the batch's mean and variance over axis 0, then gamma, beta and self.eps.")


def _check_update(after, z) -> None:
    __tracebackhide__ = True
    mean, var = z.mean(axis=0), z.var(axis=0)
    unbiased = var * len(z) / (len(z) - 1)
    before_mean, before_var = STATE["pop_mean"], STATE["pop_var"]
    got_mean, got_var = after["pop_mean"], after["pop_var"]

    def both(expected_mean, expected_var):
        return np.allclose(got_mean, expected_mean, atol=ATOL) and \
            np.allclose(got_var, expected_var, atol=ATOL)

    if both(before_mean * DECAY + mean * (1 - DECAY), before_var * DECAY + var * (1 - DECAY)):
        return
    if both(before_mean, before_var):
        raise ExerciseMistake(
            "After a training step the population statistics had not changed: they are never "
            "updated.",
            "in the training branch, move them towards the batch statistics with "
            "self.pop_mean.assign(...) and self.pop_var.assign(...).")
    if both(mean * DECAY + before_mean * (1 - DECAY), var * DECAY + before_var * (1 - DECAY)):
        raise ExerciseMistake(
            "The moving-average weights are swapped: you computed batch * decay + pop * (1 - "
            "decay).",
            "decay is the weight of the OLD estimate (close to 1, so it changes slowly); the new "
            "batch gets the small weight 1 - decay.")
    if np.allclose(got_mean, before_mean * DECAY + mean * (1 - DECAY), atol=ATOL) and \
            np.allclose(got_var, before_var * DECAY + unbiased * (1 - DECAY), atol=ATOL):
        raise ExerciseMistake(
            "The population variance was updated with the unbiased batch variance (divisor "
            "n - 1), not the one the batch was normalised with.",
            "in this exercise the moving average takes the same biased variance the training "
            "step uses; the paper's m/(m-1) correction is a separate, final step.")
    for hard_coded in (0.999, 0.99):
        if both(before_mean * hard_coded + mean * (1 - hard_coded),
                before_var * hard_coded + var * (1 - hard_coded)):
            raise ExerciseMistake(
                f"The update used decay {hard_coded}, not the layer's own decay.",
                "use self.decay (the check builds the layer with decay=0.9).")
    if both(mean, var):
        raise ExerciseMistake(
            "After a training step the population statistics equal that batch's statistics: "
            "they were overwritten, not averaged.",
            "keep most of the old estimate: pop * decay + batch * (1 - decay).")
    raise ExerciseMistake(
        "After one training step the population statistics are not pop * decay + batch * "
        "(1 - decay).",
        "update the mean with the batch mean and the variance with the batch variance, both "
        "over axis 0, the same ones the step normalises with.")


@checker("3.1")
def population_bn(layer_class):
    """Check a PopulationBN class: start values, inference, training output and update."""
    __tracebackhide__ = True
    import tensorflow as tf

    z = _batch()
    layer, state = _new_layer(layer_class)
    _check_start(layer, state)
    _check_inference(layer, z)

    _set_state(layer, STATE)
    out = as_array(call(layer, tf.constant(z), training=True,
                        what="layer(z, training=True)"),
                   "the output of layer(z, training=True)", want_tensor=True)
    after = _read_state(layer)
    _check_training_output(out, z, after)
    _check_update(after, z)

    # Training steps run inside a tf.function (mnist_mlp.train): two steps there, fresh layer.
    layer, _ = _new_layer(layer_class)
    _set_state(layer, STATE)
    def training_step(batch):
        try:
            return layer(batch, training=True)
        except NotImplementedError:  # what .numpy() raises on a symbolic tensor
            raise ExerciseMistake(
                "layer(z, training=True) fails inside a tf.function (where training steps run): "
                "it calls .numpy() or NumPy on a tensor.",
                "use TensorFlow operations only: tf.nn.moments, arithmetic on tensors, "
                ".assign().") from None

    step = tf.function(training_step)
    call(step, tf.constant(z), what="layer(z, training=True) inside a tf.function")
    call(step, tf.constant(z[::-1].copy()), what="layer(z, training=True) inside a tf.function")
    after = _read_state(layer)
    mean, var = z.mean(axis=0), z.var(axis=0)
    want_mean = (STATE["pop_mean"] * DECAY + mean * (1 - DECAY)) * DECAY + mean * (1 - DECAY)
    want_var = (STATE["pop_var"] * DECAY + var * (1 - DECAY)) * DECAY + var * (1 - DECAY)
    if not (np.allclose(after["pop_mean"], want_mean, atol=ATOL)
            and np.allclose(after["pop_var"], want_var, atol=ATOL)):
        raise ExerciseMistake(
            "Called twice inside a tf.function, the layer did not update the population "
            "statistics twice.",
            "use TensorFlow operations and .assign(); Python-side changes (plain attributes, "
            "NumPy, .numpy()) happen once while tracing, not at every step.")
    return ("batch statistics plus one moving-average update when training; population "
            "statistics and no update at inference; works inside tf.function")


# ---------------------------------------------------------------------------------------------
# Exercise 3.2: exact population statistics, layer by layer, in chunks.

SIZES = (5, 4, 3)
N_ROWS, CHUNK = 26, 6  # the last chunk has 2 rows


class _TinyBN:
    """The part of PopulationBN that exercise 3.2 may use (normalise), with moving averages that
    are deliberately off."""

    def __init__(self, gamma, beta, pop_mean, pop_var, eps=EPS):
        import tensorflow as tf

        self.gamma, self.beta = tf.Variable(gamma), tf.Variable(beta)
        self.pop_mean = tf.Variable(pop_mean, trainable=False)
        self.pop_var = tf.Variable(pop_var, trainable=False)
        self.eps = eps

    def normalise(self, z, mean, variance):
        import tensorflow as tf

        return self.gamma * (z - mean) / tf.sqrt(variance + self.eps) + self.beta


class _TinyNet:
    """A 5-4-3-2 version of the lesson's BNNet: w1, w2, w3, b3, bn1, bn2."""

    def __init__(self):
        import tensorflow as tf

        rng = np.random.default_rng(7)
        f32 = np.float32
        self.w1 = tf.Variable(rng.normal(size=SIZES[:2]).astype(f32))
        self.w2 = tf.Variable(rng.normal(size=SIZES[1:]).astype(f32))
        self.w3 = tf.Variable(rng.normal(size=(SIZES[2], 2)).astype(f32))
        self.b3 = tf.Variable(np.zeros(2, f32))
        self.bn1 = _TinyBN(np.array([1.5, 0.7, 1.2, 2.0], f32), np.array([0.3, -0.5, 0.1, 0.8], f32),
                           np.full(4, 3.0, f32), np.full(4, 0.2, f32))
        self.bn2 = _TinyBN(np.array([0.8, 1.3, 1.1], f32), np.array([-0.2, 0.4, 0.0], f32),
                           np.full(3, -1.0, f32), np.full(3, 5.0, f32))


def _tiny_data() -> np.ndarray:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(N_ROWS, SIZES[0])) + 0.5
    x += np.repeat(np.arange(-(-N_ROWS // CHUNK)), CHUNK)[:N_ROWS, None] * 0.8  # chunks differ
    return x.astype(np.float32)


def _sigmoid(u):
    return 1.0 / (1.0 + np.exp(-u))


def _np_normalise(bn, z, mean, var):
    return bn.gamma.numpy() * (z - mean) / np.sqrt(var + bn.eps) + bn.beta.numpy()


def _chunks(a):
    return [a[i:i + CHUNK] for i in range(0, len(a), CHUNK)]


def _pooled(z):
    return z.mean(axis=0), z.var(axis=0)


def _layer_variants(z) -> dict[str, tuple]:
    """Wrong ways of combining the statistics of one layer's input z (all rows), by mistake."""
    parts = _chunks(z)
    return {
        "unbiased": (z.mean(axis=0), z.var(axis=0, ddof=1)),
        "std": (z.mean(axis=0), z.std(axis=0)),
        "chunk variances": (z.mean(axis=0), np.mean([p.var(axis=0) for p in parts], axis=0)),
        "chunk variances unbiased": (z.mean(axis=0),
                                     np.mean([p.var(axis=0, ddof=1) for p in parts], axis=0)),
        "equal weights": (np.mean([p.mean(axis=0) for p in parts], axis=0),
                          np.mean([(p ** 2).mean(axis=0) for p in parts], axis=0)
                          - np.mean([p.mean(axis=0) for p in parts], axis=0) ** 2),
        "first chunk": _pooled(parts[0]),
    }


LAYER_MESSAGES = {
    "unbiased": ("used the unbiased variance (divisor n - 1) over the whole training set.",
                 "here the training set IS the population the network will be normalised with: "
                 "divide by n, like tf.nn.moments. (The paper's m/(m-1) corrects averages of "
                 "mini-batch variances, which this pass does not use.)"),
    "std": ("returned the standard deviation, not the variance.",
            "return the variance: normalise() takes the variance and adds eps before the square "
            "root."),
    "chunk variances": ("averaged the chunks' own variances. That misses how much the chunk "
                        "means differ from each other, so the variance comes out too small.",
                        "accumulate the sum of z and the sum of z**2 over all chunks, then "
                        "variance = E[z**2] - E[z]**2."),
    "chunk variances unbiased": ("averaged the chunks' variances (made unbiased). That is the "
                                 "paper's estimate from mini-batches, not the exact variance.",
                                 "accumulate the sum of z and the sum of z**2 over all chunks, "
                                 "then variance = E[z**2] - E[z]**2."),
    "equal weights": ("gave every chunk the same weight, but the last chunk is smaller.",
                      "add up sums and counts over the chunks and divide by the total number of "
                      "rows at the end."),
    "first chunk": ("used only the first chunk.", "loop over all the chunks of x."),
}


def _reference(net, x):
    """(expected, wrong variants by name) for exercise 3.2; all in float64 NumPy."""
    x = x.astype(np.float64)
    w1, w2 = net.w1.numpy(), net.w2.numpy()
    bn1 = net.bn1
    z1 = x @ w1
    mean1, var1 = _pooled(z1)
    z2 = _sigmoid(_np_normalise(bn1, z1, mean1, var1)) @ w2
    expected = [(mean1, var1), _pooled(z2)]

    layer2 = {name: (expected[0], values) for name, values in _layer_variants(z2).items()}
    by_chunk = np.concatenate([_sigmoid(_np_normalise(bn1, p, *_pooled(p))) @ w2
                               for p in _chunks(z1)])
    layer2["chunk-normalised layer 1"] = (expected[0], _pooled(by_chunk))
    layer2["chunk-normalised layer 1, chunk variances"] = (
        expected[0], (by_chunk.mean(axis=0),
                      np.mean([p.var(axis=0) for p in _chunks(by_chunk)], axis=0)))
    moving = _sigmoid(_np_normalise(bn1, z1, bn1.pop_mean.numpy(), bn1.pop_var.numpy())) @ w2
    layer2["moving-average layer 1"] = (expected[0], _pooled(moving))
    layer2["no sigmoid"] = (expected[0], _pooled(_np_normalise(bn1, z1, mean1, var1) @ w2))
    layer2["no gamma beta"] = (expected[0],
                               _pooled(_sigmoid((z1 - mean1) / np.sqrt(var1 + bn1.eps)) @ w2))
    layer2["layer 1 not normalised"] = (expected[0], _pooled(_sigmoid(z1) @ w2))
    return expected, layer2


LAYER2_MESSAGES = {
    "chunk-normalised layer 1": (
        "Layer 2's statistics were computed with layer 1 normalised by each chunk's own "
        "statistics.",
        "at test time layer 1 is normalised by its population statistics, so layer 2 must see "
        "exactly that: finish the pass for layer 1 first, then make a second pass for layer 2 "
        "with layer 1 normalised by the exact layer-1 statistics."),
    "moving-average layer 1": (
        "Layer 2's statistics were computed with layer 1 normalised by the moving averages "
        "(bn1.pop_mean, bn1.pop_var).",
        "the exact statistics replace the moving averages: normalise layer 1 with the exact "
        "layer-1 statistics you just computed."),
    "no sigmoid": ("Layer 2's input was computed without the sigmoid after layer 1's BN.",
                   "layer 2's input is sigmoid(bn1.normalise(z1, mean1, var1)) @ w2."),
    "no gamma beta": ("Layer 2's input was computed with layer 1 standardised but not scaled and "
                      "shifted by gamma and beta.",
                      "use net.bn1.normalise(z1, mean1, var1), which applies gamma and beta."),
    "layer 1 not normalised": ("Layer 2's input was computed with layer 1 not normalised at all.",
                               "layer 2's input is sigmoid(bn1.normalise(z1, mean1, var1)) @ w2."),
}
LAYER2_MESSAGES["chunk-normalised layer 1, chunk variances"] = \
    LAYER2_MESSAGES["chunk-normalised layer 1"]


def _as_statistics(result) -> list[tuple[np.ndarray, np.ndarray]]:
    __tracebackhide__ = True
    if not isinstance(result, (list, tuple)) or len(result) != 2 or \
            any(not isinstance(pair, (list, tuple)) or len(pair) != 2 for pair in result):
        raise ExerciseMistake(
            f"Expected [(mean1, var1), (mean2, var2)]; got a {type(result).__name__}"
            + (f" of length {len(result)}" if isinstance(result, (list, tuple)) else "") + ".",
            "return a list with one (mean, variance) pair per BN layer.")
    statistics = []
    for layer, pair in enumerate(result, 1):
        arrays = []
        for name, value, units in zip(("mean", "variance"), pair, (SIZES[layer],) * 2):
            array = as_array(value, f"layer {layer}'s {name}", dtype=None)
            if array.shape != (units,):
                raise ExerciseMistake(
                    f"Layer {layer}'s {name} has shape {array.shape}; expected ({units},).",
                    "one value per unit: reduce over the rows (axis 0) only.")
            arrays.append(array.astype(np.float64))
        statistics.append(tuple(arrays))
    return statistics


def _same(got, want, rtol=1e-4) -> bool:
    return all(np.allclose(g, w, rtol=rtol, atol=1e-5) for g, w in zip(got, want))


@checker("3.2")
def exact_population_statistics(fn):
    """Check exact_population_statistics(net, x, chunk_size) on a tiny net and 26 rows."""
    __tracebackhide__ = True
    net, x = _TinyNet(), _tiny_data()
    got = _as_statistics(call(fn, net, x, CHUNK,
                              what=f"exact_population_statistics(net, x, chunk_size={CHUNK})"))
    expected, layer2_variants = _reference(net, x)
    if not _same(got[0], expected[0]):
        for name, values in _layer_variants(x.astype(np.float64) @ net.w1.numpy()).items():
            if _same(got[0], values):
                mistake, hint = LAYER_MESSAGES[name]
                raise ExerciseMistake("Layer 1: you " + mistake, hint)
        raise ExerciseMistake(
            "Layer 1's statistics are wrong.",
            "layer 1's input is z1 = x @ net.w1; its mean and (biased) variance over ALL rows, "
            "whatever the chunk size.")
    if _same(got[1], expected[1]):
        return f"exact statistics of both layers over {N_ROWS} rows in chunks of {CHUNK}"
    for name, values in layer2_variants.items():
        if _same(got[1], values[1]):
            if name in LAYER_MESSAGES:
                mistake, hint = LAYER_MESSAGES[name]
                raise ExerciseMistake("Layer 2: you " + mistake, hint)
            raise ExerciseMistake(*LAYER2_MESSAGES[name])
    raise ExerciseMistake(
        "Layer 1 is right, layer 2's statistics are wrong.",
        "after the layer-1 pass, make a second pass: z2 = sigmoid(net.bn1.normalise(z1, mean1, "
        "var1)) @ net.w2 for each chunk, accumulated over all rows.")


# ---------------------------------------------------------------------------------------------
# Exercise 3.3: the bias-corrected moving average.

def _moving_average(values, decay, start):
    estimates, estimate = [], start
    for value in values:
        estimate = decay * estimate + (1 - decay) * value
        estimates.append(estimate)
    return np.stack(estimates)


@checker("3.3")
def corrected_moving_average(fn):
    """Check corrected_moving_average(batch_values, decay, start) on 8 steps of 3 statistics."""
    __tracebackhide__ = True
    rng = np.random.default_rng(5)
    values = rng.normal(5.0, 1.0, size=(8, 3))
    start = np.array([0.0, 1.0, 2.0])
    got = as_array(call(fn, values.copy(), DECAY, start.copy(),
                        what=f"corrected_moving_average(batch_values, decay={DECAY}, start)"),
                   want_tensor=False, dtype=None)
    if got.shape != values.shape:
        raise ExerciseMistake(
            f"The result has shape {got.shape}; expected {values.shape}, one estimate per step.",
            "return the corrected estimate after every step, stacked like batch_values.")
    plain = _moving_average(values, DECAY, start)
    t = np.arange(1, len(values) + 1)[:, None]
    expected = (plain - DECAY ** t * start) / (1 - DECAY ** t)
    if np.allclose(got, expected, rtol=1e-5):
        return "the start value's weight is removed at every step"
    variants = {
        "plain": plain,
        "adam": plain / (1 - DECAY ** t),
        "off by one": (plain - DECAY ** (t + 1) * start) / (1 - DECAY ** (t + 1)),
        "swapped": _moving_average(values, 1 - DECAY, start),
        "swapped, corrected": (_moving_average(values, 1 - DECAY, start) - DECAY ** t * start)
        / (1 - DECAY ** t),
    }
    messages = {
        "plain": ("You returned the plain moving average, without the correction.",
                  "after t steps the start value still has weight decay**t; remove it and "
                  "rescale what is left."),
        "adam": ("You divided by 1 - decay**t but did not remove the start value. That is "
                 "Adam's form, right only when the estimate starts at 0; the variance starts at 1.",
                 "subtract decay**t * start before dividing."),
        "off by one": ("The correction's exponent is off by one step.",
                       "after the first update (t = 1) the start value's weight is decay**1; "
                       "the corrected estimate then equals the first batch value exactly."),
        "swapped": ("The moving-average weights are swapped: batch * decay + estimate * (1 - "
                    "decay).",
                    "decay weighs the old estimate; the new value gets 1 - decay."),
    }
    messages["swapped, corrected"] = messages["swapped"]
    for name, variant in variants.items():
        if np.allclose(got, variant, rtol=1e-5):
            raise ExerciseMistake(*messages[name])
    if np.allclose(got[0], values[0], rtol=1e-5):
        raise ExerciseMistake("The first estimate is right, later ones are not.",
                              "apply the update estimate = decay * estimate + (1 - decay) * value "
                              "at every step, then correct with that step's t.")
    raise ExerciseMistake(
        "The corrected estimates are wrong.",
        "run the plain moving average from `start`; after step t (counting from 1) subtract "
        "decay**t * start and divide by 1 - decay**t. The first estimate should equal the first "
        "batch value.")
