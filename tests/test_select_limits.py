"""The ends of the scale: ratio=1.0 keeps every face, and a threshold of 1 or more
suppresses nothing (not even an exact copy whose cosine rounds above 1), in memory,
streamed and in curve()."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import facenms
from facenms.reference import select as reference


def with_copies(seed=0, n_id=5, per=10, copies=10, d=16):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_id * per, d)).astype(np.float32)
    labels = np.repeat(np.arange(n_id), per)
    # exact duplicates within their identities: cos(copy, original) rounds to ~1
    return np.concatenate([x, x[:copies]]), np.concatenate([labels, labels[:copies]])


@pytest.mark.parametrize("kw", [{}, {"block_size": 7}, {"per_identity": True},
                                {"rank": "random"}, {"rank": "centrality", "block_size": 3}])
def test_ratio_one_keeps_every_face(kw):
    x, labels = with_copies()
    keep, info = facenms.select(x, labels, ratio=1.0, return_info=True, **kw)
    assert np.array_equal(keep, np.arange(len(x)))
    assert info.kept == len(x) and info.ratio == 1.0


def test_ratio_one_still_refuses_a_bad_row():
    x, labels = with_copies()
    x[3, 2] = np.nan
    for kw in ({}, {"block_size": 7}):
        with pytest.raises(ValueError, match="row 3 has a non-finite"):
            facenms.select(x, labels, ratio=1.0, **kw)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), d=st.sampled_from([3, 64, 512]),
       half=st.booleans(), stream=st.booleans())
def test_threshold_one_keeps_identical_rows_like_the_reference(seed, d, half, stream):
    r = np.random.default_rng(seed).standard_normal((1, d)).astype(np.float32)
    x = np.concatenate([r, r, r * 3])
    if half:
        x = x.astype(np.float16)
    labels = np.zeros(3, np.int64)
    want = reference(x.astype(np.float32), labels, threshold=1.0)
    kw = {"block_size": 1} if stream else {}
    got = facenms.select(x, labels, threshold=1.0, **kw)
    assert set(want) <= set(got.tolist())
    assert np.array_equal(got, [0, 1, 2])


def test_curve_at_one_is_every_face():
    x, labels = with_copies()
    ts, ratios = facenms.curve(x, labels, thresholds=[0.5, 0.999, 1.0])
    assert ratios[-1] == 1.0
