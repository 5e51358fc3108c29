"""The exports read by the readers insightface users run: mxnet 1.9.1 and NVIDIA DALI.

Optional: set FACENMS_MXNET_PYTHON and/or FACENMS_DALI_PYTHON to interpreters
that have mxnet (with opencv for im2rec) / nvidia-dali. check_readers.py
states what each must read; tests/fixtures/check_readers.sh runs both.
"""
import os
import subprocess
import sys

import pytest
from procs import child_env

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    out = tmp_path_factory.mktemp("readers")
    env = child_env(threads=None)
    subprocess.run([sys.executable, os.path.join(FIX, "write_for_readers.py"), str(out)],
                   check=True, env=env, capture_output=True)
    return out


def _reader(reader, var):
    """Skipped before the exports fixture is built when the interpreter is missing."""
    return pytest.param(reader, var, marks=pytest.mark.skipif(
        not os.environ.get(var), reason="set %s to a python with %s" % (var, reader)))


@pytest.mark.parametrize("reader,var", [_reader("mxnet", "FACENMS_MXNET_PYTHON"),
                                        _reader("dali", "FACENMS_DALI_PYTHON")])
def test_reader_reads_the_exports(exports, reader, var):
    r = subprocess.run([os.environ[var], os.path.join(FIX, "check_readers.py"), reader,
                        str(exports)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # what must work works, and the insightface layout fails where the README says it does
    assert "FAIL " not in r.stdout
    if reader == "dali":
        assert "insightface  DALI readers.mxnet (CPU)     fails (expected)" in r.stdout
    else:
        assert "insightface  mx.io.ImageRecordIter        fails (expected)" in r.stdout
        assert "lst          mxnet.tools.im2rec           OK" in r.stdout
