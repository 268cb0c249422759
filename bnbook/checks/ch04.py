"""Checkers for chapter 4: the Keras BatchNormalization layer.

Each checker runs three cases that differ in everything a learner could fix in their code: the
momentum, the batch and layer sizes, the layout (dense, NHWC, sequences), the optimizer and its
learning rate, the positions of the BN layers and whether they sit in nested models. The learner's
result is compared with what Keras itself does, and each usual mistake is recognised by computing
it (see :func:`._core.match`).
"""

# The Wrong(lambda: ...) variants below are evaluated inside the loop iteration that makes them.
# ruff: noqa: B023

from __future__ import annotations

import re

import numpy as np

from ..statistics import bn_layers, moving_stats
from ._core import ExerciseMistake, Wrong, call, cases, changed_note, checker, match


def _keras():
    import keras  # imported lazily: `from bnbook.checks import ch04` stays cheap

    return keras


# --- exercise 4.1: the moving statistics after several batches ----------------------------------

def _keras_moving(mean, variance, batches, momentum):
    """What keras.layers.BatchNormalization stores after one training-mode call per batch."""
    layer = _keras().layers.BatchNormalization(momentum=momentum)
    layer.build(batches[0].shape)
    layer.moving_mean.assign(mean)
    layer.moving_variance.assign(variance)
    for batch in batches:
        layer(batch, training=True)
    return layer.moving_mean.numpy(), layer.moving_variance.numpy()


def _by_hand(mean, variance, batches, momentum, weight_old=True, ddof=0, axes=None,
             update_variance=True):
    mean, variance = np.asarray(mean, np.float64), np.asarray(variance, np.float64)
    for batch in batches:
        b = np.asarray(batch, np.float64)
        over = tuple(range(b.ndim - 1)) if axes is None else axes
        m, v = b.mean(axis=over), b.var(axis=over, ddof=ddof)
        keep = momentum if weight_old else 1 - momentum
        mean = keep * mean + (1 - keep) * m
        if update_variance:
            variance = keep * variance + (1 - keep) * v
    return mean, variance


@checker("4.1")
def moving_statistics(fn):
    """Check ``moving_statistics(moving_mean, moving_variance, batches, momentum)``."""
    __tracebackhide__ = True
    for case in cases(dict(batches="2 dense (6, 3), (4, 3)", momentum=0.9, _seed=1,
                           _shapes=[(6, 3), (4, 3)]),
                      dict(batches="3 NHWC (2, 3, 4, 5)", momentum=0.7, _seed=2,
                           _shapes=[(2, 3, 4, 5)] * 3),
                      dict(batches="1 sequence (5, 6, 2)", momentum=0.95, _seed=3,
                           _shapes=[(5, 6, 2)])):
        rng = np.random.default_rng(case.seed)
        features = case.shapes[0][-1]
        batches = [(rng.normal(size=s) * rng.uniform(0.5, 3, features)
                    + rng.uniform(-3, 3, features)).astype(np.float32) for s in case.shapes]
        old_mean = rng.normal(size=features).astype(np.float32)
        old_var = rng.uniform(0.5, 2.0, features).astype(np.float32)
        result = call(fn, old_mean.copy(), old_var.copy(), [b.copy() for b in batches],
                      case.momentum, what="moving_statistics", case=case)
        want_mean, want_var = _keras_moving(old_mean, old_var, batches, case.momentum)
        m = case.momentum

        def hand(**kw):
            mean, var = _by_hand(old_mean, old_var, batches, kw.pop("momentum", m), **kw)
            return {"moving mean": mean, "moving variance": var}

        pooled = np.concatenate([b.reshape(-1, features) for b in batches])
        wrong = [
            Wrong(hand(weight_old=False), "momentum weights the wrong value: in Keras it is the "
                  "weight of the OLD moving value.",
                  "moving = momentum * moving + (1 - momentum) * batch statistic."),
            Wrong(hand(ddof=1), "You averaged in the unbiased batch variance (divided by n - 1); "
                  "Keras 3 uses the biased one.",
                  "np.var's default ddof=0 is what the layer uses."),
            Wrong(hand(update_variance=False),
                  "Your moving mean is right, but the moving variance did not move.",
                  "both moving statistics are updated on every training-mode call."),
            Wrong(lambda: hand(momentum=0.99) if m != 0.99 else None,
                  "You used Keras' default momentum 0.99 instead of the `momentum` argument.",
                  "use the momentum the function is given."),
            Wrong(lambda: hand(momentum=0.9) if m != 0.9 else None,
                  "You used momentum 0.9 (the first case's) instead of the `momentum` argument.",
                  "use the momentum the function is given."),
            Wrong(lambda: dict(zip(("moving mean", "moving variance"),
                                   _by_hand(old_mean, old_var, batches[-1:], m)))
                  if len(batches) > 1 else None,
                  "Only the last batch counted: each batch must update the statistics that the "
                  "previous batch left.", "loop over the batches and update in place, in order."),
            Wrong(lambda: dict(zip(("moving mean", "moving variance"),
                                   _by_hand(old_mean, old_var, [pooled], m)))
                  if len(batches) > 1 else None,
                  "You pooled all batches into one and made a single update; the layer makes one "
                  "update per call.", "loop over the batches: one update each, in order."),
        ]
        if len(case.shapes[0]) > 2:
            wrong.append(Wrong(hand(axes=(0,)), "You took the statistics over axis 0 only; for "
                               "images and sequences the layer averages over every axis but the "
                               "last (the features).",
                               "reduce over axes (0, 1, ..., ndim - 2): one value per feature."))
        match(result, {"moving mean": want_mean, "moving variance": want_var}, case=case,
              name="moving_statistics' result", tensor=False, dtype=np.float32, wrong=wrong,
              selftest="compare with a keras.layers.BatchNormalization(momentum=momentum) whose "
                       "moving_mean and moving_variance you assign, called once per batch with "
                       "training=True.")
    return "matches the moving statistics Keras stores (dense, NHWC and sequence batches; " \
        "3 momentums)"


# --- shared: small models, built twice from the same seed -------------------------------------

def _build(spec: str, seed: int, n_features: int, n_classes: int):
    """A small model from a spec: "bn-dense" (BN first), "dense-bn" (one BN after a Dense),
    "nested" (a Dense -> BN -> ReLU block inside a nested Sequential, then Dense -> BN) or
    "block" (only the nested block: cheaper to trace in tf.function)."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(seed)
    body = {
        "bn-dense": lambda: [layers.BatchNormalization(momentum=0.9),
                             layers.Dense(10, use_bias=False),
                             layers.BatchNormalization(momentum=0.9), layers.ReLU()],
        "dense-bn": lambda: [layers.Dense(12, use_bias=False),
                             layers.BatchNormalization(momentum=0.8), layers.ReLU()],
        "nested": lambda: [keras.Sequential([layers.Dense(8, use_bias=False),
                                             layers.BatchNormalization(momentum=0.95),
                                             layers.ReLU()], name="block"),
                           layers.Dense(6, use_bias=False),
                           layers.BatchNormalization(momentum=0.7), layers.ReLU()],
        "block": lambda: [keras.Sequential([layers.Dense(8, use_bias=False),
                                            layers.BatchNormalization(momentum=0.95),
                                            layers.ReLU()], name="block")],
    }[spec]()
    return keras.Sequential([keras.Input((n_features,)), *body, layers.Dense(n_classes)])


def _state(model):

    return {"BN moving statistics": tuple(moving_stats(model)),
            "trainable weights": tuple(v.numpy().copy() for v in model.trainable_variables)}


def _optimizer(kind: str):
    keras = _keras()
    return {"SGD(0.1)": lambda: keras.optimizers.SGD(0.1),
            "Adam(0.01)": lambda: keras.optimizers.Adam(0.01),
            "SGD(0.05, momentum=0.9)": lambda: keras.optimizers.SGD(0.05, momentum=0.9)}[kind]()


def _step(model, optimizer, loss_fn, x, y, training=True, calls_before=0):
    """A reference step (eager): returns (loss, accuracy) of the forward pass it used."""
    import tensorflow as tf

    for _ in range(calls_before):
        model(x, training=True)
    with tf.GradientTape() as tape:
        logits = model(x, training=training)
        loss = loss_fn(y, logits)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    accuracy = float(np.mean(np.argmax(logits.numpy(), axis=1) == y))
    return float(loss), accuracy


_DTYPE_CLASH = re.compile(r"int32.*int64|int64.*int32")   # an op given both integer dtypes

_GRAPH_ERRORS = (
    ("Cannot convert a symbolic", "Your train_step calls a NumPy function on a tensor inside "
     "tf.function, where tensors are symbolic and have no values yet.",
     "use TensorFlow operations for the accuracy: tf.argmax, tf.cast, tf.reduce_mean."),
    ("has no attribute 'numpy'", "Your train_step calls .numpy() inside tf.function, where "
     "tensors are symbolic and have no values yet.",
     "keep everything a tensor: tf.argmax, tf.cast, tf.reduce_mean; return tensors."),
    ("singleton tf.Variables", "Your train_step creates a new optimizer or variable on every call; "
     "tf.function allows that only once.", "use the optimizer passed in."),
)


@checker("4.2")
def train_step(fn):
    """Check ``train_step(model, optimizer, loss_fn, x, y) -> (loss, accuracy)``."""
    __tracebackhide__ = True
    keras = _keras()
    import tensorflow as tf

    from ..lessons import keras_layer as kd

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for case in cases(
            dict(model="BN, Dense, BN", optimizer="SGD(0.1)", batch=32, features=4, classes=3,
                 labels="int64", tf_function=False, _seed=1),
            dict(model="Dense, BN", optimizer="Adam(0.01)", batch=24, features=5, classes=4,
                 labels="int32", tf_function=False, _seed=9),
            dict(model="nested block with BN", optimizer="SGD(0.05, momentum=0.9)",
                 batch=16, features=3, classes=2, labels="int64", tf_function=True, _seed=3)):
        spec = {"BN, Dense, BN": "bn-dense", "Dense, BN": "dense-bn"}.get(case.model, "block")
        x, y = kd.far_clusters(n=case.batch, n_features=case.features, n_classes=case.classes,
                               seed=case.seed)
        y = y.astype(case.labels)       # labels come as int64 or int32: tf.argmax gives int64

        def model():
            return _build(spec, case.seed, case.features, case.classes)

        mine = model()
        start = _state(mine)
        initial = [v.numpy().copy() for v in mine.weights]
        flags = _flags(mine)
        step = tf.function(fn) if case.tf_function else fn
        optimizer = _optimizer(case.optimizer)
        optimizer.build(mine.trainable_variables)  # its slots exist: tf.function traces once
        optimizer_config = optimizer.get_config()
        optimizer_start = [v.numpy().copy() for v in optimizer.variables]
        try:
            result = call(step, mine, optimizer, loss_fn, tf.constant(x),
                          tf.constant(y), what="train_step", case=case)
        except ExerciseMistake as err:
            for text, mistake, hint in _GRAPH_ERRORS:
                if text in err.mistake:
                    raise ExerciseMistake(f"In {case}: {mistake}", hint) from None
            said = err.mistake.split(" raised ", 1)[-1].replace(changed_note(case, True), "")
            if case.labels != "int64" and _DTYPE_CLASH.search(said):   # the error, not the case
                raise ExerciseMistake(
                    f"In {case}: your train_step fails on int32 labels (case 1 had int64 ones): "
                    "it combines two integer dtypes, probably tf.argmax's int64 result compared "
                    "with the int32 labels, and TensorFlow converts neither. It said: " + said,
                    "cast to one dtype before comparing: tf.cast(y, tf.int64), or "
                    "tf.argmax(logits, axis=1, output_type=y.dtype).") from None
            raise
        got = _state(mine)
        # The reference step runs on `mine` and `optimizer` reset to their start (new ones cost
        # more to build than the step), unless the learner's step changed what a reset of the
        # variables misses: a layer's flag, an optimizer setting, the set of variables.
        reference = reference_optimizer = None
        if _flags(mine) == flags and len(mine.weights) == len(initial):
            for variable, value in zip(mine.weights, initial):
                variable.assign(value)
            reference = mine
            if optimizer.get_config() == optimizer_config \
                    and len(optimizer.variables) == len(optimizer_start):
                for variable, value in zip(optimizer.variables, optimizer_start):
                    variable.assign(value)
                reference_optimizer = optimizer
        reference = model() if reference is None else reference
        if reference_optimizer is None:
            reference_optimizer = _optimizer(case.optimizer)
        want_loss, want_accuracy = _step(reference, reference_optimizer, loss_fn, x, y)
        want = _state(reference)

        def variant(training=True, calls_before=0, optimizer=case.optimizer, stats_calls=None):
            twin = model()
            _step(twin, _optimizer(optimizer), loss_fn, x, y, training, calls_before)
            state = _state(twin)
            if stats_calls is not None:
                state["BN moving statistics"] = _stats_after(model, x, stats_calls)
            return state

        match(got, want, case=case, name="the model after your step", wrong=[
            Wrong(lambda: variant(training=False),
                  "`training` missing: the BN moving statistics did not change, so the model ran "
                  "in inference mode during the train step.",
                  "Keras layers run in inference mode unless told otherwise: pass training=True "
                  "when you call the model inside the GradientTape."),
            Wrong({"trainable weights": start["trainable weights"]},
                  "No trainable weight changed.",
                  "compute the gradients with tape.gradient(loss, model.trainable_variables) and "
                  "apply them with optimizer.apply_gradients(zip(grads, "
                  "model.trainable_variables))."),
            Wrong(lambda: variant(calls_before=1, training=False),
                  "The gradients came from an inference-mode forward pass: the loss inside the "
                  "tape came from a call without training=True (a second call?).",
                  "compute the loss from the training-mode call, inside the tape, and call the "
                  "model once per step."),
            Wrong(lambda: variant(stats_calls=2),
                  "The moving statistics moved twice: the model ran in training mode twice in "
                  "your step.", "call the model once per step, inside the tape, with "
                  "training=True."),
            Wrong(lambda: variant(optimizer="SGD(0.1)") if case.optimizer != "SGD(0.1)" else None,
                  "The weights took a step of SGD(0.1), not of the optimizer you were given.",
                  "use the `optimizer` argument: the check passes different optimizers and "
                  "learning rates."),
        ], selftest="train two copies of one model, one with your step and one with the lesson's "
                    "train_step, and compare model.get_weights().")
        match(result, {"loss": want_loss, "accuracy": want_accuracy}, case=case,
              name="train_step's result", atol=1e-5, wrong=[
                  Wrong({"accuracy": 100 * want_accuracy}, "Your accuracy is a percentage.",
                        "return a fraction between 0 and 1."),
                  Wrong({"accuracy": want_accuracy * case.batch},
                        "Your accuracy is a count of correct predictions.",
                        "divide by the batch size (tf.reduce_mean of the 0/1 values does it)."),
                  *_inference_accuracy_wrongs(lambda: _accuracy(model(), x, y),
                                              lambda: _accuracy(reference, x, y)),
                  Wrong(lambda: {"loss": _step(model(), _optimizer(case.optimizer), loss_fn, x, y,
                                               training=False)[0]},
                        "The returned loss is the inference-mode loss.",
                        "return the loss computed inside the tape."),
              ], selftest="compute loss_fn(y, logits) and the share of tf.argmax(logits, axis=1) "
                          "== y yourself from one model(x, training=True) call on a copy.")
    return "training mode, one step of the given optimizer, loss and accuracy of that step; " \
        "works inside tf.function"


def _inference_accuracy_wrongs(before, after):
    """The Wrong variants of an accuracy taken from an extra inference-mode call: ``before()`` is
    the accuracy of the model as it was before the step, ``after()`` that of the model after the
    (right) step; both computed once, when a variant is first needed. Where the two agree, the
    message says the call could be either."""
    found = {}

    def accuracies():
        if not found:
            found.update(before=before(), after=after())
        return found

    def when(which, same):
        def value():
            got = accuracies()
            return {"accuracy": got[which]} if (got["before"] == got["after"]) == same else None
        return value

    hint = "reuse the logits of the training-mode call inside the tape, the step's own."
    return [
        Wrong(when("after", False),
              "Your accuracy comes from an inference-mode call after the step (the updated "
              "weights, BN with its moving statistics), not from the logits of the step itself.",
              hint),
        Wrong(when("before", False),
              "Your accuracy comes from an inference-mode call before the step (BN with its "
              "moving statistics), not from the logits of the step itself.", hint),
        Wrong(when("before", True),
              "Your accuracy comes from an extra inference-mode call (before or after the "
              "step: here both give this accuracy), not from the logits of the step itself.",
              hint),
    ]


def _stats_after(build, x, calls: int):

    twin = build()
    for _ in range(calls):
        twin(x, training=True)
    return tuple(moving_stats(twin))


def _accuracy(model, x, y, training=False) -> float:
    return float(np.mean(np.argmax(model(x, training=training).numpy(), axis=1) == y))


# --- exercise 4.3: evaluation in inference mode, accuracy and loss ------------------------------

def _trained(spec: str, seed: int, features: int, classes: int, n_test: int):
    """A small BN model with moving statistics of a 'trained' model, and a test set sorted by
    label (a single class per batch is where batch statistics go wrong)."""
    from ..lessons import keras_layer as kd

    x, y = kd.far_clusters(n=n_test, n_features=features, n_classes=classes, seed=seed)
    model = _build(spec, seed, features, classes)
    h = x
    for layer in model.layers:       # set each BN layer's statistics to those of its input
        if isinstance(layer, _keras().layers.BatchNormalization):
            layer.moving_mean.assign(np.mean(h, axis=0))
            layer.moving_variance.assign(np.var(h, axis=0) * 1.5)
        h = layer(h, training=False)
    order = np.argsort(y, kind="stable")
    return model, x[order], y[order]


def _flags(model) -> dict:
    """{layer path: trainable} for every layer, nested ones included, and the model itself."""
    flags = {model.name: bool(model.trainable)}
    for layer in getattr(model, "layers", []):
        flags[f"{model.name}/{layer.name}"] = bool(layer.trainable)
        if hasattr(layer, "layers"):
            flags.update({f"{model.name}/{k}": v for k, v in _flags(layer).items()})
    return flags


def _evaluate_reference(model, x, y, batch_size, training=False, drop_last=False,
                        mean_of_means=False, accuracy_mean_of_means=False):
    import tensorflow as tf

    correct, losses, sizes = [], [], []
    stop = len(x) - len(x) % batch_size if drop_last and len(x) % batch_size else len(x)
    for start in range(0, stop, batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = model(xb, training=training).numpy()
        correct.append(int(np.sum(np.argmax(logits, axis=1) == yb)))
        per_sample = tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits).numpy()
        losses.append(per_sample.mean())
        sizes.append(len(yb))
    count = stop
    loss = float(np.mean(losses)) if mean_of_means else float(np.dot(losses, sizes) / count)
    accuracy = float(np.mean(np.divide(correct, sizes))) if accuracy_mean_of_means \
        else sum(correct) / count
    return {"accuracy": accuracy, "loss": loss}


@checker("4.3")
def evaluate(fn):
    """Check ``evaluate(model, x, y, batch_size) -> (accuracy, loss)`` in inference mode."""
    __tracebackhide__ = True
    for case in cases(dict(model="BN, Dense, BN", n=160, batch_size=48, classes=3, _seed=11),
                      dict(model="Dense, BN", n=100, batch_size=30, classes=4, _seed=12),
                      dict(model="nested block with BN, Dense, BN", n=90, batch_size=64,
                           classes=2, _seed=13)):
        spec = {"BN, Dense, BN": "bn-dense", "Dense, BN": "dense-bn"}.get(case.model, "nested")
        model, x, y = _trained(spec, case.seed, 4, case.classes, case.n)
        before = {**_state(model), **{"flag " + k: v for k, v in _flags(model).items()}}
        want = _evaluate_reference(model, x, y, case.batch_size)
        result = call(fn, model, x, y, case.batch_size, what="evaluate", case=case)
        after = {**_state(model), **{"flag " + k: v for k, v in _flags(model).items()}}
        if not _same(before["BN moving statistics"], after["BN moving statistics"]):
            raise ExerciseMistake(
                "`training` on: evaluating changed the BN moving statistics, so the model ran "
                "in training mode (batch statistics) at evaluation.",
                "at evaluation call the model with training=False (or without `training`); "
                "predictions must not depend on the other samples in the batch.")
        changed = [k[5:] for k in before if k.startswith("flag ") and before[k] != after[k]]
        if changed:
            raise ExerciseMistake(
                f"Evaluating changed `trainable` of {', '.join(changed)}: the model is left "
                "frozen (or unfrozen) after your evaluation.",
                "evaluation needs no change of `trainable`: training=False alone selects "
                "inference mode, and it changes nothing.")
        match(after, before, case=case, name="the model after evaluation")
        fresh = model  # unchanged, as just checked
        match(result, want, case=case, name="evaluate's result", atol=1e-5, wrong=[
            Wrong({"accuracy": 100 * want["accuracy"]}, "Your accuracy is a percentage.",
                  "return a fraction between 0 and 1."),
            Wrong({"accuracy": want["accuracy"] * case.n},
                  "Your accuracy is a count of correct predictions.",
                  "divide by the number of samples."),
            Wrong(lambda: _evaluate_reference(fresh, x, y, case.batch_size, mean_of_means=True)
                  if case.n % case.batch_size else None,
                  "Your loss is the plain mean of the batches' mean losses, but the last batch "
                  "is smaller: its samples count more that way.",
                  "weight each batch's mean loss by its size (or sum the per-sample losses) and "
                  "divide by the number of samples."),
            Wrong(lambda: _evaluate_reference(fresh, x, y, case.batch_size, mean_of_means=True,
                                              accuracy_mean_of_means=True)
                  if case.n % case.batch_size else None,
                  "Your accuracy and loss are plain means of the batches' means, but the last "
                  "batch is smaller: its samples count more that way.",
                  "count the correct predictions and sum the per-sample losses over all the "
                  "batches, then divide both by the number of samples."),
            Wrong({"accuracy": want["loss"], "loss": want["accuracy"]},
                  "Your accuracy and loss are swapped.",
                  "return (accuracy, loss), in that order."),
            Wrong({"accuracy": float(np.floor(want["accuracy"]))},
                  "Your accuracy was rounded down to a whole number: integer division (//) of "
                  "the correct count by the number of samples.",
                  "divide with /, which gives a float in Python 3."),
            Wrong(lambda: _evaluate_reference(fresh, x, y, case.batch_size, drop_last=True)
                  if case.n % case.batch_size else None,
                  "You skipped the last, smaller batch.",
                  "range(0, len(x), batch_size) includes the last partial batch."),
            Wrong({"loss": want["loss"] * case.n}, "Your loss is the sum over samples, not the "
                  "mean.", "divide by the number of samples."),
        ], selftest="on a copy of the model, compare with one call on all of x: "
                    "model(x, training=False) and keras.losses.SparseCategoricalCrossentropy("
                    "from_logits=True).")
    return "inference mode, model untouched; accuracy and sample-weighted loss in 3 cases " \
        "(test sets sorted by label, smaller last batches)"


def _same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


# --- exercise 4.4: fine-tuning with frozen BN, nested models included --------------------------

def _pretrained(spec: str, seed: int):
    """A frozen 'pretrained' base with BN layers at the positions the spec names."""
    keras = _keras()
    layers = keras.layers

    def dense(name, units, bias=False):
        return layers.Dense(units, use_bias=bias, name=name)

    def bn(name):
        return layers.BatchNormalization(name=name)

    keras.utils.set_random_seed(seed)
    if spec == "flat":        # BN at positions 1 and 4
        base = keras.Sequential([keras.Input((4,)), dense("dense1", 8), bn("bn1"), layers.ReLU(),
                                 dense("dense2", 8), bn("bn2"), layers.ReLU()], name="base")
    elif spec == "nested":    # BN first, then a nested block holding Dense -> BN
        block = keras.Sequential([dense("dense2", 6), bn("bn2"), layers.ReLU()], name="block")
        base = keras.Sequential([keras.Input((5,)), bn("bn1"), dense("dense1", 6, True), block],
                                name="base")
    else:                     # functional, two levels of nesting, BN only inside the blocks
        inner = keras.Sequential([dense("dense2", 5), bn("bn1")], name="inner")
        outer = keras.Sequential([dense("dense1", 5, True), inner, layers.ReLU()], name="outer")
        inputs = keras.Input((3,))
        base = keras.Model(inputs, dense("dense3", 4, True)(outer(inputs)), name="base")

    rng = np.random.default_rng(seed)
    for layer in bn_layers(base):     # pretend these were learned on the old data
        n = layer.moving_mean.shape[0]
        layer.moving_mean.assign(rng.normal(size=n).astype(np.float32))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=n).astype(np.float32))
    base.trainable = False               # the state after training a new head
    return base


def _want_flags(model, bn_trainable=False, others=True, recurse=True, depth=0) -> dict:
    """{layer name: trainable} for one way of setting the flags (nested layers included)."""
    keras = _keras()
    flags = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            flags[layer.name] = bn_trainable if (recurse or depth == 0) else others
        elif hasattr(layer, "layers"):
            flags[layer.name] = others
            flags.update(_want_flags(layer, bn_trainable, others, recurse, depth + 1))
        elif layer.weights:
            flags[layer.name] = others
    return flags


def _containers_frozen(base) -> dict:
    """The flags after unfreezing the base and then freezing every top-level nested model (and
    so everything inside it) along with the BN layers."""
    flags = _want_flags(base)
    for layer in base.layers:
        if hasattr(layer, "layers"):
            flags[layer.name] = False
            flags.update({k: False for k in _want_flags(layer)})
    return flags


def _got_flags(model) -> dict:
    """{layer name: trainable} as the learner's code left them."""
    flags = {}
    for layer in model.layers:
        if layer.weights or hasattr(layer, "layers"):
            flags[layer.name] = bool(layer.trainable)
        if hasattr(layer, "layers"):
            flags.update(_got_flags(layer))
    return flags


@checker("4.4")
def prepare_for_finetuning(fn):
    """Check ``prepare_for_finetuning(base)``: every layer trainable except BN, at any depth."""
    __tracebackhide__ = True
    from ..lessons import keras_layer as kd

    for case in cases(dict(base="Sequential: Dense, BN, ReLU, Dense, BN, ReLU", _spec="flat",
                           _seed=21),
                      dict(base="Sequential: BN, Dense, nested block (Dense, BN, ReLU)",
                           _spec="nested", _seed=22),
                      dict(base="functional: nested (Dense, nested (Dense, BN), ReLU), Dense",
                           _spec="deep", _seed=23)):
        base = _pretrained(case.spec, case.seed)
        stats = moving_stats(base)
        call(fn, base, what="prepare_for_finetuning", case=case)
        want = {"trainable flags": _want_flags(base)}
        got = {"trainable flags": _got_flags(base)}
        nested_bn = [layer for layer in bn_layers(base) if layer not in base.layers]
        flat_hint = ("walk the layers recursively: a layer that has `.layers` (a nested model) "
                     "holds layers of its own; a function that calls itself on it finds them.")
        match(got, want, case=case, name="the base's layers", wrong=[
            Wrong({"trainable flags": _want_flags(base, bn_trainable=False, others=False)},
                  "The base is still frozen: no layer of it is trainable.",
                  "make the base trainable again first (base.trainable = True), then refreeze "
                  "only the BN layers."),
            Wrong({"trainable flags": _want_flags(base, bn_trainable=True, others=False)},
                  "Inverted: your BN layers are trainable and every other layer is frozen.",
                  "BN layers get trainable = False; everything else True. Check your condition."),
            Wrong({"trainable flags": _want_flags(base, bn_trainable=True, others=True)},
                  "`trainable` left on for the BN layers, so fit would overwrite their "
                  "pretrained moving statistics.",
                  "set trainable = False on each BatchNormalization layer AFTER unfreezing the "
                  "base (base.trainable = True turns them all back on)."),
            Wrong(lambda: {"trainable flags": _want_flags(base, recurse=False)} if nested_bn
                  else None,
                  "A BN layer inside a nested model stayed trainable: your loop looks only at "
                  "base.layers, not inside the nested models.", flat_hint),
            Wrong(lambda: {"trainable flags": _containers_frozen(base)} if nested_bn else None,
                  "You froze the whole nested model that holds a BN layer: its Dense layers "
                  "would not train either.", flat_hint),
        ], selftest="print [(layer.name, layer.trainable) for layer in base.layers] and do the "
                    "same inside every layer that has .layers.")
        # Behaviour: a training-mode call must leave the statistics alone (inference mode).
        width = base.inputs[0].shape[-1]
        base(np.random.default_rng(0).normal(size=(8, width)).astype(np.float32) * 5 + 3,
             training=True)
        if not kd.same_arrays(stats, moving_stats(base)):
            raise ExerciseMistake(
                f"In {case}: the BN moving statistics changed in a training-mode call, although "
                "every BN layer reports trainable=False.",
                "set `trainable = False` on the BN layers themselves, not some other flag.")
    return "every layer of the base trains except its BN layers, nested models included " \
        "(3 bases)"
