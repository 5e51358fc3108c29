"""Export: indices, .lst, RecordIO subsets (insightface's reading logic), folder trees, atomicity."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from procs import child_env
from facenms.pipeline import export
from facenms.data import RecordIO, open_dataset, synthetic, unpack, write_face_recordio

HERE = os.path.dirname(os.path.abspath(__file__))
KW = dict(num_identities=5, images_per_identity=(2, 4), size=12, seed=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return open_dataset(synthetic.make_image_folder(tmp_path_factory.mktemp("f") / "img", **KW))


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return open_dataset(synthetic.make_recordio(tmp_path_factory.mktemp("r") / "rec", **KW))


def mxface_read(d):
    """insightface's MXFaceDataset, minus mxnet: (labels, payloads) in its order."""
    r = RecordIO(os.path.join(d, "train.rec"), os.path.join(d, "train.idx"))
    header, _ = unpack(r.read(0))
    imgidx = range(1, int(header.label[0])) if header.flag > 0 else list(r.keys)
    out = []
    for k in imgidx:
        h, img = unpack(r.read(k))
        label = h.label if h.flag == 0 else h.label[0]
        out.append((int(label), img))
    return [o[0] for o in out], [o[1] for o in out]


def listing(d):
    return sorted(os.path.relpath(os.path.join(a, f), d)
                  for a, ds, fs in os.walk(d) for f in fs + ds)


def test_save_indices(tmp_path):
    p = export.save_indices(tmp_path / "keep.npy", torch.tensor([0, 5, 7]))
    k = np.load(p)
    assert k.dtype == np.int64 and k.tolist() == [0, 5, 7]
    assert os.listdir(tmp_path) == ["keep.npy"]


@pytest.mark.parametrize("keep,err", [
    ([1, 1], "duplicate"), ([0, 99], r"keep\[1\] = 99 is out of range"),
    ([[0]], "1-D"), (np.array([0.5]), "integer")])
def test_bad_keep(tmp_path, folder, keep, err):
    with pytest.raises((ValueError, TypeError), match=err):
        export.write_lst(tmp_path / "a.lst", folder, keep)
    assert os.listdir(tmp_path) == []


def test_write_lst(tmp_path, folder, rec):
    # dense index 0..n-1 (im2rec's keys) and labels renumbered as the RecordIO export does
    keep = [len(folder) - 1, 0, 3]
    export.write_lst(tmp_path / "a.lst", folder, keep)
    lines = (tmp_path / "a.lst").read_text().splitlines()
    old = np.unique(folder.labels[keep])
    order = sorted(keep, key=lambda i: (folder.labels[i], i))
    assert lines == ["%d\t%d\t%s" % (j, np.searchsorted(old, folder.labels[i]), folder.name(i))
                     for j, i in enumerate(order)]
    assert np.load(tmp_path / "a.label_map.npy").tolist() == [[o, n] for n, o in enumerate(old)]
    # a RecordIO dataset has no image paths: its list is refused unless asked for
    with pytest.raises(ValueError, match="rec:<key>, paths no tool"):
        export.write_lst(tmp_path / "b.lst", rec, np.array([2]))
    assert not os.path.exists(tmp_path / "b.lst")
    export.write_lst(tmp_path / "b.lst", rec, np.array([2]), rec_names=True)
    assert (tmp_path / "b.lst").read_text() == "0\t0\trec:3\n"


@pytest.mark.parametrize("source", ["folder", "rec"])
def test_write_recordio_renumbers(tmp_path, request, source):
    ds = request.getfixturevalue(source)
    drop = ds.labels == 1  # identity 1 loses every face: labels above it shift down
    keep = np.flatnonzero(~drop)[::-1][::2].copy()  # any order in, grouped out
    paths = export.write_recordio(tmp_path / "sub", ds, keep, layout="insightface")
    assert sorted(os.listdir(tmp_path / "sub")) == ["arcface_config.py", "label_map.npy",
                                                     "property", "train.idx", "train.labels.npz",
                                                     "train.rec"]
    order = np.sort(keep)
    old = np.unique(ds.labels[order])
    assert (tmp_path / "sub/property").read_text() == "%d,12,12" % len(old)
    lm = np.load(paths["label_map"])
    assert lm.dtype == np.int64 and lm.tolist() == [[o, n] for n, o in enumerate(old)]
    labels, imgs = mxface_read(tmp_path / "sub")
    assert labels == np.searchsorted(old, ds.labels[order]).tolist()
    assert imgs == [ds.read_bytes(int(i)) for i in order]
    back = open_dataset(tmp_path / "sub", require_property=True)
    assert back.layout == "insightface" and back.num_classes == len(old)
    assert back.labels.tolist() == labels
    np.testing.assert_array_equal(back.decode(0), ds.decode(int(order[0])))
    # identity records: label c covers keys [start, end)
    r = back.rec
    n, c = len(order), len(old)
    assert unpack(r.read(0))[0].label.tolist() == [n + 1, n + 1 + c]
    for j in range(c):
        s, e = unpack(r.read(n + 1 + j))[0].label.astype(int)
        assert labels[s - 1:e - 1] == [j] * (e - s) and e - s == np.sum(labels == np.int64(j))


def test_write_recordio_im2rec_layout_and_rec_path(tmp_path, folder):
    keep = np.arange(0, len(folder), 3)
    paths = export.write_recordio(tmp_path / "out" / "core.rec", folder, keep, layout="im2rec")
    assert sorted(os.listdir(tmp_path / "out")) == ["core.idx", "core.label_map.npy",
                                                     "core.labels.npz", "core.property",
                                                     "core.rec"]
    back = open_dataset(paths["rec"])
    assert back.layout == "im2rec" and len(back) == len(keep)
    assert [back.read_bytes(i) for i in range(len(back))] == \
        [folder.read_bytes(int(i)) for i in keep]


def test_write_imagefolder_from_folder(tmp_path, folder):
    keep = [0, 2, len(folder) - 1]
    for mode in ("symlink", "copy"):
        out = tmp_path / mode
        export.write_imagefolder(out, folder, keep, mode=mode)
        files = [folder.name(i) for i in keep]
        assert [f for f in listing(out) if "." in f] == sorted(files)
        for i in keep:
            p = out / folder.name(i)
            assert p.is_symlink() == (mode == "symlink")
            assert p.read_bytes() == folder.read_bytes(i)
        back = open_dataset(out)
        assert back.labels.tolist() == np.unique(folder.labels[keep], return_inverse=True)[1].tolist()
    with pytest.raises(FileExistsError, match="not an empty directory"):
        export.write_imagefolder(tmp_path / "copy", folder, keep)
    export.write_imagefolder(tmp_path / "copy", folder, keep[:1], overwrite=True)
    assert len([f for f in listing(tmp_path / "copy") if "." in f]) == 1
    assert sorted(os.listdir(tmp_path)) == ["copy", "symlink"]  # no temporaries left


def test_write_imagefolder_from_rec(tmp_path, rec):
    keep = np.flatnonzero(rec.labels >= 3)
    export.write_imagefolder(tmp_path / "t", rec, keep, mode="copy")
    back = open_dataset(tmp_path / "t")
    assert back.classes == ["3", "4"]
    assert sorted(back.read_bytes(i) for i in range(len(back))) == \
        sorted(rec.read_bytes(int(i)) for i in keep)
    assert back.name(0) == "3/%d.%s" % (rec.key(int(keep[0])),
                                        "png" if rec.read_bytes(int(keep[0]))[1:4] == b"PNG"
                                        else "jpg")


@pytest.mark.parametrize("has_syncfs", [True, False])
def test_write_imagefolder_reaches_the_disk(tmp_path, rec, monkeypatch, has_syncfs):
    """A folder tree is flushed with one syncfs before the swap; without syncfs, every
    file and folder is fsync'ed. The same tree either way."""
    from facenms.io import commit as atomic
    synced, flushed = [], []
    real_fsync, real_syncfs = os.fsync, atomic.sync_filesystem
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(
        "/proc/self/fd/%d" % fd)), real_fsync(fd))[1])
    monkeypatch.setattr(atomic, "sync_filesystem", lambda p: (
        flushed.append(p), has_syncfs and real_syncfs(p))[1])
    keep = np.arange(len(rec))
    out = tmp_path / "t"
    export.write_imagefolder(out, rec, keep, mode="copy")
    back = open_dataset(out)
    assert sorted(back.read_bytes(i) for i in range(len(back))) == \
        sorted(rec.read_bytes(int(i)) for i in keep)
    assert len(flushed) == 1 and os.path.basename(flushed[0]).startswith(".t.tmp-")
    images = {s for s in synced if s.endswith((".jpg", ".png"))}
    if has_syncfs:  # then only the parent folder, after the swap
        assert synced == [str(tmp_path)]
    else:
        assert len(images) == len(keep)
        assert len(synced) >= len(keep) + rec.num_classes + 2  # files, folders, root, parent
    assert sorted(os.listdir(tmp_path)) == ["t"]


def test_sync_filesystem_flushes_or_says_it_cannot(tmp_path):
    from facenms.io import commit as atomic
    assert atomic.sync_filesystem(tmp_path) is sys.platform.startswith("linux")
    with pytest.raises(FileNotFoundError):
        atomic.sync_filesystem(tmp_path / "missing")


def test_cli_folder_export_replaces_a_tree_only_when_told(tmp_path, rec):
    np.save(tmp_path / "keep.npy", np.arange(3))
    run = [sys.executable, "-m", "facenms", "export", "--dataset", rec.rec_path, "--keep",
           str(tmp_path / "keep.npy"), "--format", "folder", "--mode", "copy", "--out",
           str(tmp_path / "tree")]
    assert subprocess.run(run, capture_output=True).returncode == 0
    again = subprocess.run(run, capture_output=True, text=True)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert "already exists" in again.stderr and "--overwrite" in again.stderr
    np.save(tmp_path / "keep.npy", np.arange(5))
    assert subprocess.run(run + ["--overwrite"], capture_output=True).returncode == 0
    assert len(open_dataset(tmp_path / "tree")) == 5


@pytest.fixture
def broken(tmp_path, folder):
    """A RecordIO dataset whose 5th image is garbage."""
    payloads = [folder.read_bytes(i) for i in range(len(folder))]
    payloads[4] = b"\0garbage\0"
    d = tmp_path / "broken"
    write_face_recordio(d / "train.rec", folder.labels, payloads, image_size=(12, 12))
    return open_dataset(d)


def test_failure_midway_leaves_no_output(tmp_path, broken):
    out = tmp_path / "out"
    keep = np.arange(len(broken))
    with pytest.raises(ValueError, match=r"broken/train\.rec record key 5: not a readable image"):
        export.write_recordio(out, broken, keep)
    with pytest.raises(ValueError, match="record key 5"):
        export.write_imagefolder(tmp_path / "a" / "tree", broken, keep)
    with pytest.raises(ValueError, match="record key 5"):
        export.write_recordio(tmp_path / "deep" / "er" / "x.rec", broken, keep)
    assert os.listdir(tmp_path) == ["broken"]  # no output, no temporaries, no new folders
    # a failed re-export keeps the previous, complete output in place
    export.write_recordio(out, broken, keep[:3])
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    with pytest.raises(ValueError):
        export.write_recordio(out, broken, keep)
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before


def test_insightface_float32_limit(tmp_path):
    with pytest.raises(ValueError, match="layout='im2rec'"):
        write_face_recordio(tmp_path / "x.rec", np.zeros(1 << 24, np.int64), iter(()))
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not os.environ.get("FACENMS_MXNET_PYTHON"),
                    reason="set FACENMS_MXNET_PYTHON to a python with mxnet 1.9.1")
def test_mxnet_reads_what_we_write(tmp_path):
    subprocess.run([sys.executable, os.path.join(HERE, "fixtures", "write_for_mxnet.py"),
                    str(tmp_path)], check=True)
    r = subprocess.run([os.environ["FACENMS_MXNET_PYTHON"],
                        os.path.join(HERE, "fixtures", "check_with_mxnet.py"), str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_progress_hook(tmp_path, folder):
    seen = []

    def progress(it):
        for i in it:
            seen.append(int(i))
            yield i
    export.write_recordio(tmp_path / "r", folder, [3, 1], progress=progress)
    assert seen == [1, 3]


KILLED_EXPORT = r"""
import sys, time
from facenms.pipeline import export
from facenms.data import open_dataset

ds, out, marker = open_dataset(sys.argv[1]), sys.argv[2], sys.argv[3]

def progress(it):
    for n, i in enumerate(it):
        if n == 3:
            open(marker, "w").close()
            time.sleep(60)  # killed here, mid-way through the images
        yield i

export.write_recordio(out, ds, list(range(len(ds))), progress=progress)
"""


def test_killed_export_leaves_no_final_output(tmp_path, folder):
    marker = tmp_path / "marker"
    env = child_env(threads=None)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_EXPORT, folder.root,
                             str(tmp_path / "out"), str(marker)], env=env)
    try:
        for _ in range(600):
            if marker.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.exists(), "the export never reached its fourth image"
    finally:
        proc.kill()
        proc.wait()
    # the export is built in a hidden sibling folder: nothing under the final name
    left = [f for f in os.listdir(tmp_path) if f != "marker"]
    assert left and all(f.startswith(".out.tmp-") for f in left), left
