"""Every bad input a user can give ends in one line, `facenms <command>: error: ...`,
a non-zero exit code and no traceback; the library raises ValueError/TypeError."""
import contextlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import facenms
from facenms import cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    np.save(d / "f.npy", rng.normal(size=(60, 8)).astype(np.float32))
    np.save(d / "l.npy", np.repeat(np.arange(6), 10))
    good = open(d / "l.npy", "rb").read()
    (d / "empty.npy").write_bytes(b"")
    (d / "junk.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    (d / "huge.npy").write_bytes(good.replace(b"'shape': (60,), ", b"'shape': (10000000000000,), "))
    (d / "neg.npy").write_bytes(good.replace(b"'shape': (60,), ", b"'shape': (-60,), "))
    (d / "dir.npy").mkdir()
    (d / "c.toml").write_text("[data]\ndataset = '%s'\n" % (d / "nodata"))
    return d


def sel(d, **over):
    args = {"--features": d / "f.npy", "--labels": d / "l.npy", "--ratio": "0.5",
            "--out": d / "keep.npy"}
    args.update(over)
    return ["select"] + [str(v) for kv in args.items() for v in kv if v is not None]


CASES = {
    "features missing": lambda d: sel(d, **{"--features": d / "nope.npy"}),
    "features empty": lambda d: sel(d, **{"--features": d / "empty.npy"}),
    "features corrupt header": lambda d: sel(d, **{"--features": d / "junk.npy"}),
    "features a directory": lambda d: sel(d, **{"--features": d / "dir.npy"}),
    "labels claim 10^13 rows": lambda d: sel(d, **{"--labels": d / "huge.npy"}),
    "labels negative shape": lambda d: sel(d, **{"--labels": d / "neg.npy"}),
    "labels of another length": lambda d: sel(d, **{"--labels": d / "f.npy"}),
    "device bogus": lambda d: sel(d, **{"--device": "bogus"}),
    "ratio above 1": lambda d: sel(d, **{"--ratio": "1.5"}),
    "ratio not a number": lambda d: sel(d, **{"--ratio": "abc"}),
    "max-memory not a size": lambda d: sel(d, **{"--max-memory": "lots"}),
    "block size 0": lambda d: sel(d, **{"--block-size": "0"}),
    "extra argument": lambda d: sel(d) + ["--fast"],
    "out over features": lambda d: sel(d, **{"--out": d / "f.npy"}),
    "out over labels": lambda d: sel(d, **{"--out": d / "l.npy"}),
    "export: dataset missing": lambda d: ["export", "--dataset", str(d / "nodata"), "--keep",
                                          str(d / "l.npy"), "--out", str(d / "core")],
    "report: keep missing": lambda d: ["report", "--features", str(d / "f.npy"), "--labels",
                                       str(d / "l.npy"), "--keep", str(d / "nope.npy"),
                                       "--out", str(d / "rep")],
    "run: config missing": lambda d: ["run", str(d / "nope.toml")],
    "run: dataset missing": lambda d: ["run", str(d / "c.toml")],
    "run: unknown stage": lambda d: ["run", str(d / "c.toml"), "--stages", "selct"],
    "sort-features over its input": lambda d: ["sort-features", str(d / "f.npy"),
                                               str(d / "f.npy"), "--labels", str(d / "l.npy")],
    "unknown command": lambda d: ["selct"],
}
if not torch.cuda.is_available():
    CASES["device cuda without a GPU"] = lambda d: sel(d, **{"--device": "cuda"})


def run_cli(argv):
    """(exit code, stderr lines) of facenms's main() in this process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            cli.main(argv)
            code = 0
        except SystemExit as e:
            code = e.code
            if not isinstance(code, int):
                err.write(str(code) + "\n")
                code = 1
    return code, err.getvalue().strip().splitlines()


def check_one_line(code, lines, argv):
    assert code != 0, argv
    assert len(lines) == 1, lines
    commands = cli.build_parser()._subparsers._group_actions[0].choices
    assert lines[0].startswith("facenms %s: error: " % argv[0] if argv[0] in commands
                               else "facenms: error: "), lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line(files, case):
    argv = CASES[case](files)
    check_one_line(*run_cli(argv), argv)
    assert "out over" not in case or not os.path.exists(files / "keep.npy")


@pytest.mark.parametrize("case", ["features corrupt header", "unknown command",
                                  "export: dataset missing"])
def test_a_real_process_prints_no_traceback(files, case):
    argv = CASES[case](files)
    p = subprocess.run([sys.executable, "-m", "facenms"] + argv, capture_output=True,
                       text=True, timeout=120)
    assert "Traceback" not in p.stderr
    check_one_line(p.returncode, p.stderr.strip().splitlines(), argv)
    p = subprocess.run([sys.executable, "-m", "facenms"] + argv, capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, FACENMS_DEBUG="1"))
    assert p.returncode != 0 and ("Traceback" in p.stderr or case == "unknown command")


# ------------------------------------------------------------------ randomized ----

junk = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                 st.just(np.float32(0.5)), st.just(np.array([0.5, 0.6])), st.just([1, 2]))


@st.composite
def features(draw):
    n = draw(st.integers(0, 12))
    d = draw(st.integers(0, 4))
    kind = draw(st.sampled_from(["ok", "nan", "zero", "int", "3d", "list", "f64", "bf16"]))
    x = np.random.default_rng(draw(st.integers(0, 9))).normal(size=(n, d)).astype(np.float32)
    if kind == "nan" and x.size:
        x[draw(st.integers(0, n - 1)), 0] = np.nan
    elif kind == "zero" and n:
        x[draw(st.integers(0, n - 1))] = 0
    elif kind == "int":
        x = x.astype(np.int32)
    elif kind == "3d":
        x = x[None]
    elif kind == "list":
        return x.tolist()
    elif kind == "f64":
        x = x.astype(np.float64)
    elif kind == "bf16":
        return torch.from_numpy(x).bfloat16()
    return x


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(x=features(), labels=st.one_of(st.just("ok"), st.just("short"), st.just("float"),
                                       st.just("u64"), junk),
       ratio=junk, threshold=junk, rank=st.one_of(st.none(), st.sampled_from(
           ["sparsity", "centrality", "random", "scores", "best"])),
       m=junk, per_identity=st.booleans())
def test_select_on_random_input_fails_in_one_line_or_returns_valid_indices(x, labels, ratio,
                                                                         threshold, rank, m,
                                                                         per_identity):
    n = len(x) if hasattr(x, "__len__") else 0
    labels = {"ok": lambda: np.arange(n) % 3, "short": lambda: np.zeros(max(0, n - 1), np.int64),
              "float": lambda: np.zeros(n), "u64": lambda: np.full(n, 2 ** 64 - 1, np.uint64)
              }.get(labels, lambda: labels)() if isinstance(labels, str) else labels
    kw = dict(ratio=ratio, threshold=threshold, rank=rank, per_identity=per_identity)
    if m is not None:
        kw["min_per_identity"] = m
    try:
        keep = facenms.select(x, labels, **kw)
    except (ValueError, TypeError) as e:
        assert str(e) and "\n" not in str(e), repr(e)
        return
    keep = np.asarray(keep)
    assert keep.dtype == np.int64 and np.all(np.diff(keep) > 0)
    assert len(keep) == 0 or (keep[0] >= 0 and keep[-1] < n)


words = st.sampled_from(["--features", "--labels", "--ratio", "--threshold", "--out", "--rank",
                         "--min-per-identity", "--device", "--block-size", "--max-memory",
                         "--dataset", "--keep", "--format", "--model", "--batch-size",
                         "--input-size", "0.5", "-3", "nan", "x.npy", "", "cuda", "1e400"])


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(cmd=st.sampled_from(["select", "export", "report", "sort-features", "extract",
                            "train-proxy", "run", "demo"]),
       args=st.lists(words, max_size=8))
def test_cli_on_random_arguments_fails_in_one_line(tmp_path_factory, cmd, args):
    argv = [cmd] + args
    if cmd == "demo":  # only its argument checks: no generated work
        argv += ["--no-pipeline", "--faces", "-1"]
    code, lines = run_cli(argv)
    if code:
        check_one_line(code, lines, argv)
