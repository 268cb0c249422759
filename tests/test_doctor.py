"""bnbook.doctor: a gallery of planted BN bugs, each found by its rule at the right layer; clean
book models and Keras applications without error-level findings; the report's formats; the
command line (exit codes 0, 1 and 2)."""

import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from keras import layers, ops

import bnbook
from bnbook import doctor
from bnbook.lessons import conv_resnets as cn
from bnbook.lessons import devices_deployment as deploy
from bnbook.lessons import keras_layer as kd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def normal(*shape, seed=0, scale=1.0, loc=0.0):
    return (loc + scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def dense_net(name="net", bias=False, momentum=0.9, bn_kwargs=None, seed=0):
    """Input(8) -> Dense(16) -> BN -> ReLU -> Dense(3), layers named by role."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8,)),
        layers.Dense(16, use_bias=bias, name="dense"),
        layers.BatchNormalization(momentum=momentum, name="bn", **(bn_kwargs or {})),
        layers.ReLU(name="relu"),
        layers.Dense(3, name="logits"),
    ], name=name)


def found(report, rule, layer=None):
    """The findings of ``rule`` (at ``layer`` if given); fails with the report if there is none."""
    hits = [f for f in report.by_rule(rule) if layer is None or f.layer == layer]
    assert hits, f"{rule} at {layer!r} not found in:\n{report}"
    return hits


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


def assert_unchanged(model, before):
    after = model.get_weights()
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


# --- custom layers for the batch-dependent-inference gallery -----------------------------------

class BatchStatisticsBN(layers.BatchNormalization):
    """A BN subclass that normalises with the batch's statistics whatever ``training`` says."""

    def call(self, inputs, training=None, mask=None):
        mean = ops.mean(inputs, axis=0)
        variance = ops.var(inputs, axis=0)
        return self.gamma * (inputs - mean) / ops.sqrt(variance + self.epsilon) + self.beta


class BatchCentre(layers.Layer):
    """A custom layer (not BN) that subtracts the batch mean, also at inference."""

    def call(self, inputs):
        return inputs - ops.mean(inputs, axis=0, keepdims=True)


class TrainingBNBlock(layers.Layer):
    """A custom layer whose BN is always called with training=True."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(units, use_bias=False, name="dense")
        self.norm = layers.BatchNormalization(name="norm")

    def call(self, inputs):
        return self.norm(self.dense(inputs), training=True)


# --- the gallery: one planted bug per rule (some rules twice) -----------------------------------

def test_batch_dependent_inference_training_true_in_functional_graph():
    inputs = keras.Input((8,), name="x")
    hidden = layers.Dense(16, use_bias=False, name="dense")(inputs)
    hidden = layers.BatchNormalization(name="bn_always_training")(hidden, training=True)
    model = keras.Model(inputs, layers.Dense(3, name="logits")(hidden), name="planted")
    before = weights_of(model)
    report = doctor.examine(model, normal(64, 8))
    (finding,) = found(report, "batch-dependent-inference", "bn_always_training")
    assert finding.severity == "error" and finding.evidence["max_relative_difference"] > 1e-2
    assert "training=True" in finding.evidence["cause"]
    assert_unchanged(model, before)          # the pass updated the statistics; they are back


def test_batch_dependent_inference_bn_subclass_and_custom_layer_and_nested():
    keras.utils.set_random_seed(0)
    subclass = keras.Sequential([keras.Input((8,)), layers.Dense(16, use_bias=False, name="d"),
                                 BatchStatisticsBN(name="batch_stats_bn"),
                                 layers.Dense(3, name="out")], name="sub")
    found(doctor.examine(subclass, normal(32, 8)), "batch-dependent-inference", "batch_stats_bn")

    centred = keras.Sequential([keras.Input((8,)), layers.Dense(4, name="d"),
                                BatchCentre(name="centre")], name="centred")
    found(doctor.examine(centred, normal(32, 8)), "batch-dependent-inference", "centre")
    lambda_net = keras.Sequential([keras.Input((8,)), layers.Dense(4, name="d"),
                                   layers.Lambda(lambda t: t - ops.mean(t, axis=0), name="lam")])
    found(doctor.examine(lambda_net, normal(32, 8)), "batch-dependent-inference", "lam")

    inner = keras.Sequential([keras.Input((8,)), TrainingBNBlock(6, name="block")], name="inner")
    inputs = keras.Input((8,))
    outer = keras.Model(inputs, layers.Dense(2, name="head")(inner(inputs)), name="outer")
    before = weights_of(outer)
    report = doctor.examine(outer, normal(32, 8))
    found(report, "batch-dependent-inference", "inner/block/norm")
    assert_unchanged(outer, before)


def test_batch_dependent_inference_compiled_path_agrees(monkeypatch):
    monkeypatch.setattr(doctor, "COMPILE_ABOVE", 0)   # run the passes as one tf.function
    inputs = keras.Input((8,))
    hidden = layers.BatchNormalization(name="bn_training")(
        layers.Dense(16, use_bias=False, name="dense")(inputs), training=True)
    model = keras.Model(inputs, layers.Dense(3, name="logits")(hidden))
    found(doctor.examine(model, normal(100, 8)), "batch-dependent-inference", "bn_training")
    clean = dense_net()
    report = doctor.examine(clean, normal(100, 8))
    assert not report.by_rule("batch-dependent-inference")


def test_untrained_statistics_from_a_tape_loop_without_training_true():
    model = dense_net(name="tape")
    x, y = normal(64, 8), np.arange(64) % 3
    optimizer = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    import tensorflow as tf

    for _ in range(3):                      # the classic bug: model(x), not model(x, training=True)
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    report = doctor.examine(model)
    (finding,) = found(report, "untrained-statistics", "bn")
    assert finding.severity == "error" and finding.evidence["max_gamma_change"] > 0
    # untrained BN (gamma 1, beta 0), and gamma initialised at 0 as in make_resnet: no finding
    assert not doctor.examine(dense_net()).by_rule("untrained-statistics")
    assert not doctor.examine(cn.make_resnet(blocks=1)).by_rule("untrained-statistics")


def test_stale_statistics_with_accuracy_before_and_after_recalibration():
    x = normal(256, 8, loc=3.0, scale=2.0)
    model = dense_net(name="stale")
    bnbook.recalibrate_bn(model, x)                 # statistics that fit x: nothing stale
    assert not doctor.examine(model, x).by_rule("stale-statistics")
    y = np.argmax(model(x, training=False).numpy(), axis=1)   # labels the model gets right
    bn = model.get_layer("bn")
    bn.moving_mean.assign(bn.moving_mean.numpy() + 2.0 * np.sqrt(bn.moving_variance.numpy()))
    before = weights_of(model)
    report = doctor.examine(model, x, y=y)
    (finding,) = found(report, "stale-statistics", "bn")
    evidence = finding.evidence
    assert evidence["channels_off"] == 16 and evidence["max_mean_shift_in_std"] > 1.5
    assert evidence["accuracy"] < 0.9 and evidence["accuracy_after_recalibration"] == 1.0
    assert "bn_input_statistics" in evidence["recalibration"]
    assert_unchanged(model, before)


def test_zero_variance_error_and_note_when_the_channel_is_constant_in_the_data():
    model = dense_net(name="zero")
    model.get_layer("bn").moving_variance.assign(np.r_[0.0, 0.0, np.ones(14)].astype(np.float32))
    (finding,) = found(doctor.examine(model), "zero-variance", "bn")
    assert finding.severity == "error" and finding.evidence["channels"] == 2
    # if those channels are constant in the data as well, nothing is amplified: a note
    kernel = model.get_layer("dense").kernel.numpy()
    kernel[:, :2] = 0.0
    model.get_layer("dense").kernel.assign(kernel)
    (finding,) = found(doctor.examine(model, normal(64, 8)), "zero-variance", "bn")
    assert finding.severity == "note" and finding.evidence["constant_in_data"] is True


def test_nan_statistics():
    model = dense_net(name="nan")
    gamma = model.get_layer("bn").gamma.numpy()
    gamma[3] = np.nan
    model.get_layer("bn").gamma.assign(gamma)
    variance = model.get_layer("bn").moving_variance.numpy()
    variance[0] = np.inf
    model.get_layer("bn").moving_variance.assign(variance)
    report = doctor.examine(model)
    (finding,) = found(report, "nan-statistics", "bn")
    assert finding.severity == "error" and finding.evidence["non_finite_values"] == 2
    json.loads(report.to_json())             # no NaN in the JSON
    # the same inside a subclassed model (no graph to walk; the weights are still read)
    subclassed = Subclassed()
    subclassed(normal(4, 8))
    subclassed.norm.moving_mean.assign(np.full(16, np.nan, np.float32))
    found(doctor.examine(subclassed, normal(64, 8)), "nan-statistics", "norm")


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.dense = layers.Dense(16, use_bias=False, name="dense")
        self.norm = layers.BatchNormalization(name="norm")
        self.out = layers.Dense(2, name="out")

    def call(self, inputs, training=None):
        return self.out(self.norm(self.dense(inputs), training=training))


def test_slow_momentum():
    slow = dense_net(momentum=0.99)
    (finding,) = found(doctor.examine(slow, training_steps=100), "slow-momentum", "bn")
    assert finding.evidence["initial_weight_left"] == pytest.approx(0.99 ** 100, rel=1e-4)
    assert finding.evidence["steps_needed"] == 299
    assert not doctor.examine(dense_net(momentum=0.9), training_steps=100).by_rule(
        "slow-momentum")


def test_trailing_batch_of_one_and_small_batch():
    model = dense_net()
    (finding,) = found(doctor.examine(model, normal(65, 8), batch_size=64),
                       "trailing-batch-of-one", "")
    assert finding.evidence["last_batch"] == 1
    report = doctor.examine(model, normal(128, 8), batch_size=64)
    assert not report.by_rule("trailing-batch-of-one") and not report.by_rule("small-batch")
    (finding,) = found(doctor.examine(model, batch_size=4), "small-batch", "")
    assert finding.severity == "warning" and finding.evidence["batch_size"] == 4


def test_bias_before_bn_across_a_nested_model():
    inner = keras.Sequential([keras.Input((8, 8, 3)),
                              layers.Conv2D(4, 3, padding="same", name="conv")], name="inner")
    inputs = keras.Input((8, 8, 3))
    outputs = layers.BatchNormalization(name="outer_bn")(inner(inputs))
    model = keras.Model(inputs, outputs, name="outer")
    (finding,) = found(doctor.examine(model), "bias-before-bn", "outer_bn")
    assert finding.severity == "note" and finding.evidence["producer"] == "inner/conv"
    assert not doctor.examine(dense_net(bias=False)).by_rule("bias-before-bn")
    found(doctor.examine(dense_net(bias=True)), "bias-before-bn", "bn")


def test_wrong_axis():
    channels_first = keras.Sequential([
        keras.Input((3, 8, 8)),
        layers.Conv2D(4, 3, data_format="channels_first", use_bias=False, name="conv"),
        layers.BatchNormalization(axis=-1, name="bn")], name="nchw")
    (finding,) = found(doctor.examine(channels_first), "wrong-axis", "bn")
    assert finding.evidence["channel_axis"] == 1 and finding.severity == "error"
    inputs = keras.Input((8, 8, 3))
    hidden = layers.ReLU(name="relu")(layers.Conv2D(8, 3, use_bias=False, name="conv")(inputs))
    nhwc = keras.Model(inputs, layers.BatchNormalization(axis=1, name="bn_axis1")(hidden))
    found(doctor.examine(nhwc), "wrong-axis", "bn_axis1")
    assert not doctor.examine(dense_net()).by_rule("wrong-axis")


def test_dropout_before_bn_with_the_measured_variance_shift():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), layers.Dense(32, name="dense"),
                              layers.Dropout(0.5, name="drop"),
                              layers.BatchNormalization(name="bn"),
                              layers.Dense(3, name="logits")], name="dropout_net")
    (finding,) = found(doctor.examine(model), "dropout-before-bn", "bn")
    assert finding.evidence["dropout"] == "drop" and finding.evidence["through"] == "(directly)"
    before = weights_of(model)
    (finding,) = found(doctor.examine(model, normal(256, 8)), "dropout-before-bn", "bn")
    assert 0.3 < finding.evidence["variance_ratio_inference_over_training"] < 0.9
    assert_unchanged(model, before)


def test_float16_statistics_and_mixed_precision_is_fine():
    model = dense_net(bn_kwargs={"dtype": "float16"})
    (finding,) = found(doctor.examine(model), "float16-statistics", "bn")
    assert finding.evidence["variable_dtype"] == "float16"
    mixed = cn.make_cnn(dtype="mixed_float16", momentum=0.9)
    assert not doctor.examine(mixed).by_rule("float16-statistics")


def test_frozen_but_training_nested_base_and_flat_model():
    base = kd.mnist_base()
    for layer in base.layers:
        if not isinstance(layer, layers.BatchNormalization):
            layer.trainable = False                    # the mistake: BN left trainable
    model = keras.Sequential([keras.Input((784,)), base, layers.Dense(10, name="head")])
    report = doctor.examine(model)
    bn_paths = {f"base/{layer.name}" for layer in bnbook.bn_layers(base)}
    assert {f.layer for f in report.by_rule("frozen-but-training")} == bn_paths
    flat = dense_net()
    flat.get_layer("dense").trainable = False
    found(doctor.examine(flat), "frozen-but-training", "bn")
    base.trainable = False                               # the recipe: everything frozen
    assert not doctor.examine(model).by_rule("frozen-but-training")


def test_unfoldable():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    after_relu = layers.BatchNormalization(name="bn_after_relu")(
        layers.ReLU()(layers.Dense(8, use_bias=False, name="d1")(inputs)))
    after_activation = layers.BatchNormalization(name="bn_after_activation")(
        layers.Dense(8, activation="relu", use_bias=False, name="d2")(after_relu))
    shared = layers.Dense(8, use_bias=False, name="d3")(after_activation)
    forked = layers.BatchNormalization(name="bn_forked")(shared)
    outputs = layers.Add()([forked, shared])
    model = keras.Model(inputs, layers.BatchNormalization(name="bn_tail")(outputs))
    report = doctor.examine(model)
    for path in ("bn_after_relu", "bn_after_activation", "bn_forked", "bn_tail"):
        (finding,) = found(report, "unfoldable", path)
        assert finding.severity == "note"
    assert "relu" in found(report, "unfoldable", "bn_after_activation")[0].evidence["reason"]
    input_bn = kd.dense_bn_model()
    found(doctor.examine(input_bn), "unfoldable", input_bn.layers[0].name)
    assert not doctor.examine(deploy.small_conv_net()).by_rule("unfoldable")


def test_planted_bug_inside_a_keras_application_is_found_by_its_path():
    base = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    model = keras.Sequential([keras.Input((32, 32, 3)), base, layers.GlobalAveragePooling2D(),
                              layers.Dense(2)])
    bn = base.get_layer("conv2_block1_1_bn")
    bn.gamma.assign(np.full(bn.gamma.shape, 2.0, np.float32))
    report = doctor.examine(model)
    (finding,) = found(report, "untrained-statistics", f"{base.name}/conv2_block1_1_bn")
    assert len(report.errors) == 1
    found(report, "bias-before-bn", f"{base.name}/conv1_bn")


# --- clean models ----------------------------------------------------------------------------

def summary(report):
    return sorted({(f.severity, f.rule) for f in report.findings})


def test_clean_book_models_have_no_errors():
    (x_train, y_train), (x_test, y_test) = cn.mnist_images(n_train=512, n_test=256)
    cnn = cn.make_cnn(momentum=0.9)
    cn.train(cnn, x_train, y_train, steps=100, batch_size=64, learning_rate=0.05)
    report = doctor.examine(cnn, x_test, y=y_test, batch_size=64, training_steps=100)
    assert not report.has_errors, str(report)
    assert not report.by_rule("stale-statistics") and not report.by_rule("slow-momentum")
    print("make_cnn:", summary(report))

    conv = deploy.small_conv_net()
    deploy.randomize_bn_statistics(conv, seed=1)
    report = doctor.examine(conv, x_test[:128], batch_size=64)
    assert not report.has_errors, str(report)
    assert not report.by_rule("unfoldable") and not report.by_rule("bias-before-bn")
    print("small_conv_net:", summary(report))

    resnet = cn.make_resnet(blocks=1, momentum=0.9)
    report = doctor.examine(resnet, x_test[:128])
    assert not report.has_errors, str(report)
    print("make_resnet:", summary(report))


APPLICATIONS = ["ResNet50", "ResNet50V2", "MobileNetV2", "EfficientNetB0", "DenseNet121",
                "ConvNeXtTiny"]


@pytest.mark.parametrize("name", APPLICATIONS)
def test_keras_applications_have_no_errors(name):
    """Untrained applications (moving statistics 0 and 1, gamma 1, beta 0) at 32x32."""
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3))
    before = weights_of(model)
    report = doctor.examine(model, normal(6, 32, 32, 3, scale=50.0))
    assert not report.has_errors, str(report)
    assert not report.by_rule("untrained-statistics")
    assert_unchanged(model, before)
    if name == "ConvNeXtTiny":                 # no BN at all
        assert report.findings == []
    print(name, summary(report))


# --- the report ---------------------------------------------------------------------------------

def test_report_formats_and_order():
    model = dense_net(bias=True, momentum=0.99, bn_kwargs={"dtype": "float16"})
    report = doctor.examine(model, training_steps=10)
    severities = [f.severity for f in report.findings]
    assert severities == sorted(severities, key=doctor.SEVERITIES.index)
    assert report.has_errors and report.errors[0].rule == "float16-statistics"
    text = str(report)
    for rule in ("float16-statistics", "slow-momentum", "bias-before-bn"):
        assert rule in text
    assert "severity" in text and "chapter 6" in text and "06_conv_resnets.ipynb" in text
    parsed = json.loads(report.to_json())
    assert list(parsed) == ["findings"] and parsed == report.to_dict()
    assert {"rule", "severity", "layer", "evidence", "fix", "chapter"} == set(parsed["findings"][0])
    for finding in report.findings:
        assert finding.chapter.startswith("chapter") and ".ipynb" in finding.chapter
        assert all(isinstance(v, (int, float, str, bool)) for v in finding.evidence.values())
    planted = doctor.Report([doctor.Finding("wrong-axis", "error", "a<b>", {"why": "<&>"},
                                            "fix <it>", "chapter 4 (04_keras_layer.ipynb)")])
    page = planted._repr_html_()
    assert "&lt;b&gt;" in page and "&lt;&amp;&gt;" in page and "<b>" not in page
    empty = doctor.examine(keras.Sequential([keras.Input((3,)), layers.Dense(2)]))
    assert not empty.findings and "no findings" in str(empty) and not empty.has_errors
    assert set(doctor.RULES) == {
        "batch-dependent-inference", "untrained-statistics", "stale-statistics",
        "zero-variance", "nan-statistics", "slow-momentum", "trailing-batch-of-one",
        "bias-before-bn", "wrong-axis", "dropout-before-bn", "float16-statistics",
        "small-batch", "frozen-but-training", "unfoldable"}


def test_data_that_does_not_fit_raises_data_error():
    with pytest.raises(doctor.DataError, match="does not fit"):
        doctor.examine(dense_net(), normal(10, 9))
    with pytest.raises(doctor.DataError, match="labels"):
        doctor.examine(dense_net(), normal(10, 8), y=np.zeros(9))


# --- the command line ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("doctor")
    good = deploy.small_conv_net()
    deploy.randomize_bn_statistics(good, seed=1)
    bad = deploy.small_conv_net()
    bad.layers[1].gamma.assign(np.full(16, 1.5, np.float32))     # untrained-statistics
    with warnings.catch_warnings():      # Keras' own NumPy 2 DeprecationWarning when saving
        warnings.simplefilter("ignore", DeprecationWarning)
        good.save(folder / "good.keras")
        bad.save(folder / "bad.keras")
    x = normal(70, 28, 28, 1, seed=3)
    np.savez(folder / "data.npz", x=x, y=np.arange(70) % 10)
    np.save(folder / "images.npy", x)
    np.save(folder / "wrong.npy", normal(10, 5, 5))
    (folder / "text.keras").write_text("not a model\n")
    return folder


def cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "bnbook.doctor", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


def test_cli_good_model_exits_0_and_prints_json(files):
    code, out, err = cli(files / "good.keras", "--data", files / "data.npz", "--batch-size", 64,
                         "--steps", 500, "--json")
    assert code == 0, err
    parsed = json.loads(out)
    assert isinstance(parsed["findings"], list)
    assert not any(f["severity"] == "error" for f in parsed["findings"])
    assert any(f["rule"] == "trailing-batch-of-one" for f in parsed["findings"])   # 70 % 64 = 6
    assert err == "", err                  # no TensorFlow start-up lines, no warnings


def test_cli_planted_error_exits_1(files):
    code, out, err = cli(files / "bad.keras", "--data", files / "images.npy")
    assert code == 1, err
    assert "untrained-statistics" in out and "severity" in out


@pytest.mark.parametrize("case", ["missing", "not a model", "wrong shape"])
def test_cli_bad_input_exits_2_with_one_line(files, case):
    args = {"missing": [files / "nowhere.keras"],
            "not a model": [files / "text.keras"],
            "wrong shape": [files / "good.keras", "--data", files / "wrong.npy"]}[case]
    code, out, err = cli(*args)
    assert code == 2
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and err.startswith("bnbook.doctor: ")
