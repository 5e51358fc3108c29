"""insightface .bin pair files and 10-fold TAR@FAR."""
import pickle

import numpy as np
import pytest

from facenms.verification import evaluate, load_bin, write_bin


def _images(n, h=12, w=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_bin_round_trip(tmp_path):
    imgs = _images(8)
    issame = [True, False, True, False]
    write_bin(tmp_path / "t.bin", imgs, issame)
    got, same = load_bin(tmp_path / "t.bin")
    np.testing.assert_array_equal(got, imgs)  # PNG is lossless
    np.testing.assert_array_equal(same, issame)
    small, _ = load_bin(tmp_path / "t.bin", image_size=(6, 5))
    assert small.shape == (8, 6, 5, 3)


def test_bin_as_insightface_writes_it(tmp_path):
    # insightface's bins are encoded JPEGs, sometimes as numpy byte arrays
    import io

    from PIL import Image
    bins = []
    for im in _images(4):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG")
        bins.append(np.frombuffer(buf.getvalue(), np.uint8))
    with open(tmp_path / "j.bin", "wb") as f:
        pickle.dump((bins, [True, False]), f, protocol=2)
    got, same = load_bin(tmp_path / "j.bin")
    assert got.shape == (4, 12, 10, 3) and list(same) == [True, False]


def test_bin_errors(tmp_path):
    with open(tmp_path / "odd.bin", "wb") as f:
        pickle.dump(([b"x"] * 3, [True]), f)
    with pytest.raises(ValueError, match="two images per pair"):
        load_bin(tmp_path / "odd.bin")
    with open(tmp_path / "bad.bin", "wb") as f:
        pickle.dump(([b"not an image", b"x"], [True]), f)
    with pytest.raises(ValueError, match="image 0"):
        load_bin(tmp_path / "bad.bin")


def test_tar_at_far_matches_gaussians():
    from scipy.stats import norm
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(2.5, 1, 10000), rng.normal(0, 1, 200000)
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
    perm = rng.permutation(len(s))
    r = evaluate(s[perm], y[perm])
    for far in (1e-3, 1e-4):
        expect = 1 - norm.cdf(norm.ppf(1 - far) - 2.5)
        assert r.tar[far] == pytest.approx(expect, abs=0.02)
        assert r.far[far] == pytest.approx(far, rel=0.35)
    assert r.n_pos == 10000 and r.n_neg == 200000
    assert np.all(np.diff(r.fpr) >= 0) and np.all(np.diff(r.tpr) >= -1e-12)


def test_perfect_and_errors():
    y = np.tile([True, False], 50)
    r = evaluate(np.where(y, 1.0, 0.0), y)
    assert r.tar[1e-3] == 1.0 and r.accuracy == 1.0
    with pytest.raises(ValueError, match="one entry per pair"):
        evaluate(np.zeros(5), np.zeros(4, bool))
    with pytest.raises(ValueError, match="not finite"):
        evaluate(np.array([0.0] * 20 + [np.nan]), np.zeros(21, bool))
