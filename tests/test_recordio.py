"""RecordIO: against files written by mxnet 1.9.1 (tests/fixtures), round trips, bad input."""
import os
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from facenms.data import (IRHeader, RecordDataset, RecordIO, RecordIOWriter, open_dataset,
                          pack, unpack, write_face_recordio)
from facenms.data.recordio import MAGIC, encode_record

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
M = struct.pack("<I", MAGIC)


def expected(sub):
    with np.load(os.path.join(FIX, sub, "expected.npz")) as z:
        return {k: z[k] for k in z.files}


def frames(path):
    """(cflag, length) of every frame in a .rec file."""
    b = open(path, "rb").read()
    out, pos = [], 0
    while pos < len(b):
        magic, lrec = struct.unpack_from("<II", b, pos)
        assert magic == MAGIC
        n = lrec & ((1 << 29) - 1)
        out.append((lrec >> 29, n))
        pos += 8 + ((n + 3) & ~3)
    return out


@pytest.fixture
def copy_of(tmp_path):
    def make(sub):
        dst = tmp_path / sub
        shutil.copytree(os.path.join(FIX, sub), dst)
        return dst
    return make


# -- the mxnet-made fixtures ---------------------------------------------------------

def test_split_fixture_reads_back():
    exp = expected("split")
    rec = RecordIO(os.path.join(FIX, "split", "split.rec"))
    assert list(rec.keys) == list(exp["keys"])
    assert {c for c, _ in frames(rec.rec_path)} == {0, 1, 2, 3}  # mxnet really split them
    for k in exp["keys"]:
        assert rec.read(int(k)) == exp["rec_%d" % k].tobytes()


@pytest.mark.parametrize("sub,name", [("split", "split"), ("im2rec", "train"),
                                      ("insightface", "train")])
def test_writer_is_byte_identical_to_mxnet(tmp_path, sub, name):
    src = RecordIO(os.path.join(FIX, sub, name + ".rec"))
    with RecordIOWriter(tmp_path / "x.rec") as w:
        for k in src.keys:
            w.write(k, src.read(int(k)))
    for ext in (".rec", ".idx"):
        assert (tmp_path / ("x" + ext)).read_bytes() == \
            open(os.path.join(FIX, sub, name + ext), "rb").read()


def test_pack_matches_mxnet():
    rec = RecordIO(os.path.join(FIX, "im2rec", "train.rec"))
    for k in rec.keys:
        raw = rec.read(int(k))
        header, payload = unpack(raw)
        assert pack(header, payload) == raw


def test_insightface_fixture():
    exp = expected("insightface")
    ds = open_dataset(os.path.join(FIX, "insightface"))
    assert isinstance(ds, RecordDataset) and ds.layout == "insightface"
    assert len(ds) == 7 and ds.num_classes == 3 and ds.image_size == (8, 8)
    np.testing.assert_array_equal(ds.labels, exp["labels"])
    assert ds.labels.dtype == np.int64
    for i, k in enumerate(exp["keys"]):
        assert ds.name(i) == "rec:%d" % k
        assert ds.read_bytes(i) == exp["raw_%d" % k].tobytes()
        np.testing.assert_array_equal(ds.decode(i), exp["img_%d" % k])
    x, y = ds[3]
    assert x.dtype == torch.uint8 and x.shape == (3, 8, 8) and y == exp["labels"][3]
    np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), exp["img_4"])
    # the image with an array label: its header says label[0]
    assert ds.rec.read_header(4).label[0] == 1.0


def test_im2rec_fixture():
    exp = expected("im2rec")
    ds = open_dataset(os.path.join(FIX, "im2rec", "train.rec"))
    assert ds.layout == "im2rec" and ds.image_size is None
    np.testing.assert_array_equal(ds.labels, exp["labels"])
    assert ds.num_classes == 6  # max label + 1 without a property file
    for i, k in enumerate(exp["keys"]):
        assert ds.read_bytes(i) == exp["raw_%d" % k].tobytes()
        got = ds.decode(i).astype(int)
        tol = 60 if k == 2 else 0  # key 2 is a JPEG of noise: lossy
        assert np.abs(got - exp["img_%d" % k]).mean() <= tol
    # key 3's record is split inside its IRHeader (its id is the magic word)
    assert (1, 8) in frames(ds.rec_path)
    assert ds.rec.read_header(3).id == MAGIC
    assert open_dataset(os.path.join(FIX, "im2rec", "train.idx")).labels.tolist() == \
        exp["labels"].tolist()


# -- round trips -----------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from([b"", M, b"a", b"bb", b"ccc", b"dddd", M[:2],
                                          M[2:], b"\0", b"e" * 5001, b"f" * 40000]),
                         max_size=12).map(b"".join), max_size=6),
       st.randoms(use_true_random=False))
def test_writer_reader_round_trip(tmp_path_factory, records, rng):
    d = tmp_path_factory.mktemp("rt")
    with RecordIOWriter(d / "a.rec") as w:
        for k, r in enumerate(records):
            w.write(k * 3, r)
    rec = RecordIO(d / "a.rec")
    assert len(rec) == len(records)
    # any order: a read's first pread is sized by the record read before it
    for k in rng.sample(range(len(records)), len(records)) * 2:
        assert rec.read(k * 3) == records[k]
    size = os.path.getsize(d / "a.rec")
    assert size % 4 == 0 and size == sum(len(encode_record(r)) for r in records)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from([b"", M, b"a", b"bb", b"\0", b"e" * 37]), max_size=10).map(
    b"".join), st.sampled_from([0, 5, MAGIC, 2 ** 40]), st.sampled_from([0.0, 3.0, 2.0 ** 24]))
def test_write_image_is_write_of_pack(tmp_path_factory, payload, key, label):
    """The export's one-copy framing writes the bytes write(pack(...)) does, split records too."""
    d = tmp_path_factory.mktemp("wi")
    with RecordIOWriter(d / "a.rec") as w:
        w.write_image(key, label, payload)
    with RecordIOWriter(d / "b.rec") as w:
        w.write(key, pack(IRHeader(0, label, key, 0), payload))
    for ext in (".rec", ".idx"):
        assert (d / ("a" + ext)).read_bytes() == (d / ("b" + ext)).read_bytes()


def test_pack_unpack_round_trip():
    h, p = unpack(pack(IRHeader(0, 3.0, 7, 9), b"img"))
    assert (h.flag, h.label, h.id, h.id2, p) == (0, 3.0, 7, 9, b"img")
    h, p = unpack(pack(IRHeader(0, [1.5, 2, 3], 1, 2), b""))
    assert h.flag == 3 and h.label.tolist() == [1.5, 2, 3] and p == b""


@pytest.mark.parametrize("layout", ["insightface", "im2rec"])
def test_write_face_recordio_round_trip(tmp_path, layout):
    exp = expected("insightface")
    payloads = [exp["raw_%d" % k].tobytes() for k in exp["keys"]]
    write_face_recordio(tmp_path / "train.rec", exp["labels"], payloads, layout=layout)
    ds = open_dataset(tmp_path)
    assert ds.layout == layout and ds.num_classes == 3 and ds.image_size == (8, 8)
    np.testing.assert_array_equal(ds.labels, exp["labels"])
    assert [ds.read_bytes(i) for i in range(len(ds))] == payloads
    assert (tmp_path / "property").read_text() == "3,8,8"


def test_unsorted_keys_and_pickle(tmp_path):
    with RecordIOWriter(tmp_path / "u.rec") as w:
        for k in (5, 1, 9, 3):
            w.write(k, b"r%d" % k)
    rec = RecordIO(tmp_path / "u.rec")
    assert [rec.read(k) for k in (1, 3, 5, 9)] == [b"r1", b"r3", b"r5", b"r9"]
    with pytest.raises(KeyError, match="key 4"):
        rec.read(4)
    rec2 = pickle.loads(pickle.dumps(rec))  # an open handle does not travel
    assert rec2.read(9) == b"r9"


def test_dataloader_workers():
    ds = open_dataset(os.path.join(FIX, "insightface"))
    ds.decode(0)  # a handle opened in the parent must not be shared
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    xs, ys = zip(*loader)
    assert torch.cat(ys).tolist() == ds.labels.tolist()
    assert torch.equal(torch.cat(xs)[5], ds[5][0])


# -- bad input -------------------------------------------------------------------------

def test_bad_magic(copy_of):
    d = copy_of("im2rec")
    rec = RecordIO(d / "train.rec")
    off = rec.offset(2)
    b = bytearray((d / "train.rec").read_bytes())
    b[off:off + 4] = b"\1\2\3\4"
    (d / "train.rec").write_bytes(bytes(b))
    with pytest.raises(ValueError, match=r"train\.rec.*bad magic.*record key 2"):
        RecordIO(d / "train.rec").read(2)
    with pytest.raises(ValueError, match="bad magic"):
        open_dataset(d)  # opening reads every im2rec header


def test_truncated_record(copy_of):
    d = copy_of("im2rec")
    rec = RecordIO(d / "train.rec")
    with open(d / "train.rec", "r+b") as f:
        f.truncate(rec.offset(4) + 40)  # the last record, cut inside its image
    ds = open_dataset(d)  # its header is intact: the labels still read
    with pytest.raises(ValueError, match=r"train\.rec: truncated record key 4"):
        ds.read_bytes(4)


def test_truncated_split_record(copy_of):
    d = copy_of("split")
    rec = RecordIO(d / "split.rec")
    with open(d / "split.rec", "r+b") as f:
        f.truncate(rec.offset(14) + 20)  # inside key 14's second frame
    lines = (d / "split.idx").read_text().splitlines()
    (d / "split.idx").write_text("\n".join(lines[:5]) + "\n")  # keys 10..14
    with pytest.raises(ValueError, match="truncated record key 14"):
        RecordIO(d / "split.rec").read(14)


def test_idx_offset_past_end(copy_of):
    d = copy_of("im2rec")
    lines = (d / "train.idx").read_text().splitlines()
    lines[3] = "3\t999999"
    (d / "train.idx").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"train\.idx: record key 3 has offset 999999 past "
                                         r"the end of .*train\.rec"):
        open_dataset(d)


def test_malformed_and_missing_idx(copy_of):
    d = copy_of("im2rec")
    (d / "train.idx").write_text("0\t0\n1\tzz\n")
    with pytest.raises(ValueError, match=r"train\.idx: malformed index"):
        RecordIO(d / "train.rec")
    os.remove(d / "train.idx")
    with pytest.raises(FileNotFoundError, match=r"train\.idx"):
        RecordIO(d / "train.rec")


def test_missing_and_bad_property(copy_of):
    d = copy_of("insightface")
    os.remove(d / "property")
    assert open_dataset(d).num_classes == 3  # optional by default
    with pytest.raises(FileNotFoundError, match=r"insightface/property"):
        open_dataset(d, require_property=True)
    (d / "property").write_text("3;8;8")
    with pytest.raises(ValueError, match=r"property: expected `num_classes,h,w`"):
        open_dataset(d)
    (d / "property").write_text("2,8,8")
    with pytest.raises(ValueError, match="property says 2 classes"):
        open_dataset(d)


def test_image_fails_to_decode(tmp_path):
    exp = expected("insightface")
    payloads = [exp["raw_%d" % k].tobytes() for k in exp["keys"]]
    payloads[4] = b"not an image"
    write_face_recordio(tmp_path / "train.rec", exp["labels"], payloads, image_size=(8, 8))
    ds = open_dataset(tmp_path)
    ds.decode(3)
    with pytest.raises(ValueError, match=r"train\.rec record key 5: image fails to decode"):
        ds.decode(4)
    with pytest.raises(ValueError, match="record key 5"):
        ds[4]


def test_writer_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with RecordIOWriter(tmp_path / "x.rec") as w:
            w.write(0, b"abc")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="duplicate"):
        with RecordIOWriter(tmp_path / "x.rec") as w:
            w.write(0, b"abc")
            w.write(0, b"abc")
    assert os.listdir(tmp_path) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 12), max_size=10))
def test_writer_refuses_a_duplicate_key_in_any_order(tmp_path_factory, keys):
    d = tmp_path_factory.mktemp("dup")
    first_dup = next((j for j, k in enumerate(keys) if k in keys[:j]), None)
    w = RecordIOWriter(d / "a.rec")
    for j, k in enumerate(keys):
        if j == first_dup:
            with pytest.raises(ValueError, match="duplicate RecordIO key %d" % k):
                w.write(k, b"r%d" % k)
            w.abort()
            assert os.listdir(d) == []
            return
        w.write(k, b"r%d" % k)
    w.commit()
    rec = RecordIO(d / "a.rec")
    assert rec.keys.tolist() == keys and all(rec.read(k) == b"r%d" % k for k in keys)


def _images(n):
    exp = expected("insightface")
    return [exp["raw_%d" % k].tobytes() for k in exp["keys"]][:n]


def test_header_without_identity_records(tmp_path):
    # some converters write header [N+1, num_classes] and no identity records
    imgs, labels = _images(5), [0, 0, 2, 1, 1]
    with RecordIOWriter(tmp_path / "train.rec") as w:
        w.write(0, pack(IRHeader(0, [6, 3], 0, 0), b""))
        for k, (lab, img) in enumerate(zip(labels, imgs), 1):
            w.write(k, pack(IRHeader(0, lab, k, 0), img))
    ds = open_dataset(tmp_path)
    assert ds.layout == "insightface" and ds.labels.tolist() == labels
    assert ds.read_bytes(4) == imgs[4]


def test_identity_records_that_disagree_are_not_trusted(tmp_path):
    imgs, labels = _images(4), [0, 0, 1, 1]
    with RecordIOWriter(tmp_path / "train.rec") as w:
        w.write(0, pack(IRHeader(0, [5, 7], 0, 0), b""))
        for k, (lab, img) in enumerate(zip(labels, imgs), 1):
            w.write(k, pack(IRHeader(0, [lab, 9.0], k, 0), img))
        w.write(5, pack(IRHeader(0, [1, 2], 5, 0), b""))  # wrong: identity 0 has 2 images
        w.write(6, pack(IRHeader(0, [2, 5], 6, 0), b""))
    assert open_dataset(tmp_path).labels.tolist() == labels


def test_im2rec_whose_first_image_has_an_array_label(tmp_path):
    imgs = _images(3)
    with RecordIOWriter(tmp_path / "train.rec") as w:
        for k, img in enumerate(imgs):
            w.write(k, pack(IRHeader(0, [k + 1, 0.0], k, 0), img))
    ds = open_dataset(tmp_path / "train.rec")
    assert ds.layout == "im2rec" and ds.labels.tolist() == [1, 2, 3] and ds.num_classes == 4


def test_missing_image_key_and_bad_label(tmp_path):
    with RecordIOWriter(tmp_path / "train.rec") as w:
        w.write(0, pack(IRHeader(0, [4, 5], 0, 0), b""))
        w.write(1, pack(IRHeader(0, 0, 1, 0), b"x"))
        w.write(3, pack(IRHeader(0, 0, 3, 0), b"x"))
    with pytest.raises(ValueError, match=r"image keys 1\.\.3 but key 2 is not in .*train\.idx"):
        open_dataset(tmp_path)
    with RecordIOWriter(tmp_path / "b.rec") as w:
        w.write(0, pack(IRHeader(0, 1.5, 0, 0), b"x"))
    with pytest.raises(ValueError, match=r"b\.rec record key 0: label 1\.5 is not a non-negative"):
        open_dataset(tmp_path / "b.rec")
