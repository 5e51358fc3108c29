"""Every malformed .npy in every slot of every command: one line on stderr naming the
file, a non-zero exit, nothing written. The table runs in-process (cli.main); a few
cases also run as `python -m facenms` to see the real stderr."""
import os
import subprocess
import sys

import numpy as np
import pytest

from facenms import cli
from facenms.data import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, D = 40, 8


def header(text, version=1):
    """A .npy preamble holding `text` verbatim as its header."""
    t = text.encode("latin1")
    size = len(t).to_bytes(2 if version == 1 else 4, "little")
    return b"\x93NUMPY" + bytes([version, 0]) + size + t


def saved(a):
    import io
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def good(slot):
    """A well-formed array for a slot."""
    return {"features": np.ones((N, D), np.float32), "labels": np.repeat(np.arange(4), 10),
            "scores": np.linspace(0, 1, N), "keep": np.arange(0, N, 2)}[slot]


# malformed file classes: name -> bytes for a slot; None where the class does not apply
BAD = {
    "corrupt header text": lambda s: b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4',(\n",
    "corrupt header claiming 10^13 rows": lambda s: header(
        "{'descr': '<i8', 'fortran_order': False, 'shape': (10000000000000,), }(\n"),
    "header not a dict": lambda s: header("[1, 2, 3]\n"),
    "header with unknown dtype": lambda s: header(
        "{'descr': '<q9', 'fortran_order': False, 'shape': (3,), }\n"),
    "wrong magic": lambda s: b"PK\x03\x04" + saved(good(s))[4:],
    "empty file": lambda s: b"",
    "header longer than the file": lambda s: b"\x93NUMPY\x01\x00\xff\x7f{'descr'",
    "v2 header longer than the file": lambda s: b"\x93NUMPY\x02\x00\xff\xff\xff\x00{'d",
    "truncated body": lambda s: saved(good(s))[:-5],
    "shape that cannot fit on the disk": lambda s: header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (10000000000000, 8), }\n"),
    "negative shape": lambda s: header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (-4, 8), }\n"),
    "0-d array": lambda s: saved(np.float32(3) if s == "features" else np.int64(3)),
    "object dtype": lambda s: saved(np.array([[1, None]] * N, dtype=object)),
    "structured dtype": lambda s: saved(np.zeros(N, dtype=[("a", "<f4"), ("b", "<i4")])),
    "complex dtype": lambda s: saved(good(s).astype(np.complex64)),
    "string dtype": lambda s: saved(good(s).astype(str)),
    "bytes dtype": lambda s: saved(good(s).astype("S4")),
    "boolean dtype": lambda s: saved(good(s).astype(bool)),
    "int8 features": lambda s: saved(good(s).astype(np.int8)) if s == "features" else None,
    "float labels or indices": lambda s: saved(good(s).astype(np.float32))
    if s in ("labels", "keep") else None,
    "wrong number of dimensions": lambda s: saved(good(s).reshape(-1)) if s == "features"
    else saved(good(s).reshape(-1, 2)),
}

# (command, option or None for the positional input, slot kind)
SLOTS = [("select", "--features", "features"), ("select", "--labels", "labels"),
         ("select", "--scores", "scores"), ("export", "--keep", "keep"),
         ("report", "--features", "features"), ("report", "--labels", "labels"),
         ("report", "--keep", "keep"), ("sort-features", None, "features"),
         ("sort-features", "--labels", "labels")]


def argv(cmd, d, slot_opt, bad):
    """The command line for `cmd` with every input good except `slot_opt`, which is `bad`."""
    files = {"--features": d / "f.npy", "--labels": d / "l.npy", "--scores": d / "s.npy",
             "--keep": d / "k.npy", None: d / "f.npy"}
    files[slot_opt] = bad
    if cmd == "select":
        a = ["--features", files["--features"], "--labels", files["--labels"], "--ratio",
             "0.5", "--out", d / "out" / "keep.npy", "--info", d / "out" / "info.json"]
        if slot_opt == "--scores":
            a += ["--scores", files["--scores"]]
    elif cmd == "export":
        a = ["--dataset", d / "img", "--keep", files["--keep"], "--format", "npy",
             "--out", d / "out" / "sub.npy"]
    elif cmd == "report":
        a = ["--features", files["--features"], "--labels", files["--labels"], "--keep",
             files["--keep"], "--out", d / "out" / "report"]
    else:
        a = [files[None], d / "out" / "sorted.npy", "--labels", files["--labels"]]
    return [cmd] + [str(v) for v in a]


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("npy")
    for name, slot in (("f", "features"), ("l", "labels"), ("s", "scores"), ("k", "keep")):
        np.save(d / ("%s.npy" % name), good(slot))
    synthetic.make_image_folder(d / "img", num_identities=4, images_per_identity=(10, 10),
                                size=12, seed=1)
    (d / "out").mkdir()
    return d


def cases():
    for cmd, opt, slot in SLOTS:
        for name, make in BAD.items():
            if make(slot) is not None:
                yield pytest.param(cmd, opt, slot, name, id="%s %s: %s" % (cmd, opt or "input",
                                                                            name))


@pytest.mark.parametrize("cmd,opt,slot,name", list(cases()))
def test_malformed_npy_is_one_line_naming_the_file(d, cmd, opt, slot, name):
    bad = d / ("bad-%s.npy" % slot)
    bad.write_bytes(BAD[name](slot))
    with pytest.raises(SystemExit) as e:
        cli.main(argv(cmd, d, opt, bad))
    msg = str(e.value.code)
    assert msg.startswith("facenms %s: error: %s: " % (cmd, bad)), msg
    assert "\n" not in msg and len(msg) < 400, msg
    assert os.listdir(d / "out") == [], "a failed command wrote %s" % os.listdir(d / "out")


@pytest.mark.parametrize("cmd,opt,slot", [("select", "--features", "features"),
                                          ("export", "--keep", "keep"),
                                          ("report", "--labels", "labels"),
                                          ("sort-features", None, "features")])
def test_malformed_npy_from_the_shell(d, cmd, opt, slot):
    bad = d / "shell-bad.npy"
    bad.write_bytes(BAD["corrupt header text"](slot))
    r = subprocess.run([sys.executable, "-m", "facenms"] + argv(cmd, d, opt, bad),
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode != 0
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("facenms %s: error: %s: " % (cmd, bad)), \
        r.stderr
    assert os.listdir(d / "out") == []


@pytest.mark.parametrize("name", ["corrupt header text", "truncated body", "0-d array",
                                  "complex dtype", "shape that cannot fit on the disk"])
def test_the_api_gets_the_same_checks(tmp_path, name):
    import re
    import facenms
    from facenms.scale.sort_features import sort_features
    bad = tmp_path / "bad.npy"
    bad.write_bytes(BAD[name]("features"))
    labels = good("labels")
    with pytest.raises((ValueError, TypeError), match="^%s: " % re.escape(str(bad))):
        facenms.select(str(bad), labels, ratio=0.5)
    with pytest.raises((ValueError, TypeError), match="^%s: " % re.escape(str(bad))):
        sort_features(str(bad), labels, tmp_path / "out.npy")
    np.save(tmp_path / "f.npy", good("features"))
    bad.write_bytes(BAD[name]("labels"))
    with pytest.raises((ValueError, TypeError), match="^%s: " % re.escape(str(bad))):
        facenms.select(str(tmp_path / "f.npy"), str(bad), ratio=0.5)
    assert not (tmp_path / "out.npy").exists()


def test_loader_reads_what_numpy_writes(tmp_path):
    """Every layout numpy writes reads back equal, mapped or not; bytes after the data
    are ignored, as numpy ignores them."""
    from facenms.io import load_npy
    arrays = [np.arange(12, dtype=np.float32).reshape(3, 4), np.zeros((0, 5), np.float16),
              np.asfortranarray(np.arange(6.0).reshape(2, 3)), np.arange(5, dtype=">i4"),
              np.arange(4, dtype=np.uint64)]
    for i, a in enumerate(arrays):
        p = tmp_path / ("a%d.npy" % i)
        np.save(p, a)
        with open(p, "ab") as f:
            f.write(b"trailer")
        for mmap in (False, True):
            got = load_npy(p, mmap=mmap)
            assert got.shape == a.shape and np.array_equal(got, a)
            assert got.dtype.isnative or mmap


def test_a_fifo_or_a_folder_is_refused_without_blocking(d, tmp_path):
    fifo = tmp_path / "fifo.npy"
    os.mkfifo(fifo)
    for bad, why in ((fifo, "not a regular file"), (tmp_path, "a directory")):
        with pytest.raises(SystemExit) as e:
            cli.main(argv("select", d, "--labels", bad))
        assert str(e.value.code).startswith("facenms select: error: %s: %s" % (bad, why))


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(0, 200), flips=st.lists(st.tuples(st.integers(0, 140),
                                                           st.integers(1, 255)), max_size=4),
       v2=st.booleans(), mmap=st.booleans())
def test_any_damage_is_a_clean_error_or_what_numpy_reads(tmp_path_factory, cut, flips, v2,
                                                         mmap):
    """Damaged headers and cut files: the loader raises ValueError/TypeError/OSError
    naming the file, or returns exactly what np.load reads; nothing else escapes."""
    from facenms.io import load_npy
    import io
    b = io.BytesIO()
    a = np.arange(24, dtype=np.float32).reshape(6, 4)
    np.lib.format.write_array(b, a, version=(2, 0) if v2 else (1, 0))
    raw = bytearray(b.getvalue())
    for at, x in flips:
        if at < len(raw):
            raw[at] ^= x
    raw = raw[:max(0, len(raw) - cut)] if cut < 120 else raw
    p = tmp_path_factory.mktemp("fuzz") / "x.npy"
    p.write_bytes(bytes(raw))
    try:
        got = load_npy(p, mmap=mmap, what="features", kind="float", ndim=2)
    except (ValueError, TypeError) as e:
        assert str(e).startswith(str(p) + ": ") and "\n" not in str(e)
        return
    want = np.load(p, mmap_mode="r" if mmap else None)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
