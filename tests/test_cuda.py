"""CUDA kernels: registration (always), shared host/device logic (on the CPU),
and parity with the CPU ops (on a GPU; skipped without one)."""
import numpy as np
import pytest
import torch

import facenms
from facenms.core import ops

BUILT_CUDA = facenms.build_info()["cuda"]
HAS_GPU = BUILT_CUDA and torch.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and a CUDA build")

WARP_MAX, TILE = 32, 64  # kWarpMax, kTile of csrc/nms_common.h


# ----------------------------------------------------------- helpers ----

def _has_plan():
    facenms.build_info()  # loads the libraries
    return torch._C._dispatch_has_kernel_for_dispatch_key("facenms::_nms_plan", "CPU")


# the schedule is host code of the CUDA library, built whenever torch has CUDA
needs_plan = pytest.mark.skipif(not _has_plan(), reason="_nms_plan is in the CUDA library, "
                                "which a torch without CUDA does not load")


def csr(sizes, device="cpu"):
    sizes = torch.as_tensor(sizes, dtype=torch.int64)
    offsets = torch.zeros(len(sizes) + 1, dtype=torch.int64)
    torch.cumsum(sizes, 0, out=offsets[1:])
    return offsets.to(device)


def clustered(sizes, d, seed, spread=0.9):
    """Rows grouped by identity (consecutive), with near duplicates, not unit norm."""
    g = np.random.default_rng(seed)
    out = []
    for n in sizes:
        centre = g.standard_normal(d)
        x = centre + spread * g.standard_normal((n, d))
        dup = g.random(n) < 0.3
        for i in np.flatnonzero(dup):
            if i:
                x[i] = x[g.integers(0, i)] + 0.05 * g.standard_normal(d)
        out.append(x * g.uniform(0.5, 3.0, (n, 1)))
    return np.concatenate(out) if out else np.zeros((0, d))


def pair_sims(x, order, offsets):
    """float64 cosine similarities of every within-identity pair (rank order)."""
    y = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = []
    for c in range(len(offsets) - 1):
        rows = order[offsets[c]:offsets[c + 1]]
        s = y[rows] @ y[rows].T
        sims.append(s[np.triu_indices(len(rows), 1)])
    return np.concatenate(sims) if sims else np.zeros(0)


def safe_thresholds(sims, k, lo=-0.2, hi=0.99, margin=1e-4):
    """k ascending thresholds in [lo, hi], each at least `margin` from every similarity."""
    grid = np.linspace(lo, hi, 20000)
    s = np.sort(sims)
    j = np.searchsorted(s, grid)
    near = np.minimum(np.abs(grid - s[np.clip(j - 1, 0, len(s) - 1)]),
                      np.abs(grid - s[np.clip(j, 0, len(s) - 1)])) if len(s) else np.inf + grid
    ok = grid[near > margin]
    assert len(ok) >= k, "data too dense for safe thresholds"
    return ok[np.linspace(0, len(ok) - 1, k).astype(int)]


def lane_reference(x, order, offsets, thr, min_keep):
    """bits and counts of the nms op, one plain greedy walk per lane."""
    y = x / np.linalg.norm(x, axis=1, keepdims=True)
    per_ident = thr.ndim == 2
    lanes = thr.shape[-1]
    bits = np.zeros(len(order), dtype=np.uint64)
    counts = np.zeros(thr.shape, dtype=np.int64)
    for c in range(len(offsets) - 1):
        a, b = offsets[c], offsets[c + 1]
        s = y[order[a:b]] @ y[order[a:b]].T
        for j in range(lanes):
            t = thr[c, j] if per_ident else thr[j]
            kept = np.zeros(b - a, dtype=bool)
            for i in range(b - a):
                kept[i] = not np.any(s[i, kept[:i].nonzero()[0]] > t)
            need = min(min_keep, b - a)
            if kept.sum() < need:
                kept[np.flatnonzero(~kept)[:need - kept.sum()]] = True
            bits[a:b] |= kept.astype(np.uint64) << np.uint64(j)
            if per_ident:
                counts[c, j] = kept.sum()
            else:
                counts[j] += kept.sum()
    return bits.view(np.int64), counts


def make_case(sizes, d=24, lanes=5, per_ident=False, seed=0, shuffle=True, thresholds=None):
    x = clustered(sizes, d, seed)
    n = len(x)
    order = np.random.default_rng(seed + 1).permutation(n) if shuffle else np.arange(n)
    # group the shuffled rows by identity again: order lists identity 0's rows first, ...
    ident = np.repeat(np.arange(len(sizes)), sizes)
    inv = np.empty(n, dtype=np.int64)
    inv[order] = np.arange(n)
    xs = x[inv] if shuffle else x  # row order[p] holds original face p
    order = order if shuffle else np.arange(n)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    if thresholds is not None:
        return xs, order, offsets, np.asarray(thresholds, dtype=np.float64)
    sims = pair_sims(xs, order, offsets)
    if per_ident:
        thr = np.stack([safe_thresholds(sims, lanes, lo=-0.1 + 0.01 * c, hi=0.95)
                        for c in range(len(sizes))])
    else:
        thr = safe_thresholds(sims, lanes)
    del ident
    return xs, order, offsets, thr


def discrete_case(sizes, d, lanes, per_ident=False, seed=0, protos=48):
    """Rows that are copies of a few fp16-exact prototypes scaled by powers of
    two, shuffled: every similarity is one of few values (1 between copies),
    so thresholds far from all of them exist even for huge identities, and
    every dtype sees the same rows."""
    g = np.random.default_rng(seed)
    p = g.standard_normal((protos, d)).astype(np.float16).astype(np.float64)
    pick = []
    for n in sizes:
        own = g.choice(protos, size=min(protos, 12), replace=False)
        pick.append(own[np.minimum(g.geometric(0.25, n) - 1, len(own) - 1)])
    pick = np.concatenate(pick) if pick else np.zeros(0, dtype=np.int64)
    x = p[pick] * 2.0 ** g.integers(-2, 3, (len(pick), 1))
    n = len(x)
    order = g.permutation(n)
    xs = np.empty_like(x)
    xs[order] = x  # row order[i] holds face i
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    y = p / np.linalg.norm(p, axis=1, keepdims=True)
    sims = (y @ y.T)[np.triu_indices(protos, 1)]
    if per_ident:
        thr = np.stack([safe_thresholds(sims, lanes, lo=-0.3 + 0.02 * c, hi=0.6, margin=1e-3)
                        for c in range(len(sizes))])
    else:
        thr = safe_thresholds(sims, lanes, lo=-0.3, hi=0.6, margin=1e-3)
    return xs, order, offsets, thr


def check_lane_valid(x, order, offsets, bits, t, lane=0, eps=1e-5):
    """Vectorised validity check of one lane (min_keep <= 1): a kept face is
    within t + eps of every earlier kept face, a suppressed one above t - eps
    to some earlier kept face."""
    y = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    kept_all = ((np.asarray(bits) >> lane) & 1).astype(bool)
    for c in range(len(offsets) - 1):
        a, b = offsets[c], offsets[c + 1]
        if b - a < 2:
            continue
        yc = y[order[a:b]]
        kept = kept_all[a:b]
        s = yc @ yc.T
        s[~np.tril(np.ones((b - a, b - a), dtype=bool), -1)] = -2
        s[:, ~kept] = -2
        worst = s.max(1)
        assert kept[0]
        assert np.all(worst[kept] <= t + eps), "a kept face is too similar to a kept one"
        assert np.all(worst[~kept] > t - eps), "a suppressed face has no kept suppressor"


def run_op(x, order, offsets, thr, min_keep, device="cpu", dtype=torch.float64):
    xt = torch.as_tensor(x).to(device, dtype)
    return ops.nms(xt, torch.as_tensor(order).to(device), torch.as_tensor(offsets).to(device),
                   torch.as_tensor(thr, dtype=torch.float64).to(device), min_keep)


SIZES = [1, 2, 3, 0, 7, 20, 31, 32, 33, 40, 64, 65, 100, 129, 5, 2]


# --------------------------------------------------- always (no GPU) ----

def test_cuda_kernels_registered_when_built():
    info = facenms.build_info()
    if not info["cuda"]:
        pytest.skip("built without CUDA (%s)" % info.get("flags", ""))
    for op in ("facenms::nms", "facenms::prepare"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), op
    for op in ("facenms::nms_with_norms",):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), op
    assert info["cuda_kernels_registered"]
    assert info["cuda_archs"], "the build records the archs it compiled for"
    if torch.cuda.is_available():  # built for this GPU: its arch, or PTX of an older one
        major, minor = torch.cuda.get_device_capability()
        archs = [a.replace("+PTX", "") for a in info["cuda_archs"].replace(" ", ";").split(";")
                 if a]
        assert "%d.%d" % (major, minor) in archs or any(
            "+PTX" in a for a in info["cuda_archs"].split(";")), info["cuda_archs"]


def test_cpu_kernels_registered():
    for op in ("facenms::nms", "facenms::prepare", "facenms::rank_nms",
               "facenms::nms_with_norms"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CPU"), op


@needs_plan
@pytest.mark.parametrize("seed", range(4))
def test_plan_covers_every_pair_once(seed):
    g = np.random.default_rng(seed)
    sizes = np.concatenate([g.integers(0, 200, 40), [0, 1, 32, 33, 64, 65, 128, 129]])
    g.shuffle(sizes)
    sched, tiles = torch.ops.facenms._nms_plan(csr(sizes))
    sched, tiles = sched.numpy(), tiles.numpy()
    # largest first, ties by identity id
    assert sorted(sched.tolist()) == list(range(len(sizes)))
    key = [(-sizes[c], c) for c in sched]
    assert key == sorted(key)
    large = [c for c in sched if sizes[c] > WARP_MAX]
    # tiles: every (kb <= mb) of every large identity exactly once, identities in sched order
    want = [(c, kb, mb) for c in large for mb in range((sizes[c] + TILE - 1) // TILE)
            for kb in range(mb + 1)]
    assert [tuple(t) for t in tiles[:, :3]] == want
    # mask slots: identity c owns side(c)**2 bytes, back to back in sched order
    base, pos = {}, 0
    for c in large:
        base[c] = pos
        pos += ((sizes[c] + TILE - 1) // TILE * TILE) ** 2
    for c, kb, mb, off in tiles:
        side = (sizes[c] + TILE - 1) // TILE * TILE
        assert off == base[c] + kb * TILE * side + mb * TILE
        assert 0 <= off and off + (TILE - 1) * side + TILE <= base[c] + side * side


@needs_plan
def test_plan_many_tiles_decode():
    # identity sizes whose tile numbers need the square-root fix-ups
    sizes = [5000, 4097, 33, 4096, 64 * 37 + 1]
    _, tiles = torch.ops.facenms._nms_plan(csr(sizes))
    tiles = tiles.numpy()
    for c in set(tiles[:, 0]):
        t = tiles[tiles[:, 0] == c]
        nb = (sizes[c] + TILE - 1) // TILE
        assert len(t) == nb * (nb + 1) // 2
        assert np.all(t[:, 1] <= t[:, 2]) and t[:, 2].max() == nb - 1
        assert len({(a, b) for a, b in t[:, 1:3]}) == len(t)


@pytest.mark.parametrize("per_ident", [False, True])
@pytest.mark.parametrize("min_keep", [0, 1, 3, 40])
def test_cpu_lanes_and_min_keep_match_reference(per_ident, min_keep):
    # The CPU op uses the shared lane and min_keep functions of nms_common.h.
    x, order, offsets, thr = make_case(SIZES, lanes=6, per_ident=per_ident, seed=min_keep)
    bits, counts = run_op(x, order, offsets, thr, min_keep)
    rb, rc = lane_reference(x, order, offsets, thr, min_keep)
    np.testing.assert_array_equal(bits.numpy(), rb)
    np.testing.assert_array_equal(counts.numpy(), rc)


def test_lane_validity_checker_on_cpu_op():
    # the checker the huge-identity GPU test relies on, on the CPU op's output
    x, order, offsets, thr = make_case([300, 40, 3, 1], d=8, seed=11, lanes=3)
    bits, _ = run_op(x, order, offsets, thr, 1)
    for lane in range(3):
        check_lane_valid(x, order, offsets, bits.numpy(), thr[lane], lane)
    with pytest.raises(AssertionError):
        check_lane_valid(x, order, offsets, bits.numpy() ^ 2, thr[1], 1)


@pytest.mark.parametrize("per_ident", [False, True])
def test_discrete_case_cpu_matches_reference(per_ident):
    # the data of the GPU global-walk test, checked here on a smaller scale
    x, order, offsets, thr = discrete_case([300, 40, 3, 1, 0, 33], d=16,
                                           lanes=64 if not per_ident else 9,
                                           per_ident=per_ident, seed=7)
    for dtype in (torch.float64, torch.float16):
        for mk in (3, 50):
            bits, counts = run_op(x, order, offsets, thr, mk, "cpu", dtype)
            rb, rc = lane_reference(x, order, offsets, thr, mk)
            np.testing.assert_array_equal(bits.numpy(), rb)
            np.testing.assert_array_equal(counts.numpy(), rc)


@needs_plan
def test_plan_tile_table_of_small_identities_only_is_empty():
    sched, tiles = torch.ops.facenms._nms_plan(csr([3, 32, 0, 1]))
    assert sched.tolist() == [1, 0, 3, 2] and tiles.shape == (0, 4)


@needs_plan
def test_plan_rejects_identities_beyond_the_tile_index():
    # tile block indices take 16 bits: 65536 blocks of 64 faces at most
    with pytest.raises(RuntimeError, match="at most 4194304"):
        torch.ops.facenms._nms_plan(csr([5, (1 << 22) + 1]))


@needs_plan
def test_plan_tile_table_tail():
    # the last tiles of a many-block identity, and its mask offsets
    n = 64 * 300 + 17
    _, tiles = torch.ops.facenms._nms_plan(csr([n, 20]))
    t = tiles.numpy()
    nb = (n + TILE - 1) // TILE
    assert tuple(t[-1, 1:3]) == (nb - 1, nb - 1) and tuple(t[-2, 1:3]) == (nb - 2, nb - 1)
    assert t[-1, 3] == (nb - 1) * TILE * nb * TILE + (nb - 1) * TILE


def test_nms_with_norms_cpu():
    x, order, offsets, thr = make_case(SIZES, lanes=6, seed=4)
    xt, o, off, t = (torch.as_tensor(x), torch.as_tensor(order), torch.as_tensor(offsets),
                     torch.as_tensor(thr))
    norms, _ = ops.prepare(xt, o, off)
    want = ops.nms(xt, o, off, t, 2)
    got = torch.ops.facenms.nms_with_norms(xt, o, off, t, 2, norms)
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
    with pytest.raises(RuntimeError, match="norms"):
        torch.ops.facenms.nms_with_norms(xt, o, off, t, 2, norms.float())
    with pytest.raises(RuntimeError, match="norms"):
        torch.ops.facenms.nms_with_norms(xt, o, off, t, 2, norms[1:])


def test_chain_keeps_both_ends_in_every_lane():
    # a~b, b~c, a!~c at t = 0.9: greedy by kept faces keeps a and c
    a = np.array([1.0, 0.0])
    b = np.array([np.cos(0.4), np.sin(0.4)])
    c = np.array([np.cos(0.8), np.sin(0.8)])
    x = np.stack([a, b, c])
    thr = np.array([0.5, 0.9, 0.95])
    bits, counts = run_op(x, np.arange(3), np.array([0, 3]), thr, 1)
    # t=0.5: a suppresses b and c (cos 0.8 = 0.697); t=0.9: a, c; t=0.95: all
    assert bits.tolist() == [0b111, 0b100, 0b110]
    assert counts.tolist() == [1, 2, 3]


# ----------------------------------------------------------- on a GPU ----

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
