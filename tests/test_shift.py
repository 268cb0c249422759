"""bnbook.lessons.distribution_shift: the corruptions and the test-time adaptation helpers of chapter 10."""

import numpy as np
import pytest

from bnbook.lessons import conv_resnets as cn
from bnbook.lessons import distribution_shift as sh


@pytest.fixture(scope="module")
def digits():
    (x, y), _ = cn.mnist_images(n_train=64, n_test=8, seed=3)
    return x, y


@pytest.fixture(scope="module")
def net(digits):
    x, y = digits
    model = cn.make_cnn(filters=(4, 8), dense_units=8, momentum=0.5, seed=1)
    cn.train(model, x, y, steps=5, batch_size=16, learning_rate=0.05, seed=1)
    return model


# ---- corruptions --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sh.CORRUPTIONS)
@pytest.mark.parametrize("severity", sh.SEVERITIES)
def test_corruptions_keep_shape_dtype_and_range(digits, name, severity):
    x = digits[0][:6]
    out = sh.corrupt(x, name, severity, seed=0)
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.array_equal(out, x)
    assert np.array_equal(out, sh.corrupt(x, name, severity, seed=0))   # seeded


@pytest.mark.parametrize("name", sh.CORRUPTIONS)
def test_severity_grows(digits, name):
    """Each severity moves the images further from the clean ones (same seed)."""
    x = digits[0][:16]
    gaps = [np.abs(sh.corrupt(x, name, s, seed=0) - x).mean() for s in sh.SEVERITIES]
    assert gaps[0] < gaps[1] < gaps[2]


@pytest.mark.parametrize("name", ["gaussian noise", "impulse noise", "rotation", "translation"])
def test_random_corruptions_depend_on_the_seed(digits, name):
    x = digits[0][:8]
    assert not np.array_equal(sh.corrupt(x, name, 2, seed=0), sh.corrupt(x, name, 2, seed=1))


def test_deterministic_corruptions_by_formula(digits):
    x = digits[0][:4]
    assert np.allclose(sh.corrupt(x, "inversion", 3), 1.0 - x, atol=1e-6)
    assert np.allclose(sh.corrupt(x, "brightness", 3), np.clip(x + 0.5, 0, 1), atol=1e-6)
    contrast = sh.corrupt(x, "contrast", 2)
    assert np.allclose(contrast.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), atol=1e-5)
    assert np.allclose(contrast.std(axis=(1, 2, 3)), 0.3 * x.std(axis=(1, 2, 3)), rtol=1e-4)


def test_blur_and_translation_keep_the_ink(digits):
    """MNIST digits have empty borders: a blur and a shift of at most 3 pixels keep the ink."""
    x = digits[0][:8]
    for name in ("blur", "translation"):
        out = sh.corrupt(x, name, 3)
        assert np.allclose(out.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3)), rtol=0.01), name


def test_rotation_by_a_right_angle_is_rot90():
    image = np.random.default_rng(0).random((28, 28))
    assert np.allclose(sh._bilinear_rotate(image, 0.0), image)
    quarter = sh._bilinear_rotate(image, 90.0)
    assert any(np.allclose(quarter, np.rot90(image, k), atol=1e-9) for k in (1, -1))


def test_impulse_noise_sets_pixels_to_0_or_1(digits):
    x = digits[0][:8]
    out = sh.corrupt(x, "impulse noise", 3, seed=0)
    changed = out != x
    assert set(np.unique(out[changed])) <= {0.0, 1.0}
    assert 0.1 < changed.mean() < 0.2           # severity 3 hits 20% of pixels, some unchanged


def test_bad_arguments(digits):
    with pytest.raises(ValueError, match="unknown corruption"):
        sh.corrupt(digits[0], "fog")
    with pytest.raises(ValueError, match="severity"):
        sh.corrupt(digits[0], "blur", severity=4)


def test_label_sorted(digits):
    x, y = digits
    xs, ys = sh.label_sorted(x, y)
    assert np.all(np.diff(ys) >= 0)
    assert all(any(np.array_equal(a, b) for b in x) for a in xs[:5])
    assert np.array_equal(np.sort(y), ys)


# ---- statistics ---------------------------------------------------------------------------------

def test_mixed_statistics_limits_and_weights():
    ms, vs, mb, vb = np.float64(1.0), np.float64(4.0), np.float64(3.0), np.float64(2.0)
    assert sh.mixed_statistics(ms, vs, mb, vb, 8, 0) == (mb, vb)
    assert sh.mixed_statistics(ms, vs, mb, vb, 8, np.inf) == (ms, vs)
    mean, var = sh.mixed_statistics(ms, vs, mb, vb, 8, 8)
    assert np.isclose(mean, 2.0) and np.isclose(var, 3.0)
    mean, var = sh.mixed_statistics(ms, vs, mb, vb, 2, 6)     # N = 6 against n = 2
    assert np.isclose(mean, 0.75 * ms + 0.25 * mb) and np.isclose(var, 0.75 * vs + 0.25 * vb)


def test_forward_matches_keras_modes_and_changes_nothing(digits, net):
    x = digits[0][:16]
    before = [w.copy() for w in net.get_weights()]
    stored = sh.forward_with_batch_stats(net, x, 16, prior=np.inf).numpy()
    assert np.allclose(stored, net(x, training=False).numpy(), atol=1e-5)
    grouped = sh.forward_with_batch_stats(net, x, 4).numpy()
    assert all(np.array_equal(a, b) for a, b in zip(before, net.get_weights()))
    per_batch = []
    for i in range(0, 16, 4):
        per_batch.append(net(x[i:i + 4], training=True).numpy())
        net.set_weights(before)
    assert np.allclose(grouped, np.concatenate(per_batch), atol=1e-4)
    with pytest.raises(ValueError, match="do not split"):
        sh.forward_with_batch_stats(net, x[:10], 4)


def test_batch_of_one_gives_one_output_for_every_image(digits, net):
    logits = sh.forward_with_batch_stats(net, digits[0][:8], 1).numpy()
    assert np.allclose(logits, logits[0], atol=1e-5)


def test_accuracy_with_batch_stats(digits, net):
    x, y = digits[0][:16], digits[1][:16]
    logits = sh.forward_with_batch_stats(net, x, 8, prior=4).numpy()
    assert sh.accuracy_with_batch_stats(net, x, y, 8, prior=4) == np.mean(logits.argmax(1) == y)


def test_tent_changes_only_gamma_and_beta_and_lowers_entropy(digits, net):
    x = digits[0]
    before = {v.path: v.numpy().copy() for v in net.weights}
    entropies = sh.tent(net, x, steps=15, batch_size=32, learning_rate=0.5, seed=0)
    after = {v.path: v.numpy() for v in net.weights}
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    net.set_weights(list(before.values()))
    assert changed and all(path.endswith(("gamma", "beta")) for path in changed)
    assert entropies.shape == (15,) and entropies[-3:].mean() < entropies[:3].mean()


def test_gaussian_kl():
    mean, var = np.array([0.0, 1.0]), np.array([1.0, 4.0])
    assert sh.gaussian_kl(mean, var, mean, var) == 0.0
    # KL(N(0, 1) || N(1, 1)) = 1/2 per channel
    assert np.isclose(sh.gaussian_kl([0.0], [1.0], [1.0], [1.0]), 0.5)
    assert np.isclose(sh.gaussian_kl([0.0], [1.0], [0.0], [4.0]),
                      np.log(2.0) + 1 / 8 - 0.5)


def test_shift_scores_and_layer_inputs(digits, net):
    x = digits[0][:32]
    inputs = sh.layer_inputs(net, x)
    assert [a.shape for a in inputs] == [(32, 14, 14, 4), (32, 7, 7, 8), (32, 8)]
    scores = sh.shift_scores(net, x.reshape(4, 8, 28, 28, 1))
    assert scores.shape == (4, 3) and np.all(scores >= 0)
    inverted = sh.shift_scores(net, (1 - x).reshape(4, 8, 28, 28, 1))
    assert inverted.min() > scores.max()


def test_auroc():
    assert sh.auroc([0, 1, 2], [3, 4]) == 1.0
    assert sh.auroc([3, 4], [0, 1, 2]) == 0.0
    assert sh.auroc([1, 1], [1, 1]) == 0.5
    assert sh.auroc([0, 2], [1, 3]) == 0.75


def test_plot_corruptions(digits):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = sh.plot_corruptions(digits[0], n_images=1)
    assert len(fig.axes) == len(sh.CORRUPTIONS) * 4
    plt.close(fig)
