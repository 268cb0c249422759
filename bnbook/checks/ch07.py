"""Checkers for chapter 7, BN's backward pass.

Each checker runs three cases that differ in every size (batch, height, width, channels, inputs,
units) and in epsilon. Within a case the variances are far from 1 and one is small, so that every
mistake with epsilon shows; the upstream gradient is random (a constant one hides the variance
term). Known-wrong answers are computed in float64 and matched with :func:`._core.match`.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ._core import ExerciseMistake, Wrong, call, cases, checker, match

COMMON_EPSILONS = (1e-3, 1e-5, 0.0)  # what a learner types when they ignore the `eps` argument
COMMON_STEPS = (1e-3, 1e-4, 1e-5, 1e-6)  # ... and the `h` argument of exercise 7.3


# ---------------------------------------------------------------------------------------------
# Test data and the backward pass in float64
# ---------------------------------------------------------------------------------------------

def _data(shape, seed):
    """x (one mean and spread per channel, the last axis; channel 0 has a small spread), gamma,
    beta and a random upstream gradient dy, all float64."""
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    spread = np.linspace(0.3, 3.0, channels)
    centre = np.linspace(2.0, -1.5, channels)
    x = rng.standard_normal(shape) * spread + centre
    gamma = rng.uniform(0.5, 2.0, channels)
    beta = rng.normal(0.0, 1.0, channels)
    dy = rng.standard_normal(shape)
    return x, gamma, beta, dy


def _f32(*arrays):
    return [np.asarray(a, np.float32).astype(np.float64) for a in arrays]  # float32 inputs, exact


def backward_parts(dy, x, gamma, eps, axes, ddof=0):
    """(m, s, x_hat, sum dy, sum dy x_hat) of BN over ``axes``, keepdims, in float64."""
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True, ddof=ddof)
    m = x.size // mean.size
    with np.errstate(all="ignore"):
        s = 1 / np.sqrt(var + eps)
    x_hat = (x - mean) * s
    return m, s, x_hat, dy.sum(axis=axes, keepdims=True), (dy * x_hat).sum(axis=axes, keepdims=True)


def reference_backward(dy, x, gamma, eps, axes):
    """The closed form (dx, dgamma, dbeta), float64; dgamma and dbeta flattened to gamma's shape."""
    m, s, x_hat, sum_dy, sum_dy_x_hat = backward_parts(dy, x, gamma, eps, axes)
    dx = gamma * s / m * (m * dy - sum_dy - x_hat * sum_dy_x_hat)
    return dx, sum_dy_x_hat.reshape(np.shape(gamma)), sum_dy.reshape(np.shape(gamma))


MESSAGES = {
    "no_mean_term": (
        "Your dx is missing the term from the mean's dependence on x (the -sum(dy) term).",
        "mu is computed from every x_i, so x_i reaches the loss also through mu: that path adds "
        "-(gamma s / m) * sum(dy) to every dx_i."),
    "no_var_term": (
        "Your dx is missing the term from the variance's dependence on x (the "
        "-x_hat * sum(dy * x_hat) term).",
        "v is computed from every x_i too: that path adds -(gamma s / m) * x_hat_i * sum(dy * x_hat)."),
    "no_batch_terms": (
        "Your dx treats the mean and the variance as constants: it is gamma * s * dy.",
        "both batch statistics depend on x; their paths add -sum(dy) and -x_hat * sum(dy * x_hat) "
        "inside the bracket of the closed form."),
    "unbiased": (
        "You used the unbiased variance (divided by m - 1).",
        "the forward pass uses the biased variance, so its gradient must too: divide by m."),
    "m_minus_1": (
        "Your dx uses m - 1 where the closed form has m.",
        "m is the number of values each mean averages; the biased variance divides by m too."),
    "no_divide_m": (
        "Your dx is m times too large: you did not divide by m.",
        "the closed form is dx = (gamma * s / m) * (m * dy - sum(dy) - x_hat * sum(dy * x_hat)): "
        "the bracket is divided by m, the number of values each mean averages."),
    "no_gamma": (
        "Your dx is missing the factor gamma.",
        "y = gamma * x_hat + beta, so the gradient reaching x_hat is gamma * dy."),
    "no_eps": (
        "Forgot epsilon: your s is 1 / sqrt(v) without the `eps` argument.",
        "use the `eps` the function is given: s = 1 / sqrt(v + eps), as in the forward pass."),
    "std_plus_eps": (
        "You added epsilon to the standard deviation instead of to the variance.",
        "s = 1 / sqrt(v + eps): epsilon goes inside the square root."),
    "fixed_eps": (
        "Forgot epsilon: you did not use the `eps` argument (your result matches a fixed epsilon).",
        "use the `eps` the function is given, inside the square root."),
    "sign": (
        "Your dx has the wrong sign.",
        "m * dy comes with a plus sign; the two batch terms are subtracted."),
    "dgamma_x": (
        "Your dgamma uses x instead of x_hat.",
        "y = gamma * x_hat + beta: gamma multiplies the normalised input."),
    "dgamma_centred": (
        "Your dgamma uses x - mean instead of x_hat.",
        "x_hat is the centred input times s = 1 / sqrt(v + eps)."),
    "swapped": (
        "dgamma and dbeta are swapped.",
        "dbeta = sum(dy); dgamma = sum(dy * x_hat); return them in the order asked for."),
    "means": (
        "Your dgamma and dbeta are means over the batch, not sums.",
        "gamma and beta are used by every value the statistics average over, and the gradient "
        "collects a contribution from each: sum, do not average."),
    "dbeta_mean": (
        "Your dbeta is a mean over the batch, not a sum.",
        "beta is added to every value; its gradient collects a contribution from each: sum."),
    "dgamma_mean": (
        "Your dgamma is a mean over the batch, not a sum.",
        "gamma multiplies every value; its gradient collects a contribution from each: sum."),
}


def backward_variants(dy, x, gamma, eps, axes, messages=MESSAGES, batch_m=None):
    """Known-wrong (dx, dgamma, dbeta) as Wrong entries (dicts of the outputs they get wrong).

    ``batch_m``: the batch size, for the mistake of dividing by it instead of by N * H * W.
    """
    shape = np.shape(gamma)
    m, s, x_hat, sum_dy, sum_dy_x_hat = backward_parts(dy, x, gamma, eps, axes)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    flat = lambda a: a.reshape(shape)  # noqa: E731
    right_dx = gamma * s / m * (m * dy - sum_dy - x_hat * sum_dy_x_hat)

    def full(eps_, ddof=0, s_=None):
        mm, ss, xh, sd, sdx = backward_parts(dy, x, gamma, eps_, axes, ddof)
        if s_ is not None:
            ss = s_
            xh = (x - mean) * ss
            sdx = (dy * xh).sum(axis=axes, keepdims=True)
        return {"dx": gamma * ss / mm * (mm * dy - sd - xh * sdx), "dgamma": flat(sdx)}

    with np.errstate(all="ignore"):
        std_eps = 1 / (np.sqrt(var) + eps)
    wrong = [
        Wrong({"dx": gamma * s / m * (m * dy - x_hat * sum_dy_x_hat)}, *messages["no_mean_term"]),
        Wrong({"dx": gamma * s / m * (m * dy - sum_dy)}, *messages["no_var_term"]),
        Wrong({"dx": gamma * s * dy}, *messages["no_batch_terms"]),
        Wrong(full(eps, ddof=1), *messages["unbiased"]),
        Wrong({"dx": gamma * s / (m - 1) * ((m - 1) * dy - sum_dy - x_hat * sum_dy_x_hat)},
              *messages["m_minus_1"]),
        Wrong({"dx": right_dx * m}, *messages["no_divide_m"]),
        Wrong({"dx": right_dx / gamma}, *messages["no_gamma"]),
        Wrong({"dx": -right_dx}, *messages["sign"]),
        Wrong(full(0.0), *messages["no_eps"]),
        Wrong({"dx": full(0.0)["dx"]}, *messages["no_eps"]),
        Wrong(full(eps, s_=std_eps), *messages["std_plus_eps"]),
        Wrong({"dgamma": flat((dy * x).sum(axis=axes, keepdims=True))}, *messages["dgamma_x"]),
        Wrong({"dgamma": flat((dy * (x - mean)).sum(axis=axes, keepdims=True))},
              *messages["dgamma_centred"]),
        Wrong({"dgamma": flat(sum_dy), "dbeta": flat(sum_dy_x_hat)}, *messages["swapped"]),
        Wrong({"dgamma": flat(sum_dy_x_hat / m), "dbeta": flat(sum_dy / m)}, *messages["means"]),
        Wrong({"dbeta": flat(sum_dy / m)}, *messages["dbeta_mean"]),
        Wrong({"dgamma": flat(sum_dy_x_hat / m)}, *messages["dgamma_mean"]),
    ]
    if batch_m is not None:
        wrong.append(Wrong(
            {"dx": gamma * s / batch_m * (batch_m * dy - sum_dy - x_hat * sum_dy_x_hat)},
            "You divided by the batch size N; each channel's mean averages N * H * W values.",
            "m is the number of values a channel's statistics average over: batch times height "
            "times width (tf.size(x) // channels, or the product of the reduced axes' lengths)."))
    wrong += [Wrong(full(other), *messages["fixed_eps"])
              for other in COMMON_EPSILONS if other and other != eps]
    return wrong


def _expect_parts(result, function, names):
    """A tuple of len(names) results; say what came back otherwise."""
    __tracebackhide__ = True
    if isinstance(result, (tuple, list)) and len(result) == len(names):
        return
    if isinstance(result, (tuple, list)):
        got = f"{len(result)} results"
    elif hasattr(result, "shape"):
        got = "a single tensor"
    else:
        got = f"a {type(result).__name__}"
    listed = ", ".join(names)
    raise ExerciseMistake(f"{function} returned {got}; expected {len(names)}, ({listed}).",
                          f"end with `return {listed}`.")


def _check_parameter_shape(value, name, x_shape, case, channels_first=False):
    """dgamma/dbeta must have shape (channels,); name the axes mistake a shape reveals."""
    __tracebackhide__ = True
    shape = tuple(np.shape(value))
    channels = x_shape[1] if channels_first else x_shape[-1]
    if shape == (channels,):
        return
    where = f"In {case}: "
    if channels_first:
        if shape in ((x_shape[-1],), (1, 1, 1, x_shape[-1])):
            raise ExerciseMistake(
                f"{where}your {name} has shape {shape}: you reduced over axes 0, 1 and 2 as for "
                f"NHWC, but these images are NCHW, so that is one value per column of pixels.",
                "with data_format='channels_first' the channels are axis 1: reduce over axes "
                "0, 2 and 3.")
        raise ExerciseMistake(f"{where}your {name} has shape {shape}; expected ({channels},), "
                              "one value per channel (axis 1 of NCHW images).",
                              "with data_format='channels_first' reduce over axes 0, 2 and 3, "
                              "and reshape the sum to gamma's shape.")
    if len(shape) == len(x_shape) and all(n == 1 for n in shape[:-1]) and shape[-1] == channels:
        raise ExerciseMistake(
            f"{where}your {name} has shape {shape}; expected ({channels},), like gamma.",
            "keepdims=True is handy inside the formula; reshape the result to gamma's shape "
            "(tf.reshape(..., tf.shape(gamma))) before returning it.")
    if shape in ((x_shape[0], channels), (x_shape[0], 1, 1, channels)):
        raise ExerciseMistake(
            f"{where}your {name} has shape {shape}: one value per image and channel. You summed "
            "over height and width only.",
            "gamma and beta are shared by every image and pixel: sum over axes 0, 1 and 2.")
    if shape in (tuple(x_shape[1:]), (1,) + tuple(x_shape[1:])):
        raise ExerciseMistake(
            f"{where}your {name} has shape {shape}: one value per pixel position and channel. "
            "You reduced over the batch axis only.",
            "for images a channel's statistics, and its gamma and beta, cover the batch and every "
            "pixel position: axes 0, 1 and 2.")
    raise ExerciseMistake(f"{where}your {name} has shape {shape}; expected ({channels},).",
                          "sum over the batch, height and width axes (0, 1, 2).")


# ---------------------------------------------------------------------------------------------
# Exercise 7.1: the closed-form backward pass for NHWC image batches
# ---------------------------------------------------------------------------------------------

def _book_backward():
    """The book's own backward pass (bnbook.lessons.backward_pass): 7.1 asks the learner to write it."""
    from ..lessons import backward_pass as backward

    return (backward.bn_backward,)


def _book_numerical_gradient():
    from ..lessons import backward_pass as backward

    return (backward.numerical_gradient,)


_NCHW = (0, 3, 1, 2)        # NHWC -> NCHW
_NHWC = (0, 2, 3, 1)        # NCHW -> NHWC
_NCHW_HINT = ("with data_format='channels_first' the channels are axis 1 of (N, C, H, W): "
              "reduce over axes 0, 2 and 3, and give gamma the shape (1, C, 1, 1) before it "
              "multiplies an image-shaped tensor.")


def _to_nchw(wrong):
    """A Wrong computed on NHWC arrays, with its dx in the learner's NCHW layout."""
    value = wrong.value
    if isinstance(value, dict) and "dx" in value:
        value = {**value, "dx": np.transpose(value["dx"], _NCHW)}
    return Wrong(value, wrong.mistake, wrong.hint)


@checker("7.1")
def backward_images(fn):
    """Check ``bn_backward_images(dy, x, gamma, eps, data_format="channels_last")`` ->
    (dx, dgamma, dbeta) on NHWC batches, and on NCHW batches (the last two cases)."""
    __tracebackhide__ = True
    import tensorflow as tf

    names = ("dx", "dgamma", "dbeta")
    # Shapes as the learner's x has them. The last case has as many channels as columns (W = C),
    # so gamma broadcast against the last axis runs and only the numbers are wrong.
    for case in cases(dict(shape=(4, 3, 5, 2), eps=0.1, _seed=71),
                      dict(shape=(2, 6, 2, 3), eps=0.5, _seed=72),
                      dict(shape=(5, 2, 3, 4), eps=0.02, _seed=73),
                      dict(shape=(3, 4, 2, 5), data_format="channels_first", eps=0.05, _seed=74),
                      dict(shape=(2, 3, 4, 3), data_format="channels_first", eps=0.2, _seed=75)):
        first = case.params.get("data_format") == "channels_first"
        nhwc = tuple(np.array(case.shape)[list(_NHWC)]) if first else case.shape
        x, gamma, _, dy = _f32(*_data(nhwc, case.seed))
        given_x, given_dy = (np.transpose(a, _NCHW) if first else a for a in (x, dy))
        kwargs = {"data_format": "channels_first"} if first else {}
        try:
            result = call(fn, tf.constant(given_dy, tf.float32), tf.constant(given_x, tf.float32),
                          tf.constant(gamma, tf.float32), case.eps, **kwargs,
                          what="bn_backward_images", case=case, refuse=_book_backward())
        except ExerciseMistake as err:
            if first and "data_format" in err.mistake and "argument" in err.mistake:
                raise ExerciseMistake(err.mistake, "keep the exercise's signature: "
                                      "bn_backward_images(dy, x, gamma, eps, "
                                      "data_format='channels_last').") from None
            if first and "Incompatible shapes" in err.mistake:
                raise ExerciseMistake(err.mistake, _NCHW_HINT) from None
            raise
        _expect_parts(result, "bn_backward_images", names)
        for name, value in zip(names[1:], result[1:]):
            _check_parameter_shape(value, name, case.shape, case, channels_first=first)
        axes = (0, 1, 2)
        dx, dgamma, dbeta = reference_backward(dy, x, gamma, case.eps, axes)
        wrong = backward_variants(dy, x, gamma, case.eps, axes, batch_m=nhwc[0])
        if first:
            dx = np.transpose(dx, _NCHW)
            wrong = [_to_nchw(w) for w in wrong]
            if case.shape[1] == case.shape[3]:      # gamma lined up with the width axis runs
                wrong.append(Wrong({"dx": dx / gamma.reshape(1, -1, 1, 1) * gamma},
                                   "Your dx multiplies by gamma along the last axis (the width), "
                                   "not the channels: in NCHW, a vector of shape (C,) broadcasts "
                                   "against W.", _NCHW_HINT))
        want = dict(zip(names, (dx, dgamma, dbeta)))
        match(result, want, case=case, tensor=True, dtype=np.float32, wrong=wrong,
              selftest="with dy = 1 everywhere dx must be 0 and dbeta must be N * H * W; with "
                       "dy = x_hat, dgamma must be N * H * W * v / (v + eps).")
    return "dx, dgamma and dbeta match the closed form on 3 NHWC and 2 NCHW image batches " \
        "(float32, within 1e-4)"


# ---------------------------------------------------------------------------------------------
# Exercise 7.2: a custom-gradient op for a whole dense BN layer, BN(x @ w)
# ---------------------------------------------------------------------------------------------

DENSE_NAMES = ("dL/dx", "dL/dw", "dL/dgamma", "dL/dbeta")


def dense_reference(x, w, gamma, beta, r, eps, ddof=0, mistake=None):
    """Output and gradients of L = sum(r * BN(x @ w)) in float64 (BN over axis 0), right or with
    one of the mistakes the checker names."""
    z = x @ w
    mean = z.mean(axis=0)
    var = z.var(axis=0, ddof=ddof)
    s = 1 / np.sqrt(var + eps)
    z_hat = (z - mean) * s
    m = z.shape[0]
    dbeta, dgamma = r.sum(axis=0), (r * z_hat).sum(axis=0)
    bracket = {"no_mean_term": m * r - z_hat * dgamma,
               "no_var_term": m * r - dbeta}.get(mistake, m * r - dbeta - z_hat * dgamma)
    dz = (1.0 if mistake == "no_gamma" else gamma) * s / m * bracket
    return gamma * z_hat + beta, {"dL/dx": dz @ w.T, "dL/dw": x.T @ dz,
                                  "dL/dgamma": dgamma, "dL/dbeta": dbeta}


def _uses_custom_gradient(op, shapes) -> bool:
    """True if tracing ``op`` builds a tf.custom_gradient op (an IdentityN with a custom gradient)."""
    import tensorflow as tf

    specs = [tf.TensorSpec(shape, tf.float32) for shape in shapes]
    graph = tf.function(lambda *args: op(*args)).get_concrete_function(*specs).graph
    return any(o.type == "IdentityN" and "_gradient_op_type" in o.node_def.attr
               for o in graph.get_operations())


@checker("7.2")
def dense_bn_op(make_op):
    """Check ``make_dense_bn(eps)`` -> ``dense_bn(x, w, gamma, beta)``: BN(x @ w) over axis 0,
    a tf.custom_gradient op whose gradients match autograd's."""
    __tracebackhide__ = True
    import tensorflow as tf

    for case in cases(dict(batch=6, inputs=5, units=3, eps=0.1, _seed=81),
                      dict(batch=9, inputs=2, units=4, eps=0.5, _seed=82),
                      dict(batch=4, inputs=7, units=6, eps=0.02, _seed=83)):
        rng = np.random.default_rng(case.seed)
        x = rng.normal(1.0, 2.0, (case.batch, case.inputs))
        w = rng.normal(0.0, 1.0, (case.inputs, case.units)) * np.linspace(0.2, 2.0, case.units)
        gamma = rng.uniform(0.5, 2.0, case.units)
        beta = rng.normal(0.0, 1.0, case.units)
        r = rng.standard_normal((case.batch, case.units))
        x, w, gamma, beta, r = _f32(x, w, gamma, beta, r)
        op = call(make_op, case.eps, what="make_dense_bn", case=case)
        if not callable(op):
            kind = "a tensor" if isinstance(op, tf.Tensor) else f"a {type(op).__name__}"
            raise ExerciseMistake(f"make_dense_bn returned {kind}, not a function.",
                                  "make_dense_bn(eps) returns the op: the function decorated "
                                  "with @tf.custom_gradient, defined inside it.")
        inputs = [tf.constant(a, tf.float32) for a in (x, w, gamma, beta)]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = call(op, *inputs, what="your op", case=case)
            loss = tf.reduce_sum(tf.constant(r, tf.float32) * y) if isinstance(y, tf.Tensor) \
                else None
        if loss is None:
            raise ExerciseMistake(
                f"In {case}: your op returned a {type(y).__name__}, not a tensor.",
                "the decorated function returns (output, backward); TensorFlow then hands the "
                "caller the output alone.")
        want_y, want_grads = dense_reference(x, w, gamma, beta, r, case.eps)
        match(y, want_y, case=case, name="your op's output", tensor=True, dtype=np.float32,
              wrong=[Wrong(dense_reference(x, w, gamma, beta, r, case.eps, ddof=1)[0],
                           *MESSAGES["unbiased"])]
              + [Wrong(dense_reference(x, w, gamma, beta, r, other)[0], *MESSAGES["fixed_eps"])
                 for other in COMMON_EPSILONS if other != case.eps],
              selftest="the output is BN of z = x @ w, normalised over the batch (axis 0).")
        grads = call(tape.gradient, loss, inputs, what="the tape, calling your backward function,",
                     case=case,
                     hint="backward(dy) must return one gradient per input, (dx, dw, dgamma, "
                          "dbeta), each of its input's shape.")
        for name, grad, value in zip(DENSE_NAMES, grads, (x, w, gamma, beta)):
            if grad is None:
                raise ExerciseMistake(
                    f"In {case}: the tape found no gradient for {name[4:]} ({name} is None).",
                    "backward(dy) must return a gradient for every input, in the order of the "
                    "inputs: dx, dw, dgamma, dbeta.")
            if tuple(grad.shape) != value.shape:
                raise ExerciseMistake(*_gradient_shape_mistake(name, tuple(grad.shape), case))
        match(grads, want_grads, case=case, tensor=True, dtype=np.float32,
              wrong=[Wrong(dense_reference(x, w, gamma, beta, r, case.eps, mistake=key)[1],
                           *MESSAGES[key]) for key in ("no_mean_term", "no_var_term")]
              + [Wrong(dense_reference(x, w, gamma, beta, r, case.eps, mistake="no_gamma")[1],
                       "Your dz (and so dx and dw) is missing the factor gamma.",
                       MESSAGES["no_gamma"][1]),
                 Wrong(dense_reference(x, w, gamma, beta, r, case.eps, ddof=1)[1],
                       *MESSAGES["unbiased"]),
                 Wrong({"dL/dgamma": want_grads["dL/dbeta"], "dL/dbeta": want_grads["dL/dgamma"]},
                       *MESSAGES["swapped"]),
                 Wrong({"dL/dx": -want_grads["dL/dx"], "dL/dw": -want_grads["dL/dw"]},
                       *MESSAGES["sign"])],
              selftest="compute dz, the gradient with respect to z = x @ w, with the closed "
                       "form first; then dx = dz w^T and dw = x^T dz.")
        if not _uses_custom_gradient(op, [a.shape for a in (x, w, gamma, beta)]):
            raise ExerciseMistake(
                "Your op computes the right gradients, but through autograd: it is not a "
                "tf.custom_gradient op.",
                "decorate the inner function with @tf.custom_gradient and return "
                "(output, backward) from it, with backward(dy) computing the closed form.")
    return ("a tf.custom_gradient op; its output and the tape's gradients for x, w, gamma and "
            "beta match autograd's in 3 cases (float32, within 1e-4)")


def _gradient_shape_mistake(name, shape, case):
    where = f"In {case}: "
    if name == "dL/dx" and shape == (case.batch, case.units):
        return (f"{where}your dL/dx has shape {shape}, the shape of z = x @ w: you returned the "
                "gradient with respect to z.",
                "chain it through the matrix product: dL/dx = dz @ w^T (tf.matmul with "
                "transpose_b=True).")
    if name == "dL/dx" and shape == (case.inputs, case.units):
        return (f"{where}your dL/dx has shape {shape}, the shape of w: are dx and dw swapped?",
                "backward(dy) returns the gradients in the order of the op's inputs: "
                "(dx, dw, dgamma, dbeta).")
    if name == "dL/dw" and shape == (case.units, case.inputs):
        return (f"{where}your dL/dw has shape {shape}, w's shape transposed.",
                "dL/dw = x^T @ dz has shape (inputs, units) (tf.matmul with transpose_a=True).")
    want = {"dL/dx": (case.batch, case.inputs), "dL/dw": (case.inputs, case.units)}.get(
        name, (case.units,))
    return (f"{where}your {name} has shape {shape}, expected {want}.",
            "backward(dy) returns (dx, dw, dgamma, dbeta) in the order of the op's inputs, "
            "each of its input's shape.")


# ---------------------------------------------------------------------------------------------
# Exercise 7.3: centred finite differences, and a gradient check with them
# ---------------------------------------------------------------------------------------------

def centred_differences(f, x, h):
    x = np.array(x, np.float64)
    out = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        keep = x[index]
        x[index] = keep + h
        plus = f(x)
        x[index] = keep - h
        minus = f(x)
        x[index] = keep
        out[index] = (plus - minus) / (2 * h)
    return out


def _one_sided(f, x, h, forward=True):
    x = np.array(x, np.float64)
    base = f(x.copy())
    out = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        moved = x.copy()
        moved[index] += h if forward else -h
        out[index] = (f(moved) - base) / h if forward else (base - f(moved)) / h
    return out


def _not_restored(f, x, h):
    """Centred differences that never put x[index] back: the perturbations pile up."""
    x = np.array(x, np.float64)
    out = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        x[index] += h
        plus = f(x)
        x[index] -= 2 * h
        minus = f(x)
        out[index] = (plus - minus) / (2 * h)
    return out


def _bn_loss_parts(seed=91):
    """A BN loss L(x) = sum(r * BN(x)) on a (6, 3) batch, its closed-form gradient, and a planted
    wrong one (the mean's term missing)."""
    x, gamma, beta, r = _data((6, 3), seed)
    eps = 0.1

    def loss(values):
        mean, var = values.mean(axis=0), values.var(axis=0)
        return float(np.sum(r * (gamma * (values - mean) / np.sqrt(var + eps) + beta)))

    right = reference_backward(r, x, gamma, eps, (0,))[0]
    m, s, x_hat, _, sum_dy_x_hat = backward_parts(r, x, gamma, eps, (0,))
    planted = gamma * s / m * (m * r - x_hat * sum_dy_x_hat)
    return loss, x, right, planted


def relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


@checker("7.3")
def numerical_gradient(fn):
    """Check ``numerical_gradient(f, x, h)``: centred differences, float64, x's shape, x unchanged."""
    __tracebackhide__ = True
    weights = {}

    def smooth(shape, seed):
        """A loss whose partial derivatives depend on every entry (a coupling term), so that a
        perturbation left behind shows in the next entries' differences."""
        rng = np.random.default_rng(seed)
        weights[shape] = rng.normal(0.0, 1.0, (2,) + shape)
        a, u = weights[shape]
        return lambda v: float(np.sum(a * np.exp(0.7 * v)) + np.sum(v**3) / 3
                               + 0.5 * np.sum(u * v) ** 2)

    for case in cases(dict(shape=(3, 4), h=1e-2, _seed=92),
                      dict(shape=(5,), h=3e-2, _seed=93),
                      dict(shape=(2, 3, 2), h=5e-3, _seed=94)):
        rng = np.random.default_rng(case.seed)
        x = rng.normal(0.0, 1.0, case.shape)
        f = smooth(case.shape, case.seed)
        given = x.copy()
        result = call(fn, f, given, case.h, what="numerical_gradient", case=case,
                      refuse=_book_numerical_gradient())
        if not np.array_equal(given, x):
            raise ExerciseMistake(
                f"In {case}: numerical_gradient changed the array x it was given.",
                "work on a copy (x = np.array(x, dtype=np.float64) makes one), or put every entry "
                "back exactly as it was.")
        if hasattr(result, "shape") and np.size(result) == x.size \
                and tuple(np.shape(result)) != x.shape:
            raise ExerciseMistake(
                f"In {case}: your gradient has shape {tuple(np.shape(result))}; expected "
                f"{x.shape}, the shape of x.",
                "fill an array made with np.zeros_like(x), indexing it with the same index as x "
                "(np.ndindex(x.shape) visits every index of any shape).")
        want = centred_differences(f, x, case.h)
        match(result, want, case=case, name="your gradient", tensor=False, dtype=np.float64,
              atol=1e-7, rtol=1e-6,
              wrong=[Wrong(_one_sided(f, x, case.h, True),
                           "You used forward differences, (f(x + h) - f(x)) / h.",
                           "centred differences, (f(x + h) - f(x - h)) / 2h, are far more "
                           "accurate: their error shrinks like h^2, not h."),
                     Wrong(_one_sided(f, x, case.h, False),
                           "You used backward differences, (f(x) - f(x - h)) / h.",
                           "use centred differences, (f(x + h) - f(x - h)) / 2h."),
                     Wrong(-want, "Your gradient has the wrong sign: you computed "
                           "(f(x - h) - f(x + h)) / 2h.",
                           "the difference goes uphill: f(x + h) first, then subtract f(x - h)."),
                     Wrong(2 * want, "You divided by h instead of 2h.",
                           "x + h and x - h are 2h apart."),
                     Wrong(want / 2, "You divided by 4h instead of 2h (or halved twice).",
                           "x + h and x - h are 2h apart: divide their difference by 2h."),
                     Wrong(want * case.h**2,
                           "You wrote `/ 2 * h`, which divides by 2 and then multiplies by h.",
                           "Python reads a / 2 * h as (a / 2) * h: write / (2 * h)."),
                     *[Wrong(partial(centred_differences, f, x, other),
                             "You did not use the step h you were given: your result matches "
                             "centred differences with another step.",
                             "move each entry by the `h` argument, x[i] + h and x[i] - h, and "
                             "divide by 2 * h.")
                       for other in COMMON_STEPS if not np.isclose(other, case.h)],
                     Wrong(_not_restored(f, x, case.h),
                           "You did not put each entry back after moving it: the moves pile up "
                           "from one entry to the next.",
                           "after f(x - h e_i), restore x[i] to its original value."),
                     Wrong(np.full(x.shape, (f(x + case.h) - f(x - case.h)) / (2 * case.h)),
                           "You moved every entry at once: that is the derivative along the "
                           "all-ones direction, the same number everywhere.",
                           "move one entry at a time, x[i] + h and x[i] - h, keeping the others.")],
              selftest="for f(v) = np.sum(v**2) the gradient is 2 * x (to about h^2).")
    loss, x, right, planted = _bn_loss_parts()
    numeric = np.asarray(call(fn, loss, x.copy(), 1e-5, what="numerical_gradient",
                              refuse=_book_numerical_gradient()), np.float64)
    if not (relative_error(numeric, right) < 1e-7 and relative_error(numeric, planted) > 1e-2):
        raise ExerciseMistake(  # pragma: no cover - follows from the cases above
            "Your differences match on the test functions but not on BN's loss.",
            "does your code depend on the function in some way? It should only call f.")
    return ("centred differences in 3 cases; with them BN's closed-form gradient checks out "
            "(rel. error < 1e-7) and a planted one without the mean's term is caught "
            "(rel. error > 1e-2)")
