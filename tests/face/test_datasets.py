import gzip
import struct

import numpy as np
import pytest

from tvm_fxp import datasets
from tvm_fxp.datasets import fashion_mnist, load_npz, read_idx


def _idx(path, arr, code=0x08):
    hdr = struct.pack(">BBBB", 0, 0, code, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(hdr + arr.astype(">u1" if code == 0x08 else ">i4").tobytes())


def test_read_idx_roundtrip_and_errors(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _idx(tmp_path / "a.gz", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), a)
    b = np.array([1, -5, 70000], dtype=np.int32)
    _idx(tmp_path / "b.gz", b, code=0x0C)
    np.testing.assert_array_equal(read_idx(tmp_path / "b.gz"), b)
    raw = gzip.open(tmp_path / "a.gz").read()
    (tmp_path / "t").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="t"):
        read_idx(tmp_path / "t")
    (tmp_path / "m").write_bytes(b"\x01\x02\x08\x01" + raw[4:])
    with pytest.raises(ValueError, match="m"):
        read_idx(tmp_path / "m")


def test_bundled_subset_is_the_head_of_the_real_splits(monkeypatch):
    if datasets._find_debian("test") is None:
        pytest.skip("Debian dataset-fashion-mnist not installed; nothing to compare the subset with")
    full = fashion_mnist("test", limit=2000)
    monkeypatch.setattr(datasets, "DEBIAN_DIR", "/nonexistent")
    sub = fashion_mnist("test")
    assert sub.source.startswith("bundled subset") and len(sub.inputs) == 2000
    np.testing.assert_array_equal(sub.inputs, full.inputs)
    np.testing.assert_array_equal(sub.labels, full.labels)
    assert len(fashion_mnist("train").inputs) == 500
    full_val = fashion_mnist("val", limit=2000)
    monkeypatch.setattr(datasets, "DEBIAN_DIR", "/nonexistent")
    sub_val = fashion_mnist("val")
    assert sub_val.source.startswith("bundled subset") and len(sub_val.inputs) == 2000
    np.testing.assert_array_equal(sub_val.inputs, full_val.inputs)


def _rows(d):
    """Each image's 784 bytes of pixels as one hashable numpy void scalar."""
    px = np.round(d.inputs.reshape(len(d), -1) * 255).astype(np.uint8)
    return np.ascontiguousarray(px).view(np.dtype((np.void, px.shape[1]))).ravel()


def test_validation_split_never_overlaps_training_or_test():
    """"val" (the last 5,000 images of the training file) shares no image, pixel for pixel, with "train" (the
    55,000 the reference models were trained on) or with "test"; the bundled subset's splits likewise."""
    if datasets._find_debian("test") is None:
        pytest.skip("Debian dataset-fashion-mnist not installed")
    train, val, test = (fashion_mnist(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (55000, 5000, 10000)
    a, b, c = _rows(train), _rows(val), _rows(test)
    assert len(np.unique(b)) == 5000
    assert len(np.intersect1d(a, b)) == 0 and len(np.intersect1d(b, c)) == 0


def test_bundled_subset_splits_are_disjoint(monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_DIR", "/nonexistent")
    train, val, test = (fashion_mnist(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (500, 2000, 2000)
    b = _rows(val)
    assert len(np.intersect1d(_rows(train), b)) == 0 and len(np.intersect1d(b, _rows(test))) == 0


def test_test_split_is_refused_during_a_search():
    """The guard the searches run under: reading "test" inside it raises, naming the search; "val" and "train"
    stay readable, and "test" is readable again afterwards."""
    with datasets.TestSplitGuard("the goyal2021 search"):
        with pytest.raises(RuntimeError, match="goyal2021 search.*'val' split"):
            fashion_mnist("test", limit=10)
        assert len(fashion_mnist("val", limit=10)) == 10
    assert len(fashion_mnist("test", limit=10)) == 10
    with pytest.raises(ValueError, match="'train', 'val', 'test'"):
        fashion_mnist("validation")


def test_split_shapes_and_ranges():
    d = fashion_mnist("test", limit=100)
    assert d.inputs.shape == (100, 1, 28, 28) and d.inputs.dtype == np.float32
    assert 0.0 <= d.inputs.min() and d.inputs.max() <= 1.0 and set(np.unique(d.labels)) <= set(range(10))


def test_load_npz_validates(tmp_path):
    np.savez(tmp_path / "ok.npz", x=np.zeros((3, 1, 4, 4), np.float32), y=np.array([0, 1, 2]))
    assert load_npz(tmp_path / "ok.npz").inputs.shape == (3, 1, 4, 4)
    np.savez(tmp_path / "nan.npz", inputs=np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="nan.npz"):
        load_npz(tmp_path / "nan.npz")
    np.savez(tmp_path / "none.npz", other=np.zeros(3))
    with pytest.raises(ValueError, match="none.npz"):
        load_npz(tmp_path / "none.npz")
