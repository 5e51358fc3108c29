"""Runs every op on fixed inputs and saves all outputs, to compare two builds bit for bit:
    PYTHONPATH=<tree A> python bench/install/dump_ops.py a.npz
    PYTHONPATH=<tree B> python bench/install/dump_ops.py b.npz
    python bench/install/dump_ops.py --compare a.npz b.npz
"""
import sys

import numpy as np

if sys.argv[1] == "--compare":
    a, b = np.load(sys.argv[2]), np.load(sys.argv[3])
    assert sorted(a.files) == sorted(b.files), "different sets of outputs"
    bad = [k for k in a.files if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape
           or a[k].tobytes() != b[k].tobytes()]
    print("%d outputs compared, %d differ%s" % (len(a.files), len(bad), ": " + ", ".join(bad[:10]) if bad else ""))
    sys.exit(1 if bad else 0)

import torch  # noqa: E402

import facenms  # noqa: E402
from facenms.core import ops  # noqa: E402
from facenms.eval.embeddings import webface_like  # noqa: E402

out = {}
for seed, (n, d) in enumerate([(3000, 32), (5000, 128), (800, 17), (2000, 512)]):
    x, labels = webface_like(n, dim=d, seed=seed)
    sizes = np.bincount(labels)
    offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(sizes)]))
    order = torch.from_numpy(np.argsort(labels, kind="stable"))
    xt = torch.from_numpy(x)
    for dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        xd = xt.to(dt)
        k = "%d_%s" % (seed, dt)
        thr = torch.linspace(-0.1, 0.95, 64, dtype=torch.float64)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            norms, scores = ops.prepare(xd, order, offsets)
            bits, counts = ops.nms(xd, order, offsets, thr, 2)
            r = ops.rank_nms(xd, order, offsets, thr[:7], 1, False)
            rc = ops.rank_nms(xd, order, offsets, thr[:7].expand(len(sizes), 7).contiguous(), 3, True)
            for name, t in [("norms", norms), ("scores", scores), ("bits", bits), ("counts", counts)] + \
                    [("rank%d" % i, v) for i, v in enumerate(r)] + [("rankc%d" % i, v) for i, v in enumerate(rc)]:
                out["%s_t%d_%s" % (k, threads, name)] = t.numpy()
    sel = facenms.select(x, labels, ratio=0.6)
    out["%d_select" % seed] = np.asarray(sel)
s, t = torch.ops.facenms._nms_plan(torch.tensor([0, 40, 41, 300, 301, 301, 1000]))
out["plan_s"], out["plan_t"] = s.numpy(), t.numpy()
np.savez(sys.argv[1], **out)
print(len(out), "arrays")
