"""The kernels on the CPU, lane by lane: registration, the GPU schedule's host code
(when the CUDA library is loaded), multi-threshold lanes and min_keep against a slow
reference, and opcheck of every op. Runs everywhere."""
import numpy as np
import pytest
import torch

import facenms
from facenms.core import ops
from kernel_cases import (SIZES, TILE, WARP_MAX, check_lane_valid, csr, discrete_case,
                          lane_reference, make_case, run_op)


def _has_plan():
    facenms.build_info()  # loads the libraries
    return torch._C._dispatch_has_kernel_for_dispatch_key("facenms::_nms_plan", "CPU")


# the schedule is host code of the CUDA library, built whenever torch has CUDA
needs_plan = pytest.mark.skipif(not _has_plan(), reason="_nms_plan is in the CUDA library, "
                                "which a torch without CUDA does not load")


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


def test_opcheck_nms_with_norms():
    x, order, offsets, thr = make_case([3, 40, 5], d=16, lanes=4, seed=8)
    xt, o, off = torch.as_tensor(x, dtype=torch.float16), torch.as_tensor(order), \
        torch.as_tensor(offsets)
    norms, _ = ops.prepare(xt, o, off)
    torch.library.opcheck(torch.ops.facenms.nms_with_norms.default,
                          (xt, o, off, torch.as_tensor(thr), 1, norms))
