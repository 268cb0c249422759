"""Checkers of chapter 3 (test time: population statistics). Small synthetic data only."""

# The Wrong(lambda: ...) variants below are evaluated inside the loop iteration that makes them.
# ruff: noqa: B023

from __future__ import annotations

import numpy as np

from ._core import ExerciseMistake, Wrong, call, cases, checker, match
from .ch01 import averaged_variances

ATOL = 1e-4
VARIABLES = ("gamma", "beta", "pop_mean", "pop_var")
START = {"gamma": 1.0, "beta": 0.0, "pop_mean": 0.0, "pop_var": 1.0}
_AXES_HINT = ("the statistics are over every axis but the last (the units or channels): axes [0] "
              "for (batch, units), [0, 1, 2] for NHWC images; list(range(len(z.shape) - 1)) "
              "covers both.")


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


def _new_layer(layer_class, case):
    __tracebackhide__ = True
    import tensorflow as tf

    if not isinstance(layer_class, type):
        raise ExerciseMistake(
            f"Expected the class PopulationBN, got {type(layer_class).__name__!r} object.",
            "pass the class itself, check.population_bn(PopulationBN), not an instance of it.")
    units = case.shape[-1]
    layer = call(layer_class, units, decay=case.decay, eps=case.eps, case=case,
                 what=f"PopulationBN({units}, decay={case.decay}, eps={case.eps})")
    state = _read_state(layer)
    for name, value in state.items():
        variable = getattr(layer, name)
        if value.shape != (units,) or variable.dtype != tf.float32:
            raise ExerciseMistake(
                f"In {case}: `self.{name}` has shape {value.shape} and dtype "
                f"{variable.dtype.name}; expected shape ({units},) (one value per unit or "
                "channel) and float32.",
                "size the variables with n_units, e.g. tf.ones([n_units]).")
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
    match({k: state[k] for k in VARIABLES}, {k: np.full(units, v) for k, v in START.items()},
          case=case, name="the new layer's variables", wrong=[
              Wrong({"pop_var": np.zeros(units)}, "The population variance starts at 0.",
                    "start it at 1, like the variance of standardised data. Started at 0, an "
                    "early evaluation divides by sqrt(0 + eps) and blows every input up.")],
          selftest="gamma starts at 1, beta at 0, the population mean at 0, the population "
                   "variance at 1.")
    return layer


def _case_data(case):
    """z, and the state the check gives the layer: batch and population statistics differ a lot."""
    rng = np.random.default_rng(case.seed)
    units = case.shape[-1]
    z = (rng.normal(size=case.shape) * rng.uniform(0.5, 3, units)
         + rng.uniform(-3, 3, units)).astype(np.float32)
    state = {"gamma": rng.uniform(0.5, 2, units), "beta": rng.uniform(-1, 1, units),
             "pop_mean": rng.uniform(-2, 2, units), "pop_var": rng.uniform(0.3, 4, units)}
    return z, {k: v.astype(np.float32) for k, v in state.items()}


def _transform(z, mean, var, state, eps):
    z = z.astype(np.float64)
    return state["gamma"] * (z - mean) / np.sqrt(var + eps) + state["beta"]


@checker("3.1")
def population_bn(layer_class):
    """Check a PopulationBN class on dense, NHWC and sequence inputs."""
    __tracebackhide__ = True
    import tensorflow as tf

    for case in cases(dict(shape=(6, 4), decay=0.9, eps=1e-3, _seed=31),
                      dict(shape=(3, 2, 5, 3), decay=0.7, eps=0.1, _seed=32),
                      dict(shape=(5, 4, 2), decay=0.99, eps=0.01, _seed=33)):
        z, state = _case_data(case)
        axes = tuple(range(z.ndim - 1))
        zd = z.astype(np.float64)
        mean, var = zd.mean(axis=axes), zd.var(axis=axes)
        d, eps = case.decay, case.eps
        layer = _new_layer(layer_class, case)

        # Inference: population statistics, nothing changes (with and without `training`).
        inference = _transform(z, state["pop_mean"], state["pop_var"], state, eps)
        updated = {"pop_mean": state["pop_mean"] * d + mean * (1 - d),
                   "pop_var": state["pop_var"] * d + var * (1 - d)}
        for kwargs, how in [({"training": False}, "layer(z, training=False)"),
                            ({}, "layer(z)")]:
            _set_state(layer, state)
            out = call(layer, tf.constant(z), what=how, case=case, **kwargs)
            got = {"output": out, **{k: v for k, v in _read_state(layer).items()
                                     if k.startswith("pop")}}
            batch_out = _transform(z, mean, var, state, eps)
            match(got, {"output": inference, "pop_mean": state["pop_mean"],
                        "pop_var": state["pop_var"]}, case=case, name=f"{how}'s result",
                  tensor=None, wrong=[
                      Wrong({"output": batch_out} if kwargs else None,
                            "At inference (training=False) the layer used the batch statistics.",
                            "inference must use self.pop_mean and self.pop_var, so that one "
                            "example's output does not depend on the rest of the batch."),
                      Wrong({"output": batch_out, **updated} if kwargs == {} else None,
                            "layer(z) without a `training` argument trained: it used batch "
                            "statistics and updated the population ones.",
                            "the default must be inference: def __call__(self, z, "
                            "training=False)."),
                      Wrong({"output": batch_out} if kwargs == {} else None,
                            "layer(z) without a `training` argument used batch statistics.",
                            "the default must be inference: def __call__(self, z, "
                            "training=False)."),
                      Wrong({"pop_mean": updated["pop_mean"], "pop_var": updated["pop_var"]},
                            f"{how} changed the population statistics: they were updated at "
                            "inference.",
                            "update them only when training is True; evaluation must not change "
                            "the model."),
                      Wrong({"output": _transform(z, updated["pop_mean"], updated["pop_var"],
                                                  state, eps), **updated},
                            f"{how} changed the population statistics: they were updated at "
                            "inference.",
                            "update them only when training is True; evaluation must not change "
                            "the model."),
                      Wrong({"output": _transform(z, state["pop_mean"], state["pop_var"], state,
                                                  1e-3)} if eps != 1e-3 else None,
                            "At inference the layer used epsilon 1e-3, not self.eps.",
                            "use self.eps (the check builds layers with other epsilons)."),
                  ], selftest="at inference the output is gamma * (z - pop_mean) / "
                              "sqrt(pop_var + eps) + beta with the layer's own variables.")

        # Training: batch statistics, and one moving-average update of both statistics.
        _set_state(layer, state)
        out = call(layer, tf.constant(z), training=True, what="layer(z, training=True)",
                   case=case, hint=_AXES_HINT)
        got = {"output": out, **{k: v for k, v in _read_state(layer).items()
                                 if k.startswith("pop")}}
        old_mean, old_var = state["pop_mean"], state["pop_var"]
        unbiased = var * z[..., 0].size / (z[..., 0].size - 1)
        want = {"output": _transform(z, mean, var, state, eps),
                "pop_mean": old_mean * d + mean * (1 - d), "pop_var": old_var * d + var * (1 - d)}
        wrong = [
            Wrong({"pop_mean": old_mean, "pop_var": old_var},
                  "After a training step the population statistics had not changed: they are "
                  "never updated.",
                  "in the training branch, move them towards the batch statistics with "
                  "self.pop_mean.assign(...) and self.pop_var.assign(...)."),
            Wrong({"pop_var": old_var},
                  "After a training step the population mean moved but the population variance "
                  "did not.", "update both statistics, with self.pop_var.assign(...)."),
            Wrong({"pop_mean": mean * d + old_mean * (1 - d), "pop_var": var * d + old_var * (1 - d)},
                  "The moving-average weights are swapped: you computed batch * decay + pop * "
                  "(1 - decay).",
                  "decay is the weight of the OLD estimate (close to 1, so it changes slowly); "
                  "the new batch gets the small weight 1 - decay."),
            Wrong({"pop_var": old_var * d + unbiased * (1 - d)},
                  "The population variance was updated with the unbiased batch variance (divisor "
                  "n - 1), not the one the batch was normalised with.",
                  "in this exercise the moving average takes the same biased variance the "
                  "training step uses; the paper's m/(m-1) correction is a separate, final step."),
            Wrong({"pop_mean": mean, "pop_var": var},
                  "After a training step the population statistics equal that batch's "
                  "statistics: they were overwritten, not averaged.",
                  "keep most of the old estimate: pop * decay + batch * (1 - decay)."),
            Wrong({"output": _transform(z, old_mean, old_var, state, eps)},
                  "In training (training=True) the layer normalised with the population "
                  "statistics.",
                  "a training step normalises with the batch's own mean and variance; the "
                  "population ones are only updated."),
            Wrong({"output": _transform(z, want["pop_mean"], want["pop_var"], state, eps)},
                  "In training the layer normalised with the freshly updated population "
                  "statistics.", "normalise with the batch's own mean and variance."),
            Wrong({"output": _transform(z, mean, unbiased, state, eps)},
                  "In training the layer divided by the unbiased batch variance (divisor n - 1).",
                  "BN normalises with the biased batch variance, as tf.nn.moments returns it."),
        ]
        for fixed in (0.999, 0.99, 0.9):
            if fixed != d:
                wrong.append(Wrong({"pop_mean": old_mean * fixed + mean * (1 - fixed),
                                    "pop_var": old_var * fixed + var * (1 - fixed)},
                                   f"The update used decay {fixed}, not the layer's own decay.",
                                   f"use self.decay (the check builds this layer with decay={d})."))
        if eps != 1e-3:
            wrong.append(Wrong({"output": _transform(z, mean, var, state, 1e-3)},
                               "In training the layer used epsilon 1e-3, not self.eps.",
                               "use self.eps (the check builds layers with other epsilons)."))
        match(got, want, case=case, name="layer(z, training=True)'s result", wrong=wrong,
              selftest="with decay 0 the population statistics after one training call equal "
                       "the batch's, tf.nn.moments over every axis but the last.")

    # Training steps run inside a tf.function (mnist_mlp.train): two steps there, fresh layer.
    case = cases(dict(shape=(6, 4), decay=0.9, eps=1e-3, _seed=31))[0]
    case.params["tf_function"] = True
    z, state = _case_data(case)
    layer = _new_layer(layer_class, case)
    _set_state(layer, state)
    step = tf.function(lambda batch: layer(batch, training=True))
    for batch in (z, z[::-1].copy()):
        try:
            call(step, tf.constant(batch), what="layer(z, training=True) inside a tf.function",
                 case=case)
        except ExerciseMistake as err:
            if "symbolic" in err.mistake or "'numpy'" in err.mistake:
                raise ExerciseMistake(
                    "layer(z, training=True) fails inside a tf.function (where training steps "
                    "run): it calls .numpy() or NumPy on a tensor.",
                    "use TensorFlow operations only: tf.nn.moments, arithmetic on tensors, "
                    ".assign().") from None
            if "singleton tf.Variables" in err.mistake:
                raise ExerciseMistake(
                    "layer(z, training=True) creates a new tf.Variable on every call (self.<name> "
                    "= tf.Variable(...)), which a tf.function allows only once.",
                    "create the variables in __init__ and change their values with "
                    "self.<name>.assign(new_value).") from None
            raise
    mean, var = z.mean(axis=0), z.var(axis=0)
    twice = {k: (state[k] * 0.9 + s * 0.1) * 0.9 + s * 0.1
             for k, s in (("pop_mean", mean), ("pop_var", var))}
    match({k: v for k, v in _read_state(layer).items() if k.startswith("pop")}, twice, case=case,
          name="the population statistics after two steps in a tf.function", wrong=[
              Wrong({k: state[k] * 0.9 + s * 0.1 for k, s in (("pop_mean", mean),
                                                              ("pop_var", var))},
                    "Called twice inside a tf.function, the layer updated the population "
                    "statistics only once.",
                    "use TensorFlow operations and .assign(); Python-side changes (plain "
                    "attributes, NumPy, .numpy()) happen once while tracing, not at every step.")])
    return ("batch statistics plus one update of both population statistics when training; "
            "population statistics and no update at inference; dense, NHWC and sequence inputs; "
            "works inside tf.function")


# ---------------------------------------------------------------------------------------------
# Exercise 3.2: exact population statistics, layer by layer, in chunks.

class _TinyBN:
    """The lesson's PopulationBN at inference, with moving averages that are deliberately off:
    ``normalise(z, mean, variance)`` and, like the lesson's layer, ``__call__(z, training=False)``."""

    def __init__(self, gamma, beta, pop_mean, pop_var, eps):
        import tensorflow as tf

        self.gamma, self.beta = tf.Variable(gamma), tf.Variable(beta)
        self.pop_mean = tf.Variable(pop_mean, trainable=False)
        self.pop_var = tf.Variable(pop_var, trainable=False)
        self.eps = eps

    def normalise(self, z, mean, variance):
        import tensorflow as tf

        return self.gamma * (z - mean) / tf.sqrt(variance + self.eps) + self.beta

    def __call__(self, z, training=False):
        if training:
            raise ExerciseMistake(
                "Your code called net.bn1(z, training=True): that normalises with the chunk's own "
                "statistics and changes the moving averages.",
                "use net.bn1.normalise(z, mean, variance) with the exact statistics.")
        return self.normalise(z, self.pop_mean, self.pop_var)


class _TinyNet:
    """A small version of the lesson's BNNet: w1, w2, w3, b3, bn1, bn2 (tf.Variables)."""

    def __init__(self, sizes, eps, seed):
        import tensorflow as tf

        rng = np.random.default_rng(seed)
        f32 = np.float32
        n0, n1, n2 = sizes
        self.w1 = tf.Variable(rng.normal(size=(n0, n1)).astype(f32))
        self.w2 = tf.Variable(rng.normal(size=(n1, n2)).astype(f32))
        self.w3 = tf.Variable(rng.normal(size=(n2, 2)).astype(f32))
        self.b3 = tf.Variable(np.zeros(2, f32))
        self.bn1 = _TinyBN(rng.uniform(0.5, 2, n1).astype(f32), rng.uniform(-1, 1, n1).astype(f32),
                           np.full(n1, 3.0, f32), np.full(n1, 0.2, f32), eps)
        self.bn2 = _TinyBN(rng.uniform(0.5, 2, n2).astype(f32), rng.uniform(-1, 1, n2).astype(f32),
                           np.full(n2, -1.0, f32), np.full(n2, 5.0, f32), eps)


def _tiny_data(rows, width, chunk, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, width)) + 0.5
    x += np.repeat(np.arange(-(-rows // chunk)), chunk)[:rows, None] * 0.8  # chunks differ
    return x.astype(np.float32)


def _sigmoid(u):
    return 1.0 / (1.0 + np.exp(-u))


def _np_normalise(bn, z, mean, var):
    return bn.gamma.numpy() * (z - mean) / np.sqrt(var + bn.eps) + bn.beta.numpy()


def _pooled(z):
    return z.mean(axis=0), z.var(axis=0)


def _layer_variants(z, chunk) -> dict[str, tuple]:
    """Wrong ways of combining the statistics of one layer's input z (all rows), by mistake."""
    parts = [z[i:i + chunk] for i in range(0, len(z), chunk)]
    variants = {
        "unbiased": (z.mean(axis=0), z.var(axis=0, ddof=1)),
        "std": (z.mean(axis=0), z.std(axis=0)),
        "chunk variances": (z.mean(axis=0), np.mean([p.var(axis=0) for p in parts], axis=0)),
        "chunk variances weighted": (z.mean(axis=0), np.sum([len(p) * p.var(axis=0)
                                                              for p in parts], axis=0) / len(z)),
        "equal weights": (np.mean([p.mean(axis=0) for p in parts], axis=0),
                          np.mean([(p ** 2).mean(axis=0) for p in parts], axis=0)
                          - np.mean([p.mean(axis=0) for p in parts], axis=0) ** 2),
        "first chunk": _pooled(parts[0]),
        "last chunk": _pooled(parts[-1]),
    }
    if all(len(p) > 1 for p in parts):
        variants["chunk variances unbiased"] = (
            z.mean(axis=0), np.mean([p.var(axis=0, ddof=1) for p in parts], axis=0))
    return variants


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
    "chunk variances weighted": averaged_variances("chunk"),  # chapter 1.2's wording
    "chunk variances unbiased": ("averaged the chunks' variances (made unbiased). That is the "
                                 "paper's estimate from mini-batches, not the exact variance.",
                                 "accumulate the sum of z and the sum of z**2 over all chunks, "
                                 "then variance = E[z**2] - E[z]**2."),
    "equal weights": ("gave every chunk the same weight, but the last chunk is smaller.",
                      "add up sums and counts over the chunks and divide by the total number of "
                      "rows at the end."),
    "first chunk": ("used only the first chunk.", "loop over all the chunks of x."),
    "last chunk": ("kept only the last chunk's statistics: each chunk overwrote the previous "
                   "one's.", "add each chunk's sums to running totals."),
}

LAYER2_MESSAGES = {
    "chunk-normalised layer 1": (
        "Layer 2's statistics were computed with layer 1 normalised by each chunk's own "
        "statistics.",
        "at test time layer 1 is normalised by its population statistics, so layer 2 must see "
        "exactly that: finish the pass for layer 1 first, then make a second pass for layer 2 "
        "with layer 1 normalised by the exact layer-1 statistics."),
    "moving-average layer 1": (
        "Layer 2's statistics were computed with layer 1 normalised by the moving averages "
        "(bn1.pop_mean, bn1.pop_var; net.bn1(z) uses them too).",
        "the exact statistics replace the moving averages: normalise layer 1 with "
        "net.bn1.normalise(z1, mean1, var1), the exact layer-1 statistics you just computed."),
    "no sigmoid": ("Layer 2's input was computed without the sigmoid after layer 1's BN.",
                   "layer 2's input is sigmoid(bn1.normalise(z1, mean1, var1)) @ w2."),
    "no gamma beta": ("Layer 2's input was computed with layer 1 standardised but not scaled and "
                      "shifted by gamma and beta.",
                      "use net.bn1.normalise(z1, mean1, var1), which applies gamma and beta."),
    "layer 1 not normalised": ("Layer 2's input was computed with layer 1 not normalised at all.",
                               "layer 2's input is sigmoid(bn1.normalise(z1, mean1, var1)) @ w2."),
    "no w2": ("Layer 2's statistics have one value per unit of layer 1: you forgot `@ net.w2`.",
              "layer 2's input is sigmoid(bn1.normalise(z1, mean1, var1)) @ net.w2: one value "
              "per unit of layer 2."),
}


def _statistics(result, case) -> dict:
    """The learner's [(mean1, var1), (mean2, var2)] as a dict of four outputs."""
    __tracebackhide__ = True
    if not isinstance(result, (list, tuple)) or len(result) != 2 or \
            any(not isinstance(pair, (list, tuple)) or len(pair) != 2 for pair in result):
        raise ExerciseMistake(
            f"In {case}: expected [(mean1, var1), (mean2, var2)]; got a {type(result).__name__}"
            + (f" of length {len(result)}" if isinstance(result, (list, tuple)) else "") + ".",
            "return a list with one (mean, variance) pair per BN layer.")
    return {f"layer {layer} {name}": value for layer, pair in enumerate(result, 1)
            for name, value in zip(("mean", "variance"), pair)}


@checker("3.2")
def exact_population_statistics(fn):
    """Check exact_population_statistics(net, x, chunk_size) on three tiny nets."""
    __tracebackhide__ = True
    for case in cases(dict(sizes=(5, 4, 3), rows=26, chunk_size=6, eps=1e-3, _seed=7),
                      dict(sizes=(3, 6, 2), rows=17, chunk_size=5, eps=0.01, _seed=8),
                      dict(sizes=(4, 2, 5), rows=31, chunk_size=4, eps=0.1, _seed=9)):
        net = _TinyNet(case.sizes, case.eps, case.seed)
        x = _tiny_data(case.rows, case.sizes[0], case.chunk_size, case.seed)
        got = _statistics(call(fn, net, x.copy(), case.chunk_size, case=case,
                               what="exact_population_statistics",
                               hint="cast what you accumulate in float64 back to float32 (or "
                                    "use tf.constant(..., tf.float32)) before passing it to "
                                    "net.bn1.normalise: TensorFlow does not mix dtypes."), case)
        chunk = case.chunk_size
        xd = x.astype(np.float64)
        bn1 = net.bn1
        z1 = xd @ net.w1.numpy()
        w2 = net.w2.numpy()
        mean1, var1 = _pooled(z1)
        h1 = _sigmoid(_np_normalise(bn1, z1, mean1, var1))
        mean2, var2 = _pooled(h1 @ w2)
        want = {"layer 1 mean": mean1, "layer 1 variance": var1,
                "layer 2 mean": mean2, "layer 2 variance": var2}

        def both(first, second):
            return {"layer 1 mean": first[0], "layer 1 variance": first[1],
                    "layer 2 mean": second[0], "layer 2 variance": second[1]}

        wrong = []
        for name, values in _layer_variants(z1, chunk).items():
            z2_then = _sigmoid(_np_normalise(bn1, z1, *values)) @ w2  # layer 2 on a wrong layer 1
            wrong.append(Wrong(both(values, _pooled(z2_then)),
                               "Layer 1: you " + LAYER_MESSAGES[name][0], LAYER_MESSAGES[name][1]))
            wrong.append(Wrong(both(values, _layer_variants(z2_then, chunk).get(name)),
                               "Both layers: you " + LAYER_MESSAGES[name][0],
                               LAYER_MESSAGES[name][1]))
        for name, values in _layer_variants(h1 @ w2, chunk).items():
            wrong.append(Wrong({"layer 2 mean": values[0], "layer 2 variance": values[1]},
                               "Layer 2: you " + LAYER_MESSAGES[name][0], LAYER_MESSAGES[name][1]))
        by_chunk = np.concatenate([_sigmoid(_np_normalise(bn1, p, *_pooled(p))) @ w2
                                   for p in [z1[i:i + chunk] for i in range(0, len(z1), chunk)]])
        moving = _sigmoid(_np_normalise(bn1, z1, bn1.pop_mean.numpy(), bn1.pop_var.numpy())) @ w2
        layer2 = {
            "chunk-normalised layer 1": _pooled(by_chunk),
            "moving-average layer 1": _pooled(moving),
            "no sigmoid": _pooled(_np_normalise(bn1, z1, mean1, var1) @ w2),
            "no gamma beta": _pooled(_sigmoid((z1 - mean1) / np.sqrt(var1 + bn1.eps)) @ w2),
            "layer 1 not normalised": _pooled(_sigmoid(z1) @ w2),
            "no w2": _pooled(h1),
        }
        for name, values in layer2.items():
            wrong.append(Wrong({"layer 2 mean": values[0], "layer 2 variance": values[1]},
                               *LAYER2_MESSAGES[name]))
        match(got, want, case=case, name="exact_population_statistics' result", wrong=wrong,
              rtol=2e-4, atol=2e-5,
              selftest="with chunk_size = len(x) the result must equal tf.nn.moments(x @ net.w1, "
                       "[0]) for layer 1; then compare your chunked result with that.")
    return "exact statistics of both layers in 3 nets, over all rows, in chunks of 6, 5 and 4"


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
    """Check corrected_moving_average(batch_values, decay, start) in three cases."""
    __tracebackhide__ = True
    for case in cases(dict(steps=8, shape=(3,), decay=0.9, _seed=51),
                      dict(steps=5, shape=(2, 2), decay=0.7, _seed=52),
                      dict(steps=12, shape=(4,), decay=0.99, _seed=53)):
        rng = np.random.default_rng(case.seed)
        values = rng.normal(5.0, 1.0, size=(case.steps, *case.shape))
        start = rng.uniform(-1, 2, size=case.shape)
        given_values, given_start = values.copy(), start.copy()
        got = call(fn, given_values, case.decay, given_start, case=case,
                   what="corrected_moving_average")
        if not np.array_equal(given_start, start) or not np.array_equal(given_values, values):
            raise ExerciseMistake(
                f"In {case}: your code changed its input `"
                + ("start" if not np.array_equal(given_start, start) else "batch_values")
                + "` in place, so the correction used a changed start value.",
                "`estimate = start` makes both names point to one array, and `estimate *= "
                "decay` then changes `start` too: write `estimate = decay * estimate + ...` "
                "(a new array), or start from start.copy().")
        d = case.decay
        plain = _moving_average(values, d, start)
        t = np.arange(1, case.steps + 1).reshape(-1, *[1] * len(case.shape))
        swapped = _moving_average(values, 1 - d, start)
        match(got, (plain - d ** t * start) / (1 - d ** t), case=case, tensor=False,
              name="corrected_moving_average's result", rtol=1e-5, wrong=[
                  Wrong(plain, "You returned the plain moving average, without the correction.",
                        "after t steps the start value still has weight decay**t; remove it and "
                        "rescale what is left."),
                  Wrong(plain / (1 - d ** t),
                        "You divided by 1 - decay**t but did not remove the start value. That "
                        "is Adam's form, right only when the estimate starts at 0; here it "
                        "does not.", "subtract decay**t * start before dividing."),
                  Wrong((plain - d ** (t + 1) * start) / (1 - d ** (t + 1)),
                        "The correction's exponent is off by one step (t + 1).",
                        "after the first update (t = 1) the start value's weight is decay**1; "
                        "the corrected estimate then equals the first batch value exactly."),
                  Wrong(np.concatenate([np.broadcast_to(start, (1, *case.shape)),
                                        ((plain - d ** t * start) / (1 - d ** t))[:-1]]),
                        "The correction's exponent is off by one step (t - 1): your first row "
                        "is the start value.",
                        "count steps from 1: the first returned row is the estimate after the "
                        "first update, corrected with t = 1."),
                  Wrong(swapped, "The moving-average weights are swapped: batch * decay + "
                        "estimate * (1 - decay).",
                        "decay weighs the old estimate; the new value gets 1 - decay."),
                  Wrong((swapped - d ** t * start) / (1 - d ** t),
                        "The moving-average weights are swapped: batch * decay + estimate * "
                        "(1 - decay).", "decay weighs the old estimate; the new value gets "
                        "1 - decay."),
                  Wrong(lambda: (_moving_average(values, 0.9, start) - 0.9 ** t * start)
                        / (1 - 0.9 ** t) if d != 0.9 else None,
                        "The correction used decay 0.9, not the `decay` argument.",
                        "use the decay the function is given, in the update and the correction."),
                  Wrong(np.cumsum(values, axis=0) / t,
                        "You returned the running plain average of the batch values.",
                        "this is a moving average with weight decay on the old estimate, "
                        "corrected for its start value."),
              ], selftest="the first corrected estimate equals the first batch value; with "
                          "start equal to every batch value, every row equals it too.")
    return "the start value's weight is removed at every step (3 decays, shapes and lengths)"
