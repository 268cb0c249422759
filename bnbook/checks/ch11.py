"""Checkers for chapter 11: why BN works.

11.1 and 11.2 run the learner's measurement on three small Keras MLPs that differ in every size
(features, units, depth, classes, batch), with and without BN, at different learning rates, step
sizes and layers; the right answer and the known-wrong ones are computed on the same model, whose
weights are put back after every call. 11.3 is a closed form, checked against NumPy in float64.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ._core import ExerciseMistake, Wrong, call, cases, checker, match

RTOL = 1e-3   # two float32 gradients subtracted: a little more room than the default
COMMON_RATES = (0.1, 0.01, 1.0, 0.05)           # learning rates a learner might type
COMMON_STEPS = ((0.1, 0.2, 0.4), (0.05, 0.1, 0.2, 0.4), (0.25, 0.5, 1.0, 2.0, 4.0))
COMMON_DROPOUT = (0.5, 0.2, 0.1)


# ---------------------------------------------------------------------------------------------
# Small models and their gradients
# ---------------------------------------------------------------------------------------------

def _model(features, units, depth, bn, classes, seed):
    """Input -> depth x [Dense(units) -> (BN) -> ReLU] -> Dense(classes) logits, seeded. BN's
    gamma and beta and the biases start away from 1 and 0, so that a step on them matters."""
    def init(i, kind="he"):
        seed_i = 1000 * seed + 10 * i + (kind != "he")
        if kind == "he":
            return keras.initializers.HeNormal(seed=seed_i)
        if kind == "gamma":
            return keras.initializers.RandomUniform(0.5, 1.5, seed=seed_i)
        return keras.initializers.RandomNormal(0.0, 0.3, seed=seed_i)

    layers = [keras.Input((features,))]
    for i in range(depth):
        layers.append(keras.layers.Dense(units, use_bias=not bn, kernel_initializer=init(i),
                                         bias_initializer=init(i, "bias")))
        if bn:
            layers.append(keras.layers.BatchNormalization(
                gamma_initializer=init(i, "gamma"), beta_initializer=init(i + 50, "bias")))
        layers.append(keras.layers.ReLU())
    layers.append(keras.layers.Dense(classes, kernel_initializer=init(depth),
                                     bias_initializer=init(depth, "bias")))
    return keras.Sequential(layers)


def _data(case, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((case.batch, case.features)) * 1.5 + 0.5).astype(np.float32)
    y = rng.integers(0, case.classes, size=case.batch).astype(np.int64)
    return x, y


def _loss(model, x, y, training=True, reduce="mean"):
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=y, logits=model(x, training=training))
    return tf.reduce_mean(losses) if reduce == "mean" else tf.reduce_sum(losses)


def _gradients(model, x, y, training=True, reduce="mean"):
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        loss = _loss(model, x, y, training, reduce)
    return loss, dict(zip([v.path for v in variables], tape.gradient(loss, variables)))


class _Weights:
    """The model's trainable weights, saved, to compare with; ``restore`` puts back every
    variable, BN's moving statistics included (a training-mode call moves them, and an
    inference-mode variant must see the same ones as the learner's code did)."""

    def __init__(self, model):
        self.variables = model.trainable_variables
        self.values = [v.numpy().copy() for v in self.variables]
        self.everything = [(v, v.numpy().copy()) for v in model.variables]

    def restore(self):
        for variable, value in self.everything:
            variable.assign(value)

    def changed(self) -> bool:
        return any(not np.array_equal(v.numpy(), value)
                   for v, value in zip(self.variables, self.values))


def _flat(tensors):
    return np.concatenate([np.ravel(np.asarray(t, np.float64)) for t in tensors])


def _book():
    """The lesson's own measurements, which the exercises ask the learner to write."""
    from bnbook.lessons import why_bn_works as wb

    return [wb.ics, wb.along_gradient]


# ---------------------------------------------------------------------------------------------
# 11.1: Santurkar et al.'s ICS of one layer
# ---------------------------------------------------------------------------------------------

ICS_CASES = (
    dict(features=6, units=8, depth=3, bn=True, classes=3, batch=16, layer=6, learning_rate=0.5),
    dict(features=5, units=6, depth=2, bn=False, classes=4, batch=12, layer=2, learning_rate=0.3),
    dict(features=4, units=10, depth=3, bn=True, classes=5, batch=20, layer=9, learning_rate=0.2),
)


def _ics(model, x, y, k, lr, moved="below", training=True, reduce="mean", with_bias=False):
    """(distance, cosine, ||G||) of layer k, the layers ``moved`` having taken their step."""
    weights = _Weights(model)
    layer = model.layers[k]
    targets = [layer.kernel] + ([layer.bias] if with_bias and layer.bias is not None else [])
    _, grads = _gradients(model, x, y, training, reduce)
    before = _flat([grads[v.path] for v in targets])
    chosen = {"below": model.layers[:k], "and itself": model.layers[:k + 1],
              "all": model.layers, "above": model.layers[k + 1:]}[moved]
    for other in chosen:
        for variable in other.trainable_variables:
            variable.assign_sub(lr * grads[variable.path])
    _, grads = _gradients(model, x, y, training, reduce)
    after = _flat([grads[v.path] for v in targets])
    weights.restore()
    norm = np.linalg.norm(before)
    cosine = before @ after / (norm * np.linalg.norm(after))
    return float(np.linalg.norm(before - after)), float(cosine), float(norm)


ICS_MESSAGES = {
    "swapped": ("Your distance and cosine are swapped.",
                "return (distance, cosine), in that order."),
    "not recomputed": ("Your G' equals G: distance 0 and cosine 1, as if the gradient was not "
                       "computed again after the layers below moved.",
                       "after the step, run a new GradientTape on the same batch and take the "
                       "gradient with respect to the layer's kernel again."),
    "and itself": ("Your G' was computed after layer k had taken its own step too.",
                   "only the layers before `layer_index` move; layer k keeps its weights, so that "
                   "G' shows what the updates below it did to its gradient."),
    "all": ("Your G' was computed after every layer had taken its step.",
            "only the layers before `layer_index` move; layer k and the layers above it keep "
            "their weights."),
    "above": ("You moved the layers above layer k, not the layers below it.",
              "ICS is about layer k's inputs, which the layers before it (model.layers[:k]) "
              "compute."),
    "inference": ("Your gradients come from the model in inference mode.",
                  "call the model with training=True, as in a training step: BN must use the "
                  "batch's statistics."),
    "sum": ("Your loss is the sum over the batch, not the mean.",
            "use the mean cross-entropy (tf.reduce_mean of the per-example losses)."),
    "bias": ("Your G includes the bias of layer k.",
             "G is the gradient with respect to the layer's kernel only (layer.kernel)."),
    "squared": ("Your distance is squared.",
                "return the l2 distance, the square root of the sum of squared differences."),
    "relative": ("Your distance is divided by the norm of G.",
                 "return the plain l2 distance ||G - G'||."),
    "one minus": ("You returned 1 - cosine.", "return the cosine itself: 1 when G' = G."),
    "angle": ("You returned the angle, not its cosine.", "return G.G' / (||G|| ||G'||)."),
    "rate": ("Your lower layers took their step with a fixed learning rate, not "
             "`learning_rate`.", "use the `learning_rate` argument: W' = W - learning_rate * grad."),
}


@checker("11.1")
def ics_of_layer(fn):
    for case in cases(*ICS_CASES):
        _ics_case(fn, case)
    return "distance and cosine match in 3 models (with and without BN, 3 layers, 3 rates)"


def _ics_case(fn, case):
    model = _model(case.features, case.units, case.depth, case.bn, case.classes,
                   seed=case.index)
    x, y = _data(case, seed=case.index + 10)
    k, lr = case.layer, case.learning_rate
    distance, cosine, norm = _ics(model, x, y, k, lr)
    weights = _Weights(model)
    got = call(fn, model, x, y, k, lr, what="ics_of_layer", case=case, refuse=_book())
    changed = weights.changed()
    weights.restore()
    messages = ICS_MESSAGES

    def variant(key, **kwargs):
        def value():
            d, c, _ = _ics(model, x, y, k, lr, **kwargs)
            return {"distance": d, "cosine": c}
        return Wrong(value, *messages[key])

    has_bias = model.layers[k].bias is not None
    wrong = [variant("and itself", moved="and itself"), variant("all", moved="all"),
             variant("above", moved="above"),
             variant("inference", training=False) if case.bn else Wrong(None, ""),
             variant("sum", reduce="sum"),
             variant("bias", with_bias=True) if has_bias else Wrong(None, ""),
             Wrong({"distance": distance ** 2}, *messages["squared"]),
             Wrong({"distance": distance / norm}, *messages["relative"]),
             Wrong({"cosine": 1 - cosine}, *messages["one minus"]),
             Wrong({"cosine": float(np.arccos(np.clip(cosine, -1, 1)))}, *messages["angle"]),
             Wrong({"distance": cosine, "cosine": distance}, *messages["swapped"]),
             Wrong({"distance": 0.0, "cosine": 1.0}, *messages["not recomputed"])]
    wrong += [Wrong(lambda r=rate: dict(zip(("distance", "cosine"),
                                            _ics(model, x, y, k, r)[:2])),
                    *messages["rate"]) for rate in COMMON_RATES if rate != lr]
    match(got, {"distance": distance, "cosine": cosine}, case=case,
          name="ics_of_layer's result", wrong=wrong, rtol=RTOL,
          selftest="with learning_rate=0 nothing moves: the distance must be 0 and the "
                   "cosine 1.")
    if changed:
        raise ExerciseMistake(
            f"In {case}: ics_of_layer left the model's weights changed.",
            "save the weights of the layers below before you move them, and .assign them "
            "back before you return.")


# ---------------------------------------------------------------------------------------------
# 11.2: loss variation and gradient predictiveness along the gradient
# ---------------------------------------------------------------------------------------------

ALONG_CASES = (
    dict(features=6, units=8, depth=2, bn=True, classes=3, batch=16, step_sizes=(0.1, 0.3, 0.9)),
    dict(features=5, units=6, depth=3, bn=False, classes=4, batch=12,
         step_sizes=(0.05, 0.1, 0.2, 0.4)),
    dict(features=4, units=10, depth=2, bn=True, classes=5, batch=20,
         step_sizes=(0.2, 0.5, 1.0, 2.0, 3.0)),
)


def _along(model, x, y, step_sizes, sign=-1.0, training=True, reduce="mean", unit=False,
           start=False, from_start=False, agg=np.max, norm="global", difference=True):
    """(loss variation, gradient predictiveness) along the gradient, with the variants' knobs."""
    weights = _Weights(model)
    loss0, grads = _gradients(model, x, y, training, reduce)
    paths = [v.path for v in weights.variables]
    g = [grads[p].numpy() for p in paths]
    scale = 1.0 / np.linalg.norm(_flat(g)) if unit else 1.0
    losses, changes = [], []
    for eta in step_sizes:
        for variable, value, grad in zip(weights.variables, weights.values, g):
            variable.assign(value + sign * eta * scale * grad)
        loss, moved = _gradients(model, x, y, training, reduce)
        losses.append(float(loss))
        parts = [grads[p].numpy() - moved[p].numpy() if difference else moved[p].numpy()
                 for p in paths]
        if norm == "global":
            changes.append(np.linalg.norm(_flat(parts)))
        else:
            changes.append(sum(np.linalg.norm(np.ravel(part)) for part in parts))
    weights.restore()
    if start:
        losses.append(float(loss0))
    variation = max(losses) - float(loss0) if from_start else max(losses) - min(losses)
    return float(variation), float(agg(changes))


ALONG_MESSAGES = {
    "ascent": ("You stepped up the gradient (w + eta g), not down it.",
               "a training step goes to w - eta * g."),
    "start": ("Your loss variation includes the loss at the starting point.",
              "take the max and min over the step sizes given, L(w - eta g) for each eta; "
              "eta = 0 is not one of them."),
    "from start": ("Your loss variation is measured from the starting loss.",
                   "it is the largest minus the smallest of the losses L(w - eta g)."),
    "unit": ("You stepped along the normalised gradient g / ||g||.",
             "step by eta * g itself: the step sizes are learning rates."),
    "inference": ("Your losses and gradients come from the model in inference mode.",
                  "call the model with training=True: BN must use the batch's statistics."),
    "sum": ("Your loss is the sum over the batch, not the mean.",
            "use the mean cross-entropy (tf.reduce_mean of the per-example losses)."),
    "mean": ("Your gradient predictiveness is the mean over the step sizes, not the max.",
             "take the largest change of the gradient over the step sizes."),
    "per variable": ("Your gradient change adds up the norms of each variable's difference.",
                     "take one l2 norm over all the variables together: the square root of "
                     "the sum of every squared difference."),
    "new gradient": ("Your gradient predictiveness is the norm of the new gradient, not of its "
                     "change.", "measure ||grad L(w) - grad L(w - eta g)||."),
}


@checker("11.2")
def along_gradient(fn):
    for case in cases(*ALONG_CASES):
        _along_case(fn, case)
    return "loss variation and gradient predictiveness match in 3 models and step ranges"


def _along_case(fn, case):
    model = _model(case.features, case.units, case.depth, case.bn, case.classes,
                   seed=case.index + 5)
    x, y = _data(case, seed=case.index + 20)
    steps = list(case.step_sizes)
    variation, predictiveness = _along(model, x, y, steps)
    weights = _Weights(model)
    got = call(fn, model, x, y, steps, what="along_gradient", case=case, refuse=_book())
    changed = weights.changed()
    weights.restore()

    def variant(key, **kwargs):
        return Wrong(lambda: dict(zip(("loss variation", "gradient predictiveness"),
                                      _along(model, x, y, steps, **kwargs))),
                     *ALONG_MESSAGES[key])

    wrong = [variant("ascent", sign=1.0), variant("start", start=True),
             variant("from start", from_start=True), variant("unit", unit=True),
             variant("inference", training=False) if case.bn else Wrong(None, ""),
             variant("sum", reduce="sum"), variant("mean", agg=np.mean),
             variant("per variable", norm="per variable"),
             variant("new gradient", difference=False)]
    match(got, {"loss variation": variation, "gradient predictiveness": predictiveness},
          case=case, name="along_gradient's result", wrong=wrong, rtol=RTOL,
          selftest="with a single step size the loss variation is 0; with step sizes "
                   "close to 0 both numbers shrink towards 0.")
    if changed:
        raise ExerciseMistake(
            f"In {case}: along_gradient left the model's weights changed.",
            "save the weights before you step, and .assign them back before you return "
            "(each step starts from w, not from the previous step).")


# ---------------------------------------------------------------------------------------------
# 11.3: the variance shift of a dropout -> Dense -> BN pair
# ---------------------------------------------------------------------------------------------

SHIFT_CASES = (
    dict(examples=200, inputs=6, units=4, rate=0.5),
    dict(examples=150, inputs=9, units=3, rate=0.2),
    dict(examples=120, inputs=5, units=7, rate=0.3),
)


def _shift_data(case):
    rng = np.random.default_rng(case.index + 30)
    h = np.maximum(rng.standard_normal((case.examples, case.inputs)) + 0.5, 0)  # ReLU outputs
    h = (h * rng.uniform(0.5, 2.0, case.inputs)).astype(np.float32)
    kernel = rng.standard_normal((case.inputs, case.units)).astype(np.float32)
    return h, kernel


def _shift(h, kernel, rate, extra=None, ddof=0, invert=False, mean_squared=False,
           single=False, scalar=False, squared_after=False):
    h, kernel = np.asarray(h, np.float64), np.asarray(kernel, np.float64)
    z = h @ kernel
    inference = z.var(axis=0, ddof=ddof)
    factor = rate / (1 - rate) if extra is None else extra
    if mean_squared:
        noise = factor * (kernel ** 2).T @ (h.mean(axis=0) ** 2)
    elif squared_after:      # (h @ kernel)^2 where the mask noise needs h^2 @ kernel^2
        noise = factor * ((h @ kernel) ** 2).mean(axis=0)
    else:
        noise = factor * ((h ** 2) @ (kernel ** 2)).mean(axis=0)
    train = inference + noise
    if single:   # each input's own formula, (v + m^2) / (1 - p) - m^2, then summed through W^2
        m, v = h.mean(axis=0), h.var(axis=0)
        inference = (kernel ** 2).T @ v
        train = (kernel ** 2).T @ ((v + m ** 2) / (1 - rate) - m ** 2)
    ratio = train / inference if invert else inference / train
    return float(ratio.mean()) if scalar else ratio


SHIFT_MESSAGES = {
    "squared after": ("Your mask noise squares z = h @ kernel; each input is dropped on its own, "
                      "so its noise goes through the kernel squared: h^2 @ kernel^2.",
                      "the variance of a sum of independent terms is the sum of their variances: "
                      "Var[delta_i h_i W_ij / (1 - p)] summed over i."),
    "no rescale": ("Your dropout noise has the factor p (1 - p): dropout without the division by "
                   "1 - p.", "Keras' dropout divides what it keeps by 1 - p, so each kept input is "
                   "h / (1 - p); the variance of delta / (1 - p) is p / (1 - p)."),
    "p": ("Your dropout noise has the factor p instead of p / (1 - p).",
          "the variance of delta / (1 - p), delta ~ Bernoulli(1 - p), is p / (1 - p)."),
    "keep": ("You swapped the drop rate and the keep probability.",
             "`rate` is the probability of dropping a unit, as in keras.layers.Dropout(rate)."),
    "invert": ("Your ratio is upside down (training over inference).",
               "return the inference variance divided by the training variance: below 1."),
    "unbiased": ("You used the unbiased variance (divided by n - 1).",
                 "use the biased variance over the examples, as BN does."),
    "mean squared": ("Your dropout term uses the squared mean of each input, not the mean of its "
                     "square.", "the noise of input i on example n is p / (1 - p) W_ij^2 h_ni^2: "
                     "average h_ni^2 over the examples."),
    "single": ("You combined each input's own variance through W^2, ignoring how the inputs "
               "vary together.", "the inference variance is the variance of z = h @ W over the "
               "examples, with every covariance term; only the dropout noise is independent per "
               "input."),
    "scalar": ("You returned one ratio, averaged over the units.",
               "return one ratio per unit of the Dense layer: shape (units,)."),
    "rate": ("Your answer uses a fixed dropout rate, not `rate`.",
             "use the `rate` argument."),
}


@checker("11.3")
def variance_shift_ratio(fn):
    for case in cases(*SHIFT_CASES):
        _shift_case(fn, case)
    return "the ratio of every unit matches in 3 cases"


def _shift_case(fn, case):
    h, kernel = _shift_data(case)
    p = case.rate
    got = call(fn, h.copy(), kernel.copy(), p, what="variance_shift_ratio", case=case)
    m = SHIFT_MESSAGES
    wrong = [Wrong(lambda: _shift(h, kernel, p, extra=p * (1 - p)), *m["no rescale"]),
             Wrong(lambda: _shift(h, kernel, p, extra=p), *m["p"]),
             Wrong(lambda: _shift(h, kernel, 1 - p), *m["keep"]),
             Wrong(lambda: _shift(h, kernel, p, invert=True), *m["invert"]),
             Wrong(lambda: _shift(h, kernel, p, ddof=1), *m["unbiased"]),
             Wrong(lambda: _shift(h, kernel, p, mean_squared=True), *m["mean squared"]),
             Wrong(lambda: _shift(h, kernel, p, single=True), *m["single"]),
             Wrong(lambda: _shift(h, kernel, p, scalar=True), *m["scalar"]),
             Wrong(lambda: _shift(h, kernel, p, squared_after=True), *m["squared after"])]
    wrong += [Wrong(lambda r=rate: _shift(h, kernel, r), *m["rate"])
              for rate in COMMON_DROPOUT if rate != p]
    match(got, _shift(h, kernel, p), case=case, name="variance_shift_ratio's result",
          wrong=wrong,
          selftest="with rate=0 there is no dropout: every ratio must be 1.")
