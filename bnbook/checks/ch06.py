"""Checkers for chapter 6: BN in convolutional and residual networks, and debugging a BN model.

Each checker runs the learner's code on three small cases that differ in every size and setting a
learner could hard-code (image size, channels, filters, strides, batch sizes, momentum, epsilon,
nesting, epochs, learning rate), and names the mistakes learners make.
"""

from __future__ import annotations

import math

import numpy as np

from ._core import ExerciseMistake, Wrong, call, cases, checker, match


def _keras():
    import keras  # imported lazily: `from bnbook.checks import ch06` stays cheap

    return keras


# --- exercise 6.1: a residual block with a projection shortcut ---------------------------------

RELU_CLASSES = ("ReLU", "Activation")


def _inbound(layer_config) -> list[str]:
    """Names of the layers whose outputs feed this layer (from a functional model's config)."""
    parents = []
    for node in layer_config.get("inbound_nodes", []):
        for arg in node["args"]:
            for tensor in arg if isinstance(arg, list) else [arg]:
                if isinstance(tensor, dict) and "keras_history" in tensor.get("config", {}):
                    parents.append(tensor["config"]["keras_history"][0])
    return parents


def _graph(model):
    """``(graph, resolve)``: graph is {layer name: (class name, config, [parent layer names])} of
    a functional model, with every nested Sequential or functional model opened up into its own
    layers (what the block computes, not how it was packaged); ``resolve(name)`` maps a nested
    model's name to the layer inside it that computes its output."""
    graph, alias = {}, {}

    def resolve(name):
        while name in alias:
            name = alias[name]
        return name

    def add(entry, parents):
        """Add one layer (opening nested models); return the name that stands for its output."""
        kind, config = entry["class_name"], entry["config"]
        name = config.get("name") or entry.get("name")
        if kind == "Sequential":
            last = parents
            for inner in config["layers"]:
                if inner["class_name"] != "InputLayer":
                    last = [add(inner, last)]
            alias[name] = last[0]
            return last[0]
        if kind in ("Functional", "Model") and "layers" in config:
            inputs, outputs = (config[key] if isinstance(config[key][0], list) else [config[key]]
                               for key in ("input_layers", "output_layers"))   # one or several
            for inner_input, parent in zip(inputs, parents):
                alias[inner_input[0]] = parent
            for inner in config["layers"]:
                if inner["class_name"] != "InputLayer":
                    add(inner, [resolve(p) for p in _inbound(inner)])
            alias[name] = resolve(outputs[0][0])
            return alias[name]
        graph[name] = (kind, config, parents)
        return name

    for entry in model.get_config()["layers"]:
        add(entry, [resolve(p) for p in _inbound(entry)])
    return graph, resolve


def _is_relu(entry) -> bool:
    kind, config, _ = entry
    if kind == "ReLU":
        return config.get("max_value") is None and not config.get("negative_slope")
    if kind == "Relu":  # keras.ops.relu applied to a Keras tensor
        return True
    return kind == "Activation" and config.get("activation") == "relu"


def _chain(graph, start):
    """Layer names from ``start`` back along single parents until the input or a merge."""
    names = [start]
    while True:
        kind, _, parents = graph[names[-1]]
        if kind == "InputLayer" or len(parents) != 1:
            return names
        names.append(parents[0])


def _is_projection(graph, name, input_name) -> bool:
    """True if ``name`` is a BN fed by a 1x1 Conv2D fed by the input."""
    chain = _chain(graph, name)
    return len(chain) == 3 and graph[chain[0]][0] == "BatchNormalization" \
        and graph[chain[1]][0] == "Conv2D" and _kernel(graph[chain[1]][1]) == (1, 1) \
        and chain[2] == input_name


def _gamma_zero(model, name) -> bool:
    layer = next(layer for layer in model._flatten_layers() if layer.name == name)
    return bool(np.all(layer.gamma.numpy() == 0.0))


def _kernel(config):
    size = config.get("kernel_size")
    return tuple(size) if isinstance(size, (list, tuple)) else (size, size)


def _strides(config):
    strides = config.get("strides", 1)
    return tuple(strides) if isinstance(strides, (list, tuple)) else (strides, strides)


@checker("6.1")
def residual_block(fn):
    """Check ``fn(x, filters, strides) -> tensor``: BN before the Add, ReLU after it, gamma=0 on
    the branch's last BN, a projection shortcut (1x1 Conv, no bias, then BN) when shapes change."""
    __tracebackhide__ = True
    keras = _keras()
    details = []
    for case in cases(dict(height=8, width=8, channels=4, filters=4, strides=1),
                      dict(height=6, width=10, channels=3, filters=5, strides=1),
                      dict(height=9, width=7, channels=6, filters=6, strides=2)):
        keras.utils.set_random_seed(61 + case.index)
        inputs = keras.Input((case.height, case.width, case.channels))
        projection = case.channels != case.filters or case.strides != 1
        out = call(fn, inputs, case.filters, case.strides, what="your residual_block", case=case,
                   hint="build the block from Keras layers applied to `x`. If Add complains that "
                        "its inputs have different shapes, the shortcut needs a projection.")
        if not isinstance(out, keras.KerasTensor):
            raise ExerciseMistake(
                f"In {case}: your residual_block returned a {type(out).__name__}, not the "
                "output of a Keras layer.",
                "apply layers to the symbolic input `x` and return the last layer's output.")
        want_shape = (None, math.ceil(case.height / case.strides),
                      math.ceil(case.width / case.strides), case.filters)
        if tuple(out.shape) != want_shape:
            raise ExerciseMistake(
                f"In {case}: the block's output has shape {tuple(out.shape)}, expected "
                f"{want_shape}.",
                "the branch's convolutions have `filters` output channels and padding='same'; "
                "the stride goes on the first convolution of the branch (and on the 1x1 "
                "projection).")
        model = keras.Model(inputs, out)
        graph, resolve = _graph(model)
        where = f"In {case}: "
        for name, (kind, config, _) in graph.items():
            if kind == "Conv2D" and config.get("use_bias"):
                raise ExerciseMistake(
                    where + f"a Conv2D has a bias ({name}).",
                    "every convolution here feeds a BN layer, whose beta does the bias' job: "
                    "use_bias=False.")
            if kind == "Conv2D" and config.get("activation") not in (None, "linear"):
                raise ExerciseMistake(
                    where + "a Conv2D applies its own activation, before BN.",
                    "leave Conv2D linear; the ReLU comes after BN as a layer of its own.")
        adds = [name for name, (kind, _, _) in graph.items() if kind == "Add"]
        if len(adds) != 1:
            raise ExerciseMistake(
                where + f"expected one keras.layers.Add, found {len(adds)}.",
                "join the shortcut and the branch with keras.layers.Add()([shortcut, branch]).")
        add = adds[0]
        last = resolve(out._keras_history[0].name)
        if graph[last][0] == "Add":
            raise ExerciseMistake(where + "there is no activation after the Add.",
                                  "the block ends with a ReLU applied to the sum.")
        if graph[last][0] == "BatchNormalization" or (
                _is_relu(graph[last]) and graph[graph[last][2][0]][0] == "BatchNormalization"):
            raise ExerciseMistake(
                where + "a BN layer comes after the Add.",
                "BN belongs at the end of the branch, BEFORE the Add; after the Add comes only "
                "the ReLU.")
        if not (_is_relu(graph[last]) and graph[last][2] == [add]):
            raise ExerciseMistake(where + "the block's output is not a ReLU of the Add's output.",
                                  "return keras.layers.ReLU()(the sum).")
        parents = graph[add][2]
        if len(parents) != 2:
            raise ExerciseMistake(where + f"the Add has {len(parents)} inputs, expected 2.",
                                  "add exactly the shortcut and the branch.")
        input_name = resolve(model.inputs[0]._keras_history[0].name)

        shortcut = [p for p in parents if p == input_name
                    or _is_projection(graph, p, input_name)
                    or _chain(graph, p)[-2:] == [p, input_name] and len(_chain(graph, p)) == 2]
        branch = [p for p in parents if p not in shortcut]
        if len(branch) != 1 or len(shortcut) != 1:
            for p in parents:
                chain = _chain(graph, p)
                kinds = [graph[n][0] for n in chain]
                if kinds == ["BatchNormalization", "Conv2D", "InputLayer"] \
                        and _kernel(graph[chain[1]][1]) != (1, 1):
                    raise ExerciseMistake(
                        where + f"the projection shortcut's convolution is "
                        f"{'x'.join(map(str, _kernel(graph[chain[1]][1])))}, not 1x1.",
                        "project the shortcut with Conv2D(filters, 1, strides=strides): a 1x1 "
                        "convolution only maps the channels.")
                if _is_relu(graph[p]) and kinds[1:] == ["BatchNormalization", "Conv2D",
                                                        "InputLayer"] \
                        and _kernel(graph[chain[2]][1]) == (1, 1):
                    raise ExerciseMistake(
                        where + "the projection shortcut ends with an activation before the Add.",
                        "the shortcut is 1x1 Conv2D -> BN, nothing more; the only activation "
                        "on the shortcut's path is the ReLU after the Add.")
            raise ExerciseMistake(
                where + "could not tell the shortcut from the branch among the Add's inputs.",
                "the shortcut is `x` itself or a 1x1 Conv2D -> BN of `x`; the branch is "
                "Conv2D -> BN -> ReLU -> Conv2D -> BN.")
        shortcut, branch = shortcut[0], branch[0]
        if projection and shortcut == input_name:
            raise ExerciseMistake(
                where + "the shortcut is the input itself, but the output's shape differs.",
                "when the stride or the number of channels changes, project the shortcut with "
                "a 1x1 Conv2D (same strides, no bias) followed by BN.")
        if not projection and shortcut != input_name:
            raise ExerciseMistake(
                where + "the shortcut is projected although the input already has the output's "
                "shape.",
                "use the input itself as the shortcut when strides == 1 and the channels match.")
        if projection and graph[shortcut][0] != "BatchNormalization":
            raise ExerciseMistake(where + "the projection shortcut has no BN after its 1x1 "
                                  "convolution.",
                                  "as in Keras' ResNet: Conv2D(1x1, no bias) then BN.")
        if projection and _strides(graph[graph[shortcut][2][0]][1]) != (case.strides,) * 2:
            raise ExerciseMistake(where + "the 1x1 projection does not use the block's strides.",
                                  "give the projection the same strides as the branch.")
        chain = _chain(graph, branch)
        kinds = ["ReLU" if _is_relu(graph[n]) else graph[n][0] for n in chain]
        want = ["BatchNormalization", "Conv2D", "ReLU", "BatchNormalization", "Conv2D",
                "InputLayer"]
        if kinds[0] in RELU_CLASSES:
            raise ExerciseMistake(where + "the branch ends with an activation before the Add.",
                                  "end the branch with BN; the ReLU comes after the Add.")
        if kinds != want:
            shown = " -> ".join(reversed(kinds[:-1]))
            raise ExerciseMistake(
                where + f"the branch is {shown}; expected Conv2D -> BN -> ReLU -> Conv2D -> BN.",
                "each convolution is followed by BN; the ReLU sits between the two, and the "
                "branch ends with BN.")
        if any(_kernel(graph[n][1]) != (3, 3) for n in (chain[1], chain[4])):
            raise ExerciseMistake(where + "the branch's convolutions are not 3x3.",
                                  "use kernel_size=3 with padding='same'.")
        if _strides(graph[chain[4]][1]) != (case.strides,) * 2 \
                or _strides(graph[chain[1]][1]) != (1, 1):
            raise ExerciseMistake(
                where + f"the branch's strides are {_strides(graph[chain[4]][1])[0]} (first "
                f"convolution) and {_strides(graph[chain[1]][1])[0]} (second); expected "
                f"{case.strides} and 1.",
                "the block's stride goes on the branch's FIRST convolution (as in Keras' "
                "ResNet); the second one keeps stride 1.")
        zero = {name: _gamma_zero(model, name) for name, (kind, _, _) in graph.items()
                if kind == "BatchNormalization"}
        if not zero[chain[0]] and not any(zero.values()):
            raise ExerciseMistake(
                where + "the last BN of the branch starts with gamma = 1.",
                "give that BN gamma_initializer='zeros', so the block starts as the identity.")
        if zero[chain[3]]:
            raise ExerciseMistake(
                where + "the FIRST BN of the branch starts with gamma = 0.",
                "zero gamma belongs on the branch's LAST BN, the one right before the Add; "
                "with the first one at 0 the second convolution starts from a constant.")
        if projection and zero[shortcut]:
            raise ExerciseMistake(
                where + "the shortcut's BN starts with gamma = 0: the shortcut carries nothing.",
                "only the branch's last BN starts at 0; the shortcut's BN keeps gamma = 1.")
        if not zero[chain[0]]:
            raise ExerciseMistake(where + "the last BN of the branch starts with gamma = 1.",
                                  "give that BN gamma_initializer='zeros'.")
        if not projection:
            x = np.maximum(np.random.default_rng(case.index).normal(
                size=(3, case.height, case.width, case.channels)), 0).astype(np.float32)
            for training in (False, True):
                y = np.asarray(model(x, training=training))
                if not np.allclose(y, x, atol=1e-6):
                    raise ExerciseMistake(
                        where + f"the block is not the identity at initialisation "
                        f"(training={training}).",
                        "with gamma = 0 on the branch's last BN the branch outputs 0, and "
                        "ReLU(x + 0) = x for the non-negative x a previous ReLU delivers.")
        details.append(f"{case.height}x{case.width}x{case.channels}->{case.filters}/"
                       f"{case.strides}")
    return "BN before the Add, ReLU after it, gamma = 0 on the branch's last BN, projection " \
        "where shapes change (" + ", ".join(details) + ")"


# --- exercise 6.2: recalibration for any Keras model -------------------------------------------

def _bn_layers(model):
    from ..statistics import bn_layers

    return bn_layers(model)


def _stats(model):
    return {f"BN layer {i + 1} ({name})": value for i, layer in enumerate(_bn_layers(model))
            for name, value in (("moving mean", layer.moving_mean.numpy().copy()),
                                ("moving variance", layer.moving_variance.numpy().copy()))}


def _set_stats(model, stats):
    values = list(stats.values())
    for i, layer in enumerate(_bn_layers(model)):
        layer.moving_mean.assign(values[2 * i])
        layer.moving_variance.assign(values[2 * i + 1])


def _flags(model):
    return [(layer.name, layer.trainable, layer.momentum) for layer in _bn_layers(model)]


def _dropouts(model):
    keras = _keras()
    return [layer for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.Dropout)]


class _NoDropout:
    """Within the block: every Dropout layer passes its inputs through, whatever the mode (rate
    0), so that the known-wrong variants below, which call the model in training mode, stay
    deterministic and differ from the right answer by their own mistake only."""

    def __init__(self, model):
        self.layers = _dropouts(model)

    def __enter__(self):
        self.saved = [layer.rate for layer in self.layers]
        for layer in self.layers:
            layer.rate = 0.0

    def __exit__(self, *exc):
        for layer, rate in zip(self.layers, self.saved):
            layer.rate = rate


def _other_weights(model):
    stats = {id(v) for layer in _bn_layers(model) for v in (layer.moving_mean,
                                                              layer.moving_variance)}
    return [v.numpy().copy() for v in model.weights if id(v) not in stats]


class _Switched:
    """Within the block: only the ``targets`` BN layers run in training mode, with momentum 0
    (a training-mode call stores exactly that batch's statistics); flags restored afterwards."""

    def __init__(self, model, targets, momentum_zero=True):
        self.layers, self.targets = _bn_layers(model), targets
        self.momentum_zero = momentum_zero

    def __enter__(self):
        self.saved = [(layer.trainable, layer.momentum) for layer in self.layers]
        for layer in self.layers:
            layer.trainable = any(layer is t for t in self.targets)
            if self.momentum_zero:
                layer.momentum = 0.0

    def __exit__(self, *exc):
        for layer, (trainable, momentum) in zip(self.layers, self.saved):
            layer.trainable, layer.momentum = trainable, momentum


def _exact(model, batches):
    """The right answer, in place, in ONE inference-mode call on all the data: as the call
    reaches each BN layer (in order), the layer's moving statistics are set to the mean and
    biased variance of the inputs it sees, and then it normalises with them, so every later
    layer sees its inputs as they are at inference with the recalibrated earlier layers."""
    import tensorflow as tf

    layers = _bn_layers(model)

    def recalibrating(layer, original):
        def call(inputs, *args, **kwargs):
            x = tf.cast(inputs, tf.float64)
            mean, variance = tf.nn.moments(x, list(range(len(x.shape) - 1)))
            layer.moving_mean.assign(tf.cast(mean, tf.float32))
            layer.moving_variance.assign(tf.cast(variance, tf.float32))
            return original(inputs, *args, **kwargs)
        return call

    for layer in layers:
        layer.call = recalibrating(layer, layer.call)
    try:
        model(np.concatenate(batches), training=False)
    finally:
        for layer in layers:
            del layer.call                          # back to the class's call
    return _stats(model)


def _pooled(model, batches, targets, *, weighted=True, total_variance=True, ddof=0,
            momentum_zero=True):
    """Statistics of each BN layer in ``targets`` over ``batches``, pooled from the per-batch
    moments (variants of the right pooling), with only ``targets`` in training mode."""
    sums = {id(layer): [0.0, 0.0, 0.0] for layer in targets}
    with _Switched(model, targets, momentum_zero):
        for batch in batches:
            model(batch, training=True)
            n = len(batch) if weighted else 1
            for layer in targets:
                mean = layer.moving_mean.numpy().astype(np.float64)
                var = layer.moving_variance.numpy().astype(np.float64)
                s = sums[id(layer)]
                s[0] += n
                s[1] = s[1] + n * mean
                s[2] = s[2] + n * (var + mean ** 2 if total_variance else var)
    for layer in targets:
        count, total, second = sums[id(layer)]
        mean = total / count
        var = second / count - (mean ** 2 if total_variance else 0.0)
        if ddof:
            values = sum(len(b) for b in batches) * int(np.prod(layer.input.shape[1:-1]))
            var = var * values / (values - 1)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(var, 0.0).astype(np.float32))


def _layer_by_layer(model, batches, **kwargs):
    for layer in _bn_layers(model):
        _pooled(model, batches, [layer], **kwargs)
    return _stats(model)


def _not_frozen(model, batches):
    """Each BN layer in turn given momentum 0 and its batch moments pooled, but the other BN
    layers left in training mode (and the earlier targets left at momentum 0)."""
    layers = _bn_layers(model)
    saved = [layer.momentum for layer in layers]
    try:
        for target in layers:
            target.momentum = 0.0
            count, total, second = 0, 0.0, 0.0
            for batch in batches:
                model(batch, training=True)
                mean = target.moving_mean.numpy().astype(np.float64)
                var = target.moving_variance.numpy().astype(np.float64)
                count, total = count + len(batch), total + len(batch) * mean
                second = second + len(batch) * (var + mean ** 2)
            target.moving_mean.assign((total / count).astype(np.float32))
            target.moving_variance.assign((second / count - (total / count) ** 2)
                                          .astype(np.float32))
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return _stats(model)


def _all_at_once(model, batches):
    _pooled(model, batches, _bn_layers(model))
    return _stats(model)


def _ema(model, batches):
    for batch in batches:
        model(batch, training=True)
    return _stats(model)


def _top_level_only(model, batches):
    """Only the BN layers that are direct children of the outer model recalibrated (in order,
    the nested ones left as they were)."""
    keras = _keras()
    top = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if len(top) == len(_bn_layers(model)):
        return None
    for layer in top:
        _pooled(model, batches, [layer])
    return _stats(model)


DROPOUT = 0.5       # the CNN's dropout rate


def _before_dropout(model, stats):
    """The keys of ``stats`` (see :func:`_stats`) of the BN layers that come before the model's
    first Dropout layer (a Sequential model's order), or None if the model has no Dropout."""
    keras = _keras()
    if not any(isinstance(layer, keras.layers.Dropout) for layer in model.layers):
        return None
    first = next(i for i, layer in enumerate(model.layers)
                 if isinstance(layer, keras.layers.Dropout))
    count = sum(isinstance(layer, keras.layers.BatchNormalization)
                for layer in model.layers[:first])
    return list(stats)[:2 * count]


def _only(value, keys):
    """A Wrong variant's value (a function of no argument, or None) cut down to ``keys``."""
    if value is None:
        return None

    def run():
        full = value()
        return None if full is None else {k: full[k] for k in keys}
    return run


def _dropout_mistake(case, got, want, keys_after):
    """The ExerciseMistake for statistics taken with Dropout active, or None: the BN layers after
    the Dropout have a variance above the exact one in every channel, and at least 1.4 times it on
    average. (With rate 0.5 the values Dropout keeps are doubled; in this model, over 40 dropout
    seeds, every channel's ratio stayed above 1.5 and their mean near 2.5. No other known
    mistake raises the variance by more than a few percent.)"""
    ratios = np.concatenate([np.asarray(got[key], np.float64) / np.asarray(want[key], np.float64)
                             for key in keys_after if "moving variance" in key])
    if not len(ratios) or np.min(ratios) < 1.1 or np.mean(ratios) < 1.4:
        return None
    factor = float(np.mean(ratios))
    return ExerciseMistake(
        f"In {case}: Dropout was active during your passes: the BN layer after the Dropout "
        f"layer got the variance of its inputs in training mode, about {factor:.1f} times the one "
        f"it sees at inference (Dropout with rate {DROPOUT:g} zeroes half the values and doubles "
        "the others). The BN layer before the Dropout is right.",
        "the statistics must be those at inference, with EVERY layer in inference mode: a "
        "training-mode call switches Dropout on too, even with the BN layers frozen. Call the "
        "model with training=False and find another way to see what each BN layer receives.")


def _recalibration_models(index):
    """Three models a learner has not seen, with non-trivial starting statistics. No classifier
    head: layers after the last BN layer would only make every call slower. The CNN has a
    Dropout layer between its two BN blocks: the exact statistics of the second BN layer are
    those of its inputs at inference, Dropout off; with Dropout on (rate 0.5) their variance is
    about twice as large."""
    keras = _keras()
    bn = keras.layers.BatchNormalization
    keras.utils.set_random_seed(620 + index)
    rng = np.random.default_rng(620 + index)
    if index == 0:      # a dense network, equal batches
        model = keras.Sequential([
            keras.Input((5,)), keras.layers.Dense(6, use_bias=False), bn(), keras.layers.ReLU(),
            keras.layers.Dense(4, use_bias=False), bn(), keras.layers.ReLU()])
        sizes, shape, loc, scale = (16, 16), (5,), 2.0, 3.0
    elif index == 1:    # a CNN, other momentum and epsilon, batches of unequal sizes
        model = keras.Sequential([
            keras.Input((6, 5, 2)), keras.layers.Conv2D(3, 3, use_bias=False),
            bn(momentum=0.5, epsilon=0.01), keras.layers.ReLU(), keras.layers.Dropout(DROPOUT),
            keras.layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False),
            bn(momentum=0.9, epsilon=0.01), keras.layers.ReLU()])
        sizes, shape, loc, scale = (20, 7, 13), (6, 5, 2), 1.0, 2.0
    else:               # a nested model, one BN layer frozen
        inner = keras.Sequential([
            keras.Input((7, 7, 1)), keras.layers.Conv2D(4, 3, use_bias=False), bn(),
            keras.layers.ReLU(), keras.layers.Conv2D(3, 3, use_bias=False), bn(momentum=0.8),
            keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D()], name="inner")
        inputs = keras.Input((7, 7, 1))
        x = keras.layers.Dense(5, use_bias=False)(inner(inputs))
        x = bn(momentum=0.95)(x)
        model = keras.Model(inputs, keras.layers.ReLU()(x))
        _bn_layers(model)[1].trainable = False
        sizes, shape, loc, scale = (9, 12, 5), (7, 7, 1), -1.0, 1.5
    batches = [rng.normal(loc, scale, size=(n, *shape)).astype(np.float32) for n in sizes]
    for layer in _bn_layers(model):
        size = layer.moving_mean.shape
        layer.moving_mean.assign(rng.normal(size=size).astype(np.float32))
        layer.moving_variance.assign(rng.uniform(0.5, 3.0, size=size).astype(np.float32))
    return model, batches


@checker("6.2")
def recalibrate(fn):
    """Check ``fn(model, batches)``: every BN layer's moving statistics become the exact mean and
    biased variance of its inputs over all the batches, every other layer (Dropout included) in
    inference mode and the earlier BN layers recalibrated. The book's own recalibration is
    refused."""
    __tracebackhide__ = True
    from .. import statistics

    for case in cases(dict(model="dense, 2 BN layers", batch_sizes=(16, 16)),
                      dict(model="CNN, 2 BN layers with Dropout(0.5) between them, momentum "
                                 "0.5/0.9, epsilon 0.01", batch_sizes=(20, 7, 13)),
                      dict(model="nested model, 3 BN layers, one frozen",
                           batch_sizes=(9, 12, 5))):
        model, batches = _recalibration_models(case.index)
        start = _stats(model)
        want = _exact(model, batches)
        _set_stats(model, start)
        flags, others = _flags(model), _other_weights(model)
        rates = [(layer.name, layer.rate) for layer in _dropouts(model)]
        call(fn, model, [b.copy() for b in batches], what="your recalibrate", case=case,
             refuse=(statistics.recalibrate_bn, statistics.bn_input_statistics))
        where = f"In {case}: "
        changed_flags = [f"{name}: " + ", ".join(
                             ([f"trainable {t0}->{t1}"] if t0 != t1 else [])
                             + ([f"momentum {m0:g}->{m1:g}"] if m0 != m1 else []))
                         for (name, t0, m0), (_, t1, m1) in zip(flags, _flags(model))
                         if (t0, m0) != (t1, m1)]
        changed_flags += [f"{name}: rate {r0:g}->{layer.rate:g}"
                          for (name, r0), layer in zip(rates, _dropouts(model))
                          if layer.rate != r0]
        if changed_flags:
            raise ExerciseMistake(
                where + "a layer's flags were not restored (" + "; ".join(changed_flags)
                + ").",
                "remember each setting (a BN layer's trainable and momentum, a Dropout layer's "
                "rate) before you change it, and set it back at the end (try/finally).")
        if any(not np.array_equal(a, b) for a, b in zip(others, _other_weights(model))):
            raise ExerciseMistake(
                where + "weights other than the moving statistics changed (gamma, beta or a "
                "kernel).",
                "recalibration only runs forward passes: no optimizer, no gradient steps.")
        got = _stats(model)

        def variant(compute, model=model, batches=batches, start=start):
            def run():
                _set_stats(model, start)         # every variant starts from the old statistics
                with _NoDropout(model):          # deterministic: only its own mistake
                    return compute(model, batches)
            return run

        wrong = [
            Wrong(variant(_ema),
                  "Your statistics are moving averages: running the batches through in "
                  "training mode updates the old statistics with momentum instead of "
                  "replacing them.",
                  "make each call store the batch's own statistics (momentum 0) and combine "
                  "the batches yourself."),
            Wrong(variant(_all_at_once),
                  "The first BN layer is right, but the later ones were computed with the "
                  "earlier BN layers in training mode (batch statistics).",
                  "at inference the later layers see inputs normalised with the earlier layers' "
                  "moving statistics: recalibrate one layer at a time, in order, with every "
                  "other layer in inference mode."),
            Wrong(variant(lambda m, b: _layer_by_layer(m, b, total_variance=False)),
                  "You averaged the batch variances: the variance over all the data also "
                  "counts how far each batch's mean lies from the overall mean.",
                  "combine E[x^2] = variance + mean^2 over the batches, then subtract the "
                  "square of the overall mean."),
            Wrong(variant(lambda m, b: _layer_by_layer(m, b, weighted=False))
                  if len(set(case.batch_sizes)) > 1 else None,
                  "Your statistics give every batch the same weight, but the batches have "
                  "different sizes.",
                  "weight each batch's mean and E[x^2] by its number of examples."),
            Wrong(variant(_top_level_only),
                  "The BN layers inside the nested model kept their old statistics.",
                  "collect BN layers recursively: a layer that has `.layers` is a model; look "
                  "inside it too."),
            Wrong(variant(lambda m, b: _layer_by_layer(m, b[-1:])) if len(batches) > 1
                  else None,
                  "Your statistics are those of the LAST batch only.",
                  "with momentum 0 each call overwrites the moving statistics: read them after "
                  "EVERY batch and combine the batches yourself."),
            Wrong(variant(lambda m, b: _layer_by_layer(m, b, momentum_zero=False)),
                  "Your statistics mix in the old moving statistics: each training-mode call "
                  "moved them only part of the way (the layer's momentum was not 0).",
                  "set the target layer's momentum to 0 while you recalibrate it, so one call "
                  "stores exactly that batch's mean and variance; restore it afterwards."),
            Wrong(variant(_not_frozen),
                  "The other BN layers were left in training mode while you recalibrated one "
                  "layer: they normalised with batch statistics, and kept changing their own "
                  "moving statistics.",
                  "every BN layer but the one you measure must run in inference mode, with its "
                  "moving statistics; restore any flag you change."),
            Wrong(variant(lambda m, b: _layer_by_layer(m, b, ddof=1)),
                  "You used the unbiased variance (divided by n - 1).",
                  "Keras' moving variance is the biased one: divide by the number of values."),
        ]
        selftest = ("after your function, set momentum 0 on the first BN layer, freeze the "
                    "others and call the model in training mode on ALL the data at once: the "
                    "first layer's statistics must not change.")
        before = _before_dropout(model, want)
        if before is not None:
            # A learner's pass with Dropout on makes the later statistics random, but the BN
            # layers before the Dropout see the same inputs in either mode: their mistakes are
            # named first (the variants cut down to them), then Dropout's.
            match({k: got[k] for k in before}, {k: want[k] for k in before}, case=case,
                  name="the recalibrated statistics", selftest=selftest,
                  wrong=[Wrong(_only(w.value, before), w.mistake, w.hint) for w in wrong])
            mistake = _dropout_mistake(case, got, want, [k for k in want if k not in before])
            if mistake is not None:
                raise mistake
        match(got, want, case=case, name="the recalibrated statistics", wrong=wrong,
              selftest=selftest)
    return "exact statistics in a dense net, a CNN with Dropout and unequal batches, and a " \
        "nested model with a frozen BN layer; flags restored"


# --- exercise 6.3: the broken training script --------------------------------------------------

def _probe_class():
    """A pass-through layer that counts the calls it sees, in training and in inference mode, and
    the smallest training batch. Works eagerly (Python counters: no TensorFlow ops, so the
    learner's steps stay cheap) and inside tf.function (variables)."""
    keras = _keras()
    import tensorflow as tf

    class CallProbe(keras.layers.Layer):
        def build(self, input_shape):
            def counter(name, value=0.0):
                return self.add_weight(name=name, shape=(), trainable=False,
                                       initializer=keras.initializers.Constant(value))
            self.training_calls = counter("training_calls")
            self.inference_calls = counter("inference_calls")
            self.smallest_training_batch = counter("smallest_training_batch", 1e9)
            self.eager = [0, 0, 10 ** 9]  # the same three counts, for eager calls

        def call(self, x, training=None):
            if tf.executing_eagerly():
                if training:
                    self.eager[0] += 1
                    self.eager[2] = min(self.eager[2], int(x.shape[0]))
                else:
                    self.eager[1] += 1
                return x
            n = tf.cast(tf.shape(x)[0], "float32")
            if training:
                self.training_calls.assign_add(1.0)
                self.smallest_training_batch.assign(tf.minimum(self.smallest_training_batch, n))
            else:
                self.inference_calls.assign_add(1.0)
            return x

        def reset(self):
            self.training_calls.assign(0.0)
            self.inference_calls.assign(0.0)
            self.smallest_training_batch.assign(1e9)
            self.eager = [0, 0, 10 ** 9]

        def counts(self):
            return (int(self.training_calls.numpy()) + self.eager[0],
                    int(self.inference_calls.numpy()) + self.eager[1],
                    min(int(self.smallest_training_batch.numpy()), self.eager[2]))

    return CallProbe


EPSILON = 1e-3  # the script model's BN epsilon (Keras' default), used by the reference below


def _script_model(case):
    """A tiny CNN (Conv -> BN -> ReLU -> Dense) behind a call probe."""
    keras = _keras()
    keras.utils.set_random_seed(63 + case.index)
    probe = _probe_class()(name="probe")
    model = keras.Sequential([
        keras.Input((case.size, case.size, case.channels)), probe,
        keras.layers.Conv2D(3, 3, strides=2, padding="same", use_bias=False),
        keras.layers.BatchNormalization(momentum=case.momentum, epsilon=EPSILON),
        keras.layers.ReLU(), keras.layers.Flatten(), keras.layers.Dense(3)])
    return model, probe


def _script_data(case):
    rng = np.random.default_rng(630 + case.index)
    y = rng.integers(0, 3, size=case.n)
    x = rng.normal(size=(case.n, case.size, case.size, case.channels)) + y[:, None, None, None]
    return x.astype(np.float32), y.astype(np.int64)


def _patches(x):
    """The 3x3 patches a stride-2, padding='same' convolution sees: (N, H', W', 9 * C), in the
    order of a (3, 3, C, filters) kernel reshaped to (9 * C, filters)."""
    pads, outs = [], []
    for size in x.shape[1:3]:
        out = -(-size // 2)
        total = max(2 * (out - 1) + 3 - size, 0)        # TensorFlow's 'same': the extra on the end
        pads.append((total // 2, total - total // 2))
        outs.append(out)
    padded = np.pad(x, ((0, 0), *pads, (0, 0)))
    rows, cols = outs
    parts = [padded[:, i:i + 2 * rows:2, j:j + 2 * cols:2, :] for i in range(3) for j in range(3)]
    return np.stack(parts, axis=3).reshape(len(x), rows, cols, -1)


def _reference_weights(case, start, x, y, *, merge):
    """The script model's weights after the colleague's script with both bugs fixed, from the
    weights ``start`` (as :func:`_script_weights` names them): full batches only
    (``merge=False``), or the remainder merged into the last batch. Computed in NumPy (float64),
    forward and backward by hand: running the script again in Keras would double the check's
    time."""
    w = {k: v.astype(np.float64) for k, v in start.items()}
    axes = (0, 1, 2)
    starts = list(range(0, case.n - case.batch_size + 1, case.batch_size))
    for _ in range(case.epochs):
        for i, first in enumerate(starts):
            stop = case.n if merge and i == len(starts) - 1 else first + case.batch_size
            xb, yb = x[first:stop].astype(np.float64), y[first:stop]
            n = len(xb)
            patches = _patches(xb)
            kernel = w["Conv2D kernel"]
            z = patches @ kernel.reshape(-1, kernel.shape[-1])
            mean, var = z.mean(axes), z.var(axes)
            scale = 1.0 / np.sqrt(var + EPSILON)
            xhat = (z - mean) * scale
            a = w["BatchNormalization gamma"] * xhat + w["BatchNormalization beta"]
            features = np.maximum(a, 0.0).reshape(n, -1)
            logits = features @ w["Dense kernel"] + w["Dense bias"]
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(n), yb] -= 1.0
            dlogits = p / n                                 # mean cross-entropy from logits
            da = (dlogits @ w["Dense kernel"].T).reshape(a.shape) * (a > 0)
            dxhat = da * w["BatchNormalization gamma"]
            dz = scale * (dxhat - dxhat.mean(axes) - xhat * (dxhat * xhat).mean(axes))
            grads = {
                "Conv2D kernel": (patches.reshape(-1, patches.shape[-1]).T
                                  @ dz.reshape(-1, dz.shape[-1])).reshape(kernel.shape),
                "BatchNormalization gamma": (da * xhat).sum(axes),
                "BatchNormalization beta": da.sum(axes),
                "Dense kernel": features.T @ dlogits,
                "Dense bias": dlogits.sum(axis=0)}
            for name, value in (("moving_mean", mean), ("moving_variance", var)):
                key = f"BatchNormalization {name}"
                w[key] = w[key] * case.momentum + value * (1.0 - case.momentum)
            for name, grad in grads.items():                # plain SGD
                w[name] = w[name] - case.learning_rate * grad
    return w


def _script_weights(model):
    """{"Conv2D kernel": value, ...} for the model's weights, the call probe's counters left
    out (the script's model has one layer of each kind)."""
    return {f"{type(layer).__name__} {v.name}": v.numpy().copy() for layer in model.layers
            if layer.name != "probe" for v in layer.weights}


def _largest_gap(got, want):
    name = max(want, key=lambda k: float(np.max(np.abs(got[k] - want[k]))))
    return name, float(np.max(np.abs(got[name] - want[name])))


def _inference_accuracy(model, x, y):
    """The model's accuracy on (x, y) with BN in inference mode, computed in NumPy from its
    weights (cheaper than a Keras call); from the model itself if two logits nearly tie."""
    w = {k: v.astype(np.float64) for k, v in _script_weights(model).items()}
    kernel = w["Conv2D kernel"]
    z = _patches(x.astype(np.float64)) @ kernel.reshape(-1, kernel.shape[-1])
    a = (z - w["BatchNormalization moving_mean"]) \
        / np.sqrt(w["BatchNormalization moving_variance"] + EPSILON) \
        * w["BatchNormalization gamma"] + w["BatchNormalization beta"]
    logits = np.maximum(a, 0.0).reshape(len(x), -1) @ w["Dense kernel"] + w["Dense bias"]
    top = np.sort(logits, axis=1)
    if np.min(top[:, -1] - top[:, -2]) < 1e-4:          # float32 round-off could flip one
        logits = np.asarray(model(x, training=False))
    return float(np.mean(np.argmax(logits, axis=1) == y))


@checker("6.3")
def fix_script(train, evaluate):
    """Check the fixed ``train(model, x, y, batch_size, epochs, learning_rate)`` and
    ``evaluate(model, x, y, batch_size) -> accuracy``; report which planted bugs remain."""
    __tracebackhide__ = True
    from ..lessons.keras_layer import same_arrays
    from ..statistics import moving_stats

    # Remainders 1, 2 and 0; two full batches in cases 1 and 3 (batch order and, over 2 epochs,
    # epoch order show in the weights). 9 optimizer steps in all: each eager step costs ~50 ms.
    for case in cases(dict(n=9, batch_size=4, epochs=2, learning_rate=0.1, size=6, channels=1,
                           momentum=0.0, eval_batch=5),
                      dict(n=7, batch_size=5, epochs=3, learning_rate=0.05, size=5, channels=2,
                           momentum=0.5, eval_batch=3),
                      dict(n=6, batch_size=3, epochs=1, learning_rate=0.2, size=4, channels=3,
                           momentum=0.9, eval_batch=4)):
        model, probe = _script_model(case)
        x, y = _script_data(case)
        steps = case.epochs * (case.n // case.batch_size)
        start = [w.numpy().copy() for w in model.trainable_weights]
        initial = _script_weights(model)
        call(train, model, x, y, case.batch_size, case.epochs, case.learning_rate,
             what="your train", case=case)
        training_calls, _, smallest = probe.counts()
        remaining, other = [], []
        if training_calls and smallest < case.batch_size:
            remaining.append(
                f"the trailing batch: train still steps on a last batch of {smallest} "
                f"example{'s' if smallest > 1 else ''} ({case.n} examples, batches of "
                f"{case.batch_size}); BN takes its statistics from it")
        if training_calls == 0:
            other.append("train never calls the model with training=True, so BN never uses "
                         "batch statistics or updates its moving ones")
        elif not remaining and training_calls != steps:
            other.append(f"train made {training_calls} training-mode calls; {case.epochs} "
                         f"epoch(s) of {case.n} // {case.batch_size} = {case.n // case.batch_size}"
                         f" full batches make {steps} (one call per step)")
        if all(np.array_equal(a, w.numpy()) for a, w in zip(start, model.trainable_weights)):
            other.append("no trainable weight changed during train")
        if not remaining and not other:
            got = _script_weights(model)
            reference = _reference_weights(case, initial, x, y, merge=False)

            def same(ref, got=got):
                return all(np.allclose(got[k], ref[k], rtol=1e-3, atol=1e-4) for k in ref)
            if not same(reference) and (case.n % case.batch_size == 0 or not same(
                    _reference_weights(case, initial, x, y, merge=True))):
                name, gap = _largest_gap(got, reference)
                other.append(
                    "after train the weights differ from those of the colleague's script with "
                    f"only the two bugs fixed (largest difference {gap:.3g}, in {name}): the "
                    "script takes its batches in order, start to end, each example once per "
                    "epoch, with SGD at the given learning rate")
        probe.reset()
        stats = moving_stats(model)
        accuracy = call(evaluate, model, x, y, case.eval_batch, what="your evaluate", case=case)
        training_calls, inference_calls, _ = probe.counts()
        if training_calls or not same_arrays(stats, moving_stats(model)):
            remaining.append("evaluate runs the model in training mode: its answers depend on "
                             "the batch, and it changes the moving statistics")
            for layer, value in zip([v for v in model.non_trainable_weights
                                     if "moving" in v.path], stats):
                layer.assign(value)
        if remaining:
            count = len(remaining)
            raise ExerciseMistake(
                f"In {case}: {count} of the 2 planted bugs remain"
                + "".join(f"\n  ({i + 1}) {text}" for i, text in enumerate(remaining)),
                "section 'evaluate() disagrees with fit' of the lesson shows both causes and "
                "their fixes.")
        if other:
            raise ExerciseMistake(f"In {case}: the planted bugs are fixed, but {other[0]}.",
                                  "fix only the two bugs; keep the rest of the script as it was.")
        value = np.asarray(accuracy)
        if value.size != 1 or not np.issubdtype(value.dtype, np.number):
            raise ExerciseMistake(f"In {case}: evaluate returned {type(accuracy).__name__}, "
                                  "not one number.", "return the fraction of correct predictions.")
        want = _inference_accuracy(model, x, y)
        match(float(value), want, case=case, name="the accuracy evaluate returned", wrong=[
            Wrong(100 * want, "evaluate returned a percentage.",
                  "return a fraction between 0 and 1."),
        ], selftest="count the correct predictions over every batch, the last one included, and "
                    "divide by len(x).")
    return "no step on a trailing small batch, evaluation in inference mode (3 cases)"
