"""Launching the real worker processes of the proxy / extraction tests."""
import os
import socket
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "pipeline_worker.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(threads=1):
    """The environment of a child process: this checkout first on its path, and
    `threads` OpenMP threads (None: as this process has)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def torchrun(args, nproc=2, timeout=180):
    """Runs pipeline_worker.py under torchrun with nproc CPU processes (gloo)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
           "--nproc_per_node=%d" % nproc, "--master_addr=127.0.0.1",
           "--master_port=%d" % free_port(), WORKER] + [str(a) for a in args]
    r = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        pytest.fail("torchrun failed (%d):\n%s\n%s" % (r.returncode, r.stdout[-4000:],
                                                      r.stderr[-4000:]))
    return r


def facenms_cli(*args, ok=True):
    """`python -m facenms ARGS` as a user runs it; its stdout and stderr. ok: whether it
    must succeed (True) or fail (False)."""
    p = subprocess.run([sys.executable, "-m", "facenms", *map(str, args)],
                       capture_output=True, text=True, timeout=300)
    assert (p.returncode == 0) == ok, p.stdout + p.stderr
    return p.stdout + p.stderr
