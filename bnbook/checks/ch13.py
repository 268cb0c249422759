"""Checkers for chapter 13, a BN check-up for your own model.

13.1 (``bias_before_bn``) runs four models that differ in everything a learner could hard-code:
Sequential and functional, nested one to three levels deep (a Sequential inside a functional
model, a functional inside a Sequential, a Sequential inside that), Dense, Conv1D and Conv2D
layers, BN first in a nested model and right after one, with biases that reach a BN layer across a
nested model's boundary (out of its last layer, into its first), biases that do not count (before
an activation layer, with an activation of their own, ``use_bias=False``), a branch whose list
order is not the graph's, and layer names that change from model to model. The models hold no
``channels_first`` convolution: TensorFlow without oneDNN cannot run one on a CPU, and a solution
that records one forward pass must run everywhere. The right answer of each model and the answers
of the known mistakes are written down with the model.

13.2 (``batch_dependence``) runs five models: two healthy ones (a dense and a convolutional BN
network) and three that normalise with batch statistics at inference (a custom layer that calls
BN with ``training=True``, a custom layer inside a nested model that subtracts the batch mean, a
BN subclass that ignores ``training``), with batches of 5 to 11 examples, output scales from 0.02
to 300 and the examples ordered so that the largest change is the last one's, so that an absolute
difference, another scale or only the first example each give a different number. The
references are computed here in float64 from the model's own float32 outputs.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ._core import ExerciseMistake, Wrong, call, cases, changed_note, checker, match

# ---------------------------------------------------------------------------------------------
# Exercise 13.1: Dense and convolution layers whose bias feeds BN directly
# ---------------------------------------------------------------------------------------------

BIAS_MESSAGES = {
    "top_level": (
        "You looked at the model's top-level layers only: the layers inside nested models are "
        "missing.",
        "a nested model is a layer of its parent: open it (model.layers of the nested model) and "
        "look inside, at every depth."),
    "within_models": (
        "You missed a bias that reaches BN across a nested model's boundary: the last layer of a "
        "nested model feeds the BN after the model, or a layer before a nested model feeds the BN "
        "that is its first layer.",
        "follow the tensors, not the lists of layers: a nested model passes its input straight to "
        "its first layer and returns what its last layer computes."),
    "names": (
        "You returned the layers' names; the exercise asks for their paths inside nested models.",
        "join the names of the nested models on the way down with '/': 'block/conv'."),
    "model_name": (
        "Your paths start with the name of the model you were given.",
        "paths start below that model: a layer of the model itself is just its name."),
    "through_activation": (
        "You counted a layer whose output reaches BN through an activation layer (ReLU, "
        "Activation, LeakyReLU): that bias is not redundant, the activation comes between.",
        "count only a layer whose output is the BN layer's input itself, nothing in between."),
    "any_bias": (
        "You counted layers built with use_bias=False.",
        "a layer without a bias has nothing redundant: check layer.use_bias."),
    "any_activation": (
        "You counted a layer with an activation of its own (Dense(..., activation='relu')): its "
        "output is after the non-linearity, so its bias is not redundant.",
        "count only layers whose activation is linear: layer.activation is "
        "keras.activations.linear."),
    "list_order": (
        "You took the layer listed just before each BN layer as its input; in a functional model "
        "with branches, the list of layers is not the graph.",
        "find the layer that actually computes the BN layer's input: record the tensors in a "
        "forward pass, or follow the graph's nodes."),
}


def _bias_models():
    """The four models of 13.1, each with its right answer and the known-wrong answers."""
    import keras

    L = keras.layers
    models = []

    # 1. a flat Sequential MLP
    keras.utils.set_random_seed(130)
    m = keras.Sequential([
        keras.Input((7,)),
        L.Dense(6, name="h1"), L.BatchNormalization(name="h1_bn"), L.ReLU(),
        L.Dense(5, use_bias=False, name="h2"), L.BatchNormalization(name="h2_bn"), L.ReLU(),
        L.Dense(5, activation="relu", name="h3"), L.BatchNormalization(name="h3_bn"),
        L.Dense(4, name="h4"), L.ReLU(name="h4_relu"), L.BatchNormalization(name="h4_bn"),
        L.Dense(3, name="logits")], name="mlp")
    models.append((m, {"h1"}, dict(
        any_bias={"h1", "h2"}, any_activation={"h1", "h3"}, through_activation={"h1", "h4"},
        model_name={"mlp/h1"})))

    # 2. a functional CNN with a Sequential block inside and a branch
    keras.utils.set_random_seed(131)
    block = keras.Sequential([
        keras.Input((10, 10, 4)),
        L.Conv2D(4, 3, padding="same", name="a"), L.BatchNormalization(name="a_bn"), L.ReLU(),
        L.Conv2D(4, 3, padding="same", name="b")], name="block")
    inputs = keras.Input((10, 10, 3))
    stem = L.Conv2D(4, 3, padding="same", name="stem")(inputs)
    stem = L.ReLU()(L.BatchNormalization(name="stem_bn")(stem))
    skip = L.Conv2D(4, 1, name="skip")(stem)
    skip = L.BatchNormalization(name="skip_bn")(L.Activation("relu", name="skip_relu")(skip))
    main = L.BatchNormalization(name="post_bn")(block(stem))
    pooled = L.GlobalAveragePooling2D()(L.Add()([main, skip]))
    head_a = L.Dense(4, name="fa2")(L.Dense(4, name="fa")(pooled))   # listed just before fb_bn
    head_b = L.BatchNormalization(name="fb_bn")(L.Dense(4, use_bias=False, name="fb")(pooled))
    outputs = L.Dense(2, name="out")(L.Concatenate()([head_a, head_b]))
    m = keras.Model(inputs, outputs, name="cnn")
    models.append((m, {"stem", "block/a", "block/b"}, dict(
        top_level={"stem"}, within_models={"stem", "block/a"}, names={"stem", "a", "b"},
        through_activation={"stem", "block/a", "block/b", "skip"},
        model_name={"cnn/stem", "cnn/block/a", "cnn/block/b"})))

    # 3. Conv1D on sequences: a Sequential holding a functional body holding a Sequential. (Not
    # channels_first: TensorFlow without oneDNN cannot run those convolutions on a CPU, and a
    # learner's forward pass must run everywhere.)
    keras.utils.set_random_seed(132)
    deep = keras.Sequential([
        keras.Input((12, 6)), L.Conv1D(6, 3, padding="same", name="deep_conv"),
        L.BatchNormalization(name="deep_bn"), L.ReLU()], name="deep")
    body_in = keras.Input((12, 6))
    h = L.BatchNormalization(name="body_bn")(body_in)
    h = L.Conv1D(6, 3, padding="same", use_bias=False, name="mix")(h)
    h = L.BatchNormalization(name="mix_bn")(h)
    body = keras.Model(body_in, deep(h), name="body")
    m = keras.Sequential([keras.Input((12, 4)), L.Conv1D(6, 3, padding="same", name="proj"),
                          body, L.Flatten(), L.Dense(3, name="logits")], name="seq")
    models.append((m, {"proj", "body/deep/deep_conv"}, dict(
        top_level=set(), within_models={"body/deep/deep_conv"},
        names={"proj", "deep_conv"}, any_bias={"proj", "body/deep/deep_conv", "body/mix"},
        model_name={"seq/proj", "seq/body/deep/deep_conv"})))

    # 4. a functional encoder inside a Sequential, its last Dense feeding the BN after it
    keras.utils.set_random_seed(133)
    enc_in = keras.Input((9,))
    e = L.Dense(8, name="u1")(enc_in)
    e = L.BatchNormalization(name="u1_bn")(e)
    e = L.Dense(8, name="u2")(L.ReLU()(e))
    encoder = keras.Model(enc_in, e, name="enc")
    m = keras.Sequential([
        keras.Input((9,)), encoder, L.BatchNormalization(name="after"), L.ReLU(),
        L.Dense(5, name="v"), L.LeakyReLU(name="v_act"), L.BatchNormalization(name="v_bn"),
        L.Dense(5, use_bias=False, name="w"), L.BatchNormalization(name="w_bn"),
        L.Dense(2, name="logits")], name="stack")
    models.append((m, {"enc/u1", "enc/u2"}, dict(
        top_level=set(), within_models={"enc/u1"}, names={"u1", "u2"},
        through_activation={"enc/u1", "enc/u2", "v"}, any_bias={"enc/u1", "enc/u2", "w"},
        model_name={"stack/enc/u1", "stack/enc/u2"})))
    return models


BIAS_CASES = (
    dict(model="flat Sequential MLP (Dense)"),
    dict(model="functional CNN, a Sequential block inside, a branch (Conv2D, channels last)"),
    dict(model="Sequential > functional > Sequential (Conv1D on sequences)"),
    dict(model="functional encoder inside a Sequential (Dense)"),
)


def _leaf_paths(model, prefix=""):
    """{path: layer} of every leaf layer inside ``model`` (nested models opened)."""
    import keras

    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            found.update(_leaf_paths(layer, path + "/"))
        else:
            found[path] = layer
    return found


def _list_order(model):
    """The answer of the "previous layer in the list" mistake: each BN layer's predecessor in
    the depth-first list of leaf layers, when it is a linear layer with a bias."""
    import keras

    linear = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
    leaves = list(_leaf_paths(model).items())
    found = set()
    for (path, layer), (_, after) in zip(leaves, leaves[1:]):
        if isinstance(after, keras.layers.BatchNormalization) and isinstance(layer, linear) \
                and layer.use_bias and layer.activation is keras.activations.linear:
            found.add(path)
    return found


def _as_paths(got, case):
    __tracebackhide__ = True
    if got is None:
        raise ExerciseMistake(f"In {case}: bias_before_bn returned None.",
                              "did you forget a `return` statement?")
    if isinstance(got, str) or not hasattr(got, "__iter__"):
        raise ExerciseMistake(
            f"In {case}: bias_before_bn returned a {type(got).__name__}; expected a set (or list) "
            "of paths.", "collect the paths in a set and return it.")
    items = list(got)
    if not all(isinstance(item, str) for item in items):
        kinds = sorted({type(item).__name__ for item in items if not isinstance(item, str)})
        raise ExerciseMistake(
            f"In {case}: bias_before_bn's result holds {', '.join(kinds)} items; expected paths "
            "(strings).", "return each layer's path, e.g. 'block/conv', not the layer itself.")
    return set(items)


@checker("13.1")
def bias_before_bn(fn):
    """Check ``bias_before_bn(model) -> set of paths``."""
    __tracebackhide__ = True
    from .. import doctor

    for case, (model, want, wrong) in zip(cases(*BIAS_CASES), _bias_models()):
        got = call(fn, model, what="bias_before_bn", case=case,
                   refuse=(doctor.examine, doctor._graph_calls, doctor._graph_rules),
                   hint="walk the model's layers, opening nested models, and find the layer that "
                        "computes each BN layer's input.")
        got = _as_paths(got, case)
        if got == want:
            continue
        wrong = dict(wrong, list_order=_list_order(model))
        for how in ("top_level", "within_models", "names", "model_name", "through_activation",
                    "any_bias", "any_activation", "list_order"):
            if how in wrong and wrong[how] != want and got == wrong[how]:
                raise ExerciseMistake(f"In {case}: " + BIAS_MESSAGES[how][0],
                                      BIAS_MESSAGES[how][1])
        leaves = _leaf_paths(model)
        extra = sorted(got - want)
        kinds = sorted({type(leaves[p]).__name__ if p in leaves else "not a layer's path"
                        for p in extra})
        parts = []
        if want - got:
            parts.append(f"misses {len(want - got)} of the {len(want)} layers")
        if extra:
            parts.append(f"lists {len(extra)} that do not belong ({', '.join(kinds)})")
        raise ExerciseMistake(
            f"In {case}: your result " + " and ".join(parts) + ". That matches no mistake this "
            "check knows.",
            "for each BN layer, which layer computes its input? Count it only if it is a Dense or "
            "Conv1D/2D/3D with use_bias=True and a linear activation.")
    return ("finds every redundant bias in 4 models: Sequential and functional, nested up to 3 "
            "deep, across model boundaries, Dense, Conv1D and Conv2D")


# ---------------------------------------------------------------------------------------------
# Exercise 13.2: how much an example's inference-mode output depends on its batch
# ---------------------------------------------------------------------------------------------

DEPENDENCE_MESSAGES = {
    "training": (
        "You compared the outputs in training mode: there BN always uses the batch's statistics "
        "(a batch of one normalises every value to beta), and each call moves the moving "
        "statistics.",
        "call the model with training=False: the question is whether inference depends on the "
        "batch."),
    "modified": (
        "Your function changed the model's variables (its moving statistics): a check-up must "
        "leave the model as it was.",
        "call the model with training=False only; never with training=True, never .assign."),
    "absolute": (
        "You returned the absolute difference; the definition divides each example's change by "
        "the size of its output inside the batch.",
        "divide max |alone - inside| by max |inside| for each example, then take the largest."),
    "first_only": (
        "You measured the first example only.",
        "run every example alone, compare each one with its row inside the batch, and return "
        "the largest relative change."),
    "global_scale": (
        "You divided by the largest output of the whole batch; the definition divides each "
        "example's change by its own output's scale.",
        "the denominator is max |inside_i|, the example's own output inside the batch."),
    "alone_scale": (
        "You divided by the example's output alone; the definition divides by its output inside "
        "the batch.",
        "the denominator is max |inside_i|."),
    "elementwise": (
        "You divided element by element (|alone - inside| / |inside| per output value): an "
        "output near 0 blows that up.",
        "divide the example's largest absolute change by its largest absolute output."),
    "mean": (
        "You averaged over the examples; the definition takes the largest change.",
        "return the maximum of the examples' relative changes."),
    "norm": (
        "You used a Euclidean norm of the change; the definition uses the largest absolute "
        "value (max |.|) of the change and of the output.",
        "use np.max(np.abs(...)) for both the change and the scale."),
}


def _dependence_models():
    """The models of 13.2 (seeded), in the order of DEPENDENCE_CASES."""
    import keras
    from keras import ops

    L = keras.layers

    class BatchCentre(L.Layer):
        def call(self, inputs):
            return inputs - ops.mean(inputs, axis=0, keepdims=True)

    class BatchStatisticsBN(L.BatchNormalization):
        def call(self, inputs, training=None, mask=None):
            mean, variance = ops.mean(inputs, axis=0), ops.var(inputs, axis=0)
            return self.gamma * (inputs - mean) / ops.sqrt(variance + self.epsilon) + self.beta

    class AlwaysTraining(L.Layer):
        """Dense -> BN, the BN called with training=True whatever the layer is told."""

        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.dense = L.Dense(units, use_bias=False)
            self.norm = L.BatchNormalization()

        def call(self, inputs, training=None):
            return self.norm(self.dense(inputs), training=True)

    def prepared(model, scale, seed):
        """Biases, betas and moving statistics away from their initial values (as after
        training), the logits multiplied by ``scale``."""
        rng = np.random.default_rng(seed)
        for variable in model.variables:
            shape = tuple(variable.shape)
            if variable.name in ("bias", "beta", "moving_mean"):
                variable.assign(rng.normal(0, 0.5, shape).astype(np.float32))
            elif variable.name == "moving_variance":
                variable.assign(rng.uniform(0.5, 2.0, shape).astype(np.float32))
        last = model.layers[-1]
        last.kernel.assign(last.kernel * scale)
        return model

    out = []
    keras.utils.set_random_seed(140)
    out.append(prepared(keras.Sequential([
        keras.Input((6,)), L.Dense(8, use_bias=False), L.BatchNormalization(), L.ReLU(),
        L.Dense(4)]), 40.0, 1))

    keras.utils.set_random_seed(141)
    inputs = keras.Input((7,))
    h = AlwaysTraining(9)(inputs)
    out.append(prepared(keras.Model(inputs, L.Dense(3)(L.ReLU()(h))), 0.02, 2))

    keras.utils.set_random_seed(142)
    inner = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(3, 3, padding="same"),
                              BatchCentre(), L.ReLU()], name="inner")
    inputs = keras.Input((6, 6, 2))
    x = L.Concatenate()([L.Flatten()(inner(inputs)), L.Flatten()(inputs)])
    out.append(prepared(keras.Model(inputs, L.Dense(5)(x)), 3.0, 3))

    keras.utils.set_random_seed(143)
    out.append(prepared(keras.Sequential([
        keras.Input((5, 5, 3)), L.Conv2D(4, 3, use_bias=False), L.BatchNormalization(),
        L.ReLU(), L.Flatten(), L.Dense(4)]), 0.5, 4))

    keras.utils.set_random_seed(144)
    out.append(prepared(keras.Sequential([
        keras.Input((4,)), L.Dense(6, use_bias=False), BatchStatisticsBN(), L.ReLU(),
        L.Dense(3)]), 300.0, 5))
    return out


DEPENDENCE_CASES = (
    dict(model="healthy dense BN net", batch=6, output_scale=40.0),
    dict(model="custom layer calling BN with training=True", batch=8, output_scale=0.02),
    dict(model="nested custom layer subtracting the batch mean (Conv2D)", batch=5,
         output_scale=3.0),
    dict(model="healthy convolutional BN net", batch=7, output_scale=0.5),
    dict(model="BN subclass that ignores training", batch=11, output_scale=300.0),
)


def _inputs(model, batch, seed):
    shape = (batch, *model.inputs[0].shape[1:])
    rng = np.random.default_rng(seed)
    # examples of different sizes, so that the relative change differs from example to example
    scale = rng.uniform(0.5, 3.0, (batch,) + (1,) * (len(shape) - 1))
    return (rng.normal(size=shape) * scale + rng.normal(0, 0.5, shape)).astype(np.float32)


def _outputs(model, x, training):
    inside = np.asarray(model(x, training=training), np.float64)
    alone = np.concatenate([np.asarray(model(x[i:i + 1], training=training), np.float64)
                            for i in range(len(x))])
    return alone, inside


def _dependence(alone, inside, how="right"):
    axes = tuple(range(1, inside.ndim))
    change = np.abs(alone - inside)
    if how == "elementwise":
        with np.errstate(all="ignore"):
            return float(np.max(change / np.abs(inside)))
    if how == "norm":
        flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
        per = np.linalg.norm(flat(alone - inside), axis=1) / np.linalg.norm(flat(inside), axis=1)
        return float(per.max())
    numerator = change.max(axis=axes)
    scale = {"absolute": np.ones(len(inside)), "global_scale": np.full(len(inside),
                                                                        np.abs(inside).max()),
             "alone_scale": np.abs(alone).max(axis=axes)}.get(how, np.abs(inside).max(axis=axes))
    per_example = numerator / scale
    if how == "first_only":
        return float(per_example[0])
    if how == "mean":
        return float(per_example.mean())
    return float(per_example.max())


@checker("13.2")
def batch_dependence(fn):
    """Check ``batch_dependence(model, x) -> float``."""
    __tracebackhide__ = True
    from .. import doctor

    for index, (case, model) in enumerate(zip(cases(*DEPENDENCE_CASES), _dependence_models())):
        x = _inputs(model, case.batch, seed=150 + index)
        start = [v.numpy().copy() for v in model.variables]
        alone, inside = _outputs(model, x, training=False)
        axes = tuple(range(1, inside.ndim))
        per_example = np.abs(alone - inside).max(axis=axes) / np.abs(inside).max(axis=axes)
        x = x[np.argsort(per_example)]          # the largest change last, never first
        alone, inside = _outputs(model, x, training=False)
        want = _dependence(alone, inside)
        # a BN called with training=True inside the model moves its statistics at inference too
        moving = [not np.array_equal(v.numpy(), s) for v, s in zip(model.variables, start)]
        for variable, saved in zip(model.variables, start):
            variable.assign(saved)
        got = call(fn, model, x.copy(), what="batch_dependence", case=case,
                   refuse=(doctor.examine, doctor._relative_difference, doctor._measured_rules),
                   hint="call the model on each example alone and on the whole batch, both with "
                        "training=False.")
        changed = any(not np.array_equal(v.numpy(), s) and not moves
                      for v, s, moves in zip(model.variables, start, moving))
        if np.size(got) != 1 or isinstance(got, (list, tuple, dict)):
            raise ExerciseMistake(
                f"In {case}: batch_dependence returned {np.size(got)} numbers; expected one.",
                "return the largest relative change over the examples, as a Python float.")
        try:
            value = float(np.asarray(got).reshape(()))
        except (TypeError, ValueError):
            raise ExerciseMistake(f"In {case}: batch_dependence returned a "
                                  f"{type(got).__name__}, not a number.",
                                  "return a Python float.") from None
        if changed:
            for variable, saved in zip(model.variables, start):
                variable.assign(saved)
            training = _dependence(*_outputs(model, x, training=True))
            for variable, saved in zip(model.variables, start):
                variable.assign(saved)
            if np.isclose(value, training, rtol=1e-3, atol=1e-4):
                raise ExerciseMistake(f"In {case}: " + DEPENDENCE_MESSAGES["training"][0],
                                      DEPENDENCE_MESSAGES["training"][1])
            raise ExerciseMistake(f"In {case}: " + DEPENDENCE_MESSAGES["modified"][0],
                                  DEPENDENCE_MESSAGES["modified"][1])
        wrong = [Wrong(partial(_dependence, alone, inside, how), *DEPENDENCE_MESSAGES[how])
                 for how in ("absolute", "first_only", "global_scale", "alone_scale",
                             "elementwise", "mean", "norm")]
        selftest = ("on a healthy BN model your function should return about 0 (below 1e-5); on "
                    "one that normalises with batch statistics at inference, clearly more.")
        try:
            match(value, want, wrong=wrong, case=case, name="batch_dependence's result",
                  atol=1e-4, rtol=1e-3, selftest=selftest)
        except ExerciseMistake as mistake:
            if "matches no mistake" not in mistake.mistake:
                raise
            # _core's locating message gives the distance, which for one number is the answer
            side = "larger" if value > want else "smaller"
            raise ExerciseMistake(
                f"In {case}: batch_dependence's result is {side} than the right one"
                f"{changed_note(case)}. That matches no mistake this check knows.",
                selftest) from None
    return ("matches in 5 cases: 2 healthy models near 0, 3 that normalise with batch statistics "
            "at inference (a custom layer calling BN with training=True, a nested custom layer, "
            "a BN subclass), batches of 5 to 11, output scales 0.02 to 300")
