"""Checkers for chapter 5: legacy TF1 graph code with batch norm.

Each check builds tiny graphs of its own in three cases that differ in everything a learner could
fix in their code (features, number of BN layers, decay, epsilon, optimizer and learning rate,
number of steps, the model's scope, the other model's scope and what else the graph holds), runs
a few steps in a tf.compat.v1.Session and compares every moving statistic and weight with a
reference run (see :func:`._core.match`).
"""

# The Wrong(lambda: ...) variants below are evaluated inside the loop iteration that makes them.
# ruff: noqa: B023

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..lessons import tf1_graphs as tf1_demos
from ._core import ExerciseMistake, Wrong, call, cases, checker, match

tf1 = tf.compat.v1

def _session(graph):
    """A session for a tiny graph: one thread each and no graph rewriting (both cost more time
    than such graphs take to run)."""
    config = tf1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    return tf1.Session(graph=graph, config=config)


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
# Exercise 5.1: a train op that runs this model's update ops (and not another model's).

_OPTIMIZERS = {
    "GradientDescent(0.05)": lambda: tf1.train.GradientDescentOptimizer(0.05),
    "Momentum(0.02, 0.9)": lambda: tf1.train.MomentumOptimizer(0.02, momentum=0.9),
    "Adam(0.01)": lambda: tf1.train.AdamOptimizer(0.01),
    "Adadelta(1.0)": lambda: tf1.train.AdadeltaOptimizer(1.0),
}


def _training_bn(x, decay, name):
    """The lesson's batch_norm in training mode only: batch statistics, and two moving-average
    assign ops filed in UPDATE_OPS. Built to be cheap to differentiate, since the checks build
    its gradient in every graph: no tf.cond, and the batch statistics count as constants in the
    backward pass (what the checks test is which update ops run, not BN's gradient)."""
    gamma, beta, moving_mean, moving_variance = tf1_demos.bn_variables(x.shape[-1], name)
    mean, variance = tf.nn.moments(x, axes=[0])
    for moving, batch in ((moving_mean, mean), (moving_variance, variance)):
        tf1.add_to_collection(tf1.GraphKeys.UPDATE_OPS,
                              tf1.assign_sub(moving, (moving - batch) * (1 - decay)))
    scale = gamma * tf.stop_gradient(tf.math.rsqrt(variance + 1e-3))
    return (x - tf.stop_gradient(mean)) * scale + beta


def _rig51(case):
    """A graph with the model under ``case.scope`` (``case.layers`` BN layers whose update ops go
    to UPDATE_OPS) and another model's BN layer under ``case.other``, whose updates are not
    ours."""
    rng = np.random.default_rng(case.seed)
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [None, case.features], name="x")
        with tf1.variable_scope(case.other):  # built first: its update ops come first
            w_other = tf1.Variable(rng.normal(size=(case.features, 2)).astype(np.float32),
                                   name="w")
            _training_bn(x @ w_other, decay=0.5, name="bn")
        with tf1.variable_scope(case.scope):
            h = x
            for i in range(case.layers):
                w = tf1.Variable(rng.normal(size=(h.shape[-1], 3)).astype(np.float32),
                                 name=f"w{i}")
                h = tf.sigmoid(_training_bn(h @ w, decay=case.decay, name=f"bn{i}"))
            w_out = tf1.Variable(rng.normal(size=(3, 1)).astype(np.float32), name="w_out")
            loss = tf.reduce_sum(tf.square(h @ w_out - 1.0))
        optimizer = _OPTIMIZERS[case.optimizer]()
    return graph, x, loss, optimizer


def _state51(graph, sess, scope, other, optimizer_names) -> dict:
    variables = sorted((v for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
                        if v.op.name not in optimizer_names), key=lambda v: v.op.name)
    values = dict(zip((v.op.name for v in variables), sess.run(variables)))
    pick = sorted(values)
    return {  # by variable name, so that a message says which variable is off
        "moving statistics of the model": {n: values[n] for n in pick
                                           if n.startswith(scope + "/") and "moving" in n},
        "moving statistics of the other model": {n: values[n] for n in pick
                                                 if n.startswith(other + "/") and "moving" in n},
        "weights of the model": {n: values[n] for n in pick if n.startswith(scope + "/")
                                 and "moving" not in n},
    }


def _run51(case, make_op, batch, reference=None):
    """Build a fresh rig, make the train op with ``make_op(loss, optimizer, graph, scope)``, run
    it ``case.steps`` times on ``batch`` and return the state. With ``reference`` (another
    make_op), also build that op in the same graph, run it from a fresh start, and return both
    states (one graph and one session: graphs and sessions are what cost time here)."""
    graph, x, loss, optimizer = _rig51(case)
    with graph.as_default():
        op = make_op(loss, optimizer, graph, case.scope)
        _expect_op_of(op, graph, f"In {case}: your train op")
        other = reference(loss, optimizer, graph, case.scope) if reference else None
        init = tf1.global_variables_initializer()
        optimizer_names = {v.op.name for v in optimizer.variables()}
    states = []
    with _session(graph) as sess:
        for train in ([op, other] if reference else [op]):
            sess.run(init)
            for _ in range(case.steps):
                sess.run(train, {x: batch})
            states.append(_state51(graph, sess, case.scope, case.other, optimizer_names))
    return states if reference else states[0]


def _updates(graph, scope=None):
    return graph.get_collection(tf1.GraphKeys.UPDATE_OPS, scope)


def _with_deps(ops, build):
    with tf.control_dependencies(ops):
        return build()


@checker("5.1")
def train_op_with_updates(fn):
    """Run the learner's train op a few steps; the model's moving statistics must take one update
    per step, the other model's none, and the weights one optimizer step per step."""
    __tracebackhide__ = True
    for case in cases(  # `other`: the scope of the other model, whose update ops are not ours
            dict(scope="model", other="other", layers=1, features=3, decay=0.9,
                 optimizer="GradientDescent(0.05)", steps=3, _seed=51),
            dict(scope="discriminator", other="generator", layers=2, features=4, decay=0.7,
                 optimizer="Momentum(0.02, 0.9)", steps=2, _seed=52),
            dict(scope="student", other="teacher", layers=3, features=2, decay=0.8,
                 optimizer="Adam(0.01)", steps=4, _seed=53)):
        rng = np.random.default_rng(case.seed + 100)
        batch = (rng.normal(size=(6, case.features)) * 2 + 1).astype(np.float32)
        got, want = _run51(
            case, lambda loss, opt, graph, scope: call(fn, loss, opt, graph, scope,
                                                       what="train_op_with_updates", case=case),
            batch, reference=lambda loss, opt, graph, scope: _with_deps(
                _updates(graph, scope), lambda: opt.minimize(loss)))

        def variant(make):
            return lambda: _run51(case, make, batch)

        match(got, want, case=case, name="the variables after your steps", wrong=[
            Wrong(variant(lambda loss, opt, graph, scope: opt.minimize(loss)),
                  "Update ops not run: the weights trained but the model's moving statistics did "
                  "not move.",
                  "make the train op depend on the update ops: build optimizer.minimize(loss) "
                  "INSIDE a `with graph.control_dependencies(update_ops):` block. An op created "
                  "before the block gets no dependency."),
            Wrong(variant(lambda loss, opt, graph, scope: _with_deps(
                _updates(graph), lambda: opt.minimize(loss))),
                "Your train op also ran the other model's update ops: the graph holds two "
                "models, and UPDATE_OPS collects the update ops of both.",
                "keep only this model's, by the `scope` you are given: "
                "graph.get_collection(UPDATE_OPS, scope) filters them by name scope. Leaving out "
                "another model by its name fails as soon as that model is called something "
                "else."),
            Wrong(variant(lambda loss, opt, graph, scope: tf.group(*_updates(graph, scope))),
                  "The weights did not change: your op runs the update ops but no optimizer step.",
                  "the op you return must include optimizer.minimize(loss)."),
            Wrong(variant(lambda loss, opt, graph, scope: _with_deps(
                _updates(graph, scope)[:1], lambda: opt.minimize(loss))),
                "Only the first update op ran: the model's other moving statistics did not move.",
                "make the train op depend on every op in the (scoped) collection, not one."),
        ], selftest="after k runs of your op the moving mean of a BN layer whose start value is "
                    "0 equals (1 - decay**k) times the batch mean of its input, if the input does "
                    "not change.")
    return "one update per step of the model's BN layers only, and the given optimizer's step " \
        "(3 graphs)"


# ---------------------------------------------------------------------------------------------
# Exercise 5.2: batch norm whose updates run only in the training branch of tf.cond.

def _is_python_bool_error(mistake: ExerciseMistake) -> bool:
    text = mistake.mistake
    return "as a Python `bool`" in text or "OperatorNotAllowedInGraphError" in text


def _bn52(x, mean, var, gamma, beta, eps):
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


@checker("5.2")
def batch_norm_switch(fn):
    """Train on one batch, then evaluate another: outputs and moving statistics must be right."""
    __tracebackhide__ = True
    for case in cases(dict(features=3, decay=0.9, epsilon=1e-3, batch=4, _seed=61),
                      dict(features=5, decay=0.7, epsilon=0.1, batch=6, _seed=62),
                      dict(features=2, decay=0.95, epsilon=0.01, batch=3, _seed=63)):
        rng = np.random.default_rng(case.seed)
        f, d, eps = case.features, case.decay, case.epsilon
        train = (rng.normal(size=(case.batch, f)) * 2 + 1).astype(np.float32)
        train[:, -1] = 0.5  # a constant feature: forgetting epsilon gives NaN
        evaluation = (rng.normal(size=(2, f)) * 3 + 5).astype(np.float32)
        gamma = rng.uniform(0.5, 2, f).astype(np.float32)
        beta = rng.uniform(-1, 1, f).astype(np.float32)

        graph = tf.Graph()
        with graph.as_default():
            x = tf1.placeholder(tf.float32, [None, f], name="x")
            is_training = tf1.placeholder(tf.bool, [], name="is_training")
            try:
                output = call(fn, x, is_training, decay=d, epsilon=eps, name="bn",
                              what="batch_norm_switch", case=case)
            except ExerciseMistake as mistake:
                if _is_python_bool_error(mistake):
                    raise ExerciseMistake(
                        "A Python `if` on the is_training placeholder: its value does not exist "
                        "yet while the graph is built.",
                        "let the graph choose at run time with tf.cond(is_training, ...).") \
                        from None
                raise
            _expect_op_of(output, graph, f"In {case}: your result")
            if not isinstance(output, tf.Tensor):
                raise ExerciseMistake("Your result is an op, not the normalised tensor.",
                                      "return the output of tf.nn.batch_normalization.")
            try:
                variables = {name: tf1_demos.variable(graph, f"bn/{name}") for name in
                             ("gamma", "beta", "moving_mean", "moving_variance")}
            except KeyError:
                raise ExerciseMistake(
                    "The graph has no variables named bn/moving_mean, bn/gamma, ...",
                    "keep the given first line that creates the variables with "
                    "bn_variables(...).") from None
            in_collection = len(graph.get_collection(tf1.GraphKeys.UPDATE_OPS))
            init = tf1.global_variables_initializer()
        with _session(graph) as sess:
            sess.run(init)
            sess.run([variables["gamma"].assign(gamma), variables["beta"].assign(beta)])
            train_out = sess.run(output, {x: train, is_training: True})
            mean_1, var_1 = sess.run([variables["moving_mean"], variables["moving_variance"]])
            eval_out = sess.run(output, {x: evaluation, is_training: False})
            mean_2, var_2 = sess.run([variables["moving_mean"], variables["moving_variance"]])
        got = {"training output": train_out, "moving mean after training": mean_1,
               "moving variance after training": var_1, "inference output": eval_out,
               "moving mean after inference": mean_2, "moving variance after inference": var_2}

        def run(update="right", decay=d, epsilon=eps, ddof=0, train_stats="batch",
                eval_stats="moving", scale=True, branches="right"):
            """The layer's results, and its known-wrong variants, in float64."""
            t, e = train.astype(np.float64), evaluation.astype(np.float64)
            m, v = np.zeros(f), np.ones(f)
            bm, bv = t.mean(axis=0), t.var(axis=0, ddof=ddof)
            g, b = (gamma, beta) if scale else (1.0, 0.0)
            if branches == "swapped":  # training takes the inference branch, and inference ...
                em, ev = e.mean(axis=0), e.var(axis=0)
                m2, v2 = m - (m - em) * (1 - decay), v - (v - ev) * (1 - decay)
                return {"training output": _bn52(t, m, v, g, b, epsilon),
                        "moving mean after training": m, "moving variance after training": v,
                        "inference output": _bn52(e, em, ev, g, b, epsilon),
                        "moving mean after inference": m2, "moving variance after inference": v2}

            def update_with(m, v, bm, bv):
                if update == "swapped":
                    return decay * bm + (1 - decay) * m, decay * bv + (1 - decay) * v
                if update == "mean_only":
                    return m - (m - bm) * (1 - decay), v
                return m - (m - bm) * (1 - decay), v - (v - bv) * (1 - decay)

            m1, v1 = (m, v) if update == "none" else update_with(m, v, bm, bv)
            norm_m, norm_v = {"batch": (bm, t.var(axis=0)), "moving_before": (m, v),
                              "moving_after": (m1, v1)}[train_stats]
            out_t = _bn52(t, norm_m, norm_v, g, b, epsilon)
            em, ev = e.mean(axis=0), e.var(axis=0)
            m2, v2 = update_with(m1, v1, em, ev) if update == "always" else (m1, v1)
            if eval_stats == "batch":
                out_e = _bn52(e, em, ev, g, b, epsilon)
            else:
                out_e = _bn52(e, m2 if update == "always" else m1,
                              v2 if update == "always" else v1, g, b, epsilon)
            return {"training output": out_t, "moving mean after training": m1,
                    "moving variance after training": v1, "inference output": out_e,
                    "moving mean after inference": m2, "moving variance after inference": v2}

        never = ("Update ops not run: after a training step the moving statistics are "
                 "unchanged. The assign ops exist, but nothing that runs depends on them.")
        if in_collection:
            never += (" (Your layer put them into UPDATE_OPS, which this train op ignores: the "
                      "layer must not need that collection.)")
        wrong = [
            Wrong(run(update="none"), never,
                  "what true_fn returns must be created INSIDE `with tf.control_dependencies("
                  "[update_mean, update_variance]):`. Returning batch_mean itself hands back a "
                  "tensor created before that block, which waits for nothing: wrap it in "
                  "tf.identity inside the block."),
            Wrong(run(update="always"),
                  "Updates run at inference: the moving statistics changed when evaluating "
                  "(is_training=False).",
                  "create the assign ops inside true_fn, the training branch of tf.cond: ops "
                  "created outside tf.cond, or a control dependency around the whole tf.cond, "
                  "run whichever branch is taken."),
            Wrong(run(update="swapped"),
                  "The decay is used the wrong way round: one step moved the moving statistics "
                  "most of the way to the batch's.",
                  "moving -= (moving - batch) * (1 - decay): the old value keeps the large "
                  "share."),
            Wrong(run(update="mean_only"),
                  "Only the moving mean was updated; the moving variance did not move.",
                  "update both statistics in the training branch, and make its results depend "
                  "on both assign ops."),
            Wrong(run(train_stats="moving_before"),
                  "In training mode your layer normalises with the moving statistics.",
                  "the branch taken when is_training is True must use the batch mean and "
                  "variance."),
            Wrong(run(train_stats="moving_after"),
                  "In training mode your layer normalises with the freshly updated moving "
                  "statistics.", "return the batch mean and variance from the training branch."),
            Wrong(run(eval_stats="batch"),
                  "In inference mode your layer normalises with the batch statistics.",
                  "the branch taken when is_training is False must use the moving mean and "
                  "variance."),
            Wrong(run(branches="swapped"),
                  "The branches of tf.cond are swapped: training normalised with the moving "
                  "statistics and updated nothing; inference used the batch's statistics and "
                  "updated the moving ones.",
                  "tf.cond(pred, true_fn, false_fn) runs true_fn when pred is True: the training "
                  "branch (batch statistics and the updates) comes first."),
            Wrong(run(scale=False), "Your output ignores gamma and beta.",
                  "scale by gamma and shift by beta after normalising."),
            Wrong(run(ddof=1), "The moving variance was updated with the unbiased batch "
                  "variance (divisor n - 1).",
                  "use the biased batch variance that tf.nn.moments returns."),
        ]
        if d != 0.99:
            wrong.append(Wrong(run(decay=0.99), "Your updates used decay 0.99 (the default), not "
                               "the `decay` argument.", "use the decay the layer is given."))
        if eps != 1e-3:
            wrong.append(Wrong(run(epsilon=1e-3), "Your layer used epsilon 1e-3 (the default), "
                               "not the `epsilon` argument.",
                               "pass epsilon to tf.nn.batch_normalization."))
        match(got, run(), case=case, name="your layer's results", wrong=wrong,
              selftest="with decay 0, one training run must set the moving statistics to the "
                       "batch's mean and variance; then an inference run on the same batch must "
                       "give the same output as the training run.")
    return "training: batch statistics and one update of both moving statistics; inference: " \
        "moving statistics, no update (3 cases)"


# ---------------------------------------------------------------------------------------------
# Exercise 5.3: a deployment checkpoint, with the moving statistics and without optimizer slots.

def _saver_rig(case):
    """x -> (dense -> batch_norm) x layers -> dense, trained two steps (so slots exist)."""
    rng = np.random.default_rng(case.seed)
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [None, 3], name="x")
        h = x
        for i in range(case.layers):
            w = tf1.Variable(rng.standard_normal((h.shape[-1], case.width)).astype(np.float32),
                             name=f"w{i}")
            h = tf.sigmoid(_training_bn(h @ w, decay=0.9, name=f"bn{i}"))
        w_out = tf1.Variable(rng.standard_normal((case.width, 1)).astype(np.float32),
                             name="w_out")
        loss = tf.reduce_sum(tf.square(h @ w_out - 1.0))
        optimizer = _OPTIMIZERS[case.optimizer]()
        with tf.control_dependencies(tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)):
            train_op = optimizer.minimize(loss)
        init = tf1.global_variables_initializer()
    return graph, x, optimizer, train_op, init


@checker("5.3")
def inference_saver(fn):
    """Save with the learner's Saver; the checkpoint must hold what inference reads, and no slots."""
    __tracebackhide__ = True
    import tempfile

    for case in cases(dict(layers=1, width=4, optimizer="Momentum(0.02, 0.9)", _seed=71),
                      dict(layers=2, width=3, optimizer="Adam(0.01)", _seed=72),
                      dict(layers=3, width=2, optimizer="Adadelta(1.0)", _seed=73)):
        graph, x, optimizer, train_op, init = _saver_rig(case)
        with graph.as_default():
            saver = call(fn, graph, optimizer, what="inference_saver", case=case)
            slot_names = {v.op.name for v in optimizer.variables()}
        if saver is None:
            raise ExerciseMistake("Your result is None.", "did you forget a `return` statement?")
        if not isinstance(saver, tf1.train.Saver):
            raise ExerciseMistake(f"Your result is a {type(saver).__name__}, not a Saver.",
                                  "return tf.compat.v1.train.Saver(var_list=...) itself.")
        every = {v.op.name for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)}
        needed = every - slot_names
        batch = np.random.default_rng(case.seed).normal(size=(5, 3)).astype(np.float32)
        with tempfile.TemporaryDirectory() as directory:
            with _session(graph) as sess, graph.as_default():
                sess.run(init)
                for _ in range(2):
                    sess.run(train_op, {x: batch})
                try:
                    checkpoint = saver.save(sess, f"{directory}/model")
                except Exception as err:  # noqa: BLE001 - a Saver from another graph fails here
                    raise ExerciseMistake(
                        f"In {case}: saving with your Saver raised {type(err).__name__}.",
                        "create the Saver inside the given graph (the check calls your function "
                        "inside `with graph.as_default():`).") from None
            saved = {name for name, _ in tf1.train.list_variables(checkpoint)}
        trainable = {v.op.name for v in graph.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES)}
        if saved == every:
            raise ExerciseMistake(
                "Your checkpoint holds every global variable, the optimizer's slot variables "
                f"included ({len(saved - needed)} of them).",
                "those are only needed to resume training; optimizer.variables() lists them: "
                "leave them out.")
        if saved == trainable:
            raise ExerciseMistake(
                "Your checkpoint holds the trainable variables only: the moving statistics are "
                "missing.",
                "they are not trainable, so tf1.trainable_variables() leaves them out; "
                "inference would restore the weights and normalise with 0 and 1.")
        missing_stats = sorted(n for n in needed - saved if "moving" in n)
        if missing_stats and not (needed - saved - set(missing_stats)):
            raise ExerciseMistake(
                f"In {case}: the moving statistics are not in your checkpoint (missing: "
                f"{missing_stats}).",
                "they are not trainable, so tf1.trainable_variables() leaves them out; inference "
                "would restore the weights and normalise with 0 and 1.")
        missing, extra = sorted(needed - saved), sorted(saved - needed)
        if missing or extra:
            raise ExerciseMistake(
                f"In {case}: your checkpoint "
                + (f"lacks {len(missing)} variable(s) inference reads ({', '.join(missing)})"
                   if missing else "")
                + (" and " if missing and extra else "")
                + (f"holds {len(extra)} optimizer variable(s) ({', '.join(extra)})"
                   if extra else "") + ".",
                "select by what a variable is, not by position or count: every global variable "
                "that is not one of optimizer.variables().")
    return "what inference reads and no optimizer variable, in 3 graphs (1 to 3 BN layers; " \
        "Momentum, Adam, Adadelta)"
