"""Checkers for chapter 5: legacy TF1 graph code with batch norm.

Each check builds a tiny graph of its own (3 features, a handful of rows), runs a few steps in a
tf.compat.v1.Session and looks at the moving statistics, so it answers in well under a second.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .. import tf1_demos
from ._core import ExerciseMistake, as_array, call, checker, expect_shape

tf1 = tf.compat.v1

DECAY = 0.9  # far from 1, so one update is easy to tell from none
EPSILON = 1e-3
STEPS = 3

# A training batch and a different evaluation batch. The last feature of the training batch is
# constant (variance 0): forgetting epsilon turns it into NaN.
TRAIN_BATCH = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, 0.5], [2.0, 4.0, 0.5], [6.0, 2.0, 0.5]],
                       dtype=np.float32)
EVAL_BATCH = np.array([[10.0, 1.0, -3.0], [14.0, -1.0, 5.0]], dtype=np.float32)
GAMMA = np.array([2.0, 0.5, 1.5], dtype=np.float32)
BETA = np.array([0.25, -1.0, 3.0], dtype=np.float32)


def _normalise(x, mean, variance):
    return GAMMA * (x - mean) / np.sqrt(variance + EPSILON) + BETA


def _expect_op_of(result, graph, what: str):
    """Reject anything that is not a single op or tensor of ``graph``, with a message that says why."""
    __tracebackhide__ = True
    if result is None:
        raise ExerciseMistake(f"{what} is None.", "did you forget a `return` statement?")
    if isinstance(result, (list, tuple)):
        raise ExerciseMistake(
            f"{what} is a Python {type(result).__name__}, not a single op.",
            "combine what must run into one op, so that a single sess.run(op) does it all.")
    if isinstance(result, (np.ndarray, np.generic, float, int, bool)):
        raise ExerciseMistake(
            f"{what} is a {type(result).__name__} value, not a graph op.",
            "in TF1 code nothing runs while you build the graph: return the op or tensor itself, "
            "without calling sess.run.")
    if not isinstance(result, (tf.Operation, tf.Tensor, tf.Variable)):
        raise ExerciseMistake(f"{what} has type {type(result).__name__}; expected a graph op.",
                              "return what tf.* or the optimizer gave you.")
    if getattr(result, "graph", None) is not graph:
        raise ExerciseMistake(
            f"{what} belongs to another graph (or is an eager tensor).",
            "build everything inside the graph you were given; do not create a new tf.Graph().")


# ---------------------------------------------------------------------------------------------
# Exercise 5.1: a train op that also runs the update ops.

def _update_ops_rig():
    """A graph with one UPDATE_OPS batch-norm layer followed by a trainable dense layer."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [None, 3], name="x")
        is_training = tf1.placeholder_with_default(True, [], name="is_training")
        normalised = tf1_demos.batch_norm(x, is_training, decay=DECAY, epsilon=EPSILON, name="bn")
        w = tf1.Variable(np.full((3, 1), 0.5, np.float32), name="w")
        loss = tf.reduce_sum(tf.square(normalised @ w - 1.0))
        optimizer = tf1.train.GradientDescentOptimizer(0.05)
    return graph, x, w, loss, optimizer


@checker("5.1")
def train_op_with_updates(fn):
    """Run the learner's train op a few times; the moving mean must move and the weights change."""
    __tracebackhide__ = True
    graph, x, w, loss, optimizer = _update_ops_rig()
    with graph.as_default():
        train_op = call(fn, loss, optimizer, graph)
        _expect_op_of(train_op, graph, "Your train op")
        init = tf1.global_variables_initializer()
    moving_mean = tf1_demos.variable(graph, "bn/moving_mean")
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        w_before = sess.run(w)
        for _ in range(STEPS):
            sess.run(train_op, {x: TRAIN_BATCH})
        mean_after, w_after = sess.run([moving_mean, w])
    expected = (1 - DECAY**STEPS) * TRAIN_BATCH.mean(axis=0)
    if np.array_equal(w_after, w_before):
        raise ExerciseMistake(
            "The weights did not change: your op does not run the optimizer step.",
            "the op you return must include optimizer.minimize(loss).")
    if np.all(mean_after == 0.0):
        raise ExerciseMistake(
            f"Update ops not run: after {STEPS} training steps the moving mean is still exactly 0.",
            "fetch the ops in the graph's UPDATE_OPS collection and make the train op depend on "
            "them. An op created before (outside) a `with tf.control_dependencies(...)` block does "
            "not get the dependency.")
    if not np.allclose(mean_after, expected, atol=1e-5):
        raise ExerciseMistake(
            f"After {STEPS} steps the moving mean is {np.round(mean_after, 4).tolist()}; one "
            f"update per step gives {np.round(expected, 4).tolist()}.",
            "each run of your op should run every update op exactly once.")
    return f"{STEPS} steps made {STEPS} updates of the moving mean, and the weights trained"


# ---------------------------------------------------------------------------------------------
# Exercise 5.2: batch norm whose updates run only in the training branch of tf.cond.

def _is_python_bool_error(mistake: ExerciseMistake) -> bool:
    text = mistake.mistake
    return "as a Python `bool`" in text or "OperatorNotAllowedInGraphError" in text


@checker("5.2")
def batch_norm_switch(fn):
    """Train on one batch, then evaluate another: outputs and moving statistics must be right."""
    __tracebackhide__ = True
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [None, 3], name="x")
        is_training = tf1.placeholder(tf.bool, [], name="is_training")
        try:
            output = call(fn, x, is_training, decay=DECAY, epsilon=EPSILON, name="bn")
        except ExerciseMistake as mistake:
            if _is_python_bool_error(mistake):
                raise ExerciseMistake(
                    "A Python `if` on the is_training placeholder: its value does not exist yet "
                    "while the graph is built.",
                    "let the graph choose at run time with tf.cond(is_training, ...).") from None
            raise
        _expect_op_of(output, graph, "Your result")
        if not isinstance(output, tf.Tensor):
            raise ExerciseMistake("Your result is an op, not the normalised tensor.",
                                  "return the output of tf.nn.batch_normalization (or your formula).")
        try:
            moving_mean = tf1_demos.variable(graph, "bn/moving_mean")
            moving_variance = tf1_demos.variable(graph, "bn/moving_variance")
            gamma = tf1_demos.variable(graph, "bn/gamma")
            beta = tf1_demos.variable(graph, "bn/beta")
        except KeyError:
            raise ExerciseMistake(
                "The graph has no variables named bn/moving_mean, bn/gamma, ...",
                "keep the given first line that creates the variables with bn_variables(...).") \
                from None
        init = tf1.global_variables_initializer()

    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        sess.run([gamma.assign(GAMMA), beta.assign(BETA)])

        # One training step.
        train_out = as_array(sess.run(output, {x: TRAIN_BATCH, is_training: True}),
                             "your output in training mode")
        mean_1, variance_1 = sess.run([moving_mean, moving_variance])
        # Evaluation on another batch.
        eval_out = as_array(sess.run(output, {x: EVAL_BATCH, is_training: False}),
                            "your output in inference mode")
        mean_2, variance_2 = sess.run([moving_mean, moving_variance])

    batch_mean, batch_variance = TRAIN_BATCH.mean(axis=0), TRAIN_BATCH.var(axis=0)
    expect_shape(train_out, TRAIN_BATCH.shape, "your output in training mode")
    expect_shape(eval_out, EVAL_BATCH.shape, "your output in inference mode")

    # Training mode: the output uses the batch statistics.
    if any(np.allclose(train_out, _normalise(TRAIN_BATCH, mean, variance), atol=1e-4)
           for mean, variance in ((0.0, 1.0), (mean_1, variance_1))):  # before or after updating
        raise ExerciseMistake(
            "In training mode your layer normalises with the moving statistics.",
            "the branch taken when is_training is True must use the batch mean and variance.")
    if np.allclose(train_out, (TRAIN_BATCH - batch_mean) / np.sqrt(batch_variance + EPSILON),
                   atol=1e-4):
        raise ExerciseMistake("Your output ignores gamma and beta.",
                              "scale by gamma and shift by beta after normalising.")
    if not np.allclose(train_out, _normalise(TRAIN_BATCH, batch_mean, batch_variance), atol=1e-4):
        raise ExerciseMistake(
            "In training mode your output is not the batch-normalised input.",
            "use the biased batch variance (tf.nn.moments over axis 0) and add epsilon inside the "
            "square root.")

    # Training mode: exactly one moving-average update.
    if np.all(mean_1 == 0.0) and np.all(variance_1 == 1.0):
        raise ExerciseMistake(
            "Update ops not run: after a training step the moving mean is unchanged (still 0).",
            "an assign op only runs if something depends on it: make what the training branch "
            "returns depend on the updates (tf.control_dependencies inside that branch).")
    if np.allclose(mean_1, DECAY * batch_mean, atol=1e-5):
        raise ExerciseMistake(
            "The decay is used the wrong way round: one step moved the moving mean "
            f"{DECAY:.0%} of the way to the batch mean instead of {1 - DECAY:.0%}.",
            "new = decay * old + (1 - decay) * batch: the old value keeps the large share.")
    want_mean = (1 - DECAY) * batch_mean
    want_variance = DECAY * 1.0 + (1 - DECAY) * batch_variance
    if not (np.allclose(mean_1, want_mean, atol=1e-5)
            and np.allclose(variance_1, want_variance, atol=1e-5)):
        raise ExerciseMistake(
            "After one training step the moving statistics are not one moving-average update "
            "of their start values (mean 0, variance 1).",
            "update both the moving mean and the moving variance, once per step, with "
            "moving -= (moving - batch) * (1 - decay).")

    # Inference mode: no updates, and the moving statistics are used.
    if not (np.array_equal(mean_2, mean_1) and np.array_equal(variance_2, variance_1)):
        raise ExerciseMistake(
            "Updates run at inference: the moving mean changed when evaluating "
            "(is_training=False).",
            "create the assign ops inside the function of the training branch of tf.cond: "
            "ops created outside tf.cond, or a control dependency around it, run whichever "
            "branch is taken.")
    eval_batch_mean, eval_batch_variance = EVAL_BATCH.mean(axis=0), EVAL_BATCH.var(axis=0)
    if np.allclose(eval_out, _normalise(EVAL_BATCH, eval_batch_mean, eval_batch_variance),
                   atol=1e-4):
        raise ExerciseMistake(
            "In inference mode your layer normalises with the batch statistics.",
            "the branch taken when is_training is False must use the moving mean and variance.")
    if not np.allclose(eval_out, _normalise(EVAL_BATCH, mean_1, variance_1), atol=1e-4):
        raise ExerciseMistake(
            "In inference mode your output is not the input normalised with the moving statistics.",
            "normalise with moving_mean and moving_variance, then scale by gamma and shift by beta.")
    return "training: batch statistics, one update; inference: moving statistics, no update"


# ---------------------------------------------------------------------------------------------
# Exercise 5.3: a deployment checkpoint, with the moving statistics and without optimizer slots.

def _saver_rig():
    """x -> dense -> batch_norm -> dense, trained two steps with momentum (so slots exist)."""
    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [None, 3], name="x")
        is_training = tf1.placeholder(tf.bool, [], name="is_training")
        w_in = tf1.Variable(rng.standard_normal((3, 4)).astype(np.float32), name="w_in")
        hidden = tf1_demos.batch_norm(x @ w_in, is_training, decay=DECAY, epsilon=EPSILON, name="bn")
        w_out = tf1.Variable(rng.standard_normal((4, 1)).astype(np.float32), name="w_out")
        output = tf.sigmoid(hidden) @ w_out
        loss = tf.reduce_sum(tf.square(output - 1.0))
        optimizer = tf1.train.MomentumOptimizer(0.05, momentum=0.9)
        with tf.control_dependencies(tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)):
            train_op = optimizer.minimize(loss)
        init = tf1.global_variables_initializer()
    return graph, x, is_training, optimizer, train_op, init


@checker("5.3")
def inference_saver(fn):
    """Save with the learner's Saver; the checkpoint must hold what inference reads, and no slots."""
    __tracebackhide__ = True
    import tempfile

    graph, x, is_training, optimizer, train_op, init = _saver_rig()
    with graph.as_default():
        saver = call(fn, graph, optimizer)
        slot_names = {v.op.name for v in optimizer.variables()}  # empty outside the graph
    if saver is None:
        raise ExerciseMistake("Your result is None.", "did you forget a `return` statement?")
    if not isinstance(saver, tf1.train.Saver):
        raise ExerciseMistake(f"Your result is a {type(saver).__name__}, not a Saver.",
                              "return tf.compat.v1.train.Saver(var_list=...) itself.")
    needed = {v.op.name for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)} - slot_names
    with tempfile.TemporaryDirectory() as directory:
        with tf1.Session(graph=graph) as sess, graph.as_default():
            sess.run(init)
            for _ in range(2):
                sess.run(train_op, {x: TRAIN_BATCH, is_training: True})
            try:
                checkpoint = saver.save(sess, f"{directory}/model")
            except Exception as err:  # noqa: BLE001 - a Saver from another graph fails here
                raise ExerciseMistake(
                    f"Saving with your Saver raised {type(err).__name__}.",
                    "create the Saver inside the given graph (the check calls your function "
                    "inside `with graph.as_default():`).") from None
        saved = {name for name, _ in tf1.train.list_variables(checkpoint)}
    missing_stats = sorted(n for n in needed - saved if "moving" in n)
    if missing_stats:
        raise ExerciseMistake(
            f"The moving statistics are not in your checkpoint (missing: {missing_stats}).",
            "they are not trainable, so tf1.trainable_variables() leaves them out; inference "
            "would restore the weights and normalise with 0 and 1.")
    missing = sorted(needed - saved)
    if missing:
        raise ExerciseMistake(f"Your checkpoint lacks variables inference reads: {missing}.",
                              "save every trainable variable too.")
    extra = sorted(saved & slot_names)
    if extra:
        raise ExerciseMistake(
            f"Your checkpoint also holds the optimizer's slot variables: {extra}.",
            "those are only needed to resume training; the optimizer can list its own "
            "variables, leave them out.")
    return f"{len(saved)} variables saved: weights, gamma, beta and moving statistics, no slots"
