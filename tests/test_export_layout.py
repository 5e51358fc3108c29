"""The default export (im2rec layout), --shuffle, the labels sidecar, .bin files and the config."""
import os
import subprocess
import sys

import numpy as np
import pytest

from procs import child_env
from facenms.data import RecordIO, open_dataset, synthetic, unpack
from facenms.data.recdataset import labels_sidecar_path
from facenms.eval.verification import load_bin, write_bin
from facenms.pipeline import export



@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """An insightface-layout dataset as insightface ships it, verification files beside it."""
    d = tmp_path_factory.mktemp("src") / "ms1m"
    synthetic.make_recordio(d, num_identities=6, images_per_identity=(2, 5), size=12, seed=4)
    os.remove(labels_sidecar_path(d / "train.rec"))  # insightface's own files have none
    rng = np.random.default_rng(1)
    for name in ("lfw", "agedb_30"):
        write_bin(d / (name + ".bin"), rng.integers(0, 256, (4, 12, 12, 3), np.uint8),
                  [True, False])
    return d


def records(d):
    r = RecordIO(os.path.join(d, "train.rec"))
    return [(int(k),) + tuple(unpack(r.read(int(k)))) for k in r.keys]


def test_default_is_im2rec_dense_and_grouped(tmp_path, src):
    ds = open_dataset(src)
    keep = np.flatnonzero(ds.labels != 2)[::-1].copy()
    res = export.write_recordio(tmp_path / "core", ds, keep)
    recs = records(tmp_path / "core")
    order = np.sort(keep)
    old = np.unique(ds.labels[order])
    assert [k for k, _, _ in recs] == list(range(len(keep)))  # keys 0..n-1, in file order
    assert [int(h.label) for _, h, _ in recs] == np.searchsorted(old, ds.labels[order]).tolist()
    assert all(h.flag == 0 and h.id == k for k, h, _ in recs)
    assert [p for _, _, p in recs] == [ds.read_bytes(int(i)) for i in order]
    assert (res["num_classes"], res["num_image"]) == (len(old), len(keep))
    back = open_dataset(tmp_path / "core", require_property=True)
    assert back.layout == "im2rec" and back.labels_source == res["labels"]
    assert back.num_classes == len(old)


def test_shuffle_is_seeded_and_dense(tmp_path, src):
    ds = open_dataset(src)
    keep = np.arange(len(ds))
    a = export.write_recordio(tmp_path / "a", ds, keep, shuffle=True, seed=7)
    export.write_recordio(tmp_path / "b", ds, keep, shuffle=True, seed=7)
    export.write_recordio(tmp_path / "c", ds, keep, shuffle=True, seed=8)
    ra, rb, rc = (records(tmp_path / x) for x in "abc")
    assert ra == rb and ra != rc
    labels = [int(h.label) for _, h, _ in ra]
    assert [k for k, _, _ in ra] == list(range(len(ds)))
    assert labels != sorted(labels) and sorted(labels) == sorted(ds.labels.tolist())
    # each record is still its face: the payload goes with its own label
    pairs = sorted((int(h.label), p) for _, h, p in ra)
    assert pairs == sorted((int(ds.labels[i]), ds.read_bytes(i)) for i in range(len(ds)))
    assert open_dataset(tmp_path / "a").labels.tolist() == labels
    assert a["num_image"] == len(ds)
    with pytest.raises(ValueError, match="shuffle needs layout='im2rec'"):
        export.write_recordio(tmp_path / "d", ds, keep, layout="insightface", shuffle=True)


def test_labels_sidecar_avoids_the_header_scan_and_is_checked(tmp_path, src):
    ds = open_dataset(src)
    export.write_recordio(tmp_path / "core", ds, np.arange(len(ds)))
    d = tmp_path / "core"
    assert open_dataset(d).labels_source.endswith("train.labels.npz")
    # an .idx rewritten for other records: the sidecar is detected stale
    lines = (d / "train.idx").read_text().splitlines()
    (d / "train.idx").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.warns(UserWarning, match="does not match"):
        back = open_dataset(d)
    assert back.labels_source == "image headers" and len(back) == len(ds) - 1


def test_bins_copied_and_arcface_config(tmp_path, src):
    ds = open_dataset(src)
    res = export.write_recordio(tmp_path / "core", ds, np.arange(0, len(ds), 2))
    d = tmp_path / "core"
    assert sorted(f for f in os.listdir(d) if f.endswith(".bin")) == ["agedb_30.bin", "lfw.bin"]
    for name in ("lfw", "agedb_30"):
        assert (d / (name + ".bin")).read_bytes() == (src / (name + ".bin")).read_bytes()
        got, same = load_bin(d / (name + ".bin"))
        want, want_same = load_bin(src / (name + ".bin"))
        assert (got == want).all() and list(same) == list(want_same)
    ns = {}
    text = (d / "arcface_config.py").read_text()
    exec(text.replace("from easydict import EasyDict as edict",
                      "edict = type('E', (dict,), {'__getattr__': dict.__getitem__, "
                      "'__setattr__': dict.__setitem__})"), ns)
    cfg = ns["config"]
    assert cfg.rec == str(d) and cfg.num_classes == res["num_classes"]
    assert cfg.num_image == res["num_image"] == len(np.arange(0, len(ds), 2))
    assert cfg.val_targets == ["agedb_30", "lfw"]
    # a re-export replaces the export's own files and keeps a user's file beside them
    (d / "notes.txt").write_text("mine")
    export.write_recordio(tmp_path / "core", ds, [0, 1], copy_bins=False)
    assert sorted(os.listdir(d)) == ["arcface_config.py", "label_map.npy", "notes.txt",
                                     "property", "train.idx", "train.labels.npz", "train.rec"]


def test_cli_prints_num_classes_and_num_image(tmp_path, src):
    np.save(tmp_path / "keep.npy", np.arange(5))
    env = child_env(threads=None)
    r = subprocess.run([sys.executable, "-m", "facenms", "export", "--dataset", str(src),
                        "--keep", str(tmp_path / "keep.npy"), "--out", str(tmp_path / "core"),
                        "--shuffle"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    n_cls = len(np.unique(open_dataset(src).labels[:5]))
    assert "num_classes = %d\nnum_image = 5\n" % n_cls in r.stdout
    assert "arcface_torch config: %s" % (tmp_path / "core" / "arcface_config.py") in r.stdout


def test_a_folder_of_folders_is_not_replaced(tmp_path, src):
    d = tmp_path / "data"
    (d / "ms1m").mkdir(parents=True)
    (d / "ms1m" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="holds folders .*ms1m.*not a RecordIO export"):
        export.write_recordio(d, open_dataset(src), [0, 1])
    assert sorted(os.listdir(tmp_path)) == ["data"] and os.listdir(d) == ["ms1m"]
