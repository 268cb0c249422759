"""Checkers of chapter 2: a BN layer in TensorFlow (2.1) and the BN network of the MNIST experiment
(2.2). Each runs on small synthetic tensors and answers in well under a second.

A wrong answer is recognised by computing the known mistakes (in NumPy, float64) and comparing.
"""

from __future__ import annotations

import numpy as np

from ._core import ExerciseMistake, as_array, call, checker, expect_shape

TOLERANCE = dict(rtol=1e-4, atol=1e-4)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _normalise(z, eps, *, axis=0, keepdims=False, ddof=0):
    """(z - mean) / sqrt(var + eps) with the statistics over ``axis``; NumPy broadcasting, like TF."""
    mean = z.mean(axis=axis, keepdims=keepdims)
    var = z.var(axis=axis, keepdims=keepdims, ddof=ddof)
    return (z - mean) / np.sqrt(var + eps)


def _bn_dense_variants(x, w, gamma, beta, eps):
    """The right answer of exercise 2.1 and the known mistakes: name -> (output, mistake, hint).

    Each output is a function: some mistakes cannot broadcast for some shapes (they are skipped).
    """
    z = x @ w
    mean, var = z.mean(axis=0), z.var(axis=0)
    z_hat = _normalise(z, eps)
    over_examples = "a dense layer's statistics are per unit, taken over the examples of the " \
        "batch: tf.nn.moments(z, axes=[0])."
    return {
        "right": (lambda: gamma * z_hat + beta, "", ""),
        "swapped": (
            lambda: beta * z_hat + gamma,
            "gamma and beta are swapped: your output is beta * z_hat + gamma.",
            "tf.nn.batch_normalization(x, mean, variance, offset, scale, variance_epsilon) takes "
            "the offset (beta) BEFORE the scale (gamma); passing them by keyword avoids the trap.",
        ),
        "axis 1": (
            lambda: gamma * _normalise(z, eps, axis=1) + beta,
            "You took the moments over axis 1, across the units of each example.",
            over_examples,
        ),
        "axis 1 keepdims": (
            lambda: gamma * _normalise(z, eps, axis=1, keepdims=True) + beta,
            "You took the moments over axis 1: each example is normalised across its units "
            "(that is layer normalisation, not batch normalisation).",
            over_examples,
        ),
        "all axes": (
            lambda: gamma * _normalise(z, eps, axis=None) + beta,
            "You took the moments over all axes: one mean and one variance for the whole batch.",
            over_examples,
        ),
        "unbiased": (
            lambda: gamma * _normalise(z, eps, ddof=1) + beta,
            "You used the unbiased variance (divided by n - 1).",
            "batch norm divides by n, the batch size: tf.nn.moments already returns that variance.",
        ),
        "std as variance": (
            lambda: gamma * (z - mean) / np.sqrt(np.sqrt(var) + eps) + beta,
            "You passed the standard deviation where the variance goes.",
            "tf.nn.moments returns the variance, and tf.nn.batch_normalization takes the variance "
            "(it adds epsilon and takes the square root itself).",
        ),
        "no eps": (
            lambda: gamma * (z - mean) / np.sqrt(var) + beta,
            "epsilon is missing: units with a small variance come out too large.",
            "pass eps as variance_epsilon; it keeps the division safe when a unit barely varies.",
        ),
        "eps outside": (
            lambda: gamma * (z - mean) / (np.sqrt(var) + eps) + beta,
            "You added epsilon to the standard deviation instead of to the variance.",
            "epsilon goes inside the square root: sqrt(variance + eps).",
        ),
        "fixed eps": (
            lambda: gamma * _normalise(z, 1e-3) + beta,
            "You ignored the eps argument (your result matches a fixed epsilon of 1e-3).",
            "use the eps the function receives.",
        ),
        "no scale shift": (
            lambda: z_hat,
            "Your output is normalised but not scaled and shifted.",
            "finish with gamma * z_hat + beta (tf.nn.batch_normalization does it if you pass "
            "offset and scale).",
        ),
        "sigmoid": (
            lambda: _sigmoid(gamma * z_hat + beta),
            "You applied the sigmoid: bn_dense returns the sigmoid's INPUT.",
            "leave the activation to the network; bn_dense ends with the batch normalization.",
        ),
        "no matmul": (
            lambda: gamma * _normalise(x, eps) + beta,
            "You normalised x itself: the multiplication by w is missing.",
            "the layer's pre-activation is z = x @ w; normalise z.",
        ),
        "normalised x": (
            lambda: gamma * (_normalise(x, eps) @ w) + beta,
            "You normalised the layer's input x, not its pre-activation x @ w.",
            "multiply by w first, then normalise the result.",
        ),
    }


def _tensors(*arrays):
    import tensorflow as tf

    return [tf.constant(a, dtype=tf.float32) for a in arrays]


def _example(rng, batch, n_in, n_out):
    x = rng.normal(size=(batch, n_in))
    w = rng.normal(size=(n_in, n_out))
    w[:, 1] *= 0.02  # one unit barely varies: epsilon then matters
    gamma = rng.uniform(0.5, 2.0, size=n_out)
    beta = rng.normal(size=n_out)
    return x, w, gamma, beta


def _compare_bn_dense(fn, x, w, gamma, beta, eps):
    __tracebackhide__ = True
    import tensorflow as tf

    x_t, w_t = _tensors(x, w)
    gamma_t = tf.Variable(gamma, dtype=tf.float32)
    beta_t = tf.Variable(beta, dtype=tf.float32)
    out = as_array(call(fn, x_t, w_t, gamma_t, beta_t, eps, what="bn_dense"),
                   "bn_dense's result", want_tensor=True)
    # Compare with what float32 inputs give (the float64 copies of the tensors' values).
    x, w, gamma, beta = (t.numpy().astype(np.float64) for t in (x_t, w_t, gamma_t, beta_t))
    variants = _bn_dense_variants(x, w, gamma, beta, eps)
    right = variants.pop("right")[0]()
    if out.shape == right.shape and np.allclose(out, right, **TOLERANCE):
        return
    for compute, mistake, hint in variants.values():
        try:
            value = compute()
        except ValueError:  # this mistake cannot broadcast for these shapes
            continue
        if out.shape == value.shape and np.allclose(out, value, **TOLERANCE):
            raise ExerciseMistake(mistake, hint)
    expect_shape(out, right.shape, "bn_dense's result")
    worst = float(np.max(np.abs(out - right)))
    raise ExerciseMistake(
        f"bn_dense's values are wrong (off by up to {worst:.3g}) and match none of the usual "
        "mistakes.",
        "compute z = x @ w, its moments over axis 0, then batch-normalise z with gamma, beta "
        "and eps; try it on a tiny batch and compare with the formula.",
    )


@checker("2.1")
def bn_dense(fn):
    """Exercise 2.1: ``bn_dense(x, w, gamma, beta, eps)`` -> gamma * (x @ w normalised) + beta."""
    __tracebackhide__ = True
    rng = np.random.default_rng(21)
    # A square pre-activation first (batch 6, 6 units): moments over the wrong axis then still
    # broadcast, so that mistake is recognised instead of ending in a shape error.
    _compare_bn_dense(fn, *_example(rng, 6, 6, 6), eps=0.01)
    # Then an ordinary layer: batch 10, 4 inputs, 3 units, another epsilon.
    _compare_bn_dense(fn, *_example(rng, 10, 4, 3), eps=0.002)
    return "matches the batch-normalised layer on two batches, with two epsilons"


# ------------------------------------------------------------------------------ exercise 2.2 --

VARIABLES = ("w1", "gamma1", "beta1", "w2", "gamma2", "beta2", "w3", "b3")
SIZES = (6, 5, 4, 3)  # a small 6-5-4-3 network stands in for 784-100-100-10
BATCH = 16
EPS_2_2 = 0.01


def _bn(z, gamma, beta, eps, *, ddof=0):
    return gamma * _normalise(z, eps, ddof=ddof) + beta


def _network_variants(x, p, eps):
    """The right logits of exercise 2.2 and the known mistakes: name -> (logits, mistake, hint)."""

    def forward(bn1=True, bn2=True, swap=(False, False), order="bn-sigmoid", sigmoid=True,
                out_bias=True, softmax=False, eps=eps, ddof=0):
        h = x
        for w, gamma, beta, use_bn, swapped in [(p["w1"], p["gamma1"], p["beta1"], bn1, swap[0]),
                                                (p["w2"], p["gamma2"], p["beta2"], bn2, swap[1])]:
            if swapped:
                gamma, beta = beta, gamma
            z = h @ w
            if not use_bn:
                h = _sigmoid(z)
            elif order == "sigmoid-bn":
                h = _bn(_sigmoid(z), gamma, beta, eps, ddof=ddof)
            else:
                a = _bn(z, gamma, beta, eps, ddof=ddof)
                h = _sigmoid(a) if sigmoid else a
        logits = h @ p["w3"] + (p["b3"] if out_bias else 0.0)
        if softmax:
            logits = np.exp(logits - logits.max(axis=1, keepdims=True))
            logits = logits / logits.sum(axis=1, keepdims=True)
        return logits

    swapped = ("gamma and beta are swapped in {}: tf.nn.batch_normalization's argument order is "
               "(x, mean, variance, offset, scale, variance_epsilon), offset (beta) first.")
    swap_hint = "pass offset=... and scale=... by keyword."
    return {
        "right": (forward(), "", ""),
        "swap both": (forward(swap=(True, True)), swapped.format("both layers"), swap_hint),
        "swap 1": (forward(swap=(True, False)), swapped.format("layer 1"), swap_hint),
        "swap 2": (forward(swap=(False, True)), swapped.format("layer 2"), swap_hint),
        "sigmoid then bn": (
            forward(order="sigmoid-bn"),
            "You normalised AFTER the sigmoid.",
            "the chapter's recipe normalises each layer's pre-activation h @ w, then applies the "
            "sigmoid to gamma * z_hat + beta.",
        ),
        "no sigmoid": (
            forward(sigmoid=False),
            "The sigmoid after batch normalization is missing: your hidden layers are linear.",
            "apply tf.sigmoid to each batch-normalised layer.",
        ),
        "no bn 1": (
            forward(bn1=False),
            "Layer 1 is not batch-normalised (or gamma1/beta1 are not used).",
            "normalise x @ w1 over the batch, scale by gamma1 and shift by beta1, then sigmoid.",
        ),
        "no bn 2": (
            forward(bn2=False),
            "Layer 2 is not batch-normalised (or gamma2/beta2 are not used).",
            "normalise h1 @ w2 over the batch, scale by gamma2 and shift by beta2, then sigmoid.",
        ),
        "no b3": (
            forward(out_bias=False),
            "The output bias b3 is not added to the logits.",
            "the output layer has no BN after it, so it keeps its bias: h2 @ w3 + b3.",
        ),
        "softmax": (
            forward(softmax=True),
            "Your network returns probabilities (a softmax); it should return logits.",
            "leave out the softmax: the loss, tf.nn.sparse_softmax_cross_entropy_with_logits, "
            "applies it itself.",
        ),
        "fixed eps": (
            forward(eps=1e-3),
            "You ignored self.epsilon (your network matches a fixed epsilon of 1e-3).",
            "use the epsilon the network was built with.",
        ),
        "unbiased": (
            forward(ddof=1),
            "You used the unbiased variance (divided by n - 1).",
            "tf.nn.moments returns the biased variance (divided by n), which is what BN uses.",
        ),
    }


def _variable_report(model, weights):
    """Raise ExerciseMistake if the network's variables are not the ones the exercise asks for."""
    __tracebackhide__ = True
    import tensorflow as tf

    if not isinstance(model, tf.Module):
        raise ExerciseMistake(
            f"BNNet(weights) made a {type(model).__name__}, not a tf.Module.",
            "keep `class BNNet(tf.Module):` so that model.trainable_variables finds your "
            "variables.",
        )
    for name in VARIABLES:
        value = getattr(model, name, None)
        if value is None:
            raise ExerciseMistake(f"Your network has no attribute `{name}`.",
                                  f"create it in __init__ as self.{name} = tf.Variable(...).")
        if not isinstance(value, tf.Variable):
            raise ExerciseMistake(
                f"`self.{name}` is a {type(value).__name__}, not a tf.Variable: training could "
                "not update it.",
                f"wrap its starting value: self.{name} = tf.Variable(...).",
            )
        if not value.trainable:
            raise ExerciseMistake(f"`self.{name}` is not trainable.",
                                  "leave trainable at its default (True).")
    hidden = [(SIZES[1],), (SIZES[2],)]
    expected_start = {
        "w1": weights[0], "w2": weights[1], "w3": weights[2],
        "gamma1": np.ones(hidden[0]), "beta1": np.zeros(hidden[0]),
        "gamma2": np.ones(hidden[1]), "beta2": np.zeros(hidden[1]), "b3": np.zeros(SIZES[3]),
    }
    for name, start in expected_start.items():
        value = getattr(model, name)
        if tuple(value.shape) != start.shape:
            raise ExerciseMistake(
                f"`self.{name}` has shape {tuple(value.shape)}, expected {start.shape}.",
                "gamma and beta have one entry per unit of their layer; w1, w2, w3 are the "
                "matrices in `weights`.",
            )
        if value.dtype != tf.float32:
            raise ExerciseMistake(f"`self.{name}` has dtype {value.dtype.name}, expected float32.",
                                  "build it from float32 values, e.g. tf.ones(n) or tf.zeros(n).")
        if not np.allclose(value.numpy(), start):
            what = {"w": "the matching matrix of `weights`", "g": "ones", "b": "zeros"}[name[0]]
            raise ExerciseMistake(
                f"`self.{name}` does not start at {what}.",
                "gamma = 1 and beta = 0 make BN start as a plain standardisation; the weights "
                "must be the ones passed in, so that both networks start from the same place.",
            )
    named = {id(getattr(model, name)) for name in VARIABLES}
    extra = [v for v in model.trainable_variables if id(v) not in named]
    if any(tuple(v.shape) in hidden for v in extra):
        shapes = ", ".join(str(tuple(v.shape)) for v in extra)
        raise ExerciseMistake(
            f"Your network has extra trainable variables of shape {shapes}: a bias before BN?",
            "the mean subtraction removes any bias added before BN (its gradient is 0) and beta "
            "already shifts each unit: drop it. Harmless to the outputs, but a wasted parameter.",
        )
    if extra:
        shapes = ", ".join(str(tuple(v.shape)) for v in extra)
        raise ExerciseMistake(f"Your network has unexpected trainable variables: {shapes}.",
                              "create exactly w1, gamma1, beta1, w2, gamma2, beta2, w3 and b3.")


@checker("2.2")
def bn_network(network_class):
    """Exercise 2.2: the BN network of the MNIST experiment, as a tf.Module class."""
    __tracebackhide__ = True
    import tensorflow as tf

    if not isinstance(network_class, type):
        raise ExerciseMistake(
            f"Expected the class BNNet, got {type(network_class).__name__!r} object.",
            "pass the class itself: check.bn_network(BNNet), not check.bn_network(BNNet(...)).",
        )
    rng = np.random.default_rng(22)
    weights = [rng.normal(size=(m, n)).astype(np.float32) for m, n in zip(SIZES, SIZES[1:])]
    model = call(network_class, [w.copy() for w in weights], epsilon=EPS_2_2,
                 what="BNNet(weights, epsilon)")
    _variable_report(model, weights)
    # Give gamma, beta and b3 values that tell them apart, as training would.
    for name in VARIABLES:
        if name[0] in "gb":
            variable = getattr(model, name)
            low, high = (0.5, 2.0) if name.startswith("gamma") else (-1.0, 1.0)
            variable.assign(rng.uniform(low, high, size=variable.shape).astype(np.float32))
    x = tf.constant(rng.uniform(0.0, 1.0, size=(BATCH, SIZES[0])), dtype=tf.float32)
    params = {name: getattr(model, name).numpy().astype(np.float64) for name in VARIABLES}
    variants = _network_variants(x.numpy().astype(np.float64), params, EPS_2_2)
    right = variants.pop("right")[0]
    for training in (True, False):
        out = as_array(call(model, x, training=training, what=f"model(x, training={training})"),
                       f"model(x, training={training})", want_tensor=True)
        if out.shape == right.shape and np.allclose(out, right, **TOLERANCE):
            continue
        for value, mistake, hint in variants.values():
            if np.allclose(out, value, **TOLERANCE):
                raise ExerciseMistake(mistake, hint)
        expect_shape(out, right.shape, f"model(x, training={training})")
        worst = float(np.max(np.abs(out - right)))
        raise ExerciseMistake(
            f"model(x, training={training}) gives wrong logits (off by up to {worst:.3g}), and "
            "they match none of the usual mistakes.",
            "per hidden layer: z = h @ w, batch-normalise z over axis 0 with gamma, beta and "
            "self.epsilon, then sigmoid; the logits are h2 @ w3 + b3.",
        )
    return f"variables and logits match the BN network ({' -> '.join(map(str, SIZES))} units)"
