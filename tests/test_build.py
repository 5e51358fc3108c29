"""What was built and loaded: the stable-ABI target, the CPU clone, the CUDA
library's state. Builds nothing."""
import os
import subprocess
import sys

import pytest
import torch
from torch.utils import cpp_extension

import facenms
from facenms.core import extension


def _release(v):
    return tuple(int(p) for p in v.split("+")[0].split(".")[:2])


def test_cpu_library_targets_an_older_or_equal_torch():
    info = facenms.build_info()
    assert "error" not in info, info
    assert _release(info["stable_abi_target"]) <= _release(torch.__version__)
    # the headers it was compiled with are at least the target
    assert _release(info["stable_abi_target"]) <= _release(info["torch"])
    assert info["cpu_isa"] in ("x86-64-v4", "x86-64-v3", "baseline", "avx512f", "avx2",
                               "baseline (no clones)")


def test_build_record_matches_the_loaded_library():
    rec = extension.built()
    info = facenms.build_info()
    if rec:  # written by setup.py next to the libraries
        assert rec["stable_abi_target"] == info["stable_abi_target"]
        assert rec["torch"].split("+")[0] == info["torch"].split("+")[0]


def test_cuda_library_state_is_consistent():
    info = facenms.build_info()
    state = info["cuda_library"]
    assert state == "loaded" or state.startswith(("not built", "not loaded")), state
    assert info["cuda"] == (state == "loaded") == info["cuda_kernels_registered"]
    if torch.version.cuda is None:
        assert state != "loaded"
    if state == "not loaded":  # a CUDA torch that cannot load it: says why, CPU ops still work
        assert "torch" in info["cuda_error"] and "pip install" in info["cuda_error"]
    x = torch.randn(6, 4)
    bits, counts = facenms.core.ops.nms(x, torch.arange(6), torch.tensor([0, 6]),
                                        torch.tensor([0.5], dtype=torch.float64))
    assert bits.shape == (6,) and counts.shape == (1,)


def test_too_old_a_torch_is_named_with_the_fix(monkeypatch):
    """The message for a torch older than the target names both torches and the fix."""
    monkeypatch.setattr(torch, "__version__", "2.9.0")
    why = extension._why("", {"torch": "2.14.1", "stable_abi_target": "2.10"})
    assert "2.14.1" in why and "2.9.0" in why and "pip install 'torch>=2.10'" in why


def test_load_failure_names_both_torches_and_the_fix():
    why = extension._why("libc10_cuda.so: cannot open shared object file",
                         {"torch": "2.14.1+cu130", "stable_abi_target": "2.10"})
    assert "2.14.1+cu130" in why and torch.__version__ in why
    assert extension._fix() in why


def test_info_runs_as_a_command():
    p = subprocess.run([sys.executable, "-m", "facenms", "info"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "stable_abi_target" in p.stdout and "cuda_library" in p.stdout


SETUP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")


@pytest.mark.skipif(not os.path.exists(SETUP), reason="needs the source tree's setup.py")
@pytest.mark.parametrize("env, says", [
    ({}, None),
    ({"FORCE_CPU": "1"}, "not building facenms._C_cuda, the CUDA library: FORCE_CPU=1"),
    ({"FORCE_CUDA": "1"}, "building facenms._C_cuda"),
])
def test_build_says_per_library_what_it_compiles_and_why(env, says):
    """setup.py prints one line per library with its reason; without a GPU the CUDA library
    is built only when FORCE_CUDA=1 asks for it (torchvision's rule)."""
    if "FORCE_CUDA" in env and (torch.version.cuda is None
                                or cpp_extension.CUDA_HOME is None):
        pytest.skip("FORCE_CUDA needs a CUDA torch and nvcc")
    clean = {k: v for k, v in os.environ.items() if k not in ("FORCE_CPU", "FORCE_CUDA")}
    p = subprocess.run([sys.executable, SETUP, "--version"], capture_output=True, text=True,
                       cwd=os.path.dirname(SETUP), env=dict(clean, **env), timeout=300)
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("facenms: ")]
    assert len(lines) == 2, p.stdout
    assert lines[0].startswith("facenms: building facenms._C, the CPU library")
    if says is None:  # the machine decides: a GPU visible to a CUDA torch, and nvcc
        can = torch.version.cuda is not None and torch.cuda.is_available() and \
            cpp_extension.CUDA_HOME is not None
        says = "building facenms._C_cuda" if can else "not building facenms._C_cuda"
        if not torch.cuda.is_available() and torch.version.cuda is not None and \
                cpp_extension.CUDA_HOME is not None:
            assert "no GPU visible" in lines[1], lines[1]
    assert lines[1].startswith("facenms: " + says), lines[1]
