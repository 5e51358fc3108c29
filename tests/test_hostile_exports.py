"""Exports, indexes and sidecars under hostile use: empty keeps, unreadable .lst names,
two exports in one folder, an index over its own dataset, a foreign or damaged labels
sidecar, a record overrunning the next, options a format ignores, Ctrl-C while the
modules load, a garbage .pt2 model."""
import io
import os
import shutil
import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from facenms.data import open_dataset, synthetic, write_face_recordio
from facenms.pipeline import export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=ROOT, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "facenms"] + [str(a) for a in args],
                          capture_output=True, text=True, env=env)


def one_line_error(r, command, *parts):
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("facenms %s: error: " % command), r.stderr
    for p in parts:
        assert p in r.stderr, r.stderr


def snapshot(d):
    return {os.path.relpath(os.path.join(a, f), d): open(os.path.join(a, f), "rb").read()
            for a, _, fs in os.walk(d) for f in fs}


@pytest.fixture
def rec(tmp_path):
    return synthetic.make_recordio(tmp_path / "D", num_identities=30,
                                   images_per_identity=(5, 7), size=12, seed=3)


@pytest.fixture
def folder(tmp_path):
    return synthetic.make_image_folder(tmp_path / "img", num_identities=4,
                                       images_per_identity=(3, 4), size=12, seed=5)


# ------------------------------------------------------------- empty keep, .lst of a .rec

@pytest.mark.parametrize("fmt, out", [("recordio", "E"), ("recordio", "E/x.rec"),
                                      ("lst", "E.lst"), ("folder", "T"), ("npy", "k2.npy")])
def test_an_empty_keep_is_refused_unless_allowed(tmp_path, folder, fmt, out):
    np.save(tmp_path / "keep.npy", np.zeros(0, np.int64))
    before = snapshot(tmp_path)
    r = cli("export", "--dataset", folder, "--keep", tmp_path / "keep.npy", "--format", fmt,
            "--out", tmp_path / out)
    one_line_error(r, "export", "selects no faces", "--allow-empty")
    assert snapshot(tmp_path) == before
    r = cli("export", "--dataset", folder, "--keep", tmp_path / "keep.npy", "--format", fmt,
            "--out", tmp_path / out, "--allow-empty")
    assert r.returncode == 0, r.stderr


def test_an_empty_keep_is_refused_by_the_api(tmp_path, folder):
    ds = open_dataset(folder)
    for writer in (export.write_recordio, export.write_lst, export.write_imagefolder):
        with pytest.raises(ValueError, match="selects no faces"):
            writer(tmp_path / "out.lst", ds, [])
    assert sorted(os.listdir(tmp_path)) == ["img"]


def test_a_lst_of_a_recordio_dataset_is_refused_unless_asked_for(tmp_path, rec):
    np.save(tmp_path / "keep.npy", np.arange(5))
    r = cli("export", "--dataset", rec, "--keep", tmp_path / "keep.npy", "--format", "lst",
            "--out", tmp_path / "core.lst")
    one_line_error(r, "export", "rec:<key>", "--rec-names")
    assert not os.path.exists(tmp_path / "core.lst")
    r = cli("export", "--dataset", rec, "--keep", tmp_path / "keep.npy", "--format", "lst",
            "--out", tmp_path / "core.lst", "--rec-names")
    assert r.returncode == 0 and "rec:" in (tmp_path / "core.lst").read_text()


@pytest.mark.parametrize("args, what", [
    (["--format", "folder", "--shuffle"], "--shuffle"),
    (["--format", "npy", "--shuffle"], "--shuffle"),
    (["--format", "recordio", "--seed", "3"], "--seed"),
    (["--format", "lst", "--layout", "insightface"], "--layout"),
    (["--format", "folder", "--no-bins"], "--no-bins"),
    (["--format", "recordio", "--mode", "copy"], "--mode"),
    (["--format", "folder", "--rec-names"], "--rec-names"),
])
def test_an_option_the_format_ignores_is_refused(tmp_path, folder, args, what):
    np.save(tmp_path / "keep.npy", np.arange(3))
    before = snapshot(tmp_path)
    r = cli("export", "--dataset", folder, "--keep", tmp_path / "keep.npy", "--out",
            tmp_path / "out", *args)
    one_line_error(r, "export", what)
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------- two exports, one folder

def test_two_rec_exports_in_one_folder_share_nothing(tmp_path, rec):
    src = open_dataset(rec)
    big = np.flatnonzero(src.labels < 30)[:178]
    small = np.flatnonzero(src.labels < 6)[:29]
    d = tmp_path / "dir"
    export.write_recordio(d / "b.rec", src, big)
    export.write_recordio(d / "a.rec", src, small)
    b, a = open_dataset(d / "b.rec"), open_dataset(d / "a.rec")
    assert (len(b), b.num_classes) == (len(big), len(np.unique(src.labels[big])))
    assert (len(a), a.num_classes) == (len(small), 6)
    assert b.read_bytes(len(b) - 1) and a.read_bytes(0)
    assert sorted(os.listdir(d)) == sorted("%s.%s" % (p, e) for p in "ab" for e in (
        "rec", "idx", "property", "labels.npz", "label_map.npy"))


def test_a_rec_export_beside_a_dataset_leaves_its_property(tmp_path, rec):
    src = open_dataset(rec)
    before = open(os.path.join(rec, "property")).read()
    export.write_recordio(os.path.join(rec, "core.rec"), src, np.arange(10))
    assert open(os.path.join(rec, "property")).read() == before
    again = open_dataset(rec)
    assert again.num_classes == src.num_classes and len(again) == len(src)
    assert open_dataset(os.path.join(rec, "core.rec")).num_classes == \
        len(np.unique(src.labels[:10]))


def test_train_rec_keeps_the_name_mxfacedataset_reads(tmp_path, rec):
    export.write_recordio(tmp_path / "x" / "train.rec", open_dataset(rec), np.arange(10))
    assert "property" in os.listdir(tmp_path / "x")
    assert open_dataset(tmp_path / "x", require_property=True).num_classes >= 1


# ------------------------------------------------------------- facenms index over its dataset

def index_cases(d):
    os.symlink(d / "a.rec", d / "link.idx")
    os.link(d / "a.rec", d / "hard.idx")
    os.symlink(d / "a.property", d / "prop-link.idx")
    return [
        ["--idx", d / "a.rec", "--force"], ["--idx", str(d / ".." / d.name / "a.rec"), "--force"],
        ["--idx", d / "a.property", "--force"], ["--idx", d / "a.labels.npz", "--force"],
        ["--idx", d / "a.label_map.npy", "--force"], ["--idx", d / "link.idx", "--force"],
        ["--idx", d / "hard.idx", "--force"], ["--idx", d / "prop-link.idx", "--force"],
        ["--idx", d / "other.rec", "--force"], ["--idx", d / "notes.idx", "--force"],
        ["--idx", d, "--force"],
    ]


def test_index_never_writes_over_its_dataset(tmp_path, rec):
    d = tmp_path / "dir"
    export.write_recordio(d / "a.rec", open_dataset(rec), np.arange(20))
    (d / "notes.idx").write_text("my notes, not an index\n")
    (d / "other.rec").write_bytes(b"another dataset")
    cases = index_cases(d)
    before = snapshot(d)
    for args in cases:
        r = cli("index", d / "a.rec", *args)
        one_line_error(r, "index")
        assert snapshot(d) == before, args
    r = cli("index", d / "a.rec", "--force")  # its own .idx, rebuilt
    assert r.returncode == 0, r.stderr
    assert len(open_dataset(d / "a.rec")) == 20


# ------------------------------------------------------------- the labels sidecar

def bmp(seed):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), np.uint8)).save(buf, format="BMP")
    return buf.getvalue()


@pytest.fixture
def same_sized(tmp_path):
    labels = np.repeat(np.arange(6), 5)
    d = tmp_path / "S"
    write_face_recordio(d / "train.rec", labels, [bmp(k) for k in range(len(labels))],
                        image_size=(12, 12), layout="im2rec")
    ds = open_dataset(d)
    one, two = tmp_path / "one", tmp_path / "two"
    export.write_recordio(one, ds, np.arange(len(ds)), shuffle=True, seed=1)
    export.write_recordio(two, ds, np.arange(len(ds)), shuffle=True, seed=2)
    assert open(one / "train.idx").read() == open(two / "train.idx").read()
    return one, two


def truth(d):
    tmp = d.parent / ("bare-" + d.name)
    shutil.copytree(d, tmp)
    os.remove(tmp / "train.labels.npz")
    return open_dataset(tmp).labels


def read_labels(d):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = open_dataset(d)
    return ds, [str(x.message) for x in w]


def test_a_sidecar_copied_from_another_export_is_ignored(same_sized):
    one, two = same_sized
    right = truth(two)
    shutil.copy(one / "train.labels.npz", two / "train.labels.npz")
    ds, w = read_labels(two)
    np.testing.assert_array_equal(ds.labels, right)
    assert ds.labels_source == "image headers" and len(w) == 1 and "train.labels.npz" in w[0]


def test_a_sidecar_rewritten_with_its_metadata_intact_is_ignored(same_sized):
    one, two = same_sized
    right = truth(two)
    with np.load(two / "train.labels.npz") as z:
        meta = {k: z[k] for k in z.files}
    meta["labels"] = meta["labels"][::-1].copy()
    with open(two / "train.labels.npz", "wb") as f:
        np.savez(f, **meta)
    ds, w = read_labels(two)
    np.testing.assert_array_equal(ds.labels, right)
    assert len(w) == 1
    # the same with the labels CRC forged too: a few records' own headers disagree
    meta["labels_crc"] = np.int64(zlib.crc32(meta["labels"].astype("<i8").tobytes()))
    with open(two / "train.labels.npz", "wb") as f:
        np.savez(f, **meta)
    ds, w = read_labels(two)
    np.testing.assert_array_equal(ds.labels, right)
    assert len(w) == 1 and "header" in w[0]


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_a_damaged_sidecar_is_ignored_as_stale(same_sized, damage):
    one, two = same_sized
    right = truth(two)
    p = two / "train.labels.npz"
    data = bytearray(p.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "flip":
        for pos in range(40, len(data) - 40, 97):
            data[pos] ^= 0xFF
    elif damage == "empty":
        data = b""
    else:
        data = b"PK\x03\x04" + b"\0" * 50
    p.write_bytes(bytes(data))
    ds, w = read_labels(two)
    np.testing.assert_array_equal(ds.labels, right)
    assert len(w) == 1
    np.save(two.parent / "keep.npy", np.arange(5))
    r = cli("export", "--dataset", two, "--keep", two.parent / "keep.npy", "--out",
            two.parent / "again")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("facenms export: warning: ")


# ------------------------------------------------------------- a record overrunning the next

def test_a_record_overrunning_the_next_is_refused(tmp_path, rec):
    os.remove(os.path.join(rec, "train.labels.npz"))  # its staleness is another test's
    src = open_dataset(rec)
    key = src.key(3)
    off = src.rec.offset(key)
    with open(os.path.join(rec, "train.rec"), "r+b") as f:
        f.seek(off + 4)
        lrec = struct.unpack("<I", f.read(4))[0]
        f.seek(off + 4)
        f.write(struct.pack("<I", lrec + 8))
    ds = open_dataset(rec)
    with pytest.raises(ValueError, match="record key %d .*runs 8 bytes into the next" % key):
        ds.rec.read(key)
    np.save(tmp_path / "keep.npy", np.arange(6))
    for fmt in ("recordio", "folder"):
        r = cli("export", "--dataset", rec, "--keep", tmp_path / "keep.npy", "--verify", "none",
                "--format", fmt, "--out", tmp_path / ("out-" + fmt))
        one_line_error(r, "export", "record key %d" % key)
        assert not os.path.exists(tmp_path / ("out-" + fmt))


# ------------------------------------------------------------- Ctrl-C while importing, .pt2

INTERRUPT = """
import runpy, sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == %r:
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
sys.argv = ["facenms", "select", "--features", "f.npy", "--labels", "l.npy", "--ratio", "0.5",
            "--out", "k.npy"]
%s
"""


@pytest.mark.parametrize("module", ["torch", "numpy", "facenms.cli.select"])
@pytest.mark.parametrize("entry", ["runpy.run_module('facenms', run_name='__main__')",
                                   "from facenms.cli import main; main()"])
def test_ctrl_c_while_the_modules_load_is_one_line(tmp_path, module, entry):
    r = subprocess.run([sys.executable, "-c", INTERRUPT % (module, entry)], cwd=tmp_path,
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "interrupted" in r.stderr


@pytest.mark.parametrize("name", ["m.pt2", "m.onnx", "m.pt", "ts.pt"])
def test_a_garbage_model_is_one_line(tmp_path, rec, name):
    import zipfile
    if name == "ts.pt":  # a zip that looks like TorchScript
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            z.writestr("m/constants.pkl", b"garbage")
    else:
        (tmp_path / name).write_bytes(np.random.default_rng(0).bytes(3000))
    r = cli("extract", "--dataset", rec, "--model", tmp_path / name, "--out",
            tmp_path / "f.npy")
    one_line_error(r, "extract", name)
