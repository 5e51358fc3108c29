"""Builds facenms._C: CPU kernels always, CUDA kernels when they can be built.

Build against the torch that is installed (``pip install --no-build-isolation .``):
an isolated build may compile against another torch and fail to import.

Environment switches:
  FORCE_CUDA=1   build the CUDA kernels even when no GPU is visible
  FORCE_CPU=1    never build them
  TORCH_CUDA_ARCH_LIST   default: the visible GPUs' archs, "8.0;9.0+PTX" when none is visible
  FACENMS_NVCC_FLAGS     extra nvcc flags, split on spaces (e.g. "-Xptxas -v" to print
                         registers, spills and shared memory per kernel)
"""
import glob
import os
import sys

from setuptools import find_packages, setup

import shutil


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
    sys.exit(
        "facenms: torch must be installed before building, and the build must see it:\n"
        "    pip install torch && pip install --no-build-isolation .")

HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _want_cuda():
    if _flag("FORCE_CPU"):
        return False, "FORCE_CPU=1"
    if torch.version.cuda is None:
        if _flag("FORCE_CUDA"):
            sys.exit("facenms: FORCE_CUDA=1 but the installed torch %s has no CUDA"
                     % torch.__version__)
        return False, "torch %s is a CPU build" % torch.__version__
    if cpp_extension.CUDA_HOME is None:
        if _flag("FORCE_CUDA"):
            sys.exit("facenms: FORCE_CUDA=1 but nvcc was not found (set CUDA_HOME)")
        return False, "nvcc not found"
    return True, "torch %s (CUDA %s), CUDA_HOME=%s" % (
        torch.__version__, torch.version.cuda, cpp_extension.CUDA_HOME)


def _extension():
    with_cuda, why = _want_cuda()
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cxx = ["-O3", "-fopenmp", "-fvisibility=hidden", "-Wno-psabi"]
    nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"] + os.environ.get(
        "FACENMS_NVCC_FLAGS", "").split()
    define = []
    if with_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        define.append(("WITH_CUDA", None))
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            # the visible GPUs' archs (what torch would pick), written down so that
            # build_info reports them; none visible: a portable default
            caps = sorted({"%d.%d" % torch.cuda.get_device_capability(i)
                           for i in range(torch.cuda.device_count())})
            os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(caps) if caps else "8.0;9.0+PTX"
    flags = " ".join(cxx + (nvcc if with_cuda else []))
    define.append(("FACENMS_BUILD_FLAGS", '"%s"' % flags.replace('"', "")))
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "") if with_cuda else ""
    define.append(("FACENMS_CUDA_ARCHS", '"%s"' % archs))
    print("facenms: building %s kernels (%s)%s" % (
        "CPU + CUDA" if with_cuda else "CPU", why,
        ", archs " + archs if with_cuda else ""), flush=True)

    cls = cpp_extension.CUDAExtension if with_cuda else cpp_extension.CppExtension
    kwargs = dict(
        name="facenms._C",
        sources=sources,
        include_dirs=[os.path.join(HERE, "csrc")],
        define_macros=define,
        extra_compile_args={"cxx": cxx, "nvcc": nvcc} if with_cuda else {"cxx": cxx},
        extra_link_args=["-fopenmp"],
    )
    return cls(**kwargs)


setup(
    name="facenms",
    packages=find_packages(include=["facenms", "facenms.*"]),
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(
        use_ninja=not _flag("FACENMS_NO_NINJA"))},
)
