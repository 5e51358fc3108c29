"""facenms on one GPU against the strongest plain-torch baselines, faiss-cpu and
faiss-gpu (when importable), on WebFace-like synthetic fp16 embeddings
generated on the device.

    python bench/gpu/bench.py                     # 1M, 10M, 42M faces, d=512, on cuda
    python bench/gpu/bench.py --device cpu --tiny # smoke test of this script

Prints faces/s, effective GB/s (feature bytes read once / time), the fraction
of the HBM limit, and the ratios between methods, as markdown tables.
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch

import facenms
from facenms.core import ops

HBM_GBS = 4800.0  # H200
MEAN_SIZE, TAIL, MAX_SIZE = 21.0, 1.42, 5000  # WebFace-like identity sizes


# ------------------------------------------------------------------ data ----

def identity_sizes(n_faces, gen, extra=()):
    """Log-normal identity sizes >= 2 (mean ~21, long tail) adding up to n_faces,
    the sizes `extra` first (their faces count towards n_faces)."""
    mu = math.log(MEAN_SIZE) - TAIL ** 2 / 2
    out, total = [], 0
    while total < n_faces:
        s = torch.empty(1 << 20, dtype=torch.float64).log_normal_(mu, TAIL, generator=gen)
        s = s.round().clamp_(2, MAX_SIZE).long()
        out.append(s)
        total += int(s.sum())
    s = torch.cat([torch.tensor(list(extra), dtype=torch.int64)] + out)
    cut = int(torch.searchsorted(s.cumsum(0), n_faces))
    s = s[:cut + 1].clone()
    s[-1] -= int(s.sum()) - n_faces
    return s[s > 0]


def webface_like(n_faces, d, device, seed=0, dtype=torch.float16, chunk=1 << 21, extra=()):
    """(features (N, d) unit rows, labels (N,) int64), generated on the device.

    A face is its identity's centre plus shared nuisance directions plus noise;
    a third are near-duplicates of an earlier face of the identity. Faces are
    shuffled so identities are not contiguous (select has to group them).
    """
    gen = torch.Generator().manual_seed(seed)
    sizes = identity_sizes(n_faces, gen, extra).to(device)
    dg = torch.Generator(device=device).manual_seed(seed)
    labels = torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes)
    starts = torch.cumsum(sizes, 0) - sizes
    basis = torch.randn(8, d, device=device, generator=dg) / math.sqrt(d)
    x = torch.empty(n_faces, d, dtype=dtype, device=device)
    # faces are stored shuffled, so identities are not contiguous rows
    perm = torch.randperm(n_faces, device=device, generator=dg)
    for a in range(0, n_faces, chunk):
        b = min(n_faces, a + chunk)
        lab = labels[a:b]
        cg = torch.Generator(device=device)  # centre of identity c: seeded by c
        centres = torch.randn(int(lab[-1] - lab[0]) + 1, d, device=device,
                              generator=cg.manual_seed(seed * 7919 + int(lab[0])))
        y = centres[lab - lab[0]] / math.sqrt(d)
        y += torch.randn(b - a, 8, device=device, generator=dg) * 0.35 @ basis
        y += torch.randn(b - a, d, device=device, generator=dg) * (0.8 / math.sqrt(d))
        # near duplicates of an earlier face of the same identity (within the chunk)
        pos = torch.arange(a, b, device=device)
        first = torch.clamp(starts[lab], min=a)
        dup = (torch.rand(b - a, device=device, generator=dg) < 0.33) & (pos > first)
        src = first + (torch.rand(b - a, device=device, generator=dg) * (pos - first)).long()
        y[dup] = y[(src - a)[dup]] + torch.randn(int(dup.sum()), d, device=device,
                                                 generator=dg) * (0.15 / math.sqrt(d))
        x[perm[a:b]] = torch.nn.functional.normalize(y, dim=1).to(dtype)
    shuffled = torch.empty_like(labels)
    shuffled[perm] = labels
    return x, shuffled


# ------------------------------------------------------------- helpers ----

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeat=3, warmup=1):
    """Best wall time of `repeat` runs after `warmup` runs, and the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    sync(device)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def grouped(x, labels):
    """order (rows grouped by identity, ascending index) and CSR offsets."""
    uniq, inverse, sizes = torch.unique(labels, return_inverse=True, return_counts=True)
    order = torch.sort(inverse, stable=True).indices
    offsets = torch.zeros(len(sizes) + 1, dtype=torch.int64, device=x.device)
    torch.cumsum(sizes, 0, out=offsets[1:])
    return order, offsets, sizes


def buckets(sizes, order, offsets, max_elems, d):
    """Identities bucketed by padded size (powers of two), in chunks whose padded
    features and similarities stay under max_elems each: yields (rows (B, P)
    with -1 pads, P)."""
    sizes_h = sizes.cpu()
    pad = torch.clamp(2 ** torch.ceil(torch.log2(sizes_h.double().clamp(min=1))), min=2).long()
    ar = None
    for p in sorted(set(pad.tolist())):
        ids = torch.nonzero(pad == p).flatten()
        per = max(1, min(max_elems // (p * p), max_elems // (p * d)))
        for i0 in range(0, len(ids), per):
            sel = ids[i0:i0 + per].to(order.device)
            n = sizes[sel]
            ar = torch.arange(p, device=order.device)
            idx = offsets[sel][:, None] + ar[None, :]
            valid = ar[None, :] < n[:, None]
            rows = torch.where(valid, order[idx.clamp(max=order.numel() - 1)],
                               torch.full_like(idx, -1))
            yield rows, p


def padded(x, rows):
    y = x[rows.clamp(min=0)]
    return y * (rows >= 0)[..., None].to(y.dtype)


def bmm_sims(y):
    """(B, P, P) similarities; fp16/bf16 through tensor cores with fp32 output."""
    if y.device.type == "cuda" and y.dtype in (torch.float16, torch.bfloat16):
        return torch.bmm(y, y.transpose(1, 2)).float()
    return torch.bmm(y.float(), y.float().transpose(1, 2))


def torch_bucketed_nms(x, order, offsets, sizes, t, max_elems):
    """Strongest plain-torch baseline: one bmm per bucket of padded identities,
    thresholded, then the greedy walk vectorised over the bucket (P steps)."""
    kept_total = 0
    for rows, p in buckets(sizes, order, offsets, max_elems, x.shape[1]):
        adj = bmm_sims(padded(x, rows)) > t  # (B, P, P): k suppresses i if kept
        adj &= torch.ones(p, p, dtype=torch.bool, device=x.device).triu(1)  # only k < i
        valid = rows >= 0
        supp = torch.zeros_like(valid)
        for i in range(p):
            alive = valid[:, i] & ~supp[:, i]
            supp |= adj[:, i, :] & alive[:, None]
        kept_total += int((valid & ~supp).sum())
    return kept_total


def torch_semdedup(x, order, offsets, sizes, t, max_elems):
    """SemDeDup max rule, fully vectorised: drop a face similar to any earlier face.
    One bmm + mask + max per bucket: a lower bound for any matmul-based method."""
    kept_total = 0
    for rows, p in buckets(sizes, order, offsets, max_elems, x.shape[1]):
        s = bmm_sims(padded(x, rows))
        s.masked_fill_(~torch.ones(p, p, dtype=torch.bool, device=x.device).tril(-1), -2.0)
        kept_total += int(((s.amax(2) <= t) & (rows >= 0)).sum())
    return kept_total


def torch_loop_nms(x, order, offsets, t, n_ident):
    """Plain torch, one identity at a time (normalise, matmul, greedy walk)."""
    off = offsets.cpu().tolist()
    kept_total = 0
    for c in range(n_ident):
        y = torch.nn.functional.normalize(x[order[off[c]:off[c + 1]]].float(), dim=1)
        adj = ((y @ y.T) > t).cpu().numpy()
        kept = np.zeros(len(y), dtype=bool)
        for i in range(len(y)):
            kept[i] = not adj[i, :i][kept[:i]].any()
        kept_total += int(kept.sum())
    return kept_total


def faiss_nms(faiss, x, order, offsets, t, n_ident, gpu_res=None):
    """Per identity: IndexFlatIP + range_search (or an all-pairs search on the GPU)
    and the greedy walk: the faiss baseline of the CPU benchmarks."""
    off = offsets.cpu().tolist()
    xs = torch.nn.functional.normalize(x[order[:off[n_ident]]].float(), dim=1).cpu().numpy()
    kept_total = 0
    for c in range(n_ident):
        y = np.ascontiguousarray(xs[off[c]:off[c + 1]])
        n = len(y)
        if gpu_res is None:
            index = faiss.IndexFlatIP(y.shape[1])
            index.add(y)
            lims, _, nbr = index.range_search(y, float(t))
            nb = [nbr[lims[i]:lims[i + 1]] for i in range(n)]
        else:
            index = faiss.GpuIndexFlatIP(gpu_res, y.shape[1])
            index.add(y)
            dist, nbr = index.search(y, min(n, 2048))
            nb = [nbr[i][dist[i] > t] for i in range(n)]
        kept = np.zeros(n, dtype=bool)
        for i in range(n):
            j = nb[i]
            kept[i] = not kept[j[j < i]].any()
        kept_total += int(kept.sum())
    return kept_total


# ---------------------------------------------------------------- main ----

def fmt_rate(n, s):
    return "%.3g" % (n / s) if s > 0 else "-"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="smoke test: tiny sizes, d=64")
    ap.add_argument("--sizes", default="1M,10M,42M")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--ratio", type=float, default=0.6,
                    help="the fixed threshold is the one that keeps this ratio at the 1st size")
    ap.add_argument("--loop-faces", type=int, default=20_000,
                    help="faces for the per-identity loop and faiss baselines")
    ap.add_argument("--budget-s", type=float, default=300.0,
                    help="skip a baseline at a size where its extrapolated time exceeds this")
    ap.add_argument("--cpu-check-faces", type=int, default=1_000_000,
                    help="compare with the CPU backend at the first size up to this many faces")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device; use --device cpu --tiny for a smoke test")
    if args.tiny:
        sizes = [20_000, 50_000]
        args.dim = 64
        args.loop_faces = min(args.loop_faces, 3000)
    else:
        sizes = [int(float(s.rstrip("M")) * 1e6) if s.endswith("M") else int(s)
                 for s in args.sizes.split(",")]
    d = args.dim
    info = facenms.build_info()
    print("# facenms GPU benchmark\n")
    print("device: %s; torch %s; facenms build: cuda=%s archs=%s; threads=%d" % (
        torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        torch.__version__, info["cuda"], info.get("cuda_archs", ""), torch.get_num_threads()))
    try:
        import faiss
    except ImportError:
        faiss = None
    gpu_res = None
    if faiss is not None and device.type == "cuda" and hasattr(faiss, "StandardGpuResources") \
            and faiss.get_num_gpus() > 0:
        gpu_res = faiss.StandardGpuResources()
    print("faiss: %s; faiss-gpu: %s\n" % (
        getattr(faiss, "__version__", "present") if faiss else "not importable (skipped)",
        "yes" if gpu_res is not None else "no (skipped)"))

    max_elems = 1 << 28 if device.type == "cuda" else 1 << 22  # padded sims per chunk
    rows, threshold, est = [], None, {}
    for n in sizes:
        t0 = time.perf_counter()
        x, labels = webface_like(n, d, device)
        sync(device)
        gen_s = time.perf_counter() - t0
        order, offsets, sizes_t = grouped(x, labels)
        n_ident = len(sizes_t)
        gbytes = n * d * x.element_size() / 1e9
        print("## %d faces, %d identities, d=%d, %s (%.1f GB; generated in %.1f s)\n" % (
            n, n_ident, d, str(x.dtype).replace("torch.", ""), gbytes, gen_s))
        if threshold is None:  # calibrate once, then the same threshold everywhere
            _, ci = facenms.select(x, labels, ratio=args.ratio, return_info=True)
            threshold = ci.threshold
            print("fixed threshold %.6f (keeps %.1f%% at this size)\n" % (threshold, 100 * ci.ratio))
        res = {}

        def record(name, secs, kept, faces=n):
            res[name] = (secs, kept, faces)

        # facenms: end to end (group, rank, nms) from unsorted labels on the device
        s, out = timed(lambda: facenms.select(x, labels, threshold=threshold), device)
        record("facenms.select threshold", s, int(out.numel()))
        s, (out, inf) = timed(lambda: facenms.select(x, labels, ratio=args.ratio,
                                                     return_info=True), device, repeat=2)
        record("facenms.select ratio=%.2f (%d passes)" % (args.ratio, inf.passes), s,
               int(out.numel()))
        # the kernels alone, on grouped input (index order within identities)
        thr1 = torch.tensor([threshold], dtype=torch.float64, device=device)
        s, (bits, _) = timed(lambda: ops.nms(x, order, offsets, thr1, 1), device)
        record("facenms nms op, 1 threshold", s, int((bits & 1).sum()))
        thr64 = torch.linspace(threshold - 0.2, threshold + 0.2, 64, dtype=torch.float64,
                               device=device)
        s, (_, counts) = timed(lambda: ops.nms(x, order, offsets, thr64, 1), device)
        record("facenms nms op, 64 thresholds", s, int(counts[32]))
        s, _ = timed(lambda: ops.prepare(x, order, offsets), device)
        record("facenms prepare op (ranking scores)", s, 0)

        def baseline(name, fn, faces=n, repeat=1):
            key = name.split(" (")[0]
            if key in est and est[key] * faces > args.budget_s:
                print("skipping %s: ~%.0f s extrapolated" % (name, est[key] * faces))
                return
            s, kept = timed(fn, device, repeat=repeat, warmup=1 if faces < 2_000_000 else 0)
            est[key] = s / faces
            record(name, s, kept, faces)

        baseline("torch bucketed bmm + greedy walk",
                 lambda: torch_bucketed_nms(x, order, offsets, sizes_t, threshold, max_elems))
        baseline("torch SemDeDup max rule (vectorised, lower bound)",
                 lambda: torch_semdedup(x, order, offsets, sizes_t, threshold, max_elems))
        # per-identity loops: on the first identities, about loop_faces faces
        k = int(torch.searchsorted(offsets[1:], args.loop_faces)) + 1
        k = min(k, n_ident)
        sub = int(offsets[k])
        if n == sizes[0]:
            baseline("torch per-identity loop (%d faces)" % sub,
                     lambda: torch_loop_nms(x, order, offsets, threshold, k), sub)
            if faiss is not None:
                faiss.omp_set_num_threads(min(16, os.cpu_count() or 1))
                baseline("faiss-cpu %d threads per identity (%d faces)" % (
                    faiss.omp_get_max_threads(), sub),
                    lambda: faiss_nms(faiss, x, order, offsets, threshold, k), sub)
                if gpu_res is not None:
                    baseline("faiss-gpu per identity (%d faces)" % sub,
                             lambda: faiss_nms(faiss, x, order, offsets, threshold, k, gpu_res),
                             sub)
        if device.type == "cuda" and n == sizes[0] and n <= args.cpu_check_faces:
            # the same calls on the CPU backend: the GPU numbers are only worth
            # reading if the answers agree
            xc, lc = x.cpu(), labels.cpu()
            cb, _ = ops.nms(xc, order.cpu(), offsets.cpu(), thr1.cpu(), 1)
            print("- CPU check: nms op keeps %d on the CPU, %d on the GPU; faces decided "
                  "differently: %d" % (int((cb & 1).sum()), res["facenms nms op, 1 threshold"][1],
                                        int(((cb & 1) != (bits.cpu() & 1)).sum())))
            c_out = facenms.select(xc, lc, threshold=threshold)
            g_out = facenms.select(x, labels, threshold=threshold).cpu()
            print("- CPU check: select keeps %d on the CPU, %d on the GPU; symmetric "
                  "difference %d faces\n" % (len(c_out), len(g_out), len(
                      set(c_out.tolist()) ^ set(g_out.tolist()))))
            del xc, lc
        # the table
        ref = res["facenms.select threshold"][0] / n
        print("| method | time (s) | faces/s | eff. GB/s | of HBM | time per face / facenms.select |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, (secs, kept, faces) in res.items():
            gbs = faces * d * x.element_size() / 1e9 / secs
            print("| %s | %.4f | %s | %.3g | %.2f%% | %.2f |" % (
                name, secs, fmt_rate(faces, secs), gbs, 100 * gbs / HBM_GBS,
                secs / faces / ref))
        sel = res["facenms.select threshold"]
        op = res["facenms nms op, 1 threshold"]
        print()
        kb = res.get("torch bucketed bmm + greedy walk")
        if kb:  # same rule, same (index) order within identities as the nms op
            print("- kept: nms op %d, torch bucketed baseline %d (they may differ only by "
                  "faces within float rounding of t)" % (op[1], kb[1]))
            print("- facenms.select vs torch bucketed bmm: **%.1fx** faster (target >= 5x)"
                  % (kb[0] / sel[0]))
        sd = res.get("torch SemDeDup max rule (vectorised, lower bound)")
        if sd:
            print("- facenms.select vs the SemDeDup max-rule lower bound: %.1fx" % (sd[0] / sel[0]))
        for name, (secs, kept, faces) in res.items():
            if name.startswith("faiss") or name.startswith("torch per-identity"):
                print("- facenms.select vs %s: **%.0fx** faster per face%s" % (
                    name, secs / faces / ref,
                    " (target >= 100x)" if name.startswith("faiss-cpu") else ""))
        ratio_name = [k for k in res if k.startswith("facenms.select ratio")][0]
        print("- select at a fixed threshold: %.1f ms%s; ratio mode: %.1f ms%s" % (
            1e3 * sel[0], " (target <= 100 ms at 42M)" if n >= 40_000_000 else "",
            1e3 * res[ratio_name][0], " (target <= 250 ms at 42M)" if n >= 40_000_000 else ""))
        floor = gbytes / HBM_GBS
        print("- reading the features once from HBM takes %.1f ms; reading them once plus the "
              "exact similarity work is ~%.0f ms at this size: select is %.1fx that limit, "
              "the nms op alone %.1fx\n" % (
                  1e3 * floor, 20.0 * n / 42e6, sel[0] / (0.020 * n / 42e6),
                  op[0] / (0.020 * n / 42e6)))
        del x, labels, order, offsets, sizes_t
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
