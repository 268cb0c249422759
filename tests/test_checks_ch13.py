"""Chapter 13's checkers: the solutions pass, right answers written another way pass, stubs are
"not done", every known mistake is named, and a solution that calls the book's doctor is refused."""

import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import bnbook
from bnbook.checks import ch13 as check
from bnbook.checks._core import ExerciseMistake


def stub(*args, **kwargs):
    raise NotImplementedError("your code here")


def passes(capsys, checker, fn, label):
    checker(fn)
    assert capsys.readouterr().out.startswith(f"✓ Exercise {label} passed")


# ---- 13.1: bias_before_bn(model) -> set of paths ----------------------------------------------

LINEAR = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
ACTIVATIONS = (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU)


def leaves(model, prefix=""):
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = prefix + layer.name
        if isinstance(layer, keras.Model):
            yield from leaves(layer, path + "/")
        else:
            yield path, layer


def edges(model, top_level=False):
    """(producer path, producer, consumer path, consumer) for every leaf layer's input, recorded
    in one eager forward pass (the solution's way); ``top_level``: nested models are leaves."""
    made, fed, saved = [], [], []
    items = [(layer.name, layer) for layer in model.layers
             if not isinstance(layer, keras.layers.InputLayer)] if top_level else list(leaves(model))
    for path, layer in items:
        def call(inputs, *args, _own=layer.call, _path=path, _layer=layer, **kwargs):
            outputs = _own(inputs, *args, **kwargs)
            fed.append((_path, _layer, inputs))
            made.append((_path, _layer, outputs))
            return outputs
        layer.call = call
        saved.append(layer)
    try:
        model(np.zeros((2, *model.inputs[0].shape[1:]), np.float32))
    finally:
        for layer in saved:
            del layer.call
    found = []
    for c_path, consumer, inputs in fed:
        for p_path, producer, outputs in made:
            if outputs is inputs:
                found.append((p_path, producer, c_path, consumer))
    return found


def bias_before_bn(model, how="right"):
    """The solution's approach, and (through `how`) the mistakes learners make."""
    pairs = edges(model, top_level=how == "top_level")
    if how == "through_activation":
        feeds = {c: (p, producer) for p, producer, c, _ in pairs}
        pairs = pairs + [(feeds[p][0], feeds[p][1], c, consumer) for p, producer, c, consumer
                         in pairs if isinstance(producer, ACTIVATIONS) and p in feeds]
    if how == "within_models":
        pairs = [e for e in pairs if e[0].rpartition("/")[0] == e[2].rpartition("/")[0]]
    found = set()
    for p_path, producer, _, consumer in pairs:
        if not isinstance(consumer, keras.layers.BatchNormalization):
            continue
        if not isinstance(producer, LINEAR):
            continue
        if not producer.use_bias and how != "any_bias":
            continue
        if producer.activation is not keras.activations.linear and how != "any_activation":
            continue
        found.add({"names": p_path.rpartition("/")[2],
                   "model_name": f"{model.name}/{p_path}"}.get(how, p_path))
    return found


def _graph(net):
    return net._functional if isinstance(net, keras.Sequential) else net


def bias_before_bn_by_nodes(model):
    """A right answer written another way: the graphs' nodes, no forward pass."""
    found = set()

    def producer_of(tensor, prefix, callers):
        op = tensor._keras_history.operation
        if isinstance(op, keras.layers.InputLayer):       # the nested model's input: go out
            if not callers:
                return None, None
            (outer, outer_prefix), rest = callers[-1], callers[:-1]
            return producer_of(outer, outer_prefix, rest)
        if isinstance(op, keras.Model):                   # a nested model: its output's maker
            return producer_of(_graph(op).outputs[0], f"{prefix}{op.name}/", callers)
        return op, prefix + op.name

    def visit(net, prefix, callers):
        graph = _graph(net)
        own = {id(n) for nodes in graph._nodes_by_depth.values() for n in nodes}
        for layer in net.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            node = next(n for n in layer._inbound_nodes if id(n) in own)
            tensor = node.input_tensors[0]
            if isinstance(layer, keras.Model):
                visit(layer, f"{prefix}{layer.name}/", callers + [(tensor, prefix)])
            elif isinstance(layer, keras.layers.BatchNormalization):
                producer, path = producer_of(tensor, prefix, callers)
                if isinstance(producer, LINEAR) and producer.use_bias and \
                        producer.activation is keras.activations.linear:
                    found.add(path)

    visit(model, "", [])
    return found


def test_13_1_solution_passes(capsys):
    passes(capsys, check.bias_before_bn, bias_before_bn, "13.1")


def test_13_1_other_right_answers_pass(capsys):
    passes(capsys, check.bias_before_bn, bias_before_bn_by_nodes, "13.1")
    passes(capsys, check.bias_before_bn, lambda m: sorted(bias_before_bn(m)), "13.1")
    passes(capsys, check.bias_before_bn, lambda m: tuple(bias_before_bn(m)), "13.1")


def test_13_1_stub_is_not_done(capsys):
    check.bias_before_bn(stub)
    assert "Exercise 13.1 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("how,message", [
    ("top_level", "top-level layers only"),
    ("within_models", "across a nested model's boundary"),
    ("names", "layers' names"),
    ("model_name", "start with the name of the model"),
    ("through_activation", "through an activation layer"),
    ("any_bias", "use_bias=False"),
    ("any_activation", "activation of its own"),
])
def test_13_1_mistakes_are_named(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.bias_before_bn(lambda model: bias_before_bn(model, how))


def test_13_1_list_order_is_named():
    def previous_in_list(model):
        items = list(leaves(model))
        return {p for (p, layer), (_, after) in zip(items, items[1:])
                if isinstance(after, keras.layers.BatchNormalization) and isinstance(layer, LINEAR)
                and layer.use_bias and layer.activation is keras.activations.linear}
    with pytest.raises(ExerciseMistake, match="list of layers is not the graph"):
        check.bias_before_bn(previous_in_list)


def test_13_1_hard_coded_and_bad_types():
    with pytest.raises(ExerciseMistake, match="misses 1 of the 3.*lists 1 that do not belong"):
        check.bias_before_bn(lambda model: {"h1"} if model.name == "mlp" else {"stem", "block/a",
                                                                               "h1"})
    with pytest.raises(ExerciseMistake, match="paths"):
        check.bias_before_bn(lambda model: [model.layers[0]])
    with pytest.raises(ExerciseMistake, match="returned None"):
        check.bias_before_bn(lambda model: None)
    with pytest.raises(ExerciseMistake, match="returned a str"):
        check.bias_before_bn(lambda model: "h1")


def test_13_1_the_doctor_is_refused():
    def with_doctor(model):
        return {f.evidence["producer"] for f in bnbook.examine(model).by_rule("bias-before-bn")}
    with pytest.raises(ExerciseMistake, match="calls the book's own `bnbook.doctor"):
        check.bias_before_bn(with_doctor)


# ---- 13.2: batch_dependence(model, x) -> float -------------------------------------------------

def batch_dependence(model, x, how="right"):
    """The solution, and (through `how`) the mistakes learners make."""
    training = how in ("training", "modified")
    inside = np.asarray(model(x, training=training), np.float64)
    changes, scales, alones = [], [], []
    for i in range(len(x)):
        alone = np.asarray(model(x[i:i + 1], training=training), np.float64)[0]
        alones.append(alone)
        changes.append(np.max(np.abs(alone - inside[i])))
        scales.append(np.max(np.abs(inside[i])))
    if how == "modified":           # a right formula, but the model's statistics were moved first
        inside = np.asarray(model(x, training=False), np.float64)
        changes = [np.max(np.abs(np.asarray(model(x[i:i + 1], training=False))[0] - inside[i]))
                   for i in range(len(x))]
    changes, scales = np.array(changes), np.array(scales)
    if how == "absolute":
        return float(changes.max())
    if how == "first_only":
        return float(changes[0] / scales[0])
    if how == "global_scale":
        return float(changes.max() / np.abs(inside).max())
    if how == "alone_scale":
        return float(np.max(changes / np.array([np.max(np.abs(a)) for a in alones])))
    if how == "mean":
        return float(np.mean(changes / scales))
    if how == "elementwise":
        return float(np.max(np.abs(np.array(alones) - inside) / np.abs(inside)))
    if how == "norm":
        a, b = np.array(alones).reshape(len(x), -1), inside.reshape(len(x), -1)
        return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))
    return float(np.max(changes / scales))


def batch_dependence_tf(model, x):
    """A right answer written another way: TensorFlow, all examples alone in one map_fn-free
    stack, float32 throughout."""
    inside = model(tf.constant(x), training=False)
    alone = tf.concat([model(x[i:i + 1], training=False) for i in range(x.shape[0])], axis=0)
    axes = list(range(1, len(inside.shape)))
    per = tf.reduce_max(tf.abs(alone - inside), axis=axes) / tf.reduce_max(tf.abs(inside),
                                                                           axis=axes)
    return tf.reduce_max(per)


def test_13_2_solution_passes(capsys):
    passes(capsys, check.batch_dependence, batch_dependence, "13.2")


def test_13_2_other_right_answers_pass(capsys):
    passes(capsys, check.batch_dependence, batch_dependence_tf, "13.2")
    passes(capsys, check.batch_dependence,
           lambda m, x: np.float32(batch_dependence(m, x)), "13.2")
    passes(capsys, check.batch_dependence,
           lambda m, x: batch_dependence(lambda t, training: m.predict(t, verbose=0), x), "13.2")


def test_13_2_stub_is_not_done(capsys):
    check.batch_dependence(stub)
    assert "Exercise 13.2 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("how,message", [
    ("training", "in training mode"),
    ("modified", "changed the model's variables"),
    ("absolute", "absolute difference"),
    ("first_only", "first example only"),
    ("global_scale", "whole batch"),
    ("alone_scale", "output alone"),
    ("elementwise", "element by element"),
    ("mean", "averaged over the examples"),
    ("norm", "Euclidean norm"),
])
def test_13_2_mistakes_are_named(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.batch_dependence(lambda model, x: batch_dependence(model, x, how))


def test_13_2_bad_returns():
    with pytest.raises(ExerciseMistake, match="expected one"):
        check.batch_dependence(lambda model, x: np.zeros(len(x)))
    with pytest.raises(ExerciseMistake, match="not a number"):
        check.batch_dependence(lambda model, x: "zero")
    with pytest.raises(ExerciseMistake, match="matches no mistake"):
        check.batch_dependence(lambda model, x: 0.5)


def test_13_2_hard_coded_answers_are_located():
    with pytest.raises(ExerciseMistake, match="case 2 of 5.*case 1 passed"):
        check.batch_dependence(lambda model, x: 0.0)


def test_13_2_the_doctor_is_refused():
    def with_doctor(model, x):
        report = bnbook.examine(model, x)
        hits = report.by_rule("batch-dependent-inference")
        return hits[0].evidence["max_relative_difference"] if hits else 0.0
    with pytest.raises(ExerciseMistake, match="calls the book's own `bnbook.doctor"):
        check.batch_dependence(with_doctor)


@pytest.mark.parametrize("checker,fn", [(check.bias_before_bn, bias_before_bn),
                                        (check.batch_dependence, batch_dependence)])
def test_each_check_answers_within_a_second(capsys, checker, fn):
    checker(fn)                                       # warm up (first Keras calls trace)
    start = time.perf_counter()
    checker(fn)
    assert time.perf_counter() - start < 2.0          # 1 s on an idle machine; room for load
