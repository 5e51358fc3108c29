"""Baselines: each one's defining rule, checked against a plain loop, and select()'s call shape."""
import itertools

import numpy as np
import pytest
import torch

import facenms
from facenms import baselines, reference


def _unit_angles(*angles):
    return np.stack([[np.cos(a), np.sin(a), 0.0] for a in angles]).astype(np.float32)


def _blobs(seed, n_id=12, max_size=15, d=8):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_size, n_id)
    labels = np.repeat(rng.permutation(1000)[:n_id], sizes)  # arbitrary label values
    centres = rng.standard_normal((n_id, d))
    x = np.repeat(centres, sizes, 0) + 0.6 * rng.standard_normal((len(labels), d))
    perm = rng.permutation(len(labels))
    return x[perm].astype(np.float32), labels[perm].astype(np.int64)


# ------------------------------------------------------------ SemDeDup ----

def test_semdedup_drops_the_chains_c_facenms_keeps_it():
    # a~b, b~c, a!~c in rank order a, b, c
    x = _unit_angles(0.0, 0.5, 1.0)
    labels = np.zeros(3, np.int64)
    scores = np.array([3.0, 2.0, 1.0])
    t = float(np.cos(0.75))  # cos(0.5) = 0.88 > t > cos(1.0) = 0.54
    np.testing.assert_array_equal(facenms.select(x, labels, threshold=t, scores=scores), [0, 2])
    np.testing.assert_array_equal(baselines.semdedup(x, labels, threshold=t, scores=scores), [0])


def _semdedup_loop(x, labels, t, rank="sparsity"):
    y = reference.unit_rows(x)
    keep = []
    for rows in reference.rank_order(x, labels, rank):
        for k, i in enumerate(rows):
            if k == 0 or max(y[i] @ y[j] for j in rows[:k]) <= t:
                keep.append(i)
    return np.sort(np.array(keep, np.int64))


@pytest.mark.parametrize("seed", range(4))
def test_semdedup_matches_the_rule(seed):
    x, labels = _blobs(seed)
    from conftest import threshold_away
    t = threshold_away(x, labels, candidates=(0.3, 0.5, 0.7, 0.1, 0.8))
    assert t is not None
    np.testing.assert_array_equal(baselines.semdedup(x, labels, threshold=t),
                                  _semdedup_loop(x, labels, t))


def _max_earlier_loop(x, labels):
    y = reference.unit_rows(x)
    m = np.full(len(y), -np.inf)
    for rows in reference.rank_order(x, labels):
        for k, i in enumerate(rows[1:], 1):
            m[i] = max(y[i] @ y[j] for j in rows[:k])
    return m


def test_semdedup_ratio_is_the_closest_count():
    x, labels = _blobs(7)
    m = _max_earlier_loop(x, labels)  # kept at t  <=>  m <= t: the count is monotone in t
    for ratio in (0.3, 0.5, 0.8):
        keep, info = baselines.semdedup(x, labels, ratio=ratio, return_info=True)
        target = round(ratio * len(labels))
        best = min(abs(int((m <= t).sum()) - target) for t in np.append(m[np.isfinite(m)], -1))
        assert abs(len(keep) - target) == best
        assert info.kept == len(keep)
        np.testing.assert_array_equal(keep, np.flatnonzero(m <= info.threshold + 1e-6))


def test_semdedup_is_never_above_facenms_at_one_threshold():
    # suppression by any earlier face drops a superset of suppression by kept faces
    x, labels = _blobs(3, n_id=30)
    for t in (0.2, 0.5, 0.8):
        s = baselines.semdedup(x, labels, threshold=t)
        f = facenms.select(x, labels, threshold=t)
        assert set(s.tolist()) <= set(f.tolist())


# ------------------------------------------------------------ k-center ----

def _chord(a, b):
    return np.sqrt(np.maximum(0.0, 2.0 - 2.0 * (a @ b.T)))


def _radius(y, centres):
    return _chord(y, y[centres]).min(axis=1).max()


@pytest.mark.parametrize("seed", range(6))
def test_kcenter_covering_radius_within_twice_the_optimum(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 9, 5)
    labels = np.repeat(np.arange(5), sizes)
    x = rng.standard_normal((len(labels), 4)).astype(np.float32)
    ratio = [0.25, 0.4, 0.6][seed % 3]
    keep = baselines.kcenter_greedy(x, labels, ratio=ratio)
    y = reference.unit_rows(x)
    for c, n in enumerate(sizes):
        rows = np.flatnonzero(labels == c)
        mine = np.flatnonzero(np.isin(rows, keep))
        k = max(1, int(np.round(ratio * n)))
        assert len(mine) == k
        yc = y[rows]
        opt = min(_radius(yc, list(s)) for s in itertools.combinations(range(n), k))
        assert _radius(yc, mine) <= 2 * opt + 1e-6


def test_kcenter_is_farthest_point_from_the_central_face():
    # five faces on an arc: centre first, then the two ends
    x = _unit_angles(-1.0, -0.5, 0.0, 0.5, 1.0)
    labels = np.zeros(5, np.int64)
    np.testing.assert_array_equal(baselines.kcenter_greedy(x, labels, ratio=0.2), [2])
    np.testing.assert_array_equal(baselines.kcenter_greedy(x, labels, ratio=0.6), [0, 2, 4])


def test_kcenter_large_identity_and_quota():
    x, labels = _blobs(1, n_id=3, max_size=300)
    keep, info = baselines.kcenter_greedy(x, labels, ratio=0.37, return_info=True)
    want = np.maximum(1, np.round(0.37 * info.faces_per_identity)).astype(int)
    np.testing.assert_array_equal(info.kept_per_identity, want)


# -------------------------------------------------------------- random ----

@pytest.mark.parametrize("ratio", [0.1, 0.6, 1.0])
def test_random_hits_the_count(ratio):
    x, labels = _blobs(2, n_id=40)
    keep = baselines.random_subset(x, labels, ratio=ratio, seed=3)
    assert len(keep) == round(ratio * len(labels))
    assert keep.dtype == np.int64 and np.all(np.diff(keep) > 0)
    np.testing.assert_array_equal(keep, baselines.random_subset(x, labels, ratio=ratio, seed=3))


def test_random_per_identity_quota_and_seeds():
    x, labels = _blobs(2, n_id=40)
    keep, info = baselines.random_subset(x, labels, ratio=0.5, per_identity=True, seed=1,
                                         return_info=True)
    np.testing.assert_array_equal(
        info.kept_per_identity, np.maximum(1, np.round(0.5 * info.faces_per_identity)))
    other = baselines.random_subset(x, labels, ratio=0.5, per_identity=True, seed=2)
    assert not np.array_equal(keep, other)


# ------------------------------------------------------------ DiffProb ----

def _gap_loop(labels, p, gap):
    keep = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rows = rows[np.argsort(-p[rows], kind="stable")]
        last = None
        for i in rows:
            if last is None or p[i] <= last - gap:
                keep.append(i)
                last = p[i]
    return np.sort(np.array(keep, np.int64))


def test_diffprob_gap_rule_by_hand():
    labels = np.zeros(6, np.int64)
    p = np.array([0.90, 0.88, 0.80, 0.79, 0.50, 0.49])
    x = np.eye(6, dtype=np.float32)
    # 0.90 kept; 0.88 within 0.05; 0.80 kept; 0.79 within; 0.50 kept; 0.49 within
    np.testing.assert_array_equal(baselines.diffprob(x, labels, gap=0.05, probs=p), [0, 2, 4])
    # the gap is measured from the last KEPT face, not the previous face
    p2 = np.array([0.90, 0.87, 0.84, 0.81, 0.78, 0.75])
    np.testing.assert_array_equal(baselines.diffprob(x, labels, gap=0.05, probs=p2), [0, 2, 4])


@pytest.mark.parametrize("seed", range(3))
def test_diffprob_matches_the_rule(seed):
    x, labels = _blobs(seed, n_id=20, max_size=40)
    p = np.round(np.random.default_rng(seed).random(len(labels)), 3)  # ties included
    for gap in (0.0, 0.0105, 0.1005, 0.5005):
        np.testing.assert_array_equal(baselines.diffprob(x, labels, gap=gap, probs=p),
                                      _gap_loop(labels, p, gap))


def test_diffprob_ratio_and_prototype_probabilities():
    x, labels = _blobs(5, n_id=20, max_size=40)
    p = baselines.prototype_probs(x, labels, scale=10.0).numpy()
    # by hand: softmax over scaled cosines to normalised identity means
    y = x / np.linalg.norm(x, axis=1, keepdims=True)
    uniq = np.unique(labels)
    proto = np.stack([y[labels == c].mean(0) for c in uniq])
    proto /= np.linalg.norm(proto, axis=1, keepdims=True)
    logits = 10.0 * y @ proto.T
    soft = np.exp(logits - logits.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    np.testing.assert_allclose(p, soft[np.arange(len(y)), np.searchsorted(uniq, labels)],
                               rtol=1e-4, atol=1e-6)
    keep, info = baselines.diffprob(x, labels, ratio=0.5, scale=10.0, return_info=True)
    assert abs(len(keep) - round(0.5 * len(labels))) <= 2
    np.testing.assert_array_equal(keep, _gap_loop(labels, p, info.threshold))


# ----------------------------------------------------------- call shape ----

@pytest.mark.parametrize("name", list(baselines.METHODS))
def test_family_dtype_and_every_identity(name):
    x, labels = _blobs(4, n_id=25)
    f = baselines.METHODS[name]
    kn = f(x, labels, ratio=0.5)
    kt = f(torch.from_numpy(x), torch.from_numpy(labels), ratio=0.5)
    assert isinstance(kn, np.ndarray) and kn.dtype == np.int64 and np.all(np.diff(kn) > 0)
    assert isinstance(kt, torch.Tensor) and kt.dtype == torch.int64
    np.testing.assert_array_equal(kn, kt.numpy())
    kh = f(x.astype(np.float16), labels, ratio=0.5)
    assert len(kh) == pytest.approx(len(kn), abs=3)
    if name != "random":  # the per-identity methods keep every identity's first face
        assert set(labels[kn]) == set(labels)


@pytest.mark.parametrize("name", list(baselines.METHODS))
def test_bad_input(name):
    x, labels = _blobs(4)
    f = baselines.METHODS[name]
    with pytest.raises(ValueError, match="ratio"):
        f(x, labels, ratio=1.5)
    bad = x.copy()
    bad[5] = 0
    with pytest.raises(ValueError, match="row 5"):
        f(bad, labels, ratio=0.5)
    with pytest.raises(ValueError, match="labels"):
        f(x, labels[:-1], ratio=0.5)


def test_semdedup_and_diffprob_parameter_errors():
    x, labels = _blobs(4)
    with pytest.raises(ValueError, match="exactly one"):
        baselines.semdedup(x, labels, ratio=0.5, threshold=0.5)
    with pytest.raises(ValueError, match="exactly one"):
        baselines.diffprob(x, labels)
    with pytest.raises(ValueError, match="probs"):
        baselines.diffprob(x, labels, gap=0.1, probs=np.full(len(labels), 2.0))


def test_empty_input():
    x = np.zeros((0, 4), np.float32)
    labels = np.zeros(0, np.int64)
    for f in baselines.METHODS.values():
        assert len(f(x, labels, ratio=0.5)) == 0
