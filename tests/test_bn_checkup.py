"""Chapter 13's lesson helpers: every patient of the gallery shows its planted bug to the doctor at
the planted layer, and the helpers plant what they say (no more)."""

import keras
import numpy as np
import pytest

import bnbook
from bnbook.lessons import bn_checkup as ck
from bnbook.lessons import conv_resnets as cn


@pytest.fixture(scope="module")
def gallery():
    (x_train, y_train), _ = cn.mnist_images(n_train=512, n_test=8, seed=0)
    patients = ck.gallery(x_train, y_train)
    reports = []
    for patient in patients:
        before = [w.copy() for w in patient.model.get_weights()]
        reports.append(bnbook.examine(patient.model, **patient.data))
        after = patient.model.get_weights()
        assert all(np.array_equal(a, b) for a, b in zip(before, after)), patient.bug
    return patients, reports


def test_every_planted_bug_is_found_at_its_layer(gallery):
    patients, reports = gallery
    rows = ck.rule_table(patients, reports)
    assert len(rows) == 11 and len({row["rule"] for row in rows}) == 11
    missing = [(row["bug"], row["rules"]) for row in rows if not row["found"]]
    assert not missing, missing


def test_only_the_planted_bug_and_what_it_implies(gallery):
    patients, reports = gallery
    allowed = {"stale-statistics": {"slow-momentum"}, "dropout-before-bn": {"unfoldable"}}
    for patient, report in zip(patients, reports):
        extra = report.rules - {patient.rule} - allowed.get(patient.rule, set())
        assert not extra, (patient.bug, extra)


def test_tape_loop_moves_gamma_and_not_the_statistics():
    x = ck.normal(64, 8)
    model = ck.tape_trained(x, np.arange(64) % 3)
    bn = model.get_layer("bn")
    assert np.all(bn.moving_mean.numpy() == 0) and np.all(bn.moving_variance.numpy() == 1)
    assert np.abs(bn.gamma.numpy() - 1).max() > 0


def test_training_block_is_batch_dependent_whatever_training_says():
    model = ck.batch_stats_net()
    x = ck.normal(16, 8)
    alone = np.concatenate([model(x[i:i + 1], training=False).numpy() for i in range(4)])
    inside = model(x, training=False).numpy()[:4]
    assert np.abs(alone - inside).max() > 1e-2 * np.abs(inside).max()
    healthy = ck.dense_net()
    alone = np.concatenate([healthy(x[i:i + 1], training=False).numpy() for i in range(4)])
    np.testing.assert_allclose(alone, healthy(x, training=False).numpy()[:4], atol=1e-5)


def test_dense_net_switches_and_save_quietly(tmp_path, recwarn):
    plain = ck.dense_net()
    assert [type(layer).__name__ for layer in plain.layers] == [
        "Dense", "BatchNormalization", "ReLU", "Dense"]
    assert not plain.get_layer("dense").use_bias
    planted = ck.dense_net(bias=True, dropout=0.5, relu_first=True, bn_dtype="float16")
    assert [layer.name for layer in planted.layers[:4]] == ["dense", "relu_first", "drop", "bn"]
    assert planted.get_layer("bn").moving_mean.dtype == "float16"
    ck.save_quietly(plain, tmp_path / "plain.keras")
    loaded = keras.models.load_model(tmp_path / "plain.keras")
    assert [w.shape for w in loaded.get_weights()] == [w.shape for w in plain.get_weights()]
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]
