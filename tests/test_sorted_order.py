"""A sorted feature file carries its order: after a copy, a rename, lost side files or
replaced labels, `facenms select` gives the right selection or refuses with one line,
never a wrong answer. A kill during the sort's commit leaves the old sort or the new."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import facenms
from facenms import cli
from facenms.scale.sort_features import dataset_order, sort_features

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def sorted_set(tmp_path):
    rng = np.random.default_rng(3)
    n = 600
    labels = rng.integers(0, 40, n)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    np.save(tmp_path / "f.npy", x)
    np.save(tmp_path / "l.npy", labels)
    out = tmp_path / "a" / "f.sorted.npy"
    cli.main(["sort-features", str(tmp_path / "f.npy"), str(out), "--labels",
              str(tmp_path / "l.npy")])
    want = facenms.select(x, labels, ratio=0.5)
    return tmp_path, x, labels, out, want


def select(features, labels, d):
    """Exit message (None on success) and the indices written."""
    keep = d / "keep.npy"
    if keep.exists():
        os.remove(keep)
    try:
        cli.main(["select", "--features", str(features), "--labels", str(labels), "--ratio",
                  "0.5", "--out", str(keep)])
    except SystemExit as e:
        assert not keep.exists()
        return str(e.code), None
    return None, np.load(keep)


def test_names_and_np_load(sorted_set):
    d, x, labels, out, _ = sorted_set
    assert sorted(os.listdir(out.parent)) == ["f.sorted.labels.npy", "f.sorted.npy",
                                              "f.sorted.perm.npy"]  # no X.sorted.sorted.json
    perm = np.load(out.parent / "f.sorted.perm.npy")
    np.testing.assert_array_equal(np.load(out), x[perm])  # numpy ignores the trailer
    np.testing.assert_array_equal(np.load(out, mmap_mode="r"), x[perm])
    np.testing.assert_array_equal(dataset_order(out).perm, perm)


def test_copied_renamed_or_stripped_of_its_side_files_still_right(sorted_set):
    d, x, labels, out, want = sorted_set
    cp = d / "elsewhere" / "copy.npy"
    cp.parent.mkdir()
    shutil.copy(out, cp)
    moved = d / "renamed.npy"
    shutil.copy(out, d / "tmp.npy")
    os.rename(d / "tmp.npy", moved)
    sorted_labels = out.parent / "f.sorted.labels.npy"
    shutil.copy(sorted_labels, d / "sl.npy")
    for p in out.parent.glob("f.sorted.*.npy"):
        os.remove(p)  # permutation and sorted labels gone
    for f in (out, cp, moved):
        for lab in (d / "l.npy", d / "sl.npy"):  # either order of labels
            err, keep = select(f, lab, d)
            assert err is None, err
            np.testing.assert_array_equal(keep, want)


@pytest.mark.parametrize("how", ["other labels", "a permutation of them", "one label changed"])
def test_replaced_labels_are_refused(sorted_set, how):
    d, x, labels, out, _ = sorted_set
    rng = np.random.default_rng(9)
    bad = {"other labels": rng.integers(0, 40, len(labels)),
           "a permutation of them": rng.permutation(labels),
           "one label changed": np.where(np.arange(len(labels)) == 7, labels + 1, labels)}[how]
    np.save(d / "l.npy", bad)
    err, _ = select(out, d / "l.npy", d)
    assert err.startswith("facenms select: error: %s: these labels are not the ones" % out)
    np.save(d / "k.npy", np.arange(10))
    with pytest.raises(SystemExit, match="these labels are not the ones"):
        cli.main(["report", "--features", str(out), "--labels", str(d / "l.npy"), "--keep",
                  str(d / "k.npy"), "--out", str(d / "rep")])


@pytest.mark.parametrize("damage", ["cut in the trailer", "cut in the perm", "flipped perm",
                                    "flipped json", "junk appended"])
def test_a_damaged_trailer_is_refused(sorted_set, damage):
    d, x, labels, out, _ = sorted_set
    raw = bytearray(out.read_bytes())
    data_end = 128 + x.nbytes
    if damage == "cut in the trailer":
        raw = raw[:-5]
    elif damage == "cut in the perm":
        raw = raw[:data_end + 100]
    elif damage == "flipped perm":
        raw[data_end + 8 * 5] ^= 1
    elif damage == "flipped json":
        at = bytes(raw).rindex(b'"perm_sha256": "') + 20
        raw[at] ^= 0x20
    else:
        raw += b"\0" * 16
    out.write_bytes(bytes(raw))
    err, _ = select(out, d / "l.npy", d)
    assert err is not None and err.startswith("facenms select: error: %s: " % out), err
    assert "\n" not in err


def test_an_older_sorts_manifest_is_not_trusted(sorted_set):
    d, x, labels, out, _ = sorted_set
    np.save(d / "old.npy", np.load(out))  # rows in sorted order, no trailer
    (d / "old.sorted.json").write_text('{"format": "facenms-sorted/1"}')
    err, _ = select(d / "old.npy", d / "l.npy", d)
    assert "sorted by an older facenms" in err


def test_sorting_a_sorted_file_keeps_dataset_positions(sorted_set):
    d, x, labels, out, want = sorted_set
    again = d / "again.npy"
    for lab in (d / "l.npy", out.parent / "f.sorted.labels.npy"):
        perm, _ = sort_features(str(out), str(lab), str(again))
        np.testing.assert_array_equal(np.load(again), x[perm])
        err, keep = select(again, d / "l.npy", d)
        assert err is None, err
        np.testing.assert_array_equal(keep, want)


def test_report_refuses_keep_out_of_range_on_a_sorted_file(sorted_set):
    d, x, labels, out, _ = sorted_set
    for bad in ([0, len(x)], [-1, 2], [3, 3]):
        np.save(d / "k.npy", np.array(bad))
        with pytest.raises(SystemExit) as e:
            cli.main(["report", "--features", str(out), "--labels", str(d / "l.npy"),
                      "--keep", str(d / "k.npy"), "--out", str(d / "rep")])
        assert str(e.value.code).startswith("facenms report: error: %s: " % (d / "k.npy"))
        assert not (d / "rep").exists()


KILL_AT_FIRST_RENAME = """
import os, sys
real = os.replace
def replace(a, b):
    real(a, b)
    if os.path.basename(b).startswith("f.sorted"):
        os._exit(9)  # killed between the renames of the commit
os.replace = replace
from facenms import cli
cli.main(sys.argv[1:])
"""


def test_a_kill_between_the_renames_is_finished_by_the_next_sort(sorted_set):
    d, x, labels, out, _ = sorted_set
    new_labels = np.random.default_rng(5).integers(0, 25, len(labels))
    np.save(d / "l2.npy", new_labels)
    r = subprocess.run([sys.executable, "-c", KILL_AT_FIRST_RENAME, "sort-features",
                        str(d / "f.npy"), str(out), "--labels", str(d / "l2.npy")],
                       env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    # half renamed: whatever file is there answers for itself (labels of the old sort
    # are refused on the new file, or the other way round), never a wrong selection
    for lab, lab_arr in ((d / "l.npy", labels), (d / "l2.npy", new_labels)):
        err, keep = select(out, lab, d)
        if err is None:
            np.testing.assert_array_equal(keep, facenms.select(x, lab_arr, ratio=0.5))
        else:
            assert "these labels are not the ones" in err
    # the next sort in that folder finishes the commit first, then sorts
    cli.main(["sort-features", str(d / "f.npy"), str(d / "a" / "other.npy"), "--labels",
              str(d / "l2.npy")])
    assert not [n for n in os.listdir(out.parent) if n.startswith(".")]
    perm = np.load(out.parent / "f.sorted.perm.npy")
    np.testing.assert_array_equal(perm, np.argsort(new_labels, kind="stable"))
    np.testing.assert_array_equal(np.load(out.parent / "f.sorted.labels.npy"), new_labels[perm])
    np.testing.assert_array_equal(dataset_order(out).perm, perm)


def test_an_unwritable_side_output_fails_before_the_copy(sorted_set, monkeypatch):
    d, x, labels, out, _ = sorted_set
    (d / "afile").write_text("x")
    read = []
    from facenms.scale import reader
    real = reader.Reader.read
    monkeypatch.setattr(reader.Reader, "read", lambda self, rows: read.append(1) or
                        real(self, rows))
    with pytest.raises(SystemExit) as e:
        cli.main(["sort-features", str(d / "f.npy"), str(d / "s.npy"), "--labels",
                  str(d / "l.npy"), "--perm-out", str(d / "afile" / "p.npy")])
    assert str(e.value.code).startswith("facenms sort-features: error: %s: "
                                        % (d / "afile" / "p.npy"))
    assert read == [] and not (d / "s.npy").exists()
    assert not [n for n in os.listdir(d) if n.startswith(".")]


def test_an_empty_file_sorts_and_selects(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((0, 4), np.float32))
    np.save(tmp_path / "l.npy", np.zeros(0, np.int64))
    cli.main(["sort-features", str(tmp_path / "f.npy"), str(tmp_path / "s.npy"), "--labels",
              str(tmp_path / "l.npy")])
    assert len(dataset_order(tmp_path / "s.npy").perm) == 0
    cli.main(["select", "--features", str(tmp_path / "s.npy"), "--labels",
              str(tmp_path / "l.npy"), "--threshold", "0.5", "--out", str(tmp_path / "k.npy")])
    assert len(np.load(tmp_path / "k.npy")) == 0
