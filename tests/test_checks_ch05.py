"""Chapter 5 checkers: each accepts the solution and right answers written another way, says "not
done yet" for the stub, and rejects plausible wrong answers (hard-coded scope, decay, epsilon,
variable counts included) with the message meant for them."""

import numpy as np
import pytest
import tensorflow as tf

from bnbook.checks import ExerciseMistake
from bnbook.checks import ch05 as check
from bnbook.lessons.tf1_graphs import bn_variables

tf1 = tf.compat.v1
LOCATED = "matches no mistake this check knows"


def stub(*args, **kwargs):
    raise NotImplementedError("your code here")


# ---- 5.1: train_op_with_updates(loss, optimizer, graph, scope) --------------------------------

def train_op(loss, optimizer, graph, scope):
    update_ops = graph.get_collection(tf1.GraphKeys.UPDATE_OPS, scope)
    with graph.control_dependencies(update_ops):
        return optimizer.minimize(loss)


def train_op_group(loss, optimizer, graph, scope):
    return tf.group(optimizer.minimize(loss), *tf1.get_collection(tf1.GraphKeys.UPDATE_OPS, scope))


def train_op_filter(loss, optimizer, graph, scope):
    mine = [op for op in graph.get_collection(tf1.GraphKeys.UPDATE_OPS)
            if op.name.startswith(scope + "/")]
    with tf.control_dependencies(mine):
        step = optimizer.minimize(loss)
    return step


def train_op_with(form):
    def fn(loss, optimizer, graph, scope):
        scoped = graph.get_collection(tf1.GraphKeys.UPDATE_OPS, scope)
        every = graph.get_collection(tf1.GraphKeys.UPDATE_OPS)
        if form == "none":
            return optimizer.minimize(loss)
        if form == "before":
            step = optimizer.minimize(loss)
            with graph.control_dependencies(scoped):
                return step
        if form == "all":
            with graph.control_dependencies(every):
                return optimizer.minimize(loss)
        if form == "updates_only":
            return tf.group(*scoped)
        if form == "first":
            with graph.control_dependencies(scoped[:1]):
                return optimizer.minimize(loss)
        if form == "not_other":  # leaves out the other model by the name it has in case 1
            with graph.control_dependencies([op for op in every
                                             if not op.name.startswith("other/")]):
                return optimizer.minimize(loss)
        if form == "hard_scope":
            with graph.control_dependencies(graph.get_collection(tf1.GraphKeys.UPDATE_OPS,
                                                                 "model")):
                return optimizer.minimize(loss)
        if form == "own_optimizer":
            with graph.control_dependencies(scoped):
                return tf1.train.GradientDescentOptimizer(0.05).minimize(loss)
        if form == "two_steps":
            with graph.control_dependencies(scoped):
                return tf.group(optimizer.minimize(loss), optimizer.minimize(loss))
        if form == "list":
            return [optimizer.minimize(loss), *scoped]
        if form == "session":
            return np.float32(0.0)
        if form == "new_graph":
            with tf.Graph().as_default():
                return tf.no_op()
        raise AssertionError(form)
    return fn


RIGHT_5_1 = [train_op, train_op_group, train_op_filter]
WRONG_5_1 = [
    (train_op_with("none"), "Update ops not run"),
    (train_op_with("before"), "Update ops not run"),
    (train_op_with("all"), "also ran the other model's update ops"),
    (train_op_with("updates_only"), "The weights did not change"),
    (train_op_with("first"), "Only the first update op ran"),
    (train_op_with("hard_scope"), r"In case 2 of 3.*|Update ops not run"),
    (train_op_with("not_other"), r"also ran the other model's update ops.*\nHint: keep only this "
                                 r"model's, by the `scope`"),
    (train_op_with("own_optimizer"), r"In case 2 of 3 .*changes scope, .*optimizer.*" + LOCATED),
    (train_op_with("two_steps"), r"In case 1 of 3 .*your model/bn0/moving_mean is wrong .*" + LOCATED),
    (train_op_with("list"), "is a Python list, not a single op"),
    (train_op_with("session"), "value, not a graph op"),
    (train_op_with("new_graph"), "belongs to another graph"),
]


# ---- 5.2: batch_norm_switch(x, is_training, decay, epsilon, name) -----------------------------

def switch(x, is_training, decay=0.99, epsilon=1e-3, name="bn"):
    gamma, beta, moving_mean, moving_variance = bn_variables(x.shape[-1], name)
    batch_mean, batch_variance = tf.nn.moments(x, axes=[0])

    def training_branch():
        update_mean = tf1.assign_sub(moving_mean, (moving_mean - batch_mean) * (1 - decay))
        update_variance = tf1.assign_sub(moving_variance,
                                         (moving_variance - batch_variance) * (1 - decay))
        with tf.control_dependencies([update_mean, update_variance]):
            return tf.identity(batch_mean), tf.identity(batch_variance)

    mean, variance = tf.cond(is_training, training_branch,
                             lambda: (tf.identity(moving_mean), tf.identity(moving_variance)))
    return tf.nn.batch_normalization(x, mean, variance, beta, gamma, epsilon)


def switch_moments_inside(x, is_training, decay=0.99, epsilon=1e-3, name="bn"):
    gamma, beta, moving_mean, moving_variance = bn_variables(x.shape[-1], name)

    def training_branch():
        mean, variance = tf.nn.moments(x, axes=[0])
        updates = [moving_mean.assign(decay * moving_mean + (1 - decay) * mean),
                   moving_variance.assign(decay * moving_variance + (1 - decay) * variance)]
        with tf.control_dependencies(updates):
            return mean + 0.0, variance + 0.0

    mean, variance = tf.cond(is_training, training_branch,
                             lambda: (moving_mean.read_value(), moving_variance.read_value()))
    return gamma * (x - mean) / tf.sqrt(variance + epsilon) + beta


def switch_with(form="right", decay_fixed=None, eps_fixed=None):
    def fn(x, is_training, decay=0.99, epsilon=1e-3, name="bn"):
        decay = decay if decay_fixed is None else decay_fixed
        epsilon = epsilon if eps_fixed is None else eps_fixed
        gamma, beta, moving_mean, moving_variance = bn_variables(x.shape[-1], name)
        batch_mean, batch_variance = tf.nn.moments(x, axes=[0])
        if form == "python_if":
            if is_training:
                pass

        def updates(var_for_update=batch_variance):
            if form == "swapped":
                return [moving_mean.assign(decay * batch_mean + (1 - decay) * moving_mean),
                        moving_variance.assign(decay * var_for_update + (1 - decay) * moving_variance)]
            if form == "mean_only":
                return [tf1.assign_sub(moving_mean, (moving_mean - batch_mean) * (1 - decay))]
            return [tf1.assign_sub(moving_mean, (moving_mean - batch_mean) * (1 - decay)),
                    tf1.assign_sub(moving_variance,
                                   (moving_variance - var_for_update) * (1 - decay))]

        if form == "outside":
            ops = updates()
            with tf.control_dependencies(ops):
                mean, variance = tf.cond(is_training, lambda: (batch_mean + 0, batch_variance + 0),
                                         lambda: (moving_mean + 0, moving_variance + 0))
        elif form == "update_ops":
            for op in updates():
                tf1.add_to_collection(tf1.GraphKeys.UPDATE_OPS, op)
            mean, variance = tf.cond(is_training, lambda: (batch_mean, batch_variance),
                                     lambda: (tf.identity(moving_mean), tf.identity(moving_variance)))
        else:
            def training_branch():
                n = tf.cast(tf.shape(x)[0], tf.float32)
                ops = updates(batch_variance * n / (n - 1) if form == "unbiased" else batch_variance)
                with tf.control_dependencies(ops):
                    if form == "no_identity":
                        return batch_mean, batch_variance
                    if form == "moving_in_training":
                        return tf.identity(moving_mean), tf.identity(moving_variance)
                    return tf.identity(batch_mean), tf.identity(batch_variance)

            def inference_branch():
                if form == "batch_at_inference":
                    return tf.identity(batch_mean), tf.identity(batch_variance)
                return tf.identity(moving_mean), tf.identity(moving_variance)

            if form == "branches_swapped":
                mean, variance = tf.cond(is_training, inference_branch, training_branch)
            else:
                mean, variance = tf.cond(is_training, training_branch, inference_branch)
        if form == "no_scale":
            return tf.nn.batch_normalization(x, mean, variance, None, None, epsilon)
        if form == "op":
            return tf.group(tf.nn.batch_normalization(x, mean, variance, beta, gamma, epsilon))
        return tf.nn.batch_normalization(x, mean, variance, beta, gamma, epsilon)
    return fn


RIGHT_5_2 = [switch, switch_moments_inside]
WRONG_5_2 = [
    (switch_with("no_identity"), r"Update ops not run.*\nHint: what true_fn returns must be "
                                 r"created INSIDE"),
    (switch_with("update_ops"), r"Update ops not run.*put them into UPDATE_OPS"),
    (switch_with("outside"), "Updates run at inference"),
    (switch_with("swapped"), "decay is used the wrong way round"),
    (switch_with("mean_only"), "Only the moving mean was updated"),
    (switch_with("moving_in_training"), "normalises with the freshly updated moving"),
    (switch_with("batch_at_inference"), "In inference mode your layer normalises with the batch"),
    (switch_with("no_scale"), "ignores gamma and beta"),
    (switch_with("branches_swapped"), r"The branches of tf.cond are swapped.*\nHint: "
                                      r"tf.cond\(pred, true_fn, false_fn\) runs true_fn"),
    (switch_with("unbiased"), "unbiased batch"),
    (switch_with(decay_fixed=0.99), "decay 0.99 \\(the default\\)"),
    (switch_with(eps_fixed=1e-3), "epsilon 1e-3 \\(the default\\)"),
    (switch_with("python_if"), "A Python `if` on the is_training placeholder"),
    (switch_with("op"), "is an op, not the normalised tensor"),
    (switch_with(decay_fixed=0.5), r"In case 1 of 3 .*" + LOCATED),
]


# ---- 5.3: inference_saver(graph, optimizer) ---------------------------------------------------

def saver(graph, optimizer):
    optimizer_variables = optimizer.variables()
    return tf1.train.Saver(var_list=[v for v in tf1.global_variables()
                                     if v not in optimizer_variables])


def saver_by_name(graph, optimizer):
    slots = {v.op.name for v in optimizer.variables()}
    return tf1.train.Saver({v.op.name: v for v in graph.get_collection(
        tf1.GraphKeys.GLOBAL_VARIABLES) if v.op.name not in slots})


def saver_model_variables(graph, optimizer):
    moving = [v for v in tf1.global_variables() if "moving_" in v.op.name]
    return tf1.train.Saver(var_list=tf1.trainable_variables() + moving)


def saver_with(form):
    def fn(graph, optimizer):
        every = tf1.global_variables()
        return {
            "all": lambda: tf1.train.Saver(),
            "trainable": lambda: tf1.train.Saver(var_list=tf1.trainable_variables()),
            "first_six": lambda: tf1.train.Saver(var_list=every[:6]),
            "no_w_out": lambda: tf1.train.Saver(var_list=[v for v in every if "moving" in v.op.name
                                                         or "bn" in v.op.name]),
            "momentum_only": lambda: tf1.train.Saver(var_list=[v for v in every
                                                              if "Momentum" not in v.op.name]),
            "new_graph": lambda: _other_graph_saver(),
            "none": lambda: None,
            "list": lambda: every,
        }[form]()
    return fn


def _other_graph_saver():
    with tf.Graph().as_default():
        tf1.Variable(1.0)
        return tf1.train.Saver()


RIGHT_5_3 = [saver, saver_by_name, saver_model_variables]
WRONG_5_3 = [
    (saver_with("all"), "holds every global variable, the optimizer's slot variables included"),
    (saver_with("trainable"), "trainable variables only: the moving statistics are missing"),
    (saver_with("first_six"), r"In case 2 of 3 .*lacks .* variable"),
    (saver_with("no_w_out"), r"In case 1 of 3 .*lacks 2 variable\(s\)"),
    (saver_with("momentum_only"), "holds every global variable"),  # case 2: Adam
    (saver_with("new_graph"), "saving with your Saver raised"),
    (saver_with("none"), "Your result is None"),
    (saver_with("list"), "is a list, not a Saver"),
]


# ---- the tests --------------------------------------------------------------------------------

CHECKS = {"5.1": (check.train_op_with_updates, RIGHT_5_1, WRONG_5_1),
          "5.2": (check.batch_norm_switch, RIGHT_5_2, WRONG_5_2),
          "5.3": (check.inference_saver, RIGHT_5_3, WRONG_5_3)}
RIGHT = [(label, fn) for label, (_, right, _) in CHECKS.items() for fn in right]
WRONG = [(label, fn, message) for label, (_, _, wrong) in CHECKS.items() for fn, message in wrong]


@pytest.mark.parametrize("label", CHECKS)
def test_stub_is_not_done(label, capsys):
    assert CHECKS[label][0](stub) is None
    assert f"Exercise {label} is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("label, fn", RIGHT, ids=[f"{lab}-{fn.__name__}" for lab, fn in RIGHT])
def test_right_answers_pass(label, fn, capsys):
    CHECKS[label][0](fn)
    assert capsys.readouterr().out.startswith(f"✓ Exercise {label} passed")


@pytest.mark.parametrize("label, fn, message", WRONG,
                         ids=[f"{lab}-{i}" for i, (lab, _, _) in enumerate(WRONG)])
def test_wrong_answers_are_rejected_with_their_message(label, fn, message):
    with pytest.raises(ExerciseMistake, match=message) as info:
        CHECKS[label][0](fn)
    text = str(info.value)
    assert text.startswith(f"Exercise {label}: ")
    assert "function_node" not in text and "Traceback" not in text
