"""Out-of-core, sorted-file and multi-process selection equal the in-memory one."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from procs import child_env
import facenms
from facenms import cli
from facenms.scale import blocks as streaming, reader
from facenms.scale.dist import split_identities
from facenms.scale.sort_features import sort_features
from facenms.eval.embeddings import webface_like

HERE = os.path.dirname(os.path.abspath(__file__))


def _shuffled(n, tmp):
    x, labels = webface_like(n, dim=16, seed=7)
    perm = np.random.default_rng(0).permutation(len(x))
    x, labels = x[perm].astype(np.float16), labels[perm] * 3 - 50  # odd label values
    np.save(tmp / "f.npy", x)
    np.save(tmp / "l.npy", labels)
    return x, labels, str(tmp / "f.npy"), str(tmp / "l.npy")


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory):
    """fp16 WebFace-like faces in random order, in memory and as a .npy file, and the
    in-memory answers. Over 200k faces, so that the ratio search samples."""
    x, labels, path, lpath = _shuffled(210_000, tmp_path_factory.mktemp("big"))
    want = {"threshold": facenms.select(x, labels, threshold=0.7),
            "ratio": facenms.select(x, labels, ratio=0.6, return_info=True)}
    return x, labels, path, lpath, want


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _shuffled(30_000, tmp_path_factory.mktemp("small"))


def test_memory_mapped_equals_in_memory_ratio(shuffled):
    x, labels, path, _, want = shuffled
    keep, info = want["ratio"]
    got, got_info = facenms.select(np.load(path, mmap_mode="r"), labels, ratio=0.6,
                                   return_info=True, block_size=40_000)
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, keep)
    np.testing.assert_array_equal(got_info.kept_per_identity, info.kept_per_identity)
    assert got_info.threshold == info.threshold and got_info.passes == info.passes


@pytest.mark.parametrize("kw", [dict(threshold=0.7), dict(ratio=0.6),
                                dict(ratio=0.5, per_identity=True, min_per_identity=2)],
                         ids=["threshold", "ratio", "per_identity"])
def test_memory_mapped_equals_in_memory(small, kw):
    x, labels, path, _ = small
    want, info = facenms.select(x, labels, return_info=True, **kw)
    got, got_info = facenms.select(np.load(path, mmap_mode="r"), labels, return_info=True,
                                   block_size=5_000, **kw)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_info.kept_per_identity, info.kept_per_identity)
    assert got_info.threshold == info.threshold and got_info.passes == info.passes
    if info.thresholds is not None:
        np.testing.assert_array_equal(got_info.thresholds, info.thresholds)


def test_other_ranks_paths_and_tiny_blocks(small):
    x, labels, path, lpath = small
    part = np.isin(labels, np.unique(labels)[:150])
    xs, ls = np.ascontiguousarray(x[part]), labels[part]
    scores = np.arange(len(xs)) % 5 * 1.0  # ties: the smaller index first
    for kw in (dict(threshold=0.6, rank="random", seed=3), dict(ratio=0.6, scores=scores),
               dict(threshold=0.8, rank="centrality", min_per_identity=3)):
        want = facenms.select(xs, ls, **kw)
        for bs in (1, 50):  # a block smaller than an identity holds that identity
            np.testing.assert_array_equal(facenms.select(xs, ls, block_size=bs, **kw), want)
    np.testing.assert_array_equal(facenms.select(path, lpath, threshold=0.7),
                                  facenms.select(x, labels, threshold=0.7))


def test_max_memory_streams_only_when_exceeded():
    x = np.zeros((10, 4), np.float32)
    assert not streaming.should_stream(x, max_memory=1000)
    assert streaming.should_stream(x, max_memory=100)
    assert streaming.should_stream(x, block_size=3)
    assert not streaming.should_stream(x, distributed=False)
    assert streaming.block_rows(512, 2, max_memory=1 << 20) == 512
    with pytest.raises(ValueError, match="block_size"):
        facenms.select(x + 1, np.zeros(10, np.int64), threshold=0.5, block_size=0)


def test_bad_rows_are_reported_in_caller_order_across_blocks(tmp_path):
    x = np.ones((12, 3), np.float32)
    labels = np.array([5, 4, 3, 2, 1, 0] * 2)
    x[9] = 0  # identity 2, an early block
    x[4, 1] = np.nan  # identity 1
    np.save(tmp_path / "f.npy", x)
    for bs in (2, 100):
        with pytest.raises(ValueError, match="row 4 has a non-finite"):
            facenms.select(str(tmp_path / "f.npy"), labels, threshold=0.5, block_size=bs)
    with pytest.raises(ValueError, match="row 4 has zero norm"):  # row 9 of x
        facenms.select(x[5:], labels[5:], ratio=0.5, block_size=2)
    with pytest.raises(FileNotFoundError, match="file not found"):
        facenms.select(str(tmp_path / "nope.npy"), labels, threshold=0.5)


def test_sort_features_and_select_on_the_sorted_file(small, tmp_path):
    x, labels, path, lpath = small
    out = str(tmp_path / "sorted.npy")
    cli.main(["sort-features", path, out, "--labels", lpath, "--block-size", "7000"])
    xs = np.load(out, mmap_mode="r")
    perm = np.load(str(tmp_path / "sorted.perm.npy"))
    ls = np.load(str(tmp_path / "sorted.labels.npy"))
    np.testing.assert_array_equal(xs, x[perm])
    np.testing.assert_array_equal(ls, labels[perm])
    assert np.all(np.diff(ls) >= 0)
    assert sorted(os.listdir(tmp_path)) == ["sorted.labels.npy", "sorted.npy", "sorted.perm.npy"]
    keep = facenms.select(xs, ls, ratio=0.6)
    np.testing.assert_array_equal(np.sort(perm[keep]), facenms.select(x, labels, ratio=0.6))
    with pytest.raises(ValueError, match="one label per face"):
        sort_features(path, labels[:-1], str(tmp_path / "bad.npy"))
    with pytest.raises(ValueError, match="the output is the input"):
        sort_features(out, ls, out)
    with pytest.raises(ValueError, match="the output is the input"):
        sort_features(path, lpath, str(tmp_path / "other.npy"), perm_out=path)
    assert not os.path.exists(tmp_path / "bad.npy")


def test_select_on_a_sorted_file_writes_dataset_positions(small, tmp_path):
    x, labels, path, lpath = small
    out = str(tmp_path / "sorted.npy")
    cli.main(["sort-features", path, out, "--labels", lpath])
    want = facenms.select(x, labels, ratio=0.6)
    for given in (lpath, str(tmp_path / "sorted.labels.npy")):  # either order of labels
        cli.main(["select", "--features", out, "--labels", given, "--ratio", "0.6",
                  "--out", str(tmp_path / "keep.npy")])
        np.testing.assert_array_equal(np.load(tmp_path / "keep.npy"), want)
    # the side files replaced or lost: the file carries its own order
    np.save(tmp_path / "sorted.perm.npy", np.arange(len(x)))
    os.remove(tmp_path / "sorted.labels.npy")
    cli.main(["select", "--features", out, "--labels", lpath, "--ratio", "0.6",
              "--out", str(tmp_path / "keep.npy")])
    np.testing.assert_array_equal(np.load(tmp_path / "keep.npy"), want)


def test_select_refuses_to_write_over_its_inputs(small, tmp_path):
    x, labels, path, lpath = small
    link = str(tmp_path / "link.npy")
    os.link(lpath, link)
    for out in (path, lpath, link):
        with pytest.raises(SystemExit, match="the output is the input"):
            cli.main(["select", "--features", path, "--labels", lpath, "--ratio", "0.6",
                      "--out", out])
    np.testing.assert_array_equal(np.load(lpath), labels)


def test_cli_select_streams(small, tmp_path, capsys):
    x, labels, path, lpath = small
    out = str(tmp_path / "keep.npy")
    cli.main(["select", "--features", path, "--labels", lpath, "--threshold", "0.7",
              "--max-memory", "200K", "--out", out])
    np.testing.assert_array_equal(np.load(out), facenms.select(x, labels, threshold=0.7))
    with pytest.raises(SystemExit, match="not a size"):
        cli.main(["select", "--features", path, "--labels", lpath, "--threshold", "0.7",
                  "--max-memory", "lots", "--out", out])


def test_split_identities_balances_squares():
    sizes = np.array([1, 1, 1, 1, 100, 1, 1, 50, 50, 1])
    b = split_identities(sizes, 2)
    assert b[0] == 0 and b[-1] == len(sizes) and list(b) == sorted(b)
    assert b[1] == 5  # 100^2 alone against 2 * 50^2 + small ones
    assert list(split_identities(sizes, 20)) == sorted(split_identities(sizes, 20))
    assert list(split_identities(np.zeros(0), 3)) == [0, 0, 0, 0]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_torchrun_equals_one_process(shuffled, tmp_path):
    x, labels, path, lpath, want = shuffled
    out = str(tmp_path / "dist.npz")
    env = child_env()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", "--master_port=%d" % _free_port(),
           os.path.join(HERE, "dist_select.py"), path, lpath, out]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = np.load(out)
    np.testing.assert_array_equal(got["threshold"], want["threshold"])
    np.testing.assert_array_equal(np.load(out + ".cli.npy"), want["threshold"])
    assert proc.stdout.count("facenms select:") == 1  # only rank 0 reports
    keep, info = want["ratio"]
    np.testing.assert_array_equal(got["ratio"], keep)
    np.testing.assert_array_equal(got["ratio_in_memory"], keep)
    np.testing.assert_array_equal(got["ratio_kept_per_identity"], info.kept_per_identity)
    part = np.isin(labels, np.unique(labels)[:2000])
    np.testing.assert_array_equal(
        got["per_identity"],
        np.flatnonzero(part)[facenms.select(x[part], labels[part], ratio=0.5, per_identity=True,
                                            min_per_identity=2)])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2999), max_size=400, unique=True), st.integers(2, 5),
       st.integers(1, 20000))
def test_reader_lanes_read_the_same_rows(tmp_path_factory, rows, lanes, split):
    """A block split over parallel preads (pieces cut inside runs) reads what one pread does."""
    d = tmp_path_factory.mktemp("lanes")
    a = np.random.default_rng(len(rows)).standard_normal((3000, 5)).astype(np.float32)
    np.save(d / "a.npy", a)
    mm = np.load(d / "a.npy", mmap_mode="r")
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    old = reader.SPLIT_BYTES
    reader.SPLIT_BYTES = split
    try:
        r = reader.Reader(mm, lanes=lanes)
        assert r.file is not None
        np.testing.assert_array_equal(r.read(rows), a[rows])
    finally:
        reader.SPLIT_BYTES = old


def test_read_lanes_by_core_count():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [reader.read_lanes(cpu, c) for c in (1, 2, 8, 16, 32, 64, 128)] == \
        [1, 1, 1, 1, 2, 4, 4]
    assert [reader.read_lanes(cuda, c) for c in (1, 2, 8, 16, 64)] == [1, 1, 2, 4, 4]


def test_reader_reads_views_of_memory_maps(tmp_path):
    a = np.random.default_rng(0).standard_normal((3000, 7)).astype(np.float16)
    np.save(tmp_path / "a.npy", a)
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    raw = np.memmap(tmp_path / "a.npy", dtype=np.float16, mode="r", offset=128, shape=a.shape)
    rows = np.concatenate([np.arange(10, 900), np.arange(1000, 1400)])
    scattered = np.arange(3, 1400, 3)
    for arr, ref in ((mm, a), (mm[100:], a[100:]), (mm[::2], a[::2]), (mm[:, :5], a[:, :5]),
                     (raw[7:], a[7:])):
        for r in (rows, scattered):
            np.testing.assert_array_equal(reader.Reader(arr).read(r), ref[r])
