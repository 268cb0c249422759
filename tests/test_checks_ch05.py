"""Chapter 5 checkers: the solutions pass, stubs are "not done yet", known mistakes are named."""

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bnbook import tf1_demos
from bnbook.checks import ExerciseMistake
from bnbook.checks import ch05 as check
from bnbook.tf1_demos import bn_variables

tf1 = tf.compat.v1
ROOT = Path(__file__).resolve().parent.parent


def stub(*args, **kwargs):
    raise NotImplementedError("your code here")


# --- Exercise 5.1: train op that runs the update ops -------------------------------------------

def train_op_solution(loss, optimizer, graph):
    update_ops = graph.get_collection(tf1.GraphKeys.UPDATE_OPS)
    with graph.control_dependencies(update_ops):
        return optimizer.minimize(loss)


def train_op_grouped(loss, optimizer, graph):
    return tf.group(optimizer.minimize(loss), *graph.get_collection(tf1.GraphKeys.UPDATE_OPS))


def train_op_minimize_only(loss, optimizer, graph):
    return optimizer.minimize(loss)


def train_op_built_before_block(loss, optimizer, graph):
    train_op = optimizer.minimize(loss)
    with tf.control_dependencies(graph.get_collection(tf1.GraphKeys.UPDATE_OPS)):
        pass
    return train_op


def train_op_updates_only(loss, optimizer, graph):
    return tf.group(*graph.get_collection(tf1.GraphKeys.UPDATE_OPS))


def train_op_as_list(loss, optimizer, graph):
    return [optimizer.minimize(loss), graph.get_collection(tf1.GraphKeys.UPDATE_OPS)]


def train_op_none(loss, optimizer, graph):
    optimizer.minimize(loss)


def train_op_number(loss, optimizer, graph):
    return 0.0


def train_op_other_graph(loss, optimizer, graph):
    with tf.Graph().as_default():
        return tf.no_op()


EAGER_TENSOR = tf.constant(1.0)  # created at import time, outside any graph: eager


def train_op_eager_tensor(loss, optimizer, graph):
    return EAGER_TENSOR


def train_op_numpy(loss, optimizer, graph):
    return np.zeros(3, np.float32)


def train_op_crashes(loss, optimizer, graph):
    return optimizer.minimize(loss, var_list=[])


@pytest.mark.parametrize("solution", [train_op_solution, train_op_grouped])
def test_train_op_accepts_solutions(solution, capsys):
    check.train_op_with_updates(solution)
    assert capsys.readouterr().out.startswith("✓ Exercise 5.1 passed")


def test_train_op_stub_is_not_done(capsys):
    assert check.train_op_with_updates(stub) is None
    assert "Exercise 5.1 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("answer, message", [
    (train_op_minimize_only, r"Update ops not run: after 3 training steps the moving mean is still"),
    (train_op_built_before_block, r"Update ops not run.*\nHint: .*outside\) a `with tf.control"),
    (train_op_updates_only, r"weights did not change"),
    (train_op_as_list, r"Python list, not a single op"),
    (train_op_none, r"is None"),
    (train_op_number, r"float value, not a graph op"),
    (train_op_other_graph, r"belongs to another graph"),
    (train_op_eager_tensor, r"belongs to another graph \(or is an eager tensor\)"),
    (train_op_numpy, r"ndarray value, not a graph op"),
    (train_op_crashes, r"your function raised ValueError"),
    (np.zeros(3), r"Expected a function"),
])
def test_train_op_names_the_mistake(answer, message):
    with pytest.raises(ExerciseMistake, match=r"Exercise 5\.1: [^\n]*" + message):
        check.train_op_with_updates(answer)


# --- Exercise 5.2: updates only in the training branch ------------------------------------------

def ema_update(variable, value, decay):
    return tf1.assign_sub(variable, (variable - value) * (1 - decay))


def make_switch(*, update="train_branch", train_stats="batch", eval_stats="moving", decay_swapped=False,
                affine=True, epsilon_used=True, update_variance=True, python_if=False, dtype=None):
    """Build one version of batch_norm_switch: the solution by default, a known mistake otherwise."""

    def batch_norm_switch(x, is_training, decay=0.99, epsilon=1e-3, name="bn"):
        gamma, beta, moving_mean, moving_variance = bn_variables(x.shape[-1], name)
        batch_mean, batch_variance = tf.nn.moments(x, axes=[0])
        rate = 1 - decay if not decay_swapped else decay

        def updates():
            ops = [tf1.assign_sub(moving_mean, (moving_mean - batch_mean) * rate)]
            if update_variance:
                ops.append(tf1.assign_sub(moving_variance, (moving_variance - batch_variance) * rate))
            return ops

        outside_ops = updates() if update in ("outside_cond", "never", "outside_deps") else []
        stats = {"batch": (batch_mean, batch_variance), "moving": (moving_mean, moving_variance)}

        def training_branch():
            mean, variance = stats[train_stats]
            deps = updates() if update == "train_branch" else []
            deps += outside_ops if update == "outside_cond" else []
            with tf.control_dependencies(deps):
                return tf.identity(mean), tf.identity(variance)

        def inference_branch():
            mean, variance = stats[eval_stats]
            return tf.identity(mean), tf.identity(variance)

        if python_if:
            mean, variance = training_branch() if is_training else inference_branch()
        elif update == "outside_deps":
            with tf.control_dependencies(outside_ops):
                mean, variance = tf.cond(is_training, training_branch, inference_branch)
        else:
            mean, variance = tf.cond(is_training, training_branch, inference_branch)
        scale, offset = (gamma, beta) if affine else (None, None)
        out = tf.nn.batch_normalization(x, mean, variance, offset, scale,
                                        epsilon if epsilon_used else 0.0)
        return tf.cast(out, dtype) if dtype else out

    return batch_norm_switch


def test_switch_accepts_solution(capsys):
    check.batch_norm_switch(make_switch())
    assert capsys.readouterr().out.startswith("✓ Exercise 5.2 passed")


def test_switch_stub_is_not_done(capsys):
    assert check.batch_norm_switch(stub) is None
    assert "Exercise 5.2 is not done yet" in capsys.readouterr().out


def switch_returns_list(x, is_training, decay=0.99, epsilon=1e-3, name="bn"):
    bn_variables(x.shape[-1], name)
    return [x]


def switch_returns_op(x, is_training, decay=0.99, epsilon=1e-3, name="bn"):
    bn_variables(x.shape[-1], name)
    return tf.no_op()


def switch_without_variables(x, is_training, decay=0.99, epsilon=1e-3, name="bn"):
    return tf.identity(x)


def switch_untied_assigns(x, is_training, decay=0.99, epsilon=1e-3, name="bn"):
    # Assign ops created in the training branch, but nothing returned depends on them.
    gamma, beta, moving_mean, moving_variance = bn_variables(x.shape[-1], name)
    batch_mean, batch_variance = tf.nn.moments(x, axes=[0])

    def training_branch():
        ema_update(moving_mean, batch_mean, decay)
        ema_update(moving_variance, batch_variance, decay)
        return batch_mean, batch_variance

    mean, variance = tf.cond(is_training, training_branch,
                             lambda: (tf.identity(moving_mean), tf.identity(moving_variance)))
    return tf.nn.batch_normalization(x, mean, variance, beta, gamma, epsilon)


def switch_without_identity(x, is_training, decay=0.99, epsilon=1e-3, name="bn"):
    # control_dependencies in the branch, but it returns tensors created before the block.
    gamma, beta, moving_mean, moving_variance = bn_variables(x.shape[-1], name)
    batch_mean, batch_variance = tf.nn.moments(x, axes=[0])

    def training_branch():
        updates = [ema_update(moving_mean, batch_mean, decay),
                   ema_update(moving_variance, batch_variance, decay)]
        with tf.control_dependencies(updates):
            return batch_mean, batch_variance

    mean, variance = tf.cond(is_training, training_branch,
                             lambda: (tf.identity(moving_mean), tf.identity(moving_variance)))
    return tf.nn.batch_normalization(x, mean, variance, beta, gamma, epsilon)


@pytest.mark.parametrize("answer, message", [
    (switch_untied_assigns, r"Update ops not run: after a training step the moving mean is unchanged"),
    (switch_without_identity, r"Update ops not run"),
    (make_switch(update="never"), r"Update ops not run: after a training step the moving mean is unchanged"),
    (make_switch(update="outside_deps"),
     r"Updates run at inference: the moving mean changed when evaluating"),
    (make_switch(update="outside_cond"), r"Updates run at inference"),
    (make_switch(python_if=True), r"A Python `if` on the is_training placeholder"),
    (make_switch(eval_stats="batch"), r"In inference mode your layer normalises with the batch statistics"),
    (make_switch(train_stats="moving"), r"In training mode your layer normalises with the moving statistics"),
    (make_switch(decay_swapped=True), r"The decay is used the wrong way round"),
    (make_switch(affine=False), r"Your output ignores gamma and beta"),
    (make_switch(epsilon_used=False), r"contains NaN or infinity"),
    (make_switch(update_variance=False), r"not one moving-average update"),
    (make_switch(dtype=tf.float64), r"dtype float64"),
    (switch_returns_list, r"Python list"),
    (switch_returns_op, r"an op, not the normalised tensor"),
    (switch_without_variables, r"no variables named bn/moving_mean"),
])
def test_switch_names_the_mistake(answer, message):
    with pytest.raises(ExerciseMistake, match=r"Exercise 5\.2: [^\n]*" + message):
        check.batch_norm_switch(answer)


# --- The lesson shows the package's layer: both copies must stay the same -----------------------

@pytest.mark.parametrize("function", [tf1_demos.bn_variables, tf1_demos.batch_norm])
def test_lesson_shows_the_package_code(function):
    lesson = json.loads((ROOT / "notebooks" / "05_tf1_graphs.ipynb").read_text(encoding="utf-8"))
    sources = ["".join(c["source"]) for c in lesson["cells"] if c["cell_type"] == "code"]
    header = f"def {function.__name__}("
    shown = [s for s in sources if s.startswith(header)]
    assert shown == [inspect.getsource(function).rstrip("\n")], \
        f"the lesson's cell defining {function.__name__} differs from bnbook/tf1_demos.py"


# --- Exercise 5.3: a deployment checkpoint -------------------------------------------------------

def saver_solution(graph, optimizer):
    slots = optimizer.variables()
    return tf1.train.Saver(var_list=[v for v in tf1.global_variables() if v not in slots])


def saver_by_slot_names(graph, optimizer):
    slots = [optimizer.get_slot(v, name) for v in tf1.trainable_variables()
             for name in optimizer.get_slot_names()]
    return tf1.train.Saver(var_list=[v for v in tf1.global_variables() if v not in slots])


def saver_trainable_only(graph, optimizer):
    return tf1.train.Saver(var_list=tf1.trainable_variables())


def saver_everything(graph, optimizer):
    return tf1.train.Saver()


def saver_statistics_only(graph, optimizer):
    return tf1.train.Saver(var_list=[v for v in tf1.global_variables() if "moving" in v.op.name])


def saver_var_list_returned(graph, optimizer):
    return tf1.trainable_variables()


def saver_none(graph, optimizer):
    tf1.train.Saver()


def saver_of_another_graph(graph, optimizer):
    with tf.Graph().as_default():
        return tf1.train.Saver(var_list=[tf1.Variable(1.0, name="stray")])


@pytest.mark.parametrize("solution", [saver_solution, saver_by_slot_names])
def test_saver_accepts_solutions(solution, capsys):
    check.inference_saver(solution)
    assert capsys.readouterr().out.startswith("✓ Exercise 5.3 passed")


def test_saver_stub_is_not_done(capsys):
    assert check.inference_saver(stub) is None
    assert "Exercise 5.3 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("answer, message", [
    (saver_trainable_only, r"The moving statistics are not in your checkpoint"),
    (saver_everything, r"also holds the optimizer's slot variables"),
    (saver_statistics_only, r"lacks variables inference reads: \['bn/beta', 'bn/gamma', 'w_in', 'w_out'\]"),
    (saver_var_list_returned, r"Your result is a list, not a Saver"),
    (saver_none, r"Your result is None"),
    (saver_of_another_graph, r"Saving with your Saver raised"),
])
def test_saver_names_the_mistake(answer, message):
    with pytest.raises(ExerciseMistake, match=r"Exercise 5\.3: [^\n]*" + message):
        check.inference_saver(answer)
