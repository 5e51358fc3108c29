"""The facenms command line, run as a user would (a real subprocess)."""
import json
import subprocess
import sys

import numpy as np
import pytest

import facenms
from facenms.eval.embeddings import webface_like


def run(*args, ok=True):
    p = subprocess.run([sys.executable, "-m", "facenms", *map(str, args)],
                       capture_output=True, text=True, timeout=300)
    assert (p.returncode == 0) == ok, p.stdout + p.stderr
    return p.stdout + p.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    x, labels = webface_like(4000, dim=32, seed=0)
    np.save(d / "f.npy", x.astype(np.float16))
    np.save(d / "l.npy", labels)
    return d, x.astype(np.float16), labels


def test_select_writes_indices_and_summary(files):
    d, x, labels = files
    out = run("select", "--features", d / "f.npy", "--labels", d / "l.npy", "--ratio", 0.6,
              "--out", d / "keep.npy", "--info", d / "info.json")
    assert "4000 faces" in out and "kept 2400" in out and "faces/s" in out
    keep = np.load(d / "keep.npy")
    info = json.loads((d / "info.json").read_text())
    np.testing.assert_array_equal(keep, facenms.select(x, labels, threshold=info["threshold"]))


def test_select_threshold_mode_matches_api(files):
    d, x, labels = files
    run("select", "--features", d / "f.npy", "--labels", d / "l.npy", "--threshold", 0.7,
        "--min-per-identity", 2, "--out", d / "k2.npy")
    np.testing.assert_array_equal(np.load(d / "k2.npy"),
                                  facenms.select(x, labels, threshold=0.7, min_per_identity=2))


def test_select_bad_input_is_a_clear_error_and_writes_nothing(files, tmp_path):
    d, x, labels = files
    np.save(tmp_path / "short.npy", labels[:10])
    out = run("select", "--features", d / "f.npy", "--labels", tmp_path / "short.npy",
              "--ratio", 0.5, "--out", tmp_path / "keep.npy", ok=False)
    assert "one label per face" in out
    assert not (tmp_path / "keep.npy").exists()
    out = run("select", "--features", tmp_path / "missing.npy", "--labels", d / "l.npy",
              "--ratio", 0.5, "--out", tmp_path / "keep.npy", ok=False)
    assert "not found" in out
    out = run("select", "--features", d / "f.npy", "--labels", d / "l.npy", "--ratio", 0.5,
              "--threshold", 0.5, "--out", tmp_path / "keep.npy", ok=False)
    assert "not allowed with" in out


def test_demo_runs_small():
    out = run("demo", "--faces", 5000, "--dim", 64, "--check", "--no-pipeline")
    assert "kept 3000 (60.00%)" in out and "valid" in out


def test_info():
    assert "torch" in run("info")
