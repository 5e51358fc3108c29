"""API corners: masked arrays are refused (a mask is never ignored silently), big-endian
arrays are converted (same selection as native), and distributed= errors are ValueErrors."""
import numpy as np
import pytest

import facenms
from facenms.scale.sort_features import sort_features


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((60, 8)).astype(np.float32), np.repeat(np.arange(6), 10)


STREAM = [{}, {"block_size": 7}]


@pytest.mark.parametrize("kw", STREAM)
def test_masked_features_labels_and_scores_are_refused(kw):
    x, labels = data()
    mx = np.ma.masked_array(x, mask=np.zeros_like(x, bool))
    mx.mask[3] = True
    with pytest.raises(TypeError, match="features is a numpy masked array"):
        facenms.select(mx, labels, ratio=0.5, **kw)
    with pytest.raises(TypeError, match="labels is a numpy masked array"):
        facenms.select(x, np.ma.masked_array(labels, mask=labels == 2), ratio=0.5, **kw)
    with pytest.raises(TypeError, match="scores is a numpy masked array"):
        facenms.select(x, labels, ratio=0.5, scores=np.ma.masked_array(np.ones(60)), **kw)
    with pytest.raises(TypeError, match="features is a numpy masked array"):
        facenms.curve(mx, labels)


@pytest.mark.parametrize("kw", STREAM)
def test_big_endian_arrays_give_the_native_selection(kw, tmp_path):
    x, labels = data(1)
    want = facenms.select(x, labels, ratio=0.5)
    scores = np.linspace(0, 1, 60)
    want_s = facenms.select(x, labels, ratio=0.5, scores=scores)
    assert np.array_equal(facenms.select(x.astype(">f4"), labels.astype(">i8"), ratio=0.5,
                                         **kw), want)
    assert np.array_equal(facenms.select(x.astype(">f4"), labels, ratio=0.5,
                                         scores=scores.astype(">f8"), **kw), want_s)
    np.save(tmp_path / "be.npy", x.astype(">f2").astype(">f4"))
    half = facenms.select(x.astype(np.float16).astype(np.float32), labels, ratio=0.5)
    mm = np.load(tmp_path / "be.npy", mmap_mode="r")
    assert np.array_equal(facenms.select(mm, labels, ratio=0.5, **kw), half)
    assert np.array_equal(facenms.select(str(tmp_path / "be.npy"), labels, ratio=0.5), half)


def test_distributed_without_a_process_group_is_a_value_error(monkeypatch):
    x, labels = data()
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ValueError, match="distributed=True needs a torch.distributed"):
        facenms.select(x, labels, ratio=0.5, distributed=True)
    with pytest.raises(ValueError, match="distributed must be None, True or False"):
        facenms.select(x, labels, ratio=0.5, distributed="yes")


def test_sort_features_refuses_what_select_cannot_read(tmp_path):
    x, labels = data()
    bad = {"int8": x.astype(np.int8), "complex64": x.astype(np.complex64),
           "string": x.astype(str), "structured": np.zeros((60, 8), dtype=[("a", "f4")])}
    for name, a in bad.items():
        with pytest.raises(TypeError, match="features must be float16, float32 or float64"):
            sort_features(a, labels, tmp_path / "s.npy")
        np.save(tmp_path / "in.npy", a)
        with pytest.raises(TypeError, match="in.npy: features must be float16"):
            sort_features(str(tmp_path / "in.npy"), labels, tmp_path / "s.npy")
    assert not (tmp_path / "s.npy").exists()
