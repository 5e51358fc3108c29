"""Selection corners users hit: rows at any scale, memory maps that changed under
the array, identities without a centre direction."""
import os

import numpy as np
import pytest
import torch

import facenms
from conftest import threshold_away
from facenms import reference
from facenms.core import ops
from facenms.eval.embeddings import webface_like

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


@pytest.fixture(scope="module")
def faces():
    return webface_like(3000, dim=64, seed=11)


def as_dtype(x, dtype):
    return torch.from_numpy(x).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("exp", [-90, -70, -40, 40, 66, 100])
def test_power_of_two_scale_gives_the_same_selection(faces, dtype, exp):
    # a power of two scales exactly: the unit rows, and so the result, must be identical
    x, labels = faces
    xt = as_dtype(x, dtype)
    info = torch.finfo(dtype)
    if 2.0 ** exp * float(xt.abs().max()) >= info.max or 2.0 ** exp * 0.01 < info.tiny:
        pytest.skip("outside %s's normal range" % dtype)
    base = facenms.select(xt, labels, threshold=0.6)
    scaled = xt.double().mul(2.0 ** exp).to(dtype)
    for kw in (dict(threshold=0.6), dict(ratio=0.6), dict(ratio=0.5, per_identity=True)):
        assert torch.equal(facenms.select(scaled, labels, **kw), facenms.select(xt, labels, **kw)
                           ), kw
    assert len(base)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("factor", [1e20, 1e-24, 1e30, 1e-30])
def test_any_scale_follows_the_rule(faces, dtype, factor):
    x, labels = faces
    part = labels < 60
    x, labels = x[part], labels[part]
    t = threshold_away(x, labels, candidates=np.linspace(0.3, 0.8, 51), margin=1e-5)
    assert t is not None
    scaled = (torch.from_numpy(x).double() * factor).to(dtype)
    assert float(scaled.abs().max()) > 0 and torch.isfinite(scaled).all()
    got = facenms.select(scaled, labels, threshold=t).numpy()
    want = facenms.select(torch.from_numpy(x).to(dtype), labels, threshold=t).numpy()
    np.testing.assert_array_equal(got, want)
    reference.check_valid(scaled.double().numpy(), labels, got, t)


def test_degenerate_identity_ranks_by_index():
    # d=1: the unit rows are +-1 and sum to zero, so no face is more central than another
    x = np.array([[.86], [-1.26], [.99], [.46], [-.70], [-.67]], np.float32)
    labels = np.zeros(6, np.int64)
    _, scores = ops.prepare(torch.from_numpy(x), torch.arange(6), torch.tensor([0, 6]))
    assert scores.tolist() == [1.0] * 6  # all tie, as reference.sparsity_scores says
    for rank in ("centrality", "sparsity"):
        for m in (1, 3):
            got = facenms.select(x, labels, threshold=0.5, rank=rank, min_per_identity=m)
            want = reference.select(x, labels, threshold=0.5, rank=rank, min_per_identity=m)
            np.testing.assert_array_equal(got, want)
    # faces 0 and 1 are walked first: 0 kept, 1 is opposite (kept), 2..5 suppressed
    np.testing.assert_array_equal(facenms.select(x, labels, threshold=0.5, rank="centrality"),
                                  [0, 1])


def test_reference_ratio_search_reaches_every_count():
    # the oracle evaluates exactly the similarities its greedy pass compares
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    labels = np.repeat(np.arange(4), 10)
    counts = set()
    for r in np.linspace(0.1, 1.0, 37):
        counts.add(len(reference.select(x, labels, ratio=float(r))))
    ts = [reference.similarity(a, b) for a in reference.unit_rows(x)[:10]
          for b in reference.unit_rows(x)[:10]]
    assert all(isinstance(t, (float, np.floating)) for t in ts)
    # every count the reference reports is achieved at its own threshold
    for r in (0.3, 0.55, 0.8):
        keep, ts = reference.select(x, labels, ratio=r, return_thresholds=True)
        again = reference.select(x, labels, threshold=float(ts[0]))
        np.testing.assert_array_equal(keep, again)


# ------------------------------------------------------------------ memory maps ----

@pytest.fixture
def mapped(tmp_path, faces):
    x, labels = faces
    path = str(tmp_path / "f.npy")
    np.save(path, x.astype(np.float16))
    return path, labels


def test_copy_on_write_map_is_selected_as_edited(mapped):
    path, labels = mapped
    arr = np.load(path, mmap_mode="c")
    arr[: len(arr) // 2] = -arr[len(arr) // 2: 2 * (len(arr) // 2)]  # edits the file never sees
    arr[5] = arr[3]
    want = facenms.select(np.array(arr), labels, threshold=0.6)
    np.testing.assert_array_equal(facenms.select(arr, labels, threshold=0.6), want)
    np.testing.assert_array_equal(facenms.select(arr, labels, threshold=0.6, block_size=500),
                                  want)
    assert arr[5].tolist() == arr[3].tolist()  # the edits survived the selection


def test_replaced_file_does_not_change_what_the_array_holds(mapped, tmp_path):
    path, labels = mapped
    arr = np.load(path, mmap_mode="r")
    want = facenms.select(np.array(arr), labels, threshold=0.6)
    other = str(tmp_path / "g.npy")
    np.save(other, np.random.default_rng(0).normal(size=arr.shape).astype(np.float16))
    os.replace(other, path)  # what re-extraction does
    np.testing.assert_array_equal(facenms.select(arr, labels, threshold=0.6, block_size=700),
                                  want)


def test_shared_writable_map_reads_its_edits(mapped):
    path, labels = mapped
    arr = np.load(path, mmap_mode="r+")
    arr[10:20] = arr[0]
    arr.flush()
    want = facenms.select(np.array(arr), labels, threshold=0.6)
    np.testing.assert_array_equal(facenms.select(arr, labels, threshold=0.6), want)


# ------------------------------------------------------------------ API errors ----

def test_numpy_scalars_and_0d_arrays_are_numbers(faces):
    x, labels = faces
    want = facenms.select(x, labels, ratio=0.5)
    for r in (np.float32(0.5), np.array(0.5), torch.tensor(0.5)):
        np.testing.assert_array_equal(facenms.select(x, labels, ratio=r), want)
    np.testing.assert_array_equal(facenms.select(x, labels, ratio=np.int64(1)), np.arange(len(x)))
    np.testing.assert_array_equal(facenms.select(x, labels, threshold=np.int64(0)),
                                  facenms.select(x, labels, threshold=0.0))
    np.testing.assert_array_equal(
        facenms.select(x, labels, threshold=0.6, min_per_identity=np.int64(2)),
        facenms.select(x, labels, threshold=0.6, min_per_identity=2))


def test_min_per_identity_beyond_int64_means_all(faces):
    x, labels = faces
    np.testing.assert_array_equal(
        facenms.select(x, labels, threshold=0.0, min_per_identity=2 ** 63), np.arange(len(x)))


@pytest.mark.parametrize("kw, err, match", [
    (dict(features=torch.ones(4, 3, device="meta")), ValueError, "meta device"),
    (dict(features=torch.eye(4).to_sparse()), TypeError, "dense"),
    (dict(labels=torch.zeros(4, dtype=torch.int64).to_sparse()), TypeError, "dense"),
    (dict(device="bogus"), ValueError, "unknown device"),
    (dict(ratio=True), ValueError, "ratio must be a number"),
    (dict(ratio=np.array([0.5])), ValueError, "ratio must be a number"),
    (dict(ratio=float("nan")), ValueError, "ratio must be a number"),
    (dict(min_per_identity=-1), ValueError, "min_per_identity"),
    (dict(min_per_identity=1.5), ValueError, "min_per_identity"),
    (dict(seed=-3, rank="random"), ValueError, "seed"),
])
def test_bad_api_input_is_a_value_or_type_error(kw, err, match):
    args = dict(features=torch.rand(4, 3), labels=np.zeros(4, np.int64), ratio=0.5)
    args.update(kw)
    with pytest.raises(err, match=match):
        facenms.select(args.pop("features"), args.pop("labels"), **args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ValueError, match="CUDA is not available"):
        facenms.select(np.ones((2, 3), np.float32), np.zeros(2, np.int64), ratio=0.5,
                       device="cuda")


def test_scores_that_require_grad_are_used_as_values(faces):
    x, labels = faces
    s = torch.rand(len(x), requires_grad=True)
    np.testing.assert_array_equal(facenms.select(x, labels, ratio=0.5, scores=s),
                                  facenms.select(x, labels, ratio=0.5, scores=s.detach()))


def test_check_valid_takes_bf16(faces):
    x, labels = faces
    xb = torch.from_numpy(x[:500]).bfloat16()
    keep = facenms.select(xb, labels[:500], threshold=0.6)
    reference.check_valid(xb, labels[:500], keep, 0.6)


@pytest.mark.parametrize("rank", ["sparsity", "centrality", "random"])
def test_one_packed_sort_ranks_like_two_stable_sorts(faces, rank):
    from facenms.core import csr, ranking
    x, labels = faces
    x = x.copy()
    x[7], labels[7] = x[5], labels[5]  # an exact tie: the smaller index first
    xt = torch.from_numpy(x)
    _, order, offsets, sizes = csr.group(labels, len(x), xt.device)
    _, sparsity = ops.prepare(xt, order, offsets)
    key = {"sparsity": sparsity, "centrality": -sparsity,
           "random": ranking.random_key(len(x), 4)[order]}[rank]
    perm = csr.stable_argsort(-key)
    perm = perm[csr.stable_argsort(csr.segment_ids(sizes)[perm])]
    assert torch.equal(ranking.rank(xt, order, offsets, sizes, method=rank, seed=4), order[perm])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_rows_rescaled_for_the_gpu_keep_their_direction(faces, dtype):
    # the CUDA path's guard, run here on the CPU: exact powers of two, rows untouched in range
    from facenms.core.ranking import rescale_rows
    x = torch.from_numpy(faces[0][:50]).to(dtype, copy=True)
    x[:10] = (x[:10].double() * 2.0 ** 100).to(dtype)
    x[10:20] = (x[10:20].double() * 2.0 ** -100).to(dtype)
    y = rescale_rows(x, x.double().norm(dim=1))
    assert torch.equal(y[20:], x[20:])
    ratio = y[:20].double() / x[:20].double()
    assert torch.equal(ratio, ratio[:, :1].expand_as(ratio))  # one factor per row
    assert torch.all(torch.log2(ratio[:, 0]) == torch.round(torch.log2(ratio[:, 0])))
    norms = y[:20].double().norm(dim=1)
    assert bool(((norms > 0.1) & (norms < 100)).all())
    same = x[20:]
    assert rescale_rows(same, same.double().norm(dim=1)) is same
