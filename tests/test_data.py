"""load_mnist: explicit path, MNIST_NPZ, and an actionable error when neither works."""

import numpy as np
import pytest

from bnbook.lessons import data


def fake_mnist(path, **override):
    arrays = {
        "x_train": np.zeros((60000, 28, 28), np.uint8), "y_train": np.zeros(60000, np.uint8),
        "x_test": np.ones((10000, 28, 28), np.uint8), "y_test": np.arange(10000, dtype=np.uint8),
    }
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def test_reads_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_NPZ", str(fake_mnist(tmp_path / "m.npz")))
    (x_train, y_train), (x_test, y_test) = data.load_mnist()
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert x_test.max() == 1 and y_test[5] == 5


def test_explicit_path_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_NPZ", str(tmp_path / "missing.npz"))
    (_, _), (x_test, _) = data.load_mnist(fake_mnist(tmp_path / "m.npz"))
    assert x_test.shape == (10000, 28, 28)


def test_missing_file_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_NPZ", str(tmp_path / "missing.npz"))
    with pytest.raises(data.MNISTUnavailableError, match="export MNIST_NPZ") as info:
        data.load_mnist()
    assert str(tmp_path) not in str(info.value), "the message must not leak a machine path"


def test_wrong_layout_is_named(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros(3))
    with pytest.raises(data.MNISTUnavailableError, match="lacks"):
        data.load_mnist(path)
    fake_mnist(path, x_train=np.zeros((100, 28, 28), np.uint8))
    with pytest.raises(data.MNISTUnavailableError, match="x_train has shape"):
        data.load_mnist(path)


def test_offline_download_failure_is_actionable(monkeypatch):
    import keras

    def no_internet():
        raise OSError("network unreachable")

    monkeypatch.delenv("MNIST_NPZ", raising=False)
    monkeypatch.setattr(keras.datasets.mnist, "load_data", no_internet)
    with pytest.raises(data.MNISTUnavailableError, match="MNIST_NPZ"):
        data.load_mnist()


@pytest.mark.skipif(not __import__("os").environ.get("MNIST_NPZ"), reason="needs MNIST_NPZ")
def test_real_file_is_whole():
    (x_train, y_train), (x_test, y_test) = data.load_mnist()
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert round(float(x_train.mean()), 3) == 33.318
