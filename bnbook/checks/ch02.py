"""Checkers of chapter 2: a batch-normalised convolution and the BN network of any depth.

Each checker runs three cases that differ in every size (batch, height, width, channels, kernel,
layer widths, number of hidden layers), in epsilon and in the activation, on small made-up
tensors, and compares with references computed in float64 (see :func:`._core.match`).
"""

# The Wrong(lambda: ...) variants below are evaluated inside the loop iteration that makes them.
# ruff: noqa: B023

from __future__ import annotations

import numpy as np

from ._core import ExerciseMistake, Wrong, call, cases, checker, match

# --- exercise 2.1: a batch-normalised convolution -----------------------------------------------

def _conv(x, filters, padding="SAME"):
    import tensorflow as tf

    return tf.nn.conv2d(tf.constant(x, tf.float64), tf.constant(filters, tf.float64), strides=1,
                        padding=padding).numpy()


def _bn(z, gamma, beta, eps, axes=(0, 1, 2), ddof=0):
    mean = z.mean(axis=axes, keepdims=True)
    var = z.var(axis=axes, ddof=ddof, keepdims=True)
    return gamma * (z - mean) / np.sqrt(var + eps) + beta


_CONV_HINT = ("a convolution's channels each get one mean and one variance over the batch and "
              "both spatial axes: tf.nn.moments(z, axes=[0, 1, 2]).")


@checker("2.1")
def bn_conv(fn):
    """Check ``bn_conv(x, filters, gamma, beta, eps)`` on three NHWC batches."""
    __tracebackhide__ = True
    import tensorflow as tf

    for case in cases(dict(x=(2, 5, 4, 3), filters=(3, 3, 3, 4), eps=1e-3, _seed=21),
                      dict(x=(3, 4, 6, 2), filters=(1, 1, 2, 5), eps=0.1, _seed=22),
                      dict(x=(4, 3, 5, 1), filters=(2, 3, 1, 3), eps=0.01, _seed=23)):
        rng = np.random.default_rng(case.seed)
        x = rng.normal(size=case.x).astype(np.float32)
        filters = rng.normal(size=case.filters).astype(np.float32)
        channels = case.filters[-1]
        gamma = rng.uniform(0.5, 2.0, channels).astype(np.float32)
        beta = rng.uniform(-1, 1, channels).astype(np.float32)
        filters[..., 0] *= 0.05  # one quiet channel: epsilon matters
        z = _conv(x, filters)
        out = call(fn, tf.constant(x), tf.constant(filters), tf.constant(gamma),
                   tf.constant(beta), case.eps, what="bn_conv", case=case, hint=_CONV_HINT)
        eps = case.eps
        mean = z.mean(axis=(0, 1, 2))
        var = z.var(axis=(0, 1, 2))
        wrong = [
            Wrong(_bn(z, gamma, beta, eps, (0,)), "Wrong axes: you normalised over the batch axis "
                  "only, so every pixel position has its own mean, as if it were a dense unit.",
                  _CONV_HINT),
            Wrong(_bn(z, gamma, beta, eps, (1, 2)), "Wrong axes: you normalised over height and "
                  "width only, each image on its own (instance normalisation), not across the "
                  "batch.", _CONV_HINT),
            Wrong(_bn(z, gamma, beta, eps, (1, 2, 3)), "Wrong axes: one mean per image, over "
                  "pixels and channels together (layer normalisation).", _CONV_HINT),
            Wrong(_bn(z, gamma, beta, eps, (0, 1, 2, 3)), "Wrong axes: a single mean for the whole "
                  "batch, channels mixed together.", _CONV_HINT),
            Wrong(_bn(_conv(x, filters, "VALID"), gamma, beta, eps)
                  if max(case.filters[:2]) > 1 else None,
                  "Your convolution used padding 'VALID': the output is smaller than the input.",
                  "use padding='SAME' and strides=1, so the feature maps keep the input's "
                  "height and width."),
            Wrong(_bn(z, gamma, beta, eps, ddof=1), "You used the unbiased variance (divided by "
                  "n - 1).", "batch norm uses the biased variance: tf.nn.moments returns it."),
            Wrong(_bn(z, beta, gamma, eps), "gamma and beta are swapped: tf.nn.batch_normalization "
                  "got gamma as the offset and beta as the scale.",
                  "its arguments are (x, mean, variance, offset, scale, variance_epsilon); "
                  "keyword arguments avoid the trap."),
            Wrong(gamma * (z - mean) / np.sqrt(np.sqrt(var) + eps) + beta,
                  "You passed a standard deviation where tf.nn.batch_normalization expects the "
                  "variance.", "tf.nn.batch_normalization takes the variance and does the "
                  "square root itself."),
            Wrong(z, "You returned the convolution without batch normalization.",
                  "normalise the feature maps with tf.nn.moments and tf.nn.batch_normalization."),
        ]
        for fixed in (1e-3, 1e-5, 0.0):
            if fixed != eps:
                wrong.append(Wrong(_bn(z, gamma, beta, fixed),
                                   "Forgot epsilon: you did not use the `eps` argument (your "
                                   "result matches no epsilon, or a fixed one).",
                                   "pass eps as variance_epsilon."))
        match(out, _bn(z, gamma, beta, eps), case=case, name="bn_conv's result", tensor=True,
              dtype=np.float32, wrong=wrong,
              selftest="compare with keras.layers.Conv2D(filters=C, kernel_size=(kh, kw), "
                       "padding='same', use_bias=False) followed by BatchNormalization("
                       "epsilon=eps) called with training=True (its gamma is 1 and beta 0: pass "
                       "ones and zeros to yours).")
    return "convolution plus per-channel batch norm in 3 cases (kernels, channels, epsilons)"


# --- exercise 2.2: the BN network, any depth, any activation ------------------------------------

def _weights(sizes, rng):
    return [rng.normal(size=(a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]


def _forward(x, weights, gammas, betas, b_out, eps, act, where="right", ddof=0, hidden=None):
    """The network's logits in float64, and its known-wrong variants through ``where``."""
    h = x.astype(np.float64)
    n_hidden = len(weights) - 1 if hidden is None else hidden
    for i, w in enumerate(weights[:-1]):
        z = h @ w
        if i >= n_hidden:
            h = act(z)
            continue
        if where == "bn_after":
            h = _bn(act(z), gammas[i], betas[i], eps, (0,), ddof)
        elif where == "no_act_last" and i == len(weights) - 2:
            h = _bn(z, gammas[i], betas[i], eps, (0,), ddof)
        elif where == "swapped":
            h = act(_bn(z, betas[i], gammas[i], eps, (0,), ddof))
        else:
            h = act(_bn(z, gammas[i], betas[i], eps, (0,), ddof))
    logits = h @ weights[-1]
    if where == "bn_out":
        return _bn(logits, 1.0, 0.0, eps, (0,)) + b_out
    if where == "no_b_out":
        return logits
    if where == "softmax":
        e = np.exp((logits + b_out) - (logits + b_out).max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return logits + b_out


_ACTIVATIONS = {"sigmoid": lambda u: 1 / (1 + np.exp(-u)), "relu": lambda u: np.maximum(u, 0),
                "tanh": np.tanh}


@checker("2.2")
def bn_network(network_class):
    """Check ``BNNet(weights, epsilon, activation)``: variables and logits in three networks."""
    __tracebackhide__ = True
    import tensorflow as tf

    for case in cases(dict(sizes=(6, 5, 4, 3), activation="sigmoid", epsilon=1e-3, batch=8,
                           _seed=31),
                      dict(sizes=(4, 7, 3, 5, 2), activation="relu", epsilon=0.01, batch=5,
                           _seed=32),
                      dict(sizes=(5, 6, 3), activation="tanh", epsilon=0.1, batch=7, _seed=33)):
        rng = np.random.default_rng(case.seed)
        weights = _weights(case.sizes, rng)
        act_tf = {"sigmoid": tf.sigmoid, "relu": tf.nn.relu, "tanh": tf.tanh}[case.activation]
        model = call(network_class, [w.copy() for w in weights], epsilon=case.epsilon,
                     activation=act_tf, case=case,
                     what=f"BNNet(weights, epsilon={case.epsilon}, activation=tf.{case.activation})")
        hidden = case.sizes[1:-1]
        _check_variables(model, weights, hidden, case)
        gammas = [rng.uniform(0.5, 2.0, n).astype(np.float32) for n in hidden]
        betas = [rng.uniform(-1, 1, n).astype(np.float32) for n in hidden]
        b_out = rng.uniform(-1, 1, case.sizes[-1]).astype(np.float32)
        for variable, value in zip([*model.gammas, *model.betas, model.b_out],
                                   [*gammas, *betas, b_out]):
            variable.assign(value)
        x = rng.normal(size=(case.batch, case.sizes[0])).astype(np.float32)
        x[:, 0] *= 0.02
        logits = call(model, tf.constant(x), training=True, what="model(x)", case=case)
        act = _ACTIVATIONS[case.activation]

        def forward(**kw):
            eps = kw.pop("eps", case.epsilon)
            activation = _ACTIVATIONS[kw.pop("act")] if "act" in kw else act
            return _forward(x, weights, gammas, betas, b_out, eps, activation, **kw)

        wrong = [
            Wrong(forward(where="bn_after"), "BN after the activation: you normalised "
                  "activation(h @ w) instead of feeding BN(h @ w) into the activation.",
                  "each hidden layer is activation(BN(h @ w)), as in the lesson."),
            Wrong(forward(where="no_act_last"), "The last hidden layer has no activation.",
                  "every hidden layer applies the activation after its BN."),
            Wrong(forward(where="swapped"), "gamma and beta are swapped.",
                  "gamma scales (offset comes first in tf.nn.batch_normalization's arguments: "
                  "use offset= and scale= keywords)."),
            Wrong(forward(where="bn_out"), "You batch-normalised the output layer too.",
                  "the output layer is h @ w_out + b_out, with no BN."),
            Wrong(forward(where="no_b_out"), "The output layer has no bias b_out.",
                  "logits = h @ self.ws[-1] + self.b_out."),
            Wrong(forward(where="softmax"), "You applied a softmax to the output.",
                  "return the logits: the loss applies the softmax itself."),
            Wrong(forward(ddof=1), "You used the unbiased variance (divided by n - 1).",
                  "tf.nn.moments returns the biased variance that BN uses."),
            Wrong(lambda: forward(act="sigmoid") if case.activation != "sigmoid" else None,
                  "Your network always uses the sigmoid, not the `activation` it is given.",
                  "store the activation in __init__ and call it in every hidden layer."),
            Wrong(lambda: forward(hidden=2) if len(hidden) > 2 else None,
                  "Only the first two hidden layers are batch-normalised: the network was "
                  "written for the lesson's two hidden layers.",
                  "loop over all the weight matrices but the last."),
            Wrong(lambda: forward(hidden=0), "No hidden layer is batch-normalised.",
                  "each hidden layer is activation(BN(h @ w))."),
        ]
        for fixed in (1e-3, 1e-5, 0.0):
            if fixed != case.epsilon:
                wrong.append(Wrong(lambda f=fixed: forward(eps=f), "You used a fixed epsilon "
                                   "instead of the `epsilon` argument.",
                                   "store epsilon in __init__ and use it in every BN layer."))
        match(logits, forward(), case=case, name="the logits", tensor=True, wrong=wrong,
              atol=2e-4, rtol=2e-4,
              selftest="run one hidden layer by hand: z = x @ ws[0], then tf.nn.moments(z, [0]), "
                       "normalise, scale, shift, activation; compare with your network's first "
                       "layer.")
    return "variables and logits match in 3 networks (1 to 3 hidden layers; sigmoid, ReLU, tanh)"


def _check_variables(model, weights, hidden, case) -> None:
    __tracebackhide__ = True
    import tensorflow as tf

    for name, count in (("ws", len(weights)), ("gammas", len(hidden)), ("betas", len(hidden))):
        value = getattr(model, name, None)
        if not isinstance(value, (list, tuple)) or len(value) != count or \
                not all(isinstance(v, tf.Variable) for v in value):
            got = f"a list of {len(value)}" if isinstance(value, (list, tuple)) else \
                "missing" if value is None else f"a {type(value).__name__}"
            raise ExerciseMistake(
                f"In {case}: `self.{name}` is {got}; expected a list of {count} tf.Variables"
                + (" (one per hidden layer)." if name != "ws" else " (one per weight matrix).")
                + (" The network was written for a fixed number of layers?" if
                   isinstance(value, (list, tuple)) else ""),
                "build the lists with a loop over `weights` (all of them for ws, all but the "
                "last for gammas and betas).")
    if not isinstance(getattr(model, "b_out", None), tf.Variable):
        raise ExerciseMistake(f"In {case}: `self.b_out` is missing or not a tf.Variable.",
                              "create the output layer's bias: tf.Variable(tf.zeros(n_out)).")
    want = {"ws": weights, "gammas": [np.ones(n) for n in hidden],
            "betas": [np.zeros(n) for n in hidden], "b_out": np.zeros(weights[-1].shape[1])}
    got = {"ws": list(model.ws), "gammas": list(model.gammas), "betas": list(model.betas),
           "b_out": model.b_out}
    match({k: tuple(v) if isinstance(v, list) else v for k, v in got.items()},
          {k: tuple(v) if isinstance(v, list) else v for k, v in want.items()}, case=case,
          name="the new network's variables", wrong=[
              Wrong({"gammas": tuple(np.zeros(n) for n in hidden),
                     "betas": tuple(np.ones(n) for n in hidden)},
                    "gamma starts at 0 and beta at 1: swapped.",
                    "gamma (the scale) starts at ones, beta (the shift) at zeros.")],
          selftest="ws holds the given matrices; gammas start at ones, betas at zeros, b_out at "
                   "zeros.")
    expected = len(weights) + 2 * len(hidden) + 1
    found = len(model.trainable_variables)
    if found != expected:
        raise ExerciseMistake(
            f"In {case}: the network has {found} trainable variables; expected {expected} "
            f"({len(weights)} weight matrices, {len(hidden)} gammas and betas, and b_out).",
            "no bias before BN: BN's mean subtraction removes it (beta takes its role).")
