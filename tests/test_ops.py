"""The torch ops themselves: schemas, fake kernels, lanes, argument checks."""
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import facenms
from facenms.core import ops
from facenms.eval.embeddings import webface_like


def _grouped_with_ties(dtype, seed):
    """3000 WebFace-like rows of d=40 in dtype, row 7 an exact copy of row 5 (same
    identity): (x, order, offsets, sizes) grouped by identity."""
    from facenms.core.csr import group
    x, labels = webface_like(3000, dim=40, seed=seed)
    x = torch.from_numpy(x).to(dtype)
    x[7] = x[5]  # exact ties: the smaller index first
    labels[7] = labels[5]
    _, order, offsets, sizes = group(labels, len(labels), x.device)
    return x, order, offsets, sizes


def _sorted_input(n=400, d=16, seed=0):
    x, labels = webface_like(n, dim=d, seed=seed)
    sizes = np.bincount(labels)
    offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(sizes)]))
    return torch.from_numpy(x), torch.arange(n), offsets


def test_build_info_reports_the_build():
    info = facenms.build_info()
    # stable ABI: compiled with some torch, loads under every torch from its target on
    assert info["torch"] and info["stable_abi_target"]
    assert info["compiler"] and "flags" in info
    # with CUDA compiled in, the kernels are registered with the dispatcher
    assert info["cuda_kernels_registered"] == info["cuda"]
    assert info["cpu_bf16"] in ("native", "emulated")
    assert info["cpu_label_issues_screen"] in ("int8", "bf16", "none")


def test_many_lanes_equal_single_runs():
    x, order, offsets = _sorted_input()
    ts = torch.linspace(-0.2, 1.0, 64, dtype=torch.float64)
    bits, counts = ops.nms(x, order, offsets, ts, 1)
    for j in (0, 17, 40, 63):
        b1, c1 = ops.nms(x, order, offsets, ts[j:j + 1].clone(), 1)
        assert torch.equal((bits >> j) & 1, b1 & 1)
        assert int(counts[j]) == int(c1[0]) == int(((bits >> j) & 1).sum())


def test_per_identity_thresholds_and_counts():
    x, order, offsets = _sorted_input()
    c = len(offsets) - 1
    thr = torch.rand(c, 8, dtype=torch.float64).sort(1).values
    bits, counts = ops.nms(x, order, offsets, thr, 2)
    assert counts.shape == (c, 8)
    for i in range(0, c, 7):
        a, b = int(offsets[i]), int(offsets[i + 1])
        for j in range(8):
            one, _ = ops.nms(x, order[a:b], offsets[i:i + 2] - a, thr[i, j:j + 1].clone(), 2)
            assert torch.equal(one & 1, (bits[a:b] >> j) & 1)
            assert int(counts[i, j]) == int(one.sum()) >= min(2, b - a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("rank", ["sparsity", "centrality"])
def test_rank_nms_equals_prepare_sort_then_nms(dtype, rank):
    from facenms.core.ranking import rank as _rank
    x, order, offsets, sizes = _grouped_with_ties(dtype, seed=5)
    ts = torch.linspace(0.3, 0.95, 64, dtype=torch.float64)
    ranked, bits, counts, bad = ops.rank_nms(x, order, offsets, ts, 2, rank == "centrality")
    want = _rank(x, order, offsets, sizes, method=rank)
    assert torch.equal(ranked, want) and int(bad) == -1
    b2, c2 = ops.nms(x, want, offsets, ts, 2)
    assert torch.equal(bits, b2) and torch.equal(counts, c2)


def test_rank_nms_reports_the_smallest_bad_row():
    x = torch.ones(6, 20)
    x[5] = 0
    x[3, 1] = float("inf")
    order = torch.tensor([0, 3, 5, 1, 2, 4])
    _, bits, _, bad = ops.rank_nms(x, order, torch.tensor([0, 3, 6]),
                                   torch.tensor([0.5], dtype=torch.float64), 1, False)
    assert int(bad) == 3 and int(bits[3:].sum()) == 1  # the bad identity is skipped


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("min_faces", [1, 3, 50])
def test_trimmed_centres_equals_rank_then_torch_centres(dtype, min_faces):
    """The fused first pass of label_issues against ranking.rank + the torch centres."""
    from facenms.core.cleaning import trimmed_centres
    from facenms.core.ranking import rank as _rank
    x, order, offsets, sizes = _grouped_with_ties(dtype, seed=6)
    ranked, centres, a, bad = ops.trimmed_centres(x, order, offsets, min_faces)
    want, norms = _rank(x, order, offsets, sizes, method="centrality", with_norms=True)
    assert torch.equal(ranked, want) and int(bad) == -1
    out = torch.float64 if dtype == torch.float64 else torch.float32
    assert centres.dtype == a.dtype == out
    c2, a2 = trimmed_centres(x, want, norms, offsets, sizes, min_faces=min_faces,
                             dtype=torch.float64)
    torch.testing.assert_close(centres.double(), c2, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.double(), a2, atol=1e-6, rtol=0)
    # rows further apart than their length (a column slice): same answer
    wide = torch.zeros(x.shape[0], x.shape[1] + 3, dtype=dtype)
    wide[:, :-3] = x
    r3, c3, a3, _ = ops.trimmed_centres(wide[:, :-3], order, offsets, min_faces)
    assert torch.equal(r3, ranked) and torch.equal(c3, centres) and torch.equal(a3, a)


def test_trimmed_centres_edge_cases():
    # one face, a one-face identity next to a two-face one, an empty identity
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    ranked, centres, a, bad = ops.trimmed_centres(x, torch.tensor([0, 1, 2]),
                                                  torch.tensor([0, 1, 1, 3]), 3)
    assert int(bad) == -1 and ranked.tolist() == [0, 1, 2]
    torch.testing.assert_close(centres, torch.tensor([[0.6, 0.8], [0.0, 0.0],
                                                      [0.5 ** 0.5, 0.5 ** 0.5]]))
    torch.testing.assert_close(a, torch.tensor([1.0, 0.5 ** 0.5, 0.5 ** 0.5]))
    # opposite faces cancel: no centre (zeros), cosines 0
    _, centres, a, _ = ops.trimmed_centres(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]),
                                           torch.tensor([0, 1]), torch.tensor([0, 2]), 3)
    assert not centres.any() and not a.any()
    # no rows at all
    ranked, centres, a, bad = ops.trimmed_centres(torch.zeros(0, 5), torch.zeros(0, dtype=torch.int64),
                                                  torch.tensor([0]), 3)
    assert ranked.numel() == a.numel() == centres.numel() == 0 and int(bad) == -1


def test_trimmed_centres_reports_the_smallest_bad_row():
    x = torch.ones(6, 20)
    x[5] = 0
    x[3, 1] = float("nan")
    _, centres, _, bad = ops.trimmed_centres(x, torch.tensor([0, 3, 5, 1, 2, 4]),
                                             torch.tensor([0, 3, 6]), 3)
    assert int(bad) == 3 and not centres[0].any() and bool(centres[1].any())


def _block(kind, n=300, k=50, d=24, seed=0):
    """A block of products as facenms.core.screen.block_products makes them, with
    duplicated and zero centres (exact ties, no direction) and some need."""
    from facenms.core.screen import block_products
    g = torch.Generator().manual_seed(seed)
    dtype = torch.float64 if kind == "fp64" else torch.float32
    y = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)
    centres = torch.nn.functional.normalize(torch.randn(k, d, generator=g, dtype=dtype), dim=1)
    centres[7] = centres[3]  # an exact tie: the smaller index wins
    centres[9] = 0
    y[:25] = centres[3]  # rows whose nearest centre is the tie
    own = torch.randint(0, k, (n,), generator=g)
    own[:20], own[20:25] = 12, 3  # ... or its twin, when the row's own is the first
    need = torch.rand(n, generator=g, dtype=torch.float64) * 0.8
    need[::7] = -float("inf")
    screen = kind if kind in ("int8", "bf16") else None
    (_, sims, unit, err), = block_products(y, centres, screen, 1 << 30)
    return sims, torch.stack([unit, err, need], dim=1), own, y, centres


@pytest.mark.parametrize("kind", ["int8", "bf16", "fp32", "fp64"])
def test_nearest_centres_equals_torch_version(kind):
    """The fused op against the torch version CUDA runs (facenms.core.nearest) and
    float64 brute force: same rows ruled out, same k, b to float64 rounding."""
    from facenms.core import nearest
    sims, bounds, own, y, centres = _block(kind)
    need = bounds[:, 2]
    b, k = ops.nearest_centres(sims.float() if kind == "bf16" else sims, bounds, own, y, centres)
    b2, k2 = nearest.nearest_in_block_torch(sims.clone(), bounds, own, y, centres)
    assert torch.equal(torch.isinf(b), torch.isinf(b2)) and torch.equal(k, k2)
    torch.testing.assert_close(b, b2, rtol=0, atol=1e-15)
    exact = y.double() @ centres.double().T
    exact[torch.arange(len(own)), own] = -float("inf")
    live = torch.isfinite(b)
    assert torch.equal(k[live], exact.argmax(dim=1)[live])  # argmax: the first maximum
    torch.testing.assert_close(b[live], exact.amax(dim=1)[live], rtol=0, atol=1e-15)
    assert bool((exact.amax(dim=1)[~live] <= need[~live]).all())  # ruled out rightly
    assert bool(live[:25].all()) and k[:25].tolist() == [3] * 20 + [7] * 5


def test_nearest_centres_edge_cases_and_errors():
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    free = torch.tensor([[1.0, 1e-6, -float("inf")]] * 2, dtype=torch.float64)
    b, k = ops.nearest_centres(y @ y[:1].T, free, torch.tensor([0, 0]), y, y[:1])  # no other
    assert bool(torch.isinf(b).all()) and k.tolist() == [0, 0]
    b, k = ops.nearest_centres(torch.zeros(0, 3), free[:0], torch.zeros(0, dtype=torch.int64),
                               torch.zeros(0, 2), torch.zeros(3, 2))
    assert b.shape == (0,) and k.shape == (0,)
    args = (y @ y.T, free, torch.tensor([0, 1]), y, y)
    with pytest.raises(RuntimeError, match=r"own\[1\] = 5 is not one of 2 centres"):
        ops.nearest_centres(*args[:2], torch.tensor([0, 5]), *args[3:])
    with pytest.raises(RuntimeError, match="do not match"):
        ops.nearest_centres(*args[:4], torch.zeros(2, 3))
    with pytest.raises(RuntimeError, match="int32 sims"):
        ops.nearest_centres(args[0].double(), *args[1:])
    with pytest.raises(RuntimeError, match="bounds as a contiguous"):
        ops.nearest_centres(args[0], free[:1], *args[2:])


@given(st.lists(st.floats(-2, 2, width=32), min_size=1, max_size=300),
       st.sampled_from([torch.float32, torch.float64]), st.integers(0, 3), st.integers(0, 2))
@settings(max_examples=200, deadline=None)
def test_median_mad_equals_kthvalue(values, dtype, repeat, masked):
    """The radix select against torch.kthvalue: the lower medians of v[mask] and
    |v - mu| over them, with duplicates, zeros of both signs and negatives."""
    v = torch.tensor(values * (repeat + 1) + [-0.0, 0.0][:repeat], dtype=dtype)
    mask = torch.arange(len(v)) % 3 >= masked  # all, 2 of 3, 1 of 3
    mask[-1] = True
    w = v[mask]
    k = (w.shape[0] - 1) // 2 + 1
    mu = torch.kthvalue(w, k).values
    mad = torch.kthvalue((w - mu).abs(), k).values
    got = ops.median_mad(v, mask)
    assert got.dtype == torch.float64 and got.tolist() == [float(mu), float(mad)]


def test_median_mad_edge_cases():
    def mm(v, mask=None):
        v = torch.as_tensor(v)
        return ops.median_mad(v, torch.ones(len(v), dtype=torch.bool) if mask is None
                              else torch.tensor(mask)).tolist()
    assert all(math.isnan(m) for m in mm(torch.zeros(0)))
    assert all(math.isnan(m) for m in mm([1.0, 2.0], [False, False]))
    assert mm([0.25]) == [0.25, 0.0]
    assert mm([3.0, 1.0]) == [1.0, 0.0]  # the lower one
    assert mm(torch.tensor([1e300, -1e300, 5.0], dtype=torch.float64)) == [5.0, 1e300]
    with pytest.raises(RuntimeError, match="1-D float32 or float64"):
        ops.median_mad(torch.zeros(3, dtype=torch.float16), torch.ones(3, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="bool mask"):
        ops.median_mad(torch.zeros(3), torch.ones(2, dtype=torch.bool))


def test_min_keep_fills_best_ranked_first():
    x = torch.tensor([[1.0, 0.0]] * 5)
    bits, counts = ops.nms(x, torch.arange(5), torch.tensor([0, 5]),
                           torch.tensor([0.5], dtype=torch.float64), 3)
    assert bits.tolist() == [1, 1, 1, 0, 0] and counts.tolist() == [3]


def test_prepare_scores_are_rounded_and_norms_exact():
    x, order, offsets = _sorted_input(200)
    x = x * 3
    norms, scores = ops.prepare(x, order, offsets)
    np.testing.assert_allclose(norms.numpy(), np.linalg.norm(x.double().numpy(), axis=1),
                               rtol=1e-12)
    assert torch.equal(scores, torch.round(scores * 2 ** 20) / 2 ** 20)


@pytest.mark.parametrize("kwargs,match", [
    (dict(thresholds=torch.tensor([0.5, 0.2], dtype=torch.float64)), "ascending"),
    (dict(thresholds=torch.zeros(65, dtype=torch.float64)), "1 to 64"),
    (dict(thresholds=torch.tensor([0.5])), "float64"),
    (dict(offsets=torch.tensor([0, 3])), "offsets to run from 0"),
    (dict(order=torch.tensor([0, 1, 2, 9])), "not a row"),
])
def test_op_argument_errors(kwargs, match):
    args = dict(x=torch.randn(4, 3), order=torch.arange(4), offsets=torch.tensor([0, 2, 4]),
                thresholds=torch.tensor([0.5], dtype=torch.float64))
    args.update(kwargs)
    with pytest.raises(RuntimeError, match=match):
        ops.nms(args["x"], args["order"], args["offsets"], args["thresholds"], 1)


def test_opcheck():
    x, order, offsets = _sorted_input(120)
    thr = torch.tensor([0.3, 0.7], dtype=torch.float64)
    torch.library.opcheck(torch.ops.facenms.nms.default, (x, order, offsets, thr, 1))
    torch.library.opcheck(torch.ops.facenms.prepare.default, (x, order, offsets))
    torch.library.opcheck(torch.ops.facenms.rank_nms.default, (x, order, offsets, thr, 1, False))
    torch.library.opcheck(torch.ops.facenms.trimmed_centres.default, (x, order, offsets, 3))
    torch.library.opcheck(torch.ops.facenms.nearest_centres.default, _block("int8"))
    torch.library.opcheck(torch.ops.facenms.nearest_centres.default, _block("fp32"))
    torch.library.opcheck(torch.ops.facenms.int8_rows.default, (torch.randn(30, 20), True))
    torch.library.opcheck(torch.ops.facenms.int8_rows.default, (torch.randn(30, 20), False))
    torch.library.opcheck(torch.ops.facenms.median_mad.default,
                          (torch.randn(31), torch.rand(31) > 0.3))


def test_torch_compile_traces_select():
    x, labels = webface_like(500, dim=16, seed=1)
    xt, lt = torch.from_numpy(x), torch.from_numpy(labels)
    want = facenms.select(xt, lt, threshold=0.7)
    got = torch.compile(facenms.select)(xt, lt, threshold=0.7)
    assert torch.equal(got, want)


def test_threads_do_not_change_the_answer():
    x, labels = webface_like(3000, dim=32, seed=2)
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = facenms.select(x, labels, ratio=0.6)
        torch.set_num_threads(2)
        b = facenms.select(x, labels, ratio=0.6)
    finally:
        torch.set_num_threads(prev)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_every_half_value_converts_exactly(dtype):
    # all 65536 bit patterns; prepare's norm of a 1-element row is |value| in float64
    h = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype)
    h = h[torch.isfinite(h.float()) & (h.float() != 0)].reshape(-1, 1)
    norms, _ = ops.prepare(h, torch.arange(len(h)), torch.tensor([0, len(h)]))
    assert torch.equal(norms, h.double().abs().reshape(-1))


def test_missing_extension_is_a_loud_specific_error(tmp_path):
    """Without _C the pure-Python layers import, `facenms info` says why, and the
    first op call raises the clear error (every time)."""
    import shutil
    import subprocess
    import sys
    src = os.path.dirname(facenms.__file__)
    shutil.copytree(src, tmp_path / "facenms", ignore=shutil.ignore_patterns("*.so", "*.pyd"))
    # -S: no site hooks, so no installed (editable) facenms; torch & co. via PYTHONPATH
    site = os.path.dirname(os.path.dirname(torch.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), site]))
    code = ("import numpy as np, facenms, facenms.data, facenms.models, facenms.verification\n"
            "print('error' in facenms.build_info())\n"
            "for _ in range(2):\n"
            "    try:\n"
            "        facenms.select(np.ones((2, 3), np.float32), np.zeros(2, int), threshold=.5)\n"
            "    except ImportError as e:\n"
            "        print(str(e).splitlines()[0])\n")
    p = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "True"
    assert len(lines) == 3 and all("facenms._C is not built" in s for s in lines[1:])
    p = subprocess.run([sys.executable, "-S", "-m", "facenms", "info"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "facenms._C is not built" in p.stdout, p.stdout + p.stderr
