"""CUDA kernels against the CPU ops and the slow references (skipped without a GPU)."""
import numpy as np
import pytest
import torch

import facenms
from facenms.core import ops
from kernel_cases import (SIZES, check_lane_valid, clustered, csr, discrete_case,
                          lane_reference, make_case, run_op)

BUILT_CUDA = facenms.build_info()["cuda"]
HAS_GPU = BUILT_CUDA and torch.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and a CUDA build")


DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@gpu
@pytest.mark.parametrize("d", [40, 64, 65, 512])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_ident", [False, True])
def test_nms_cuda_matches_cpu(dtype, per_ident, d):
    # d = 512: eight 64-column chunks accumulate in the tensor-core kernels;
    # d = 65: a partial last chunk and (16-bit) one element per load
    x, order, offsets, thr = make_case(SIZES * 2, d=d, lanes=64 if not per_ident else 7,
                                       per_ident=per_ident, seed=3)
    x = torch.as_tensor(x).to(dtype).double().numpy()  # what both backends see
    for mk in (0, 1, 4):
        cb, cc = run_op(x, order, offsets, thr, mk, "cpu", dtype)
        gb, gc = run_op(x, order, offsets, thr, mk, "cuda", dtype)
        np.testing.assert_array_equal(gb.cpu().numpy(), cb.numpy())
        np.testing.assert_array_equal(gc.cpu().numpy(), cc.numpy())


# (d, row stride, first element): 16-bit rows read 8 (one chunk of columns,
# two with a partial one, eight), 2 and 1 elements per load
LAYOUTS = [(64, 64, 0), (72, 72, 0), (512, 520, 8), (66, 66, 0), (510, 512, 2), (64, 72, 1),
           (63, 63, 0), (511, 511, 0), (512, 513, 0)]


@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda t: "d%d-ld%d-at%d" % t)
def test_nms_cuda_16bit_load_widths(dtype, layout):
    d, ld, start = layout
    x, order, offsets, thr = make_case(SIZES, d=d, lanes=16, seed=12)
    xt = torch.as_tensor(x).to(dtype)
    # the rows as a view of a wider buffer, made on the device
    buf = torch.zeros(len(x) * ld + start + d, dtype=dtype, device="cuda")
    xs = buf[start:start + len(x) * ld].view(len(x), ld)[:, :d]
    xs.copy_(xt.cuda())
    assert xs.stride(0) == ld and xs.storage_offset() == start
    args = (torch.as_tensor(order).cuda(), torch.as_tensor(offsets).cuda(),
            torch.as_tensor(thr).cuda())
    for mk in (1, 3):
        gb, gc = ops.nms(xs, *args, mk)
        cb, cc = ops.nms(xt, torch.as_tensor(order), torch.as_tensor(offsets),
                         torch.as_tensor(thr), mk)
        np.testing.assert_array_equal(gb.cpu().numpy(), cb.numpy())
        np.testing.assert_array_equal(gc.cpu().numpy(), cc.numpy())


@gpu
def test_nms_cuda_reference_strided_rows_and_wide_d():
    x, order, offsets, thr = make_case([3, 40, 70, 12], d=1000, lanes=3, seed=5)
    wide = torch.zeros(len(x), 1200, dtype=torch.float32, device="cuda")
    wide[:, 100:1100] = torch.as_tensor(x, dtype=torch.float32).cuda()
    xs = wide[:, 100:1100]  # a view on the device: stride(0) = 1200, unaligned start
    assert xs.stride(0) == 1200 and xs.storage_offset() == 100
    gb, gc = ops.nms(xs, torch.as_tensor(order).cuda(), torch.as_tensor(offsets).cuda(),
                     torch.as_tensor(thr).cuda(), 2)
    rb, rc = lane_reference(x, order, offsets, thr, 2)
    np.testing.assert_array_equal(gb.cpu().numpy(), rb)
    np.testing.assert_array_equal(gc.cpu().numpy(), rc)


@gpu
def test_nms_cuda_huge_identity_uses_global_walk():
    # more faces than the walk keeps in shared memory (5888)
    x, order, offsets, thr = make_case([7000, 300, 40, 3], d=8, seed=6, shuffle=False,
                                       thresholds=[0.8])
    gb, gc = run_op(x, order, offsets, thr, 1, "cuda", torch.float32)
    check_lane_valid(x, order, offsets, gb.cpu().numpy(), 0.8)
    cb, cc = run_op(x, order, offsets, thr, 1, "cpu", torch.float32)
    assert abs(int(gc) - int(cc)) <= 0.01 * int(cc)


@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("per_ident", [False, True])
def test_nms_cuda_global_walk_64_lanes_min_keep(dtype, per_ident):
    # identities over 5888 faces (suppressed sets in global memory) and over 256
    # (256-thread walk), 64 lanes, min_keep > 1: exact against the CPU on data
    # whose similarities take few values, all far from the thresholds
    sizes = [7000, 6000, 300, 257, 40, 3, 1]
    x, order, offsets, thr = discrete_case(sizes, d=64, lanes=64 if not per_ident else 9,
                                           per_ident=per_ident, seed=7)
    for mk in (3, 50):
        cb, cc = run_op(x, order, offsets, thr, mk, "cpu", dtype)
        gb, gc = run_op(x, order, offsets, thr, mk, "cuda", dtype)
        np.testing.assert_array_equal(gb.cpu().numpy(), cb.numpy())
        np.testing.assert_array_equal(gc.cpu().numpy(), cc.numpy())


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_nms_with_norms_cuda_equals_nms(dtype):
    # the norms prepare computes give the very inverse norms nms computes itself
    x, order, offsets, thr = make_case(SIZES * 2, d=512, lanes=64, seed=13)
    xt = torch.as_tensor(x).to(dtype).cuda()
    o, off, t = (torch.as_tensor(order).cuda(), torch.as_tensor(offsets).cuda(),
                 torch.as_tensor(thr).cuda())
    norms, _ = ops.prepare(xt, o, off)
    for mk in (1, 3):
        gb, gc = ops.nms(xt, o, off, t, mk)
        nb, nc = torch.ops.facenms.nms_with_norms(xt, o, off, t, mk, norms)
        assert torch.equal(gb, nb) and torch.equal(gc, nc)
        cb, cc = ops.nms(xt.cpu(), o.cpu(), off.cpu(), t.cpu(), mk)
        np.testing.assert_array_equal(nb.cpu().numpy(), cb.numpy())
        np.testing.assert_array_equal(nc.cpu().numpy(), cc.numpy())


@gpu
def test_nms_cuda_degenerate_inputs():
    dev = "cuda"
    x = torch.randn(5, 8, device=dev)
    thr = torch.tensor([0.5], dtype=torch.float64, device=dev)
    e = torch.zeros(0, dtype=torch.int64, device=dev)
    bits, counts = ops.nms(x, e, torch.zeros(1, dtype=torch.int64, device=dev), thr, 1)
    assert bits.numel() == 0 and counts.tolist() == [0]
    # only empty identities
    bits, counts = ops.nms(x, e, torch.zeros(4, dtype=torch.int64, device=dev), thr, 1)
    assert counts.tolist() == [0]
    with pytest.raises(RuntimeError, match="ascending"):
        ops.nms(x, torch.arange(5, device=dev), torch.tensor([0, 5], device=dev),
                torch.tensor([0.5, 0.1], dtype=torch.float64, device=dev), 1)
    with pytest.raises(RuntimeError, match="thresholds"):
        ops.nms(x, torch.arange(5, device=dev), torch.tensor([0, 5], device=dev),
                torch.tensor([0.5], dtype=torch.float32, device=dev), 1)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_prepare_cuda_matches_cpu(dtype):
    sizes = [1, 2, 5, 40, 300, 3]
    x = torch.as_tensor(clustered(sizes, 64, 7)).to(dtype)
    x[2] = 0  # a zero row: its identity scores 1 everywhere
    order = torch.randperm(len(x))
    offsets = csr(sizes)
    cn, cs = ops.prepare(x, order, offsets)
    gn, gs = ops.prepare(x.cuda(), order.cuda(), offsets.cuda())
    torch.testing.assert_close(gn.cpu(), cn, rtol=1e-13, atol=0)
    assert (gs.cpu() != cs).sum() <= 1  # a score exactly at a 2**-20 rounding edge may flip
    assert torch.all((gs.cpu() - cs).abs() <= 2.0 ** -20)


@gpu
def test_opcheck_cuda():
    x, order, offsets, thr = make_case([3, 40, 5], d=16, lanes=4, seed=8)
    args = (torch.as_tensor(x, dtype=torch.float16).cuda(), torch.as_tensor(order).cuda(),
            torch.as_tensor(offsets).cuda())
    torch.library.opcheck(torch.ops.facenms.prepare.default, args)
    torch.library.opcheck(torch.ops.facenms.nms.default,
                          args + (torch.as_tensor(thr).cuda(), 1))


@gpu
def test_nms_cuda_under_torch_compile():
    x, order, offsets, thr = make_case([3, 40, 5], d=16, lanes=4, seed=9)
    args = (torch.as_tensor(x, dtype=torch.float32).cuda(), torch.as_tensor(order).cuda(),
            torch.as_tensor(offsets).cuda(), torch.as_tensor(thr).cuda())

    def f(x, order, offsets, thr):
        bits, counts = ops.nms(x, order, offsets, thr, 1)
        return (bits & 1).sum(), counts

    want = f(*args)
    got = torch.compile(f, backend="aot_eager", fullgraph=True)(*args)
    assert int(got[0]) == int(want[0]) and torch.equal(got[1], want[1])


def _select_data(n=3000, d=64, seed=0):
    sizes = np.random.default_rng(seed).integers(1, 80, n // 40)
    x = clustered(sizes, d, seed).astype(np.float32)
    labels = np.repeat(np.arange(len(sizes)) * 7 - 50, sizes)
    perm = np.random.default_rng(seed + 1).permutation(len(x))
    return x[perm], labels[perm]


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_select_on_cuda_tensors(dtype):
    x, labels = _select_data()
    xt = torch.as_tensor(x).to(dtype)
    lt = torch.as_tensor(labels)
    cpu = facenms.select(xt, lt, threshold=0.55)
    out, info = facenms.select(xt.cuda(), lt.cuda(), threshold=0.55, return_info=True)
    assert out.is_cuda and out.dtype == torch.int64
    diff = set(out.cpu().tolist()) ^ set(cpu.tolist())
    assert len(diff) <= 2  # only faces whose deciding similarity is ~1e-6 from t
    facenms.reference.check_valid(xt.float().numpy(), labels, out.cpu().numpy(), 0.55,
                                  eps=1e-2 if dtype != torch.float32 else 1e-5)


@gpu
def test_select_ratio_on_cuda_matches_cpu_closely():
    x, labels = _select_data(seed=2)
    cpu, ci = facenms.select(x, labels, ratio=0.6, return_info=True)
    gpu_, gi = facenms.select(torch.as_tensor(x).cuda(), torch.as_tensor(labels).cuda(),
                              ratio=0.6, return_info=True)
    assert abs(gi.ratio - ci.ratio) <= 2e-3
    assert abs(gi.ratio - 0.6) <= 5e-3


@gpu
def test_select_numpy_with_device_cuda():
    x, labels = _select_data(seed=3)
    out = facenms.select(x, labels, threshold=0.5, device="cuda")
    out = out.cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    cpu = facenms.select(x, labels, threshold=0.5)
    assert len(set(out.tolist()) ^ set(cpu.tolist())) <= 2


@gpu
def test_select_on_cupy_arrays():
    cupy = pytest.importorskip("cupy")
    x, labels = _select_data(seed=4)
    out = facenms.select(cupy.asarray(x), cupy.asarray(labels), threshold=0.5)
    assert type(out).__module__.split(".")[0] == "cupy"
    cpu = facenms.select(x, labels, threshold=0.5)
    assert len(set(cupy.asnumpy(out).tolist()) ^ set(cpu.tolist())) <= 2


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_prepare_cuda_wide_rows_use_global_scratch(dtype):
    # d = 6000: the partial centres no longer fit in shared memory; d = 512: the usual
    for d in (512, 6000):
        sizes = [1, 3, 40, 7]
        x = torch.as_tensor(clustered(sizes, d, 17)).to(dtype)
        order = torch.randperm(len(x))
        offsets = csr(sizes)
        cn, cs = ops.prepare(x, order, offsets)
        gn, gs = ops.prepare(x.cuda(), order.cuda(), offsets.cuda())
        torch.testing.assert_close(gn.cpu(), cn, rtol=1e-13, atol=0)
        assert (gs.cpu() != cs).sum() <= 1
        assert torch.all((gs.cpu() - cs).abs() <= 2.0 ** -20)


def _select_case(seed, dtype):
    x, labels = _select_data(seed=seed)
    xt = torch.as_tensor(x).to(dtype)
    scores = torch.as_tensor(np.random.default_rng(seed).random(len(x)))
    return xt, torch.as_tensor(labels), scores


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rank", ["sparsity", "centrality", "random", "scores"])
@pytest.mark.parametrize("mode", ["threshold", "ratio"])
def test_select_every_mode_and_rank_on_cuda_is_valid(dtype, rank, mode):
    xt, lt, scores = _select_case(5, dtype)
    kw = dict(rank=rank, scores=scores if rank == "scores" else None, min_per_identity=2,
              seed=3, return_info=True)
    kw.update(threshold=0.55) if mode == "threshold" else kw.update(ratio=0.6)
    cpu, ci = facenms.select(xt, lt, **kw)
    kw_cuda = dict(kw, scores=scores.cuda() if rank == "scores" else None)
    out, gi = facenms.select(xt.cuda(), lt.cuda(), **kw_cuda)
    assert out.is_cuda
    got = out.cpu().numpy()
    facenms.reference.check_valid(xt.float().numpy(), lt.numpy(), got, gi.threshold,
                                  scores=scores.numpy() if rank == "scores" else None,
                                  rank=rank, min_per_identity=2, seed=3,
                                  eps=1e-5 if dtype == torch.float32 else 1e-2)
    if mode == "threshold":
        assert len(set(got.tolist()) ^ set(cpu.tolist())) <= 2
    else:
        assert abs(gi.ratio - ci.ratio) <= 2e-3


@gpu
@pytest.mark.parametrize("rank", ["sparsity", "random"])
def test_select_per_identity_on_cuda_matches_cpu_counts(rank):
    xt, lt, _ = _select_case(6, torch.float16)
    cpu, ci = facenms.select(xt, lt, ratio=0.5, per_identity=True, rank=rank,
                             min_per_identity=2, return_info=True)
    out, gi = facenms.select(xt.cuda(), lt.cuda(), ratio=0.5, per_identity=True, rank=rank,
                             min_per_identity=2, return_info=True)
    # every identity's count is fixed by the rule; which faces, nearly so
    np.testing.assert_array_equal(gi.kept_per_identity, ci.kept_per_identity)
    assert len(set(out.cpu().tolist()) ^ set(cpu.tolist())) <= 0.01 * len(cpu)


@gpu
def test_curve_on_cuda_matches_cpu():
    xt, lt, _ = _select_case(7, torch.float16)
    ts, cr = facenms.curve(xt, lt)
    ts2, gr = facenms.curve(xt.cuda(), lt.cuda())
    np.testing.assert_array_equal(ts, ts2)
    assert np.max(np.abs(cr - gr)) <= 1e-3


def _noisy_world(n=4000, d=64, wrong=0.03, seed=3):
    """WebFace-like faces with a share of them filed under a random other label."""
    from facenms.eval.embeddings import webface_like
    x, labels = webface_like(n, dim=d, seed=seed)
    rng = np.random.default_rng(seed)
    pick = rng.choice(n, int(wrong * n), replace=False)
    labels = labels.copy()
    labels[pick] = (labels[pick] + rng.integers(1, labels.max() + 1, len(pick))) % (
        labels.max() + 1)
    return x, labels


def check_same_issues(got, info, want, winfo, tol=1e-3):
    """Two label_issues answers agree but for faces whose score lies within tol of the
    threshold; the faces both flag have the same nearest identity."""
    for mine, other, mi in ((want, got, winfo), (got, want, info)):
        alone = np.setdiff1d(mine, other)
        s = mi.issue_score[np.searchsorted(mine, alone)]
        assert np.all(np.abs(s - mi.threshold) < tol), (alone[:5], s[:5])
    both, i, j = np.intersect1d(want, got, return_indices=True)
    assert len(both) > 0.9 * len(want)
    np.testing.assert_array_equal(info.other_label[j], winfo.other_label[i])
    np.testing.assert_allclose(info.other_similarity[j], winfo.other_similarity[i], atol=1e-4)


@gpu
@pytest.mark.parametrize("work", [0, 1 << 62])  # the bf16 screen on every search, or none
def test_label_issues_on_cuda_matches_cpu(monkeypatch, work):
    from facenms.core import nearest
    x, labels = _noisy_world()
    want, winfo = facenms.label_issues(x, labels, return_info=True)
    assert len(want) > 30
    monkeypatch.setattr(nearest, "SCREEN_WORK", work)
    got, info = facenms.label_issues(torch.from_numpy(x).cuda(), torch.from_numpy(labels).cuda(),
                                     return_info=True)
    assert got.is_cuda and got.dtype == torch.int64
    check_same_issues(got.cpu().numpy(), info, want, winfo)
