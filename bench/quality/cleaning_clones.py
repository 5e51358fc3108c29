"""label_issues against one select threshold pass for every CPU clone and input type, in one run.

    python bench/quality/cleaning_clones.py [--faces 100000] [--dim 512]

Each clone runs in a child process (FACENMS_CPU_ISA is read once per process),
one thread, best of 5 each, in turn; "AVX2 view" also holds torch's own kernels
to AVX2 (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS), as an
AVX2-only CPU would run them.
"""
import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time, torch, facenms
from facenms.eval.embeddings import webface_like
torch.set_num_threads(1)
x, labels = webface_like(int(sys.argv[1]), dim=int(sys.argv[2]), seed=0)
_, si = facenms.select(x, labels, ratio=0.6, return_info=True)
out = {"isa": facenms.build_info()["cpu_isa"]}
xt = torch.from_numpy(x)
for name, xi in (("fp32", xt), ("fp16", xt.half()), ("bf16", xt.bfloat16())):
    t_li = t_pass = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        found = facenms.label_issues(xi, labels)
        t_li = min(t_li, time.perf_counter() - t)
        t = time.perf_counter()
        facenms.select(xi, labels, threshold=si.threshold)
        t_pass = min(t_pass, time.perf_counter() - t)
    out[name] = [t_li, t_pass, int(found.numel())]
print(json.dumps(out))
"""
AVX2 = dict(ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2", MKL_ENABLE_INSTRUCTIONS="AVX2")
VIEWS = (("AVX-512", "v4", {}), ("AVX-512", "v3", {}), ("AVX2 view", "v3", AVX2),
         ("AVX-512", "baseline", {}), ("AVX2 view", "baseline", AVX2))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--faces", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=512)
    args = p.parse_args(argv)
    print("| view | clone | input | label_issues s | one select pass s | ratio | flagged |")
    print("|---|---|---|---:|---:|---:|---:|")
    for view, isa, extra in VIEWS:
        env = dict(os.environ, FACENMS_CPU_ISA=isa, OMP_NUM_THREADS="1", **extra)
        r = subprocess.run([sys.executable, "-c", CHILD, str(args.faces), str(args.dim)],
                           env=env, capture_output=True, text=True)
        if r.returncode:  # e.g. a clone this CPU cannot run
            print("| %s | %s | - | %s |" % (view, isa, r.stderr.strip().splitlines()[-1]))
            continue
        got = json.loads(r.stdout.strip().splitlines()[-1])
        for name in ("fp32", "fp16", "bf16"):
            t_li, t_pass, flagged = got[name]
            print("| %s | %s | %s | %.3f | %.3f | %.2f | %d |" % (
                view, got["isa"], name, t_li, t_pass, t_li / t_pass, flagged))


if __name__ == "__main__":
    main()
