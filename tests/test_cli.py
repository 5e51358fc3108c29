"""The facenms command line, run as a user would (a real subprocess)."""
import json
import subprocess
import sys

import numpy as np
import pytest

import facenms
from procs import facenms_cli as run
from facenms.eval.embeddings import webface_like


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


def test_every_flag_has_help_text():
    """`facenms CMD --help` explains every option (argparse's own -h aside)."""
    from facenms.cli import build_parser
    missing = []
    for name, sub in build_parser().commands.items():
        for a in sub._actions:
            if a.option_strings and a.dest != "help" and not (a.help or "").strip():
                missing.append("facenms %s %s" % (name, "/".join(a.option_strings)))
    assert not missing, missing


def test_redirected_logs_hold_no_carriage_returns(tmp_path, tiny_rec):
    """Progress bars are drawn only on a terminal: a log file gets lines, no \\r."""
    log = tmp_path / "log"
    with open(log, "wb") as f:
        for args in (["train-proxy", "--dataset", tiny_rec, "--out", tmp_path / "p", "--epochs",
                      "1", "--batch-size", "8", "--fraction", "1.0", "--backbone", "mobilefacenet",
                      "--input-size", "32", "--embedding-size", "16", "--workers", "0"],
                     ["extract", "--dataset", tiny_rec, "--model", tmp_path / "p" / "proxy.pt",
                      "--out", tmp_path / "f.npy", "--workers", "0", "--batch-size", "16"]):
            p = subprocess.run([sys.executable, "-m", "facenms", *map(str, args)], stdout=f,
                               stderr=subprocess.STDOUT, timeout=300)
            assert p.returncode == 0, log.read_text()
    text = log.read_bytes()
    assert b"\r" not in text, text[-2000:]
    assert b"extract:" in text


def test_progress_bar_only_on_a_terminal():
    """The same bar helper draws on a pseudo-terminal."""
    import os
    import pty
    code = ("from facenms.io.progress import progress_bar\n"
            "b = progress_bar(True, total=3, desc='t', unit='x')\n"
            "assert b is not None\n"
            "[b.update() for _ in range(3)]; b.close()\n"
            "assert progress_bar(False, [1], desc='t', unit='x') == [1]\n")
    import fcntl
    import struct
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    p = subprocess.run([sys.executable, "-c", code], stderr=slave, stdout=subprocess.PIPE,
                       timeout=60)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the other end is closed and everything was read
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert p.returncode == 0, out
    assert b"\r" in out and b"3/3" in out
    p = subprocess.run([sys.executable, "-c", code.replace("assert b is not None",
                                                           "assert b is None\nraise SystemExit")],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_demo_whole_pipeline(tmp_path):
    """Part 1 as README line 1 runs it: every stage, the core set checked against its
    source, the report's page written and named."""
    out = run("demo", "--faces", 2000, "--dim", 16, "--work-dir", tmp_path)
    assert "identical to the source" in out and "stage times: proxy" in out
    page = tmp_path / "work" / "report" / "index.html"
    assert page.exists() and str(page) in out
