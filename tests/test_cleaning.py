"""facenms.label_issues against its reference, streamed and split over processes,
and select(clean=True)."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import facenms
from facenms import reference

HERE = os.path.dirname(os.path.abspath(__file__))


def planted(n_ident=60, d=24, wrong=0.04, outliers=0.0, seed=0, spread=0.6):
    """Identities as noisy clouds around random centres; a fraction of faces are
    another identity's (mislabeled) or nobody's (open-set). (x, labels, truly wrong)."""
    rng = np.random.default_rng(seed)
    sizes = np.clip(rng.lognormal(2.5, 0.8, n_ident).astype(int), 1, 120)
    labels = np.repeat(np.arange(n_ident), sizes)
    centres = rng.standard_normal((n_ident, d))
    true = labels.copy()
    flip = rng.random(len(labels)) < wrong
    true[flip] = (labels[flip] + rng.integers(1, n_ident, flip.sum())) % n_ident
    x = centres[true] + spread * rng.standard_normal((len(labels), d))
    stranger = (rng.random(len(labels)) < outliers) & ~flip
    x[stranger] = rng.standard_normal((stranger.sum(), d)) * (1 + spread)
    return x.astype(np.float32), labels, flip | stranger


@st.composite
def face_sets(draw):
    n_ident = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2 ** 31))
    d = draw(st.integers(2, 12))
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, draw(st.sampled_from([3, 8, 20])), n_ident)
    labels = np.repeat(np.arange(n_ident), sizes) * draw(st.sampled_from([1, -3, 10 ** 12]))
    centres = rng.standard_normal((n_ident, d)) * draw(st.sampled_from([0.5, 2.0]))
    x = centres[np.repeat(np.arange(n_ident), sizes)] + rng.standard_normal((len(labels), d))
    swap = rng.random(len(labels)) < draw(st.sampled_from([0.0, 0.1, 0.3]))
    x[swap] = centres[rng.integers(0, n_ident, swap.sum())] + 0.3 * rng.standard_normal(
        (swap.sum(), d))
    perm = rng.permutation(len(labels))
    return x[perm], labels[perm]


@settings(max_examples=80, deadline=None)
@given(face_sets(), st.sampled_from([None, 0.5, 2.0, 8.0]), st.sampled_from([None, 3, 5]))
def test_float64_equals_reference(data, threshold, min_faces):
    x, labels = data
    kw = dict(threshold=threshold, min_faces=min_faces)
    got, info = facenms.label_issues(x, labels, return_info=True, **kw)
    ref_kw = {k: v for k, v in kw.items() if v is not None}
    want, scores, other = reference.label_issues(x, labels, return_scores=True, **ref_kw)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(info.issue_score, scores[want], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(info.other_label, other[want])
    assert np.array_equal(np.isnan(info.score), np.isnan(scores))
    assert info.n_faces == len(x) and info.flagged == len(want)


def test_float32_and_float16_agree_with_reference_away_from_the_threshold():
    x, labels, _ = planted(seed=3)
    want, scores, _ = reference.label_issues(x, labels, return_scores=True)
    for dtype in (np.float32, np.float16):
        got = facenms.label_issues(x.astype(dtype), labels)
        differ = np.setxor1d(got, want)
        assert len(want) > 20
        tol = 1e-2 if dtype == np.float32 else 0.5  # scores are in sigmas (~0.1 cosine)
        assert np.all(np.abs(scores[differ] - 8.0) < tol), scores[differ]


def test_finds_planted_mislabels_and_leaves_a_clean_set_alone():
    x, labels, wrong = planted(n_ident=300, wrong=0.04, seed=1)
    got = facenms.label_issues(x, labels)
    hit = wrong[got].sum()
    assert hit / len(got) >= 0.95 and hit / wrong.sum() >= 0.8
    x, labels, wrong = planted(n_ident=300, wrong=0.0, seed=2)
    assert not wrong.any()
    assert len(facenms.label_issues(x, labels)) <= 0.003 * len(x)


def test_open_set_outliers_are_flagged():
    x, labels, wrong = planted(n_ident=200, wrong=0.0, outliers=0.03, seed=4)
    got = facenms.label_issues(x, labels)
    assert wrong[got].mean() >= 0.95 and wrong[got].sum() >= 0.7 * wrong.sum()


def test_the_threshold_adapts_to_the_cosine_scale():
    """A tighter model (every face nearer its centre) finds the same faces."""
    x, labels, wrong = planted(n_ident=200, seed=5, spread=0.6)
    y, _, _ = planted(n_ident=200, seed=5, spread=0.3)
    a, b = facenms.label_issues(x, labels), facenms.label_issues(y, labels)
    assert len(np.intersect1d(a, b)) >= 0.9 * max(len(a), len(b))
    assert wrong[b].mean() >= 0.95


def test_small_identities_are_not_judged():
    rng = np.random.default_rng(0)
    c = rng.standard_normal((3, 8)) * 3
    x = np.concatenate([c[[0] * 10], c[[1]], c[[1, 0]], c[[2] * 10]]) + 0.1 * rng.standard_normal(
        (23, 8))
    labels = np.array([0] * 10 + [1] + [2, 2] + [3] * 10)
    # face 12 of the 2-face identity 2 is identity 0's face: not judged, never flagged
    got, info = facenms.label_issues(x, labels, return_info=True)
    assert 12 not in got and info.n_unjudged == 3
    assert np.isnan(info.score[10:13]).all() and not np.isnan(info.score[:10]).any()
    x[5] = c[2] + 0.1 * rng.standard_normal(8)  # identity 3's face under identity 0
    got, info = facenms.label_issues(x, labels, return_info=True)
    assert list(got) == [5] and list(info.other_label) == [3]
    np.testing.assert_array_equal(got, reference.label_issues(x, labels))


def test_one_identity_and_empty_sets():
    x = np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32)
    x[:19] += 10
    got, info = facenms.label_issues(x, np.zeros(20, np.int64), return_info=True)
    np.testing.assert_array_equal(got, reference.label_issues(x, np.zeros(20, np.int64)))
    assert list(got) == [19] and list(info.other_label) == [0]
    got, info = facenms.label_issues(np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                                     return_info=True)
    assert got.dtype == np.int64 and len(got) == 0 and info.flagged == 0


def test_array_families_and_devices():
    x, labels, _ = planted(seed=6)
    want = facenms.label_issues(x, labels)
    got = facenms.label_issues(torch.from_numpy(x), torch.from_numpy(labels))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), want)
    got = facenms.label_issues(x.tolist(), labels.tolist())
    np.testing.assert_array_equal(got, want)
    if torch.cuda.is_available():
        got = facenms.label_issues(torch.from_numpy(x).cuda(), torch.from_numpy(labels).cuda())
        assert got.is_cuda
        assert len(np.setxor1d(got.cpu().numpy(), want)) <= 2


@pytest.mark.parametrize("kw", [dict(block_size=1), dict(block_size=300), dict(max_memory=1)])
def test_streamed_equals_in_memory(tmp_path, kw):
    x, labels, _ = planted(seed=7)
    perm = np.random.default_rng(1).permutation(len(x))
    x, labels = x[perm], labels[perm]
    want, winfo = facenms.label_issues(x, labels, return_info=True)
    np.save(tmp_path / "f.npy", x)
    np.save(tmp_path / "l.npy", labels)
    for feats in (str(tmp_path / "f.npy"), np.load(tmp_path / "f.npy", mmap_mode="r"),
                  torch.from_numpy(x)):
        got, info = facenms.label_issues(feats, str(tmp_path / "l.npy"), return_info=True, **kw)
        np.testing.assert_array_equal(np.asarray(got), want)
        np.testing.assert_array_equal(info.other_label, winfo.other_label)
        np.testing.assert_allclose(info.issue_score, winfo.issue_score, rtol=1e-5)
        np.testing.assert_allclose(info.score, winfo.score, rtol=1e-5)
        assert info.n_candidates == winfo.n_candidates


def test_bad_input_is_one_line_errors(tmp_path):
    x, labels, _ = planted(seed=8)
    bad = x.copy()
    bad[77] = np.nan
    with pytest.raises(ValueError, match="features row 77 has a non-finite"):
        facenms.label_issues(bad, labels)
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match="features row 77 has a non-finite"):
        facenms.label_issues(str(tmp_path / "bad.npy"), labels, block_size=50)
    with pytest.raises(ValueError, match="labels must be 1-D"):
        facenms.label_issues(x, labels[:-1])
    with pytest.raises(TypeError, match="labels must be integers"):
        facenms.label_issues(x, labels.astype(float))
    with pytest.raises(ValueError, match="threshold must be"):
        facenms.label_issues(x, labels, threshold=-1)
    with pytest.raises(ValueError, match="min_faces must be >= 3"):
        facenms.label_issues(x, labels, min_faces=2)
    with pytest.raises(TypeError, match="clean must be True or False"):
        facenms.select(x, labels, ratio=0.5, clean="yes")
    with pytest.raises(ValueError, match="give exactly one of ratio= and threshold="):
        facenms.select(x, labels, clean=True)
    with pytest.raises(ValueError, match="ratio must be a number in"):
        facenms.select(x, labels, ratio=1.5, clean=True)


@pytest.mark.parametrize("ratio", [0.4, 0.6, 0.8, 1.0])
def test_select_clean_drops_issues_and_counts_against_all_faces(ratio):
    x, labels, wrong = planted(n_ident=200, seed=9)
    issues = facenms.label_issues(x, labels)
    keep, info = facenms.select(x, labels, ratio=ratio, clean=True, return_info=True)
    assert not np.isin(keep, issues).any()
    assert info.label_issues == len(issues) and info.n_faces == len(x)
    target = round(ratio * len(x))
    assert abs(info.kept - target) <= max(2, 0.002 * len(x)) or ratio == 1.0
    assert info.kept == len(keep) and info.ratio == len(keep) / len(x)
    rest = np.setdiff1d(np.arange(len(x)), issues)
    want = rest[facenms.select(x[rest], labels[rest], threshold=info.threshold)]
    np.testing.assert_array_equal(keep, want)
    assert wrong[keep].mean() < 0.5 * wrong.mean()
    plain = facenms.select(x, labels, ratio=ratio)  # the default stays the paper's method
    np.testing.assert_array_equal(plain, facenms.select(x, labels, ratio=ratio, clean=False))


def test_select_clean_streamed_and_threshold_mode(tmp_path):
    x, labels, _ = planted(n_ident=150, seed=10)
    np.save(tmp_path / "f.npy", x)
    for kw in (dict(ratio=0.5), dict(threshold=0.9), dict(ratio=0.5, per_identity=True),
               dict(ratio=0.5, rank="random", seed=4)):
        want, winfo = facenms.select(x, labels, clean=True, return_info=True, **kw)
        for feats, extra in ((str(tmp_path / "f.npy"), {}), (torch.from_numpy(x),
                                                              dict(block_size=100))):
            got, info = facenms.select(feats, labels, clean=True, return_info=True, **extra,
                                       **kw)
            np.testing.assert_array_equal(np.asarray(got), want)
            assert info.label_issues == winfo.label_issues > 0
    got = facenms.select(torch.from_numpy(x), torch.from_numpy(labels), ratio=0.5, clean=True)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), facenms.select(x, labels, ratio=0.5, clean=True))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_torchrun_equals_one_process(tmp_path):
    x, labels, _ = planted(n_ident=300, seed=11)
    np.save(tmp_path / "f.npy", x)
    np.save(tmp_path / "l.npy", labels)
    out = str(tmp_path / "dist.npz")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", "--master_port=%d" % _free_port(),
           os.path.join(HERE, "dist_cleaning.py"), str(tmp_path / "f.npy"),
           str(tmp_path / "l.npy"), out]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = np.load(out)
    want, info = facenms.label_issues(x, labels, return_info=True)
    for key in ("streamed", "in_memory"):
        np.testing.assert_array_equal(got[key], want)
    np.testing.assert_array_equal(got["other"], info.other_label)
    np.testing.assert_allclose(got["issue_score"], info.issue_score, rtol=1e-5)
    np.testing.assert_array_equal(got["select"], facenms.select(x, labels, ratio=0.6,
                                                                clean=True))


@pytest.mark.parametrize("kind", ["int8", "bf16", None])
@pytest.mark.parametrize("shift", [0.0, 0.04])  # half the rows above need, or a few
def test_screens_change_nothing(monkeypatch, kind, shift):
    """Rows a screen rules out could not have been flagged; the rest are exact."""
    from facenms.core import nearest
    from facenms.core.nearest import nearest_other
    monkeypatch.setattr(nearest, "SCREEN_WORK", 0)
    monkeypatch.setattr(nearest, "screen_kind", lambda device, d: kind)  # on any CPU
    g = torch.Generator().manual_seed(0)
    y = torch.nn.functional.normalize(torch.randn(500, 32, generator=g), dim=1)
    centres = torch.nn.functional.normalize(torch.randn(40, 32, generator=g), dim=1)
    centres[3] = 0  # an identity without a centre
    own = torch.randint(0, 40, (500,), generator=g)
    b, k = nearest_other(y, own, centres)
    sims = y.double() @ centres.double().T  # float64 brute force, ties to the smaller index
    sims[torch.arange(500), own] = -np.inf
    torch.testing.assert_close(b, sims.amax(dim=1), atol=1e-12, rtol=0)
    assert torch.equal(k, sims.argmax(dim=1))
    need = b + (torch.rand(500, generator=g, dtype=torch.float64) - 0.5) * 0.1 + shift
    b2, k2 = nearest_other(y, own, centres, need)
    hit = b > need
    assert 0 < int(hit.sum()) < 500
    assert torch.equal(b2[hit], b[hit]) and torch.equal(k2[hit], k[hit])
    out = torch.isinf(b2)  # ruled out by the screened maximum
    assert bool(out.any()) and not bool(out[hit].any())
    assert torch.equal(b2[~out], b[~out]) and torch.equal(k2[~out], k[~out])


@pytest.mark.parametrize("kind", ["int8", "bf16"])
def test_screened_label_issues_equal_unscreened(monkeypatch, tmp_path, kind):
    """End to end, in memory and streamed: a screen on every search rules most
    candidates out and changes no flag, no score and no nearest identity."""
    from facenms.core import nearest
    x, labels, _ = planted(n_ident=80, d=32, wrong=0.03, outliers=0.02, seed=3, spread=1.0)
    want, winfo = facenms.label_issues(x, labels, threshold=4.0, return_info=True)
    kept, search = [], nearest.nearest_in_block

    def recorded(sims, *args):
        b, k = search(sims, *args)
        kept.append((int(torch.isfinite(b).sum()), b.shape[0]))
        assert sims.dtype == (torch.int32 if kind == "int8" else torch.bfloat16)
        return b, k
    monkeypatch.setattr(nearest, "SCREEN_WORK", 0)
    monkeypatch.setattr(nearest, "screen_kind", lambda device, d: kind)
    monkeypatch.setattr(nearest, "nearest_in_block", recorded)
    np.save(tmp_path / "f.npy", x)
    for feats, kw in ((x, {}), (str(tmp_path / "f.npy"), dict(block_size=200))):
        got, info = facenms.label_issues(feats, labels, threshold=4.0, return_info=True, **kw)
        np.testing.assert_array_equal(np.asarray(got), want)
        np.testing.assert_array_equal(info.other_label, winfo.other_label)
        np.testing.assert_array_equal(info.other_similarity, winfo.other_similarity)
        np.testing.assert_array_equal(info.issue_score, winfo.issue_score)
    assert len(want) > 20 and kept and all(k < n / 2 for k, n in kept)


@given(st.integers(16, 300), st.integers(0, 2 ** 31 - 1), st.sampled_from([1.0, 1e-3, 30.0]))
@settings(max_examples=60, deadline=None)
def test_int8_screen_error_bound_holds(d, seed, spread):
    """The bound the int8 screen uses is never exceeded: its float32 products against
    the exact float64 ones, for rows of any length, peaked rows included."""
    from facenms.core.screen import INT8_MAX, INT8_SLACK, int8_rows
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(64, d, generator=g) * torch.rand(64, d, generator=g) ** spread
    v[0, 0] = 1e3  # one dominant coordinate
    v = torch.nn.functional.normalize(v, dim=1)
    q, s, e = int8_rows(v)
    qc, t, f = int8_rows(v, common=True)  # the centres' side: one scale
    approx = torch._int_mm(q, qc.T).double() * s.double()[:, None] * float(t)  # as screen()
    exact = v.double() @ v.double().T
    bound = (e + (1 + e) * f.max() + INT8_SLACK).double()[:, None]
    assert bool(((approx - exact).abs() <= bound).all())
    assert bool((q.abs() <= INT8_MAX).all()) and bool((qc.abs() <= INT8_MAX).all())


INT8_CHILD = r"""
import torch
from facenms.core.screen import INT8_MAX, INT8_SLACK, int8_rows
g = torch.Generator().manual_seed(0)
v = torch.sign(torch.randn(96, 512, generator=g))  # every element at the row's maximum
v[48:] *= torch.rand(48, 512, generator=g) > 0.3
v = torch.nn.functional.normalize(v, dim=1)
q, s, e = int8_rows(v)
qc, t, f = int8_rows(v, common=True)
assert int(q.abs().max()) == INT8_MAX
exact_int = q.long() @ qc.long().T
assert torch.equal(torch._int_mm(q, qc.T).long(), exact_int), "int8 sums saturated"
approx = exact_int.double() * s.double()[:, None] * float(t)
bound = (e + (1 + e) * f.max() + INT8_SLACK).double()[:, None]
assert bool(((approx - v.double() @ v.double().T).abs() <= bound).all())
"""


@pytest.mark.parametrize("isa", ["AVX2", "AVX512_CORE", None])
def test_int8_products_are_exact_without_vnni(isa):
    """oneDNN without VNNI sums u8 x s8 pairs in saturating int16: the screen's
    +-INT8_MAX rows stay exact there (a child process per oneDNN ISA cap)."""
    from procs import child_env
    env = child_env()
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    r = subprocess.run([sys.executable, "-c", INT8_CHILD], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("common", [False, True])
def test_int8_rows_follow_the_rule(common):
    """The fused op against the rule in torch: scale = max |v| / 63 (1 for a zero
    row), q = round half to even of v * (1 / scale), the residual's norm."""
    from facenms.core.screen import INT8_MAX, int8_rows
    g = torch.Generator().manual_seed(1)
    v = torch.nn.functional.normalize(torch.randn(301, 40, generator=g), dim=1)
    v[7] = 0
    v[8, :4] = torch.tensor([0.5, 1.5, 2.5, -2.5]) * v[8].abs().max() / INT8_MAX  # halves
    q, scale, residual = int8_rows(v, common)
    amax = v.abs().amax(dim=1, keepdim=True)
    amax = amax.max() if common else amax
    want = torch.where(amax > 0, amax / INT8_MAX, torch.ones_like(amax))
    assert torch.equal(scale, want.reshape(()) if common else want.reshape(-1))
    r = v * (1 / want)
    assert torch.equal(q, torch.round(r).clamp(-INT8_MAX, INT8_MAX).to(torch.int8))
    torch.testing.assert_close(residual, torch.linalg.vector_norm(r - q, dim=1)
                               * want.reshape(-1), rtol=1e-6, atol=1e-9)
    assert q.shape == v.shape and int8_rows(v[:0], common)[0].shape == (0, 40)


def test_no_int8_screen_for_short_rows():
    from facenms.core.hardware import INT8_MIN_DIM, screen_kind
    assert screen_kind(torch.device("cpu"), INT8_MIN_DIM - 1) != "int8"


@pytest.mark.parametrize("exact_below", [100_000, 0])
def test_faiss_search_flags_a_subset_and_flat_is_exact(monkeypatch, tmp_path, exact_below):
    """A flat faiss index finds what the blocked search finds; an inverted file may miss
    a face's nearest other centre, so it flags a subset, each with the true score."""
    from facenms.core import nearest
    monkeypatch.setattr(nearest, "FAISS_EXACT", exact_below)
    x, labels, _ = planted(n_ident=300, seed=14)
    want, winfo = facenms.label_issues(x, labels, return_info=True)
    got, info = facenms.label_issues(x, labels, return_info=True, search="faiss")
    np.save(tmp_path / "f.npy", x)
    streamed = facenms.label_issues(str(tmp_path / "f.npy"), labels, search="faiss",
                                    block_size=500)
    if exact_below:
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(info.other_label, winfo.other_label)
        np.testing.assert_array_equal(streamed, want)
    assert np.isin(got, want).all() and len(got) >= 0.8 * len(want)
    same = np.isin(want, got)
    assert np.all(info.issue_score <= winfo.issue_score[same] + 1e-5)
    found = info.other_label == winfo.other_label[same]  # the true nearest: the true score
    assert found.mean() > 0.9
    np.testing.assert_allclose(info.issue_score[found], winfo.issue_score[same][found],
                               rtol=1e-5)
    with pytest.raises(ValueError, match="search must be one of exact, faiss"):
        facenms.label_issues(x, labels, search="annoy")
