"""setuptools' build backend, plus one build requirement chosen at build time.

The CPU library uses PyTorch's stable ABI and loads under any torch from its
target version on, so it can be built against whatever torch pip puts in the
isolated build environment. The CUDA library uses the regular ABI, which ties
it to one torch release: when the installed torch has CUDA, the build asks
for that same release, so its CUDA kernels load too.
"""
import os
import sys

from setuptools.build_meta import *  # noqa: F401,F403 (the PEP 517 hooks)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_env import installed_torch  # noqa: E402


def _torch_requirement():
    """torch for the build: the installed release when it has CUDA, else any >= 2.10.

    Not in pyproject's static requires: pip installs those first and would
    then refuse a pin that conflicts with them."""
    t = None if os.environ.get("FORCE_CPU", "0").lower() in ("1", "true", "yes", "on") \
        else installed_torch()
    if t and t["cuda"] and t["version"]:
        return "torch==%s" % t["version"].split("+")[0]
    return "torch>=2.10"


# setuptools' own hooks would run setup.py here, which needs torch: not yet there.
def get_requires_for_build_wheel(config_settings=None):
    return ["wheel", _torch_requirement()]


def get_requires_for_build_editable(config_settings=None):
    return ["wheel", _torch_requirement()]
