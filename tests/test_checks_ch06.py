"""Chapter 6 checkers: each accepts the solution and right answers written another way, says "not
done yet" for the generator's stub, and rejects every known-wrong answer (including hard-coded
ones) with the message meant for it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import bnbook
from bnbook.checks import ExerciseMistake
from bnbook.checks import ch06 as check

L = keras.layers


def stub(*args, **kwargs):
    raise NotImplementedError("your code here")


def passes(checker, *answers, capsys):
    checker(*answers)
    out = capsys.readouterr().out
    assert out.startswith(f"✓ Exercise {checker.label} passed"), out


def test_stubs_are_not_done(capsys):
    for checker, answers in ((check.residual_block, (stub,)), (check.recalibrate, (stub,)),
                             (check.fix_script, (stub, stub))):
        assert checker(*answers) is None
        assert f"Exercise {checker.label} is not done yet" in capsys.readouterr().out


def test_other_not_implemented_errors_are_failures():
    def fails(x, filters, strides=1):
        raise NotImplementedError("something else")
    with pytest.raises(ExerciseMistake, match="raised NotImplementedError: something else"):
        check.residual_block(fails)


# --- 6.1 ------------------------------------------------------------------------------------------

def block(x, filters, strides=1, *, bias=False, conv_activation=None, relu_after=True,
          bn_after_add=False, relu_before_add=False, zero="last", projection="shapes",
          projection_bn=True, projection_strides=True, first_bn=True, relu_layer=L.ReLU,
          branch_strides=True, shortcut_first=True):
    """The solution with switches that plant one mistake each."""
    needs = {"shapes": strides != 1 or x.shape[-1] != filters,
             "channels": x.shape[-1] != filters, "always": True}[projection]
    shortcut = x
    if needs:
        shortcut = L.Conv2D(filters, 1, strides=strides if projection_strides else 1,
                            use_bias=bias)(x)
        if projection_bn:
            shortcut = L.BatchNormalization(
                gamma_initializer="zeros" if zero == "shortcut" else "ones")(shortcut)
    branch = L.Conv2D(filters, 3, strides=strides if branch_strides else 1, padding="same",
                      use_bias=bias, activation=conv_activation)(x)
    if first_bn:
        branch = L.BatchNormalization(
            gamma_initializer="zeros" if zero == "first" else "ones")(branch)
    branch = relu_layer()(branch)
    branch = L.Conv2D(filters, 3, padding="same", use_bias=bias)(branch)
    branch = L.BatchNormalization(
        gamma_initializer="zeros" if zero in ("last", "shortcut") else "ones")(branch)
    if relu_before_add:
        branch = L.ReLU()(branch)
    pair = [shortcut, branch] if shortcut_first else [branch, shortcut]
    out = L.Add()(pair)
    if bn_after_add:
        out = L.BatchNormalization()(out)
    return relu_layer()(out) if relu_after else out


def test_6_1_solution(capsys):
    passes(check.residual_block, block, capsys=capsys)


@pytest.mark.parametrize("options", [
    dict(relu_layer=lambda: L.Activation("relu")),
    dict(shortcut_first=False),
])
def test_6_1_right_answers_written_another_way(options, capsys):
    passes(check.residual_block, lambda x, f, s=1: block(x, f, s, **options), capsys=capsys)


def test_6_1_projection_built_after_the_branch(capsys):
    def answer(x, filters, strides=1):
        branch = L.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
        branch = L.ReLU()(L.BatchNormalization()(branch))
        branch = L.Conv2D(filters, 3, padding="same", use_bias=False)(branch)
        branch = L.BatchNormalization(gamma_initializer="zeros")(branch)
        shortcut = x
        if strides > 1 or x.shape[-1] != filters:
            shortcut = L.BatchNormalization()(
                L.Conv2D(filters, 1, strides=strides, padding="same", use_bias=False)(x))
        return L.Activation("relu")(L.add([branch, shortcut]))
    passes(check.residual_block, answer, capsys=capsys)


@pytest.mark.parametrize("options, message", [
    (dict(bias=True), "has a bias"),
    (dict(conv_activation="relu"), "applies its own activation"),
    (dict(relu_after=False), "no activation after the Add"),
    (dict(bn_after_add=True), "BN layer comes after the Add"),
    (dict(relu_before_add=True), "activation before the Add"),
    (dict(zero="none"), "last BN of the branch starts with gamma = 1"),
    (dict(zero="first"), "FIRST BN of the branch"),
    (dict(zero="shortcut"), "shortcut's BN starts with gamma = 0"),
    (dict(projection="always"), "projected although"),
    (dict(projection_bn=False), "no BN after its 1x1"),
    (dict(projection_strides=False), "raised ValueError.*needs a projection|raised"),
    (dict(first_bn=False), "the branch is Conv2D -> ReLU -> Conv2D -> BatchNormalization"),
    # hard-coding: a projection only when the channels change misses case 3 (stride 2)
    (dict(projection="channels"), "case 3 of 3.*(raised|shape)"),
    # hard-coding: the stride ignored on the branch
    (dict(branch_strides=False), "case 3 of 3"),
])
def test_6_1_mistakes(options, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.residual_block(lambda x, f, s=1: block(x, f, s, **options))


def test_6_1_hard_coded_filters_and_non_tensors():
    with pytest.raises(ExerciseMistake, match="case 2 of 3.*output has shape"):
        check.residual_block(lambda x, f, s=1: block(x, 4, s))
    with pytest.raises(ExerciseMistake, match="not the output of a Keras layer"):
        check.residual_block(lambda x, f, s=1: keras.Model(x, block(x, f, s)))


# --- 6.2 ------------------------------------------------------------------------------------------

def bn_layers(model):
    return bnbook.bn_layers(model)


def solution_6_2(model, batches):
    """The solution notebook's answer: each BN layer's inputs recorded during inference-mode
    passes (Dropout off), layer after layer."""
    def find(layer):
        found = []
        for sub in getattr(layer, "layers", []):
            if isinstance(sub, L.BatchNormalization):
                found.append(sub)
            else:
                found.extend(find(sub))
        return found

    for target in find(model):
        sums = [0, 0.0, 0.0]

        def recording(inputs, *args, _sums=sums, _call=target.call, **kwargs):
            x = np.asarray(inputs, np.float64)
            x = x.reshape(-1, x.shape[-1])
            _sums[0] += len(x)
            _sums[1] = _sums[1] + x.sum(axis=0)
            _sums[2] = _sums[2] + (x ** 2).sum(axis=0)
            return _call(inputs, *args, **kwargs)

        target.call = recording
        try:
            for batch in batches:
                model(batch, training=False)
        finally:
            del target.call
        count, total, total_sq = sums
        mean = total / count
        target.moving_mean.assign(mean.astype(np.float32))
        target.moving_variance.assign((total_sq / count - mean ** 2).astype(np.float32))


def dropouts(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, L.Dropout)]


def recalibrate(model, batches, *, dropout_off=True, restore_rates=True, **options):
    """The old solution's trick (other BN layers frozen, training-mode calls with momentum 0),
    made exact by setting every Dropout rate to 0 for the duration (a right answer written
    another way); with ``dropout_off=False``, Dropout stays on during the training-mode calls."""
    saved = [layer.rate for layer in dropouts(model)]
    if dropout_off:
        for layer in dropouts(model):
            layer.rate = 0.0
    try:
        frozen_trick(model, batches, **options)
    finally:
        if restore_rates:
            for layer, rate in zip(dropouts(model), saved):
                layer.rate = rate


def frozen_trick(model, batches, *, restore=True, weighted=True, total_variance=True,
                 nested=True, layerwise=True, unbiased=False):
    """The old solution with switches that plant one mistake each."""
    layers = bn_layers(model) if nested else [
        layer for layer in model.layers if isinstance(layer, L.BatchNormalization)]
    saved = [(layer.trainable, layer.momentum) for layer in bn_layers(model)]
    for layer in bn_layers(model):
        layer.trainable = not layerwise
        layer.momentum = 0.0
    groups = [[t] for t in layers] if layerwise else [layers]
    for group in groups:
        for target in group:
            target.trainable = True
        sums = {id(t): [0, 0.0, 0.0] for t in group}
        for batch in batches:
            model(batch, training=True)
            n = len(batch) if weighted else 1
            for t in group:
                mean = t.moving_mean.numpy().astype(np.float64)
                var = t.moving_variance.numpy().astype(np.float64)
                s = sums[id(t)]
                s[0] += n
                s[1] = s[1] + n * mean
                s[2] = s[2] + n * (var + mean ** 2 if total_variance else var)
        for t in group:
            count, total, second = sums[id(t)]
            mean = total / count
            var = second / count - (mean ** 2 if total_variance else 0.0)
            if unbiased:
                values = sum(len(b) for b in batches) * int(np.prod(t.input.shape[1:-1]))
                var = var * values / (values - 1)
            t.moving_mean.assign(mean.astype(np.float32))
            t.moving_variance.assign(var.astype(np.float32))
            if layerwise:
                t.trainable = False
    if restore:
        for layer, (trainable, momentum) in zip(bn_layers(model), saved):
            layer.trainable, layer.momentum = trainable, momentum


def test_6_2_solution(capsys):
    passes(check.recalibrate, solution_6_2, capsys=capsys)


def test_6_2_frozen_trick_with_dropout_off_passes(capsys):
    passes(check.recalibrate, recalibrate, capsys=capsys)


@pytest.mark.parametrize("answer, name", [
    (lambda model, batches: bnbook.recalibrate_bn(model, np.concatenate(batches), batch_size=7),
     "bnbook.statistics.recalibrate_bn"),
    (lambda model, batches: bnbook.statistics.recalibrate_bn(model, batches[0]),
     "bnbook.statistics.recalibrate_bn"),
    (lambda model, batches: [None for _ in bnbook.bn_input_statistics(model, batches[0])],
     "bnbook.statistics.bn_input_statistics"),
])
def test_6_2_book_helpers_are_refused(answer, name):
    with pytest.raises(ExerciseMistake, match=rf"In case 1 of 3 .*calls the book's own `{name}`"):
        check.recalibrate(answer)


DROPOUT_ON = r"In case 2 of 3 .*Dropout was active during your passes: the BN layer after the " \
    r"Dropout layer got the variance of its inputs in training mode"


@pytest.mark.parametrize("answer, message", [
    (lambda m, b: recalibrate(m, b, dropout_off=False), DROPOUT_ON),             # the old solution
    (lambda m, b: recalibrate(m, [np.concatenate(b)], dropout_off=False), DROPOUT_ON),
    # a mistake in the BN layer before the Dropout is named first
    (lambda m, b: recalibrate(m, b, dropout_off=False, weighted=False), "same weight"),
    (lambda m, b: recalibrate(m, b, restore_rates=False), r"dropout.*: rate 0\.5->0\)"),
])
def test_6_2_dropout_mistakes(answer, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.recalibrate(answer)


def ema(model, batches):
    for batch in batches:
        model(batch, training=True)


def trains(model, batches):
    model.weights[0].assign(model.weights[0] + 1.0)
    recalibrate(model, batches)


@pytest.mark.parametrize("answer, message", [
    (ema, "moving averages"),
    (lambda m, b: recalibrate(m, b, layerwise=False), "earlier BN layers in training mode"),
    (lambda m, b: recalibrate(m, b, total_variance=False), "averaged the batch variances"),
    (lambda m, b: recalibrate(m, b, weighted=False), "same weight"),
    (lambda m, b: recalibrate(m, b, nested=False), "inside the nested model"),
    (lambda m, b: recalibrate(m, b, unbiased=True), "unbiased variance"),
    (lambda m, b: recalibrate(m, b, restore=False), "flags were not restored"),
    (trains, "weights other than the moving statistics"),
    (lambda m, b: recalibrate(m, b[:1]), "matches no mistake"),      # ignores later batches
    (lambda m, b: 1 / 0, "raised ZeroDivisionError"),
])
def test_6_2_mistakes(answer, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.recalibrate(answer)


# --- 6.3 ------------------------------------------------------------------------------------------

def make_train(drop_remainder=True, training=True, epochs=None, merge=False):
    def train(model, x, y, batch_size, n_epochs, learning_rate):
        optimizer = keras.optimizers.SGD(learning_rate)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        starts = list(range(0, len(x) - batch_size + 1, batch_size)) if drop_remainder \
            else list(range(0, len(x), batch_size))
        for _ in range(n_epochs if epochs is None else epochs):
            for i, start in enumerate(starts):
                stop = len(x) if merge and i == len(starts) - 1 else start + batch_size
                with tf.GradientTape() as tape:
                    loss = loss_fn(y[start:stop], model(x[start:stop], training=training))
                grads = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return train


def make_evaluate(training=False, scale=1.0, skip_last=False):
    def evaluate(model, x, y, batch_size):
        correct = 0
        stop = len(x) - len(x) % batch_size if skip_last else len(x)
        for start in range(0, stop, batch_size):
            logits = model(x[start:min(start + batch_size, stop)], training=training)
            correct += int(np.sum(np.argmax(logits, axis=1) == y[start:min(start + batch_size,
                                                                            stop)]))
        return scale * correct / len(x)
    return evaluate


def test_6_3_solution(capsys):
    passes(check.fix_script, make_train(), make_evaluate(), capsys=capsys)


def test_6_3_right_answers_written_another_way(capsys):
    def tf_data_train(model, x, y, batch_size, epochs, learning_rate):
        optimizer = keras.optimizers.SGD(learning_rate)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)

        @tf.function
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))

        for _ in range(epochs):
            for xb, yb in data:
                step(xb, yb)

    def predict_evaluate(model, x, y, batch_size):
        return float(np.mean(np.argmax(model.predict(x, batch_size=batch_size, verbose=0),
                                       axis=1) == y))

    passes(check.fix_script, make_train(merge=True), make_evaluate(), capsys=capsys)
    passes(check.fix_script, tf_data_train, predict_evaluate, capsys=capsys)


@pytest.mark.parametrize("train, evaluate, message", [
    (make_train(drop_remainder=False), make_evaluate(training=True),
     r"2 of the 2 planted bugs remain\n  \(1\) the trailing batch.*\n  \(2\) evaluate runs"),
    (make_train(drop_remainder=False), make_evaluate(),
     r"1 of the 2 planted bugs remain\n  \(1\) the trailing batch: train still steps on a last "
     r"batch of 1 example"),
    (make_train(), make_evaluate(training=True),
     r"1 of the 2 planted bugs remain\n  \(1\) evaluate runs the model in training mode"),
    (make_train(training=None), make_evaluate(), "never calls the model with training=True"),
    (make_train(epochs=2), make_evaluate(), "case 2 of 3.*training-mode calls"),
    (make_train(), make_evaluate(scale=100.0), "percentage"),
    (make_train(), make_evaluate(skip_last=True), "case 1 of 3.*accuracy evaluate returned"),
])
def test_6_3_mistakes(train, evaluate, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.fix_script(train, evaluate)


# --- learner attempts from review R3: wrong answers the first checker accepted or named badly, and
# right answers written another way ---------------------------------------------------------------

def variant_block(x, filters, strides=1, *, stride_on_second=False, projection_kernel=1,
                  projection_relu=False, ops=False, zeros_object=False):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = L.Conv2D(filters, projection_kernel, strides=strides, padding="same",
                            use_bias=False)(x)
        shortcut = L.BatchNormalization()(shortcut)
        if projection_relu:
            shortcut = L.ReLU()(shortcut)
    branch = L.Conv2D(filters, (3, 3), strides=1 if stride_on_second else strides,
                      padding="same", use_bias=False)(x)
    branch = L.Activation(keras.activations.relu)(L.BatchNormalization(axis=-1)(branch))
    branch = L.Conv2D(filters, 3, strides=strides if stride_on_second else 1, padding="same",
                      use_bias=False)(branch)
    branch = L.BatchNormalization(
        gamma_initializer=keras.initializers.Zeros() if zeros_object else "zeros")(branch)
    if ops:  # Keras 3: `+` and keras.ops.relu on Keras tensors are graph operations too
        return keras.ops.relu(shortcut + branch)
    return L.ReLU()(L.Add()([shortcut, branch]))


@pytest.mark.parametrize("options", [dict(ops=True), dict(zeros_object=True)])
def test_6_1_more_right_answers(options, capsys):
    passes(check.residual_block, lambda x, f, s=1: variant_block(x, f, s, **options),
           capsys=capsys)


@pytest.mark.parametrize("options, message", [
    (dict(stride_on_second=True), "case 3 of 3.*strides are 1 \\(first convolution\\) and 2"),
    (dict(projection_kernel=3), "case 2 of 3.*projection shortcut's convolution is 3x3"),
    (dict(projection_relu=True), "projection shortcut ends with an activation"),
])
def test_6_1_more_mistakes(options, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.residual_block(lambda x, f, s=1: variant_block(x, f, s, **options))


def nested_block(x, filters, strides=1, *, gamma_zero=True):
    """A residual block whose branch and projection are nested Sequential models."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = keras.Sequential([L.Conv2D(filters, 1, strides=strides, use_bias=False),
                                     L.BatchNormalization()])(x)
    branch = keras.Sequential([
        L.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False),
        L.BatchNormalization(), L.ReLU(),
        L.Conv2D(filters, 3, padding="same", use_bias=False),
        L.BatchNormalization(gamma_initializer="zeros" if gamma_zero else "ones")])(x)
    return L.ReLU()(L.Add()([shortcut, branch]))


def test_6_1_nested_sequential_branch_passes(capsys):
    """What the block computes counts, not how it is packaged: a branch (and a projection) built
    as nested Sequential models is a right answer."""
    check.residual_block(nested_block)
    assert capsys.readouterr().out.startswith("✓ Exercise 6.1 passed")


def test_6_1_nested_functional_block_passes(capsys):
    def answer(x, filters, strides=1):
        inner_input = keras.Input(x.shape[1:])
        block = keras.Model(inner_input, variant_block(inner_input, filters, strides))
        return block(x)
    check.residual_block(answer)
    assert capsys.readouterr().out.startswith("✓ Exercise 6.1 passed")


def test_6_1_mistakes_inside_a_nested_branch_are_still_named():
    with pytest.raises(ExerciseMistake, match="starts with gamma = 1"):
        check.residual_block(lambda x, f, s=1: nested_block(x, f, s, gamma_zero=False))


def recalibrate_variant(model, batches, *, read_once=False, momentum_zero=True, freeze=True):
    rates = [layer.rate for layer in dropouts(model)]
    for layer in dropouts(model):
        layer.rate = 0.0
    try:
        frozen_variant(model, batches, read_once=read_once, momentum_zero=momentum_zero,
                       freeze=freeze)
    finally:
        for layer, rate in zip(dropouts(model), rates):
            layer.rate = rate


def frozen_variant(model, batches, *, read_once=False, momentum_zero=True, freeze=True):
    layers = bn_layers(model)
    saved = [(layer.trainable, layer.momentum) for layer in layers]
    for layer in layers:
        layer.trainable = layer.trainable and not freeze
    for target in layers:
        target.trainable = True
        if momentum_zero:
            target.momentum = 0.0
        count, total, second = 0, 0.0, 0.0
        for batch in batches:
            model(batch, training=True)
            if read_once:    # the statistics read once, after the loop
                continue
            mean = target.moving_mean.numpy().astype(np.float64)
            var = target.moving_variance.numpy().astype(np.float64)
            count, total = count + len(batch), total + len(batch) * mean
            second = second + len(batch) * (var + mean ** 2)
        if not read_once:
            target.moving_mean.assign((total / count).astype(np.float32))
            target.moving_variance.assign((second / count - (total / count) ** 2)
                                          .astype(np.float32))
        target.trainable = not freeze
    for layer, (trainable, momentum) in zip(layers, saved):
        layer.trainable, layer.momentum = trainable, momentum


@pytest.mark.parametrize("options, message", [
    (dict(read_once=True), "LAST batch only"),
    (dict(momentum_zero=False), "mix in the old moving statistics"),
    (dict(freeze=False), "other BN layers were left in training mode"),
])
def test_6_2_more_mistakes(options, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.recalibrate(lambda m, b: recalibrate_variant(m, b, **options))


def test_6_2_flags_message_names_only_what_changed():
    def answer(model, batches):
        recalibrate(model, batches)
        for layer in bn_layers(model):
            layer.trainable = True
    with pytest.raises(ExerciseMistake, match=r"trainable False->True\)"):
        check.recalibrate(answer)


def test_6_2_right_answers_written_another_way(capsys):
    def one_call_per_layer(model, batches):
        data = np.concatenate(batches)
        layers = bn_layers(model)
        saved = [(layer.trainable, layer.momentum) for layer in layers]
        rates = [(layer, layer.rate) for layer in dropouts(model)]
        try:
            for layer, _ in rates:
                layer.rate = 0.0                        # Dropout off in training mode too
            for layer in layers:
                layer.trainable = False
            for target in layers:
                target.trainable, target.momentum = True, 0.0
                model(data, training=True)
                target.trainable = False
        finally:
            for layer, (trainable, momentum) in zip(layers, saved):
                layer.trainable, layer.momentum = trainable, momentum
            for layer, rate in rates:
                layer.rate = rate

    def spy_on_inputs(model, batches):
        for target in bn_layers(model):
            seen, original = [], target.call

            def spy(x, *args, _seen=seen, _original=original, **kwargs):
                _seen.append(x)
                return _original(x, *args, **kwargs)
            target.call = spy
            for batch in batches:
                model(batch, training=False)
            target.call = original
            x = tf.cast(tf.concat(seen, 0), tf.float64)
            mean, variance = tf.nn.moments(x, list(range(len(x.shape) - 1)))
            target.moving_mean.assign(tf.cast(mean, tf.float32))
            target.moving_variance.assign(tf.cast(variance, tf.float32))

    passes(check.recalibrate, one_call_per_layer, capsys=capsys)
    passes(check.recalibrate, spy_on_inputs, capsys=capsys)


def train_variant(skip_one=False, shuffle=False, overlap=False):
    def train(model, x, y, batch_size, epochs, learning_rate):
        optimizer = keras.optimizers.SGD(learning_rate)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        rng = np.random.default_rng(0)
        for _ in range(epochs):
            if shuffle:
                order = rng.permutation(len(x))
                x, y = x[order], y[order]
            starts = range(len(x) // batch_size) if overlap else range(0, len(x), batch_size)
            for start in starts:
                x_batch, y_batch = x[start:start + batch_size], y[start:start + batch_size]
                if len(x_batch) == 1 if skip_one else len(x_batch) < batch_size:
                    continue
                with tf.GradientTape() as tape:
                    loss = loss_fn(y_batch, model(x_batch, training=True))
                grads = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return train


@pytest.mark.parametrize("options, message", [
    # skips only a batch of one: case 2 leaves a batch of 2
    (dict(skip_one=True), "(?s)case 2 of 3.*last batch of 2 examples"),
    (dict(shuffle=True), "weights differ from those of the colleague's script"),
    (dict(overlap=True), "weights differ from those of the colleague's script"),   # start = i
])
def test_6_3_more_mistakes(options, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.fix_script(train_variant(**options), make_evaluate())


def test_6_3_index_loop_and_one_call_evaluate(capsys):
    def train(model, x, y, batch_size, epochs, learning_rate):
        optimizer = keras.optimizers.SGD(learning_rate)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        for _ in range(epochs):
            for i in range(len(x) // batch_size):
                part = slice(i * batch_size, (i + 1) * batch_size)
                with tf.GradientTape() as tape:
                    loss = loss_fn(y[part], model(x[part], training=True))
                grads = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(grads, model.trainable_variables))

    def evaluate(model, x, y, batch_size):
        return np.mean(np.argmax(model(x), axis=-1) == y)

    passes(check.fix_script, train, evaluate, capsys=capsys)
