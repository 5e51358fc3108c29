"""Out-of-core selection benchmark: a feature file larger than what we let the
selection hold, selected with bounded resident memory.

    python bench/out_of_core.py --faces 20000000 --dir /work/ooc   # 20 GB fp16
    python bench/out_of_core.py --faces 2000000 --dir /tmp/ooc     # quick look

1. Writes N x d float16 WebFace-like features in identity order and int64
   labels: copies of a 1M-face template (identity sizes of
   facenms.eval.embeddings, near-duplicate bursts), each with a random sign per
   column (see write_features), a chunk at a time.
2. Disk: drops the file's cached pages (posix_fadvise DONTNEED, no root
   needed) and reads it once sequentially: the cold read speed.
3. Selects from the file (memory-mapped, streamed) in a child process, cold,
   threshold mode (one read) and ratio mode (a ranking read + NMS passes),
   reporting peak RSS (VmHWM of the child) and faces/s.
4. In-memory comparison on the first --memory-faces faces (an identity
   prefix that fits in RAM): the same selection in memory and streamed.

Not a test: it asserts nothing but that streamed == in memory where both run.
Deletes the files it wrote unless --keep.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

import which

HERE = os.path.dirname(os.path.abspath(__file__))


# ------------------------------------------------------------ generation ----

def template(n, d, seed=0, chunk=1 << 17):
    """n WebFace-like fp16 faces (identity sizes of facenms.eval.embeddings, shared nuisance
    directions, a third near-duplicates of an earlier face), identity after identity."""
    import torch
    from facenms.eval.embeddings import identity_sizes
    rng = np.random.default_rng(seed)
    sizes = identity_sizes(n, rng)
    g = torch.Generator().manual_seed(seed)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    basis = torch.randn(8, d, generator=g) / np.sqrt(d)
    out = np.empty((n, d), np.float16)
    c = 0
    while c < len(sizes):
        c_end = max(c + 1, int(np.searchsorted(starts, starts[c] + chunk, side="right")))
        a, b = int(starts[c]), int(starts[c_end - 1] + sizes[c_end - 1])
        lab = torch.from_numpy(np.repeat(np.arange(c_end - c), sizes[c:c_end]))
        x = (torch.randn(c_end - c, d, generator=g) / np.sqrt(d))[lab]
        x += (torch.randn(b - a, 8, generator=g) * 0.35) @ basis
        x += torch.randn(b - a, d, generator=g) * (0.8 / np.sqrt(d))
        first = torch.from_numpy(starts[c:c_end] - a)[lab]
        pos = torch.arange(b - a)
        dup = (torch.rand(b - a, generator=g) < 0.33) & (pos > first)
        src = first[dup] + (torch.rand(int(dup.sum()), generator=g)
                            * (pos[dup] - first[dup])).long()
        x[dup] = x[src] + torch.randn(len(src), d, generator=g) * (0.15 / np.sqrt(d))
        x /= x.norm(dim=1, keepdim=True)
        out[a:b] = x.half().numpy()
        c = c_end
    return out, sizes


def write_features(path, labels_path, n, d, seed=0, template_faces=1_000_000):
    """An n-face file made of copies of a WebFace-like template, each with its own
    random sign per column: cosines within an identity, hence every selection
    decision, are those of the template, yet no two copies share bytes. Drawing
    20M x 512 normals would take longer here than all the selections."""
    t, tsizes = template(min(n, template_faces), d, seed)
    rng = np.random.default_rng(seed + 1)
    sizes, labels_parts = [], []
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f2", "fortran_order": False,
                                                 "shape": (n, d)})
        done, ident = 0, 0
        while done < n:
            m = min(len(t), n - done)
            part_sizes = tsizes[:int(np.searchsorted(np.cumsum(tsizes), m)) + 1].copy()
            part_sizes[-1] -= int(part_sizes.sum()) - m
            flip = np.where(rng.random(d) < 0.5, 0x8000, 0).astype(np.uint16)
            for r in range(0, m, 1 << 18):
                e = min(m, r + (1 << 18))
                f.write((t[r:e].view(np.uint16) ^ flip).tobytes())
            labels_parts.append(np.repeat(np.arange(ident, ident + len(part_sizes)), part_sizes))
            sizes.append(part_sizes)
            ident += len(part_sizes)
            done += m
        f.flush()
        os.fsync(f.fileno())
    np.save(labels_path, np.concatenate(labels_parts).astype(np.int64))
    return np.concatenate(sizes)


def _data_offset(path):
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        return f.tell()


def drop_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_speed(path, block=64 << 20):
    """Cold sequential read of the whole file: GB/s."""
    drop_cache(path)
    buf = bytearray(block)
    t = time.perf_counter()
    total = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            got = f.readinto(buf)
            if not got:
                break
            total += got
    dt = time.perf_counter() - t
    drop_cache(path)
    return total / dt / 1e9, total, dt


# -------------------------------------------------------------- children ----

CHILD = r"""
import json, sys, time
import numpy as np
import facenms
kw = json.loads(sys.argv[1])
labels = np.load(kw.pop("labels"))
features = kw.pop("features")
limit = kw.pop("limit", None)
if kw.pop("in_memory", False):
    x = np.load(features, mmap_mode="r")
    x = np.array(x[:limit]) if limit else np.array(x)
    labels = labels[:len(x)]
    features = x
elif limit:
    features = np.load(features, mmap_mode="r")[:limit]
    labels = labels[:limit]
t = time.perf_counter()
keep, info = facenms.select(features, labels, return_info=True, **kw)
dt = time.perf_counter() - t
# VmHWM: this process's own peak (ru_maxrss would count the parent's, kept across exec)
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
np.save(sys.argv[2], keep)
print(json.dumps(dict(seconds=dt, faces=info.n_faces, kept=info.kept, ratio=info.ratio,
                      threshold=info.threshold, passes=info.passes,
                      timings={k: round(v, 2) for k, v in info.timings.items()},
                      peak_rss_gb=hwm / 2**20)))
"""


def run_child(args, keep_path, nice=True):
    cmd = (["nice"] if nice else []) + [sys.executable, "-c", CHILD,
                                        json.dumps(args), keep_path]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit("child failed:\n" + p.stdout + p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def show(name, r):
    print("%-34s %9d faces %7.1f s %9.0f faces/s  peak RSS %.2f GB  kept %.2f%%  thr %s  "
          "passes %d  %s" % (name, r["faces"], r["seconds"], r["faces"] / r["seconds"],
                             r["peak_rss_gb"], 100 * r["ratio"],
                             "%.4f" % r["threshold"] if r["threshold"] is not None else "-",
                             r["passes"], r["timings"]), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", type=int, default=20_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--dir", default="/tmp/facenms-ooc")
    p.add_argument("--memory-faces", type=int, default=1_000_000,
                   help="size of the in-memory comparison")
    p.add_argument("--max-memory", type=int, default=1 << 30)
    p.add_argument("--threshold", type=float, default=0.7)
    p.add_argument("--ratio", type=float, default=0.6)
    p.add_argument("--skip-ratio", action="store_true", help="big file: threshold mode only")
    p.add_argument("--keep", action="store_true", help="leave the files")
    p.add_argument("--reuse", action="store_true",
                   help="use features.npy / labels.npy already in --dir (from --keep)")
    p.add_argument("--full-only", action="store_true",
                   help="only the selections on the whole file (no disk or in-memory runs)")
    p.add_argument("--skip-threshold", action="store_true", help="big file: ratio mode only")
    args = p.parse_args()

    os.makedirs(args.dir, exist_ok=True)
    feats = os.path.join(args.dir, "features.npy")
    labels = os.path.join(args.dir, "labels.npy")
    keep = os.path.join(args.dir, "keep.npy")
    gb = args.faces * args.dim * 2 / 1e9
    print("facenms out-of-core benchmark: %d faces x %d fp16 = %.1f GB, %d cores, load %s"
          % (args.faces, args.dim, gb, os.cpu_count(), os.getloadavg()), flush=True)
    try:
        if args.reuse:
            sizes = np.bincount(np.load(labels))
            if np.load(feats, mmap_mode="r").shape != (args.faces, args.dim):
                raise SystemExit("--reuse: %s is not %d x %d" % (feats, args.faces, args.dim))
            print("reusing %s" % feats)
        else:
            t = time.perf_counter()
            sizes = write_features(feats, labels, args.faces, args.dim)
            dt = time.perf_counter() - t
            print("wrote %s in %.0f s (%.2f GB/s)" % (feats, dt, gb / dt))
        print("%d identities, mean %.1f, max %d, sum(n^2)/N %.0f" % (
            len(sizes), sizes.mean(), sizes.max(),
            (sizes.astype(np.float64) ** 2).sum() / args.faces), flush=True)
        if not args.full_only:
            speed, total, dt = read_speed(feats)
            print("disk: cold sequential read %.2f GB in %.1f s = %.2f GB/s" % (
                total / 1e9, dt, speed), flush=True)
            same = compare(args, feats, labels, keep)
        else:
            same = True
        if args.faces > args.memory_faces or args.full_only:
            if not args.skip_threshold:
                drop_cache(feats)
                r = run_child(dict(features=feats, labels=labels, threshold=args.threshold,
                                   max_memory=args.max_memory), keep)
                show("FULL streamed (cold), threshold", r)
            if not args.skip_ratio:
                drop_cache(feats)
                r = run_child(dict(features=feats, labels=labels, ratio=args.ratio,
                                   max_memory=args.max_memory), keep)
                show("FULL streamed (cold), ratio", r)
        if not same:
            raise SystemExit("MISMATCH between streamed and in-memory selections")
    finally:
        if not args.keep:
            for f in (feats, labels, keep, keep + ".mem.npy", keep + ".str.npy"):
                if os.path.exists(f):
                    os.remove(f)


def compare(args, feats, labels, keep):
    """In memory against streamed on the first --memory-faces faces; True if equal."""
    m = min(args.memory_faces, args.faces)
    base = dict(features=feats, labels=labels, limit=m)
    r_mem = run_child(dict(base, in_memory=True, threshold=args.threshold), keep + ".mem.npy")
    show("in memory, threshold", r_mem)
    drop_cache(feats)
    r_str = run_child(dict(base, threshold=args.threshold, max_memory=args.max_memory),
                      keep + ".str.npy")
    show("streamed (cold), threshold", r_str)
    same = np.array_equal(np.load(keep + ".mem.npy"), np.load(keep + ".str.npy"))
    print("  streamed == in memory: %s" % same, flush=True)
    r_mem = run_child(dict(base, in_memory=True, ratio=args.ratio), keep + ".mem.npy")
    show("in memory, ratio", r_mem)
    drop_cache(feats)
    r_str = run_child(dict(base, ratio=args.ratio, max_memory=args.max_memory),
                      keep + ".str.npy")
    show("streamed (cold), ratio", r_str)
    same &= np.array_equal(np.load(keep + ".mem.npy"), np.load(keep + ".str.npy"))
    print("  streamed == in memory: %s" % same, flush=True)
    return same


if __name__ == "__main__":
    which.announce()
    main()
