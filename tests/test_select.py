"""facenms.select against the reference and the validity checker."""
import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import facenms
from facenms import reference
from facenms.eval.embeddings import webface_like

from conftest import threshold_away


@st.composite
def face_sets(draw, max_faces=40, max_dim=8, min_dim=2, bursts=False):
    n = draw(st.integers(1, max_faces))
    d = draw(st.integers(min_dim, max_dim))
    n_ident = draw(st.integers(1, max(1, n // 2)))
    seed = draw(st.integers(0, 2 ** 31))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_ident, n) * draw(st.sampled_from([1, -7, 10 ** 12]))
    centres = rng.standard_normal((n_ident, d))
    spread = draw(st.sampled_from([0.3, 1.0, 3.0]))
    x = centres[rng.integers(0, n_ident, n)] + spread * rng.standard_normal((n, d))
    if bursts:  # near-copies of earlier faces of the same identity
        for i in range(1, n):
            same = np.flatnonzero(labels[:i] == labels[i])
            if len(same) and rng.random() < 0.4:
                x[i] = x[rng.choice(same)] + 0.05 * spread * rng.standard_normal(d)
    return x.astype(np.float32), labels


@given(face_sets(), st.sampled_from(["sparsity", "centrality", "random"]), st.integers(1, 3))
def test_threshold_mode_equals_reference(data, rank, m):
    x, labels = data
    t = threshold_away(x, labels)
    assume(t is not None)
    got = facenms.select(x, labels, threshold=t, rank=rank, min_per_identity=m, seed=3)
    want = reference.select(x, labels, threshold=t, rank=rank, min_per_identity=m, seed=3)
    np.testing.assert_array_equal(got, want)
    reference.check_valid(x, labels, got, t, rank=rank, min_per_identity=m, seed=3)


@given(face_sets(max_faces=70, min_dim=14, max_dim=70, bursts=True),
       st.sampled_from(["sparsity", "centrality"]), st.sampled_from([np.float32, np.float16]))
def test_wide_rows_and_bursts_equal_reference(data, rank, dtype):
    # rows of 14-70 values run the vector loops of the kernels and their
    # tails; bursts of near-copies exercise early exits in the walk
    x, labels = data
    x = x.astype(dtype)
    t = threshold_away(x.astype(np.float32), labels)
    assume(t is not None)
    got = facenms.select(x, labels, threshold=t, rank=rank)
    np.testing.assert_array_equal(got, reference.select(x, labels, threshold=t, rank=rank))


@given(face_sets(max_faces=24))
def test_user_scores_equal_reference(data):
    x, labels = data
    t = threshold_away(x, labels)
    assume(t is not None)
    scores = np.random.default_rng(len(x)).integers(0, 4, len(x)).astype(np.float64)  # ties
    got = facenms.select(x, labels, threshold=t, scores=scores)
    np.testing.assert_array_equal(got, reference.select(x, labels, threshold=t, scores=scores))


@given(face_sets(max_faces=24), st.sampled_from([0.3, 0.5, 0.6, 0.8, 1.0]))
def test_ratio_mode_is_consistent_and_as_close_as_exact_search(data, ratio):
    x, labels = data
    keep, info = facenms.select(x, labels, ratio=ratio, return_info=True)
    target = round(ratio * len(x))
    exact = reference.select(x, labels, ratio=ratio)
    # no search can beat the exhaustive one; ours reaches it on these sizes
    assert abs(len(keep) - target) == abs(len(exact) - target)
    reference.check_valid(x, labels, keep, info.threshold)
    np.testing.assert_array_equal(keep, facenms.select(x, labels, threshold=info.threshold))


@given(face_sets(max_faces=30), st.sampled_from([0.25, 0.5, 0.6, 0.9]), st.integers(1, 2))
def test_per_identity_ratio_hits_every_count(data, ratio, m):
    x, labels = data
    keep, info = facenms.select(x, labels, ratio=ratio, per_identity=True, min_per_identity=m,
                                return_info=True)
    sizes = info.faces_per_identity
    want = np.minimum(sizes, np.maximum(m, np.round(ratio * sizes)))
    np.testing.assert_array_equal(info.kept_per_identity, want)
    kept_labels = labels[keep]
    for lab, k in zip(info.identities, want):
        assert (kept_labels == lab).sum() == k


def test_chain_keeps_both_ends():
    # a~b (0.8), b~c (0.8), a!~c (0.28): suppression only by kept faces keeps a and c
    ang = np.deg2rad([0.0, 36.87, 73.74])
    x = np.stack([np.cos(ang), np.sin(ang)], 1).astype(np.float32)
    labels = np.zeros(3, dtype=np.int64)
    scores = np.array([3.0, 2.0, 1.0])  # rank a, b, c
    keep = facenms.select(x, labels, threshold=0.5, scores=scores)
    np.testing.assert_array_equal(keep, [0, 2])
    np.testing.assert_array_equal(reference.select(x, labels, threshold=0.5, scores=scores),
                                  [0, 2])


def test_two_face_identities_tie_and_keep_the_smaller_index():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((50, 16))
    x = np.concatenate([base, base + 0.05 * rng.standard_normal((50, 16))]).astype(np.float32)
    labels = np.concatenate([np.arange(50), np.arange(50)])
    keep = facenms.select(x, labels, threshold=0.9)
    # every identity of two near-identical faces ties on sparsity: the first index wins
    np.testing.assert_array_equal(keep, np.arange(50))
    np.testing.assert_array_equal(keep, reference.select(x, labels, threshold=0.9))


def test_single_faces_and_single_identity():
    x = np.random.default_rng(1).standard_normal((7, 5)).astype(np.float32)
    np.testing.assert_array_equal(facenms.select(x, np.arange(7), threshold=-1.0), np.arange(7))
    keep = facenms.select(x[:1], [42], ratio=0.5)
    np.testing.assert_array_equal(keep, [0])
    one = facenms.select(x, np.zeros(7, dtype=np.int32), threshold=0.2)
    np.testing.assert_array_equal(one, reference.select(x, np.zeros(7), threshold=0.2))


def test_all_duplicates_keep_one_or_min_per_identity():
    x = np.tile(np.array([[0.6, 0.8, 0.0]], dtype=np.float32), (10, 1))
    labels = np.repeat([5, 9], 5)
    np.testing.assert_array_equal(facenms.select(x, labels, threshold=0.99), [0, 5])
    keep = facenms.select(x, labels, threshold=0.99, min_per_identity=3)
    np.testing.assert_array_equal(keep, [0, 1, 2, 5, 6, 7])
    reference.check_valid(x, labels, keep, 0.99, min_per_identity=3)
    np.testing.assert_array_equal(facenms.select(x, labels, threshold=0.99, min_per_identity=9),
                                  np.arange(10))


def test_empty_input():
    keep, info = facenms.select(np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                                threshold=0.5, return_info=True)
    assert keep.shape == (0,) and keep.dtype == np.int64 and info.kept == 0
    assert facenms.select(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), ratio=0.5).numel() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtypes_and_torch_in_torch_out(dtype):
    x, labels = webface_like(1500, dim=64, seed=1)
    xt = torch.from_numpy(x).to(dtype)
    ref_x = xt.float().numpy()  # the values the kernel sees
    t = threshold_away(ref_x, labels, candidates=np.linspace(0.65, 0.75, 41), margin=1e-5)
    keep = facenms.select(xt, torch.from_numpy(labels), threshold=t)
    assert isinstance(keep, torch.Tensor) and keep.dtype == torch.int64
    reference.check_valid(ref_x, labels, keep.numpy(), t)
    np.testing.assert_array_equal(keep.numpy(), reference.select(ref_x, labels, threshold=t))


def test_float16_numpy_input_matches_float32_of_same_values():
    x, labels = webface_like(2000, dim=32, seed=2)
    x16 = x.astype(np.float16)
    a = facenms.select(x16, labels, threshold=0.7)
    b = facenms.select(x16.astype(np.float32), labels, threshold=0.7)
    np.testing.assert_array_equal(a, b)


def test_non_contiguous_inputs_and_odd_labels():
    x, labels = webface_like(2000, dim=32, seed=3)
    wide = np.zeros((len(x), 64), np.float32)
    wide[:, ::2] = x  # strided columns: a copy is made
    labels_odd = np.where(labels % 2 == 0, 10 ** 12 + labels, -5 - labels)
    perm = np.random.default_rng(0).permutation(len(x))  # unsorted identities
    lab_nc = np.repeat(labels_odd[perm], 2)[::2]  # non-contiguous labels
    want = facenms.select(x[perm].copy(), labels_odd[perm].copy(), threshold=0.7)
    np.testing.assert_array_equal(facenms.select(wide[perm][:, ::2], lab_nc, threshold=0.7), want)
    rows = np.zeros((len(x) * 2, 32), np.float32)
    rows[::2] = x[perm]  # strided rows: read in place
    np.testing.assert_array_equal(facenms.select(rows[::2], lab_nc, threshold=0.7), want)
    xt = torch.from_numpy(x[perm]).t().contiguous().t()  # column-major tensor
    np.testing.assert_array_equal(facenms.select(xt, torch.from_numpy(lab_nc), threshold=0.7)
                                  .numpy(), want)
    for dt in (np.int8, np.uint16, np.int32, np.uint64):
        lab = (labels % 100).astype(dt)
        np.testing.assert_array_equal(facenms.select(x, lab, threshold=0.7),
                                      facenms.select(x, labels % 100, threshold=0.7))


def test_ratio_mode_on_realistic_data_is_within_a_tenth_of_a_point():
    x, labels = webface_like(40_000, dim=128, seed=4)
    for r in (0.4, 0.6, 0.8):
        keep, info = facenms.select(x, labels, ratio=r, return_info=True)
        assert abs(info.ratio - r) <= 0.001, info.summary()
        assert info.passes <= 5
        np.testing.assert_array_equal(keep, facenms.select(x, labels, threshold=info.threshold))


def test_ratio_mode_from_a_sample_takes_two_full_passes_at_most():
    # large enough for the sample pass that places the first full pass's thresholds
    x, labels = webface_like(100_000, dim=24, seed=6)
    for r in (0.3, 0.6, 0.9):
        keep, info = facenms.select(x, labels, ratio=r, return_info=True)
        assert abs(info.ratio - r) <= 0.001 and info.passes <= 2, info.summary()
        np.testing.assert_array_equal(keep, facenms.select(x, labels, threshold=info.threshold))


def test_info():
    x, labels = webface_like(5000, dim=32, seed=5)
    keep, info = facenms.select(x, labels, ratio=0.6, return_info=True)
    assert info.kept == len(keep) and info.n_faces == len(x)
    assert info.kept_per_identity.sum() == len(keep)
    assert info.faces_per_identity.sum() == len(x)
    np.testing.assert_array_equal(info.identities, np.unique(labels))
    assert set(info.timings) >= {"rank", "nms", "total"}
    assert "faces" in info.summary()


def test_curve_matches_threshold_runs():
    x, labels = webface_like(3000, dim=32, seed=6)
    ts, ratios = facenms.curve(x, labels, thresholds=[0.5, 0.6, 0.7, 0.8])
    for t, r in zip(ts, ratios):
        assert len(facenms.select(x, labels, threshold=t)) == round(r * len(x))
    assert np.all(np.diff(facenms.curve(x, labels)[1]) >= -0.01)


BAD = [
    (dict(features=np.full((2, 2), np.nan, np.float32)), ValueError, "row 0 has a non-finite"),
    (dict(features=np.array([[1, 0], [0, 0]], np.float32)), ValueError, "row 1 has zero norm"),
    (dict(features=np.array([[1, 0], [np.inf, 0]], np.float32)), ValueError, "row 1"),
    (dict(labels=np.zeros(5, np.int64)), ValueError, "one label per face"),
    (dict(features=np.ones((2, 2, 2), np.float32)), ValueError, "2-D"),
    (dict(labels=np.zeros(2, np.float32)), TypeError, "integers"),
    (dict(labels=np.zeros(2, bool)), TypeError, "integers"),
    (dict(features=np.ones((2, 2), np.int32)), TypeError, "float"),
    (dict(ratio=0.0, threshold=None), ValueError, "ratio must be"),
    (dict(ratio=1.5, threshold=None), ValueError, "ratio must be"),
    (dict(ratio=0.5), ValueError, "both"),
    (dict(threshold=None), ValueError, "neither"),
    (dict(threshold=1.5), ValueError, r"threshold must be a number in \[-1, 1\]"),
    (dict(threshold=float("nan")), ValueError, "threshold must be"),
    (dict(rank="best"), ValueError, "rank must be one of"),
    (dict(min_per_identity=-1), ValueError, "min_per_identity"),
    (dict(scores=np.array([1.0, np.nan])), ValueError, "scores"),
    (dict(scores=np.array([1.0])), ValueError, "one score per face"),
    (dict(features="abc"), TypeError, "features must be"),
]


@pytest.mark.parametrize("kw,exc,match", BAD)
def test_bad_input_names_the_problem(kw, exc, match):
    args = dict(features=np.array([[1, 0], [0.6, 0.8]], np.float32), labels=np.zeros(2, np.int64),
                threshold=0.5)
    args.update(kw)
    with pytest.raises(exc, match=match):
        facenms.select(args.pop("features"), args.pop("labels"), **args)


def test_first_bad_row_is_reported_in_caller_order():
    x = np.ones((6, 3), np.float32)
    x[4] = 0
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match="row 2 has a non-finite"):
        facenms.select(x, np.array([3, 1, 2, 1, 0, 3]), threshold=0.5)


def test_progress_bar_chunks_give_the_same_answer():
    x, labels = webface_like(6000, dim=32, seed=7)
    for kw in (dict(threshold=0.7), dict(ratio=0.6), dict(ratio=0.5, per_identity=True)):
        np.testing.assert_array_equal(facenms.select(x, labels, progress=True, **kw),
                                      facenms.select(x, labels, **kw))
