"""Registers, shared memory, stack and spills per kernel, from a build log
made with FACENMS_NVCC_FLAGS="-Xptxas -v", as a markdown table.

    python3 bench/gpu/ptxas_summary.py build.log
"""
import re
import shutil
import subprocess
import sys


def demangle(names):
    if not shutil.which("c++filt"):
        return names
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    return out.stdout.splitlines() if out.returncode == 0 else names


def short(name):
    name = re.sub(r"facenms::(cuda::)?(\(anonymous namespace\)::)?", "", name)
    return re.sub(r"\(.*", "", name).replace("void ", "").replace("c10::", "")


def main(path):
    entries, cur = {}, None
    for line in open(path, errors="replace"):
        m = re.search(r"Compiling entry function '(\S+)' for '(sm_\d+a?)'", line)
        if m:
            cur = (m.group(1), m.group(2))
            entries[cur] = {}
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                      line)
        if m:
            entries[cur].update(stack=int(m.group(1)), spill_st=int(m.group(2)),
                                spill_ld=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            e = entries[cur]
            e["regs"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            e["smem"] = int(s.group(1)) if s else 0
            cur = None
    if not entries:
        print("no ptxas -v output in %s" % path)
        return 1
    names = demangle([k[0] for k in entries])
    print("| kernel | arch | registers | static smem (B) | stack (B) | spill stores/loads (B) |")
    print("|---|---|---:|---:|---:|---:|")
    rows = sorted((short(n), k[1], v) for n, (k, v) in zip(names, entries.items()))
    for name, arch, v in rows:
        print("| %s | %s | %s | %s | %s | %s/%s |" % (
            name, arch, v.get("regs", "?"), v.get("smem", "?"), v.get("stack", "?"),
            v.get("spill_st", "?"), v.get("spill_ld", "?")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
