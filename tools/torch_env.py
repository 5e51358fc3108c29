"""Which torch the package will run with, seen from inside a build.

pip builds in an isolated environment that hides the installed packages; a
child interpreter started with -I (no PYTHONPATH, so without pip's overlay)
still sees them. Nothing is imported: torch is found by its files.
"""
import json
import subprocess
import sys

_PROBE = r"""
import importlib.metadata as md, importlib.util, json, os
spec = importlib.util.find_spec("torch")
out = None
if spec and spec.submodule_search_locations:
    d = list(spec.submodule_search_locations)[0]
    try:
        version = md.version("torch")
    except md.PackageNotFoundError:
        version = None
    lib = os.path.join(d, "lib")
    cuda = os.path.isdir(lib) and any(f.startswith("libc10_cuda") for f in os.listdir(lib))
    out = {"version": version, "cuda": cuda, "path": d}
print(json.dumps(out))
"""


def installed_torch():
    """{"version", "cuda", "path"} of the torch installed where the package goes, or None."""
    try:
        p = subprocess.run([sys.executable, "-I", "-c", _PROBE], capture_output=True,
                           text=True, timeout=60)
        return json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None
