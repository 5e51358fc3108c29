"""Builds facenms: the CPU library facenms._C, and facenms._C_cuda when it can.

facenms._C uses only PyTorch's stable ABI (torch/csrc/stable) with
TORCH_TARGET_VERSION set to TORCH_TARGET below, and Python's limited API:
one build loads under every torch >= TORCH_TARGET and every CPython 3.10+,
whatever torch compiled it. So plain `pip install .` (isolated build) works.

facenms._C_cuda holds the CUDA kernels on the regular ABI: it loads only
under the torch release it was built against, and only when that torch has
CUDA. As in torchvision, it is built only where it can run: the build's torch
has CUDA and sees a GPU, nvcc is found, and the torch installed where the
package goes (if any) is that same release with CUDA (tools/build_backend.py
asks pip for that release). A machine without a GPU spends no time on it.

Environment switches:
  FORCE_CUDA=1   build the CUDA library even where no GPU is visible (CI, GPU-less
                 build hosts) or where it would not load here
  FORCE_CPU=1    never build it
  TORCH_CUDA_ARCH_LIST   default: the visible GPUs' archs, "8.0;9.0+PTX" when none is visible
  FACENMS_NVCC_FLAGS     extra nvcc flags, split on spaces (e.g. "-Xptxas -v" to print
                         registers, spills and shared memory per kernel)
  FACENMS_TORCH_TARGET   stable-ABI target, default 2.10 (the oldest it can be)
"""
import glob
import json
import os
import shutil
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "tools"))
from torch_env import installed_torch  # noqa: E402

# 2.10 is the first torch whose stable ABI has what the CPU kernels use
# (str returns, new_empty/new_zeros with dtype, parallel_for, get_num_threads).
TORCH_TARGET = os.environ.get("FACENMS_TORCH_TARGET", "2.10")


def _cuda_home_from_nvcc():
    """torch guesses CUDA_HOME as nvcc's grandparent, which is wrong when nvcc is a
    wrapper in /usr/local/bin; prefer the toolkit folder that holds the libraries."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    nvcc = shutil.which("nvcc")
    for home in ([os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))] if nvcc else []) + [
            "/usr/local/cuda"]:
        if os.path.exists(os.path.join(home, "bin", "nvcc")) and os.path.isdir(
                os.path.join(home, "lib64")):
            os.environ["CUDA_HOME"] = home
            return


_cuda_home_from_nvcc()

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # pragma: no cover - the message is the point
    sys.exit("facenms: torch must be importable to build: pip install . (build isolation "
             "installs it), or pip install torch && pip install --no-build-isolation .")


def _flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _release(v):
    return (v or "").split("+")[0]


def _target_hex(v):
    major, minor = (int(p) for p in v.split(".")[:2])
    return "0x%02x%02x000000000000" % (major, minor)


def _want_cuda():
    """(build it?, why) for facenms._C_cuda."""
    if _flag("FORCE_CPU"):
        return False, "FORCE_CPU=1"
    if torch.version.cuda is None:
        if _flag("FORCE_CUDA"):
            sys.exit("facenms: FORCE_CUDA=1 but the build's torch %s has no CUDA"
                     % torch.__version__)
        return False, "the build's torch %s is a CPU build" % torch.__version__
    if cpp_extension.CUDA_HOME is None:
        if _flag("FORCE_CUDA"):
            sys.exit("facenms: FORCE_CUDA=1 but nvcc was not found (set CUDA_HOME)")
        return False, "nvcc not found"
    if not _flag("FORCE_CUDA") and not torch.cuda.is_available():
        return False, "no GPU visible to torch here; FORCE_CUDA=1 builds it anyway"
    there = installed_torch()
    if there and not _flag("FORCE_CUDA"):
        if not there["cuda"]:
            return False, "the installed torch %s has no CUDA" % there["version"]
        if _release(there["version"]) != _release(torch.__version__):
            return False, ("the installed torch %s is not the build's torch %s, and the CUDA "
                           "library loads only under the torch it was built against"
                           % (there["version"], torch.__version__))
    return True, "torch %s (CUDA %s), CUDA_HOME=%s" % (
        torch.__version__, torch.version.cuda, cpp_extension.CUDA_HOME)


WITH_CUDA, WHY_CUDA = _want_cuda()
CXX = ["-O3", "-fopenmp", "-fvisibility=hidden", "-Wno-psabi"]
NVCC = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"] + os.environ.get(
    "FACENMS_NVCC_FLAGS", "").split()
if WITH_CUDA and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
    # the visible GPUs' archs (what torch would pick), written down so that
    # build_info reports them; none visible: a portable default
    caps = sorted({"%d.%d" % torch.cuda.get_device_capability(i)
                   for i in range(torch.cuda.device_count())})
    os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(caps) if caps else "8.0;9.0+PTX"
ARCHS = os.environ.get("TORCH_CUDA_ARCH_LIST", "") if WITH_CUDA else ""

# What the build made and against which torch, readable without loading
# anything (extension.py reports it when a library does not load).
BUILD = {
    "torch": torch.__version__,
    "stable_abi_target": TORCH_TARGET,
    "cuda": WITH_CUDA,
    "cuda_why": WHY_CUDA,
    "cuda_archs": ARCHS,
    "torch_cuda": torch.version.cuda or "",
}


def _cpu_extension():
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    flags = " ".join(CXX + ["-DTORCH_TARGET_VERSION=" + _target_hex(TORCH_TARGET)])
    return cpp_extension.CppExtension(
        name="facenms._C",
        sources=sources,
        include_dirs=[os.path.join(HERE, "csrc")],
        define_macros=[("FACENMS_STABLE_ABI", None),
                       ("TORCH_TARGET_VERSION", _target_hex(TORCH_TARGET)),
                       ("FACENMS_BUILD_FLAGS", '"%s"' % flags)],
        extra_compile_args={"cxx": CXX},
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
    )


def _cuda_extension():
    flags = " ".join(CXX + NVCC)
    return cpp_extension.CUDAExtension(
        name="facenms._C_cuda",
        sources=sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp")),
        include_dirs=[os.path.join(HERE, "csrc")],
        define_macros=[("WITH_CUDA", None), ("FACENMS_BUILD_FLAGS", '"%s"' % flags),
                       ("FACENMS_CUDA_ARCHS", '"%s"' % ARCHS)],
        extra_compile_args={"cxx": CXX, "nvcc": NVCC},
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
    )


class BuildExt(cpp_extension.BuildExtension):
    def run(self):
        super().run()
        out = os.path.dirname(self.get_ext_fullpath("facenms._C"))
        if not WITH_CUDA:  # a CUDA library left by an earlier build would not match _build.json
            for stale in glob.glob(os.path.join(out, "_C_cuda*")):
                os.remove(stale)
        with open(os.path.join(out, "_build.json"), "w") as f:
            json.dump(BUILD, f, indent=1)


# one line per library and why (pip shows them with -v)
print("facenms: building facenms._C, the CPU library: stable ABI, loads under torch >= %s "
      "(built with torch %s)" % (TORCH_TARGET, torch.__version__), flush=True)
print("facenms: %s facenms._C_cuda, the CUDA library: %s%s" % (
    "building" if WITH_CUDA else "not building", WHY_CUDA,
    " (archs %s)" % ARCHS if WITH_CUDA else ""), flush=True)

setup(
    name="facenms",
    packages=find_packages(include=["facenms", "facenms.*"]),
    ext_modules=[_cpu_extension()] + ([_cuda_extension()] if WITH_CUDA else []),
    cmdclass={"build_ext": BuildExt.with_options(use_ninja=not _flag("FACENMS_NO_NINJA"))},
    # every extension is abi3 (no Python API beyond the limited one): one wheel per platform
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
