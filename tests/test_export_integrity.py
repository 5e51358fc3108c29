"""Data integrity of exports: header labels, broken images, outputs over inputs, messages.

Each test builds real files and breaks them the way users' files break.
"""
import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from procs import child_env
from facenms.data import (IRHeader, RecordIO, RecordIOWriter, open_dataset, pack, read_property,
                          synthetic, unpack, write_face_recordio)
from facenms.data.base import check_image
from facenms.data.recdataset import labels_sidecar_path
from facenms.pipeline import export

KW = dict(num_identities=4, images_per_identity=(4, 5), size=12, seed=3)


def env():
    return child_env(threads=None)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "facenms"] + [str(a) for a in args],
                          capture_output=True, text=True, env=env())


def snapshot(d):
    return {os.path.relpath(os.path.join(a, f), d): open(os.path.join(a, f), "rb").read()
            for a, _, fs in os.walk(d) for f in fs}


def jpeg(seed=0, size=16):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def png(seed=0, size=16):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def png_bad_idat(seed=0):
    """A PNG whose chunks and CRCs are all valid but whose pixel stream is not zlib data."""
    data = bytearray(png(seed))
    pos = 8
    while True:
        n, t = struct.unpack_from(">I4s", data, pos)
        if t == b"IDAT":
            body = bytes([0x55]) * n
            data[pos + 8:pos + 8 + n] = body
            data[pos + 8 + n:pos + 12 + n] = struct.pack(">I", zlib.crc32(t + body))
            return bytes(data)
        pos += 12 + n


def rec_dataset(d, payloads, labels, layout="insightface", sidecar=False):
    write_face_recordio(d / "train.rec", labels, payloads, image_size=(16, 16), layout=layout,
                        labels_sidecar=sidecar)
    return d


@pytest.fixture
def faces():
    labels = np.repeat(np.arange(3), 4)
    return [jpeg(k) if k % 2 else png(k) for k in range(len(labels))], labels


# -- header labels -------------------------------------------------------------------

def swap_idx_offsets(d, a, b):
    lines = (d / "train.idx").read_text().splitlines()
    ka, oa = lines[a].split("\t")
    kb, ob = lines[b].split("\t")
    lines[a], lines[b] = ka + "\t" + ob, kb + "\t" + oa
    (d / "train.idx").write_text("\n".join(lines) + "\n")


def test_swapped_mid_identity_offsets_are_caught(tmp_path, faces):
    payloads, labels = faces
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2])
    d = rec_dataset(tmp_path / "d", payloads, labels)
    # keys 2 (identity 0, middle) and 6 (identity 1, middle): first and last images untouched
    swap_idx_offsets(d, 2, 6)
    ds = open_dataset(d)
    assert ds.labels_source == "identity records"
    with pytest.raises(ValueError, match=r"d/train\.rec record key 2: the image's header label "
                                         r"is 1\.0 but the dataset's label .* is 0"):
        ds.read_bytes(1)
    with pytest.raises(ValueError, match="record key 6"):
        ds[5]
    with pytest.raises(ValueError, match="record key 2"):
        export.write_recordio(tmp_path / "out", ds, np.arange(len(ds)))
    assert sorted(os.listdir(tmp_path)) == ["d"]


def test_edited_middle_header_label_is_caught(tmp_path, faces):
    payloads, labels = faces
    d = rec_dataset(tmp_path / "d", payloads, labels)
    r = RecordIO(d / "train.rec")
    pos = r.offset(6)  # identity 1's middle image: label 1.0 at byte 8 + 4
    r.close()
    with open(d / "train.rec", "r+b") as f:
        f.seek(pos + 8 + 4)
        f.write(struct.pack("<f", 2.0))
    ds = open_dataset(d)
    with pytest.raises(ValueError, match="record key 6: the image's header label is 2.0"):
        ds.decode(5)
    for i in (0, 4, 6, 11):
        ds.read_bytes(i)  # the others still read


def test_stale_labels_sidecar_is_ignored(tmp_path, faces):
    payloads, labels = faces
    d = rec_dataset(tmp_path / "d", payloads, labels, layout="im2rec", sidecar=True)
    assert open_dataset(d).labels_source == labels_sidecar_path(d / "train.rec")
    # another export's idx beside this sidecar: the CRC tie no longer holds
    rec_dataset(tmp_path / "e", payloads[::-1], labels[::-1], layout="im2rec")
    (d / "train.idx").write_bytes((tmp_path / "e/train.idx").read_bytes() + b"")
    (d / "train.rec").write_bytes((tmp_path / "e/train.rec").read_bytes())
    with pytest.warns(UserWarning, match="does not match"):
        ds = open_dataset(d)
    assert ds.labels_source == "image headers" and ds.labels.tolist() == labels[::-1].tolist()


# -- undecodable images --------------------------------------------------------------

BROKEN = {
    "truncated jpeg": (lambda: jpeg(1, 64)[:-200], "JPEG without its EOI marker"),
    "jpeg cut in headers": (lambda: jpeg(1)[:40], "JPEG segment .* runs past the end"),
    "truncated png": (lambda: png(2)[:-30], "PNG"),
    "png bad crc": (lambda: png(2)[:40] + bytes([png(2)[40] ^ 1]) + png(2)[41:], "fails its CRC"),
    "png without iend": (lambda: png(2)[:-12], "no IEND"),
    "garbage": (lambda: b"\0garbage\0" * 5, "not a readable image"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("fmt", ["recordio", "folder", "lst"])
def test_undecodable_image_fails_the_export(tmp_path, faces, case, fmt):
    payloads, labels = list(faces[0]), faces[1]
    make, msg = BROKEN[case]
    payloads[6] = make()
    d = rec_dataset(tmp_path / "d", payloads, labels)
    ds = open_dataset(d)
    out = tmp_path / ("out.lst" if fmt == "lst" else "out")
    writer = dict(recordio=export.write_recordio, folder=export.write_imagefolder,
                  lst=export.write_lst)[fmt]
    kw = {"rec_names": True} if fmt == "lst" else {}
    with pytest.raises(ValueError, match=r"d/train\.rec record key 7: .*" + msg):
        writer(out, ds, np.arange(len(ds)), **kw)
    assert sorted(os.listdir(tmp_path)) == ["d"]  # nothing committed, no temporaries
    writer(out, ds, [0, 1, 2], **kw)  # the good images still export


def test_verify_decode_catches_what_structure_cannot(tmp_path, faces):
    payloads, labels = list(faces[0]), faces[1]
    payloads[3] = png_bad_idat()
    check_image(payloads[3], "x")  # chunks and CRCs are fine
    ds = open_dataset(rec_dataset(tmp_path / "d", payloads, labels))
    export.write_recordio(tmp_path / "a", ds, np.arange(len(ds)))
    with pytest.raises(ValueError, match="record key 4: image fails to decode"):
        export.write_recordio(tmp_path / "b", ds, np.arange(len(ds)), verify="decode")
    assert not (tmp_path / "b").exists()
    keep = tmp_path / "keep.npy"
    np.save(keep, np.arange(len(ds)))
    r = cli("export", "--dataset", tmp_path / "d", "--keep", keep, "--out", tmp_path / "c",
            "--verify", "decode")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("facenms export: error: ") and "record key 4" in r.stderr


def test_cli_export_of_truncated_jpeg_exits_1(tmp_path, faces):
    payloads, labels = list(faces[0]), faces[1]
    payloads[1] = jpeg(5, 64)[:-100]
    rec_dataset(tmp_path / "d", payloads, labels)
    np.save(tmp_path / "keep.npy", np.arange(len(labels)))
    r = cli("export", "--dataset", tmp_path / "d", "--keep", tmp_path / "keep.npy",
            "--out", tmp_path / "out")
    assert r.returncode == 1 and "record key 2" in r.stderr and "EOI" in r.stderr, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["d", "keep.npy"]


# -- outputs over inputs -------------------------------------------------------------

@pytest.fixture
def recset(tmp_path, faces):
    d = rec_dataset(tmp_path / "D", *faces, sidecar=True)
    np.save(tmp_path / "keep.npy", np.arange(0, len(faces[1]), 2))
    return d


def over_input_cases(tmp_path):
    d = tmp_path / "D"
    os.link(tmp_path / "keep.npy", tmp_path / "keep-link.npy")
    os.symlink(d, tmp_path / "D-link")
    return [
        ("recordio", d), ("recordio", tmp_path / "D-link"), ("recordio", tmp_path),
        ("recordio", d / "train.rec"),
        ("recordio", tmp_path / "D" / ".." / "D"),
        ("lst", d / "train.idx"), ("lst", d / "train.rec"), ("lst", tmp_path / "keep.npy"),
        ("folder", d), ("folder", tmp_path),
        ("npy", tmp_path / "keep.npy"), ("npy", tmp_path / "keep-link.npy"),
        ("npy", d / "train.labels.npz"),
    ]


def test_outputs_never_replace_inputs(tmp_path, recset):
    keep = tmp_path / "keep.npy"
    ds = open_dataset(recset)
    cases = over_input_cases(tmp_path)
    before = snapshot(tmp_path)
    for fmt, out in cases:
        with pytest.raises(ValueError, match="the input"):
            if fmt == "npy":
                export.save_indices(out, np.load(keep), inputs=[keep], dataset=ds)
            else:
                writer = dict(recordio=export.write_recordio, folder=export.write_imagefolder,
                              lst=export.write_lst)[fmt]
                writer(out, ds, np.load(keep), inputs=[keep],
                       **({"overwrite": True} if fmt == "folder" else {}))
        assert snapshot(tmp_path) == before, (fmt, out)
    # the command line passes its inputs the same way and says it in one line
    for fmt, out in [("recordio", recset), ("npy", keep), ("lst", recset / "train.idx")]:
        r = cli("export", "--dataset", recset, "--keep", keep, "--format", fmt, "--out", out)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, (fmt, out, r.stderr)
        assert r.stderr.startswith("facenms export: error: ") and "the input" in r.stderr
    assert snapshot(tmp_path) == before
    # a fresh folder beside the input is fine
    r = cli("export", "--dataset", recset, "--keep", keep, "--out", tmp_path / "E")
    assert r.returncode == 0, r.stderr


def test_image_folder_outputs_never_inside_the_input(tmp_path):
    root = tmp_path / "img"
    synthetic.make_image_folder(root, **KW)
    ds = open_dataset(root)
    before = snapshot(tmp_path)
    for fmt, out in [("folder", root), ("folder", root / "core"), ("recordio", root / "core"),
                     ("recordio", root), ("lst", root / "id0" / "0.png"),
                     ("lst", root / "core.lst"), ("folder", tmp_path)]:
        writer = dict(recordio=export.write_recordio, folder=export.write_imagefolder,
                      lst=export.write_lst)[fmt]
        with pytest.raises(ValueError, match="input"):
            writer(out, ds, [0, 1], **({"overwrite": True} if fmt == "folder" else {}))
        assert snapshot(tmp_path) == before, (fmt, out)


# -- RecordIO and open messages ------------------------------------------------------

def test_open_messages(tmp_path, faces):
    d = rec_dataset(tmp_path / "d", *faces)
    with pytest.raises(FileNotFoundError, match="dataset .*nope not found"):
        open_dataset(tmp_path / "nope")
    (d / "train.idx").write_text("")
    with pytest.raises(ValueError, match=r"train\.idx: the RecordIO index is empty .*facenms "
                                         r"index"):
        open_dataset(d)
    os.remove(d / "train.rec")
    with pytest.raises(FileNotFoundError, match=r"has train\.idx but no train\.rec.*d/train\.rec"):
        open_dataset(d)


def test_missing_idx_points_to_facenms_index(tmp_path, faces):
    d = rec_dataset(tmp_path / "d", *faces)
    os.remove(d / "train.idx")
    with pytest.raises(FileNotFoundError, match=r"facenms index .*d/train\.rec"):
        open_dataset(d)


def test_header_with_an_absurd_range(tmp_path, faces):
    d = tmp_path / "d"
    with RecordIOWriter(d / "train.rec") as w:
        w.write(0, pack(IRHeader(2, [2.0 ** 36, 2.0 ** 36 + 5], 0, 0), b""))
        w.write(1, pack(IRHeader(0, 0.0, 1, 0), faces[0][0]))
    with pytest.raises(ValueError, match=r"keys 1\.\.68719476735, but .* lists only 2 records"):
        open_dataset(d)


def test_multi_line_property(tmp_path, faces):
    d = rec_dataset(tmp_path / "d", *faces)
    for text in ("3,16,16\n12\n", "3,16,16\n12", "3,16,16\n0\n1\n2\n", "3,16,16"):
        (d / "property").write_text(text)
        assert read_property(d) == (3, 16, 16)
        assert open_dataset(d, require_property=True).num_classes == 3
    (d / "property").write_text("12\n3,16,16\n")
    with pytest.raises(ValueError, match="first line, got '12'"):
        read_property(d)


# -- facenms index -------------------------------------------------------------------

def test_facenms_index_rebuilds_the_idx(tmp_path, faces):
    d = rec_dataset(tmp_path / "d", *faces, layout="im2rec")
    magic = struct.pack("<I", 0xCED7230A)
    # records 0..n-1 plus two that mxnet's writer splits (the magic word inside)
    with RecordIOWriter(d / "x.rec") as w:
        records = [unpack(open_dataset(d).rec.read(k))[1] for k in range(12)]
        records += [b"abcd" + magic + b"efgh", magic + magic + b"xy"]
        for k, r in enumerate(records):
            w.write(k, r)
    want = (d / "x.idx").read_bytes()
    os.remove(d / "x.idx")
    r = cli("index", d / "x.rec")
    assert r.returncode == 0 and "14 records" in r.stdout, r.stderr
    assert (d / "x.idx").read_bytes() == want
    assert [RecordIO(d / "x.rec").read(k) for k in range(14)] == records
    r = cli("index", d / "x.rec")
    assert r.returncode == 1 and "already exists; pass --force" in r.stderr
    # the rebuilt index of a dataset file opens as the dataset
    want = (d / "train.idx").read_bytes()
    os.remove(d / "train.idx")
    assert cli("index", d / "train.rec").returncode == 0
    assert (d / "train.idx").read_bytes() == want
    assert open_dataset(d).labels.tolist() == faces[1].tolist()
    # a cut file is refused, naming the byte; no .idx is left
    data = (d / "train.rec").read_bytes()
    (d / "cut.rec").write_bytes(data[:-10])
    r = cli("index", d / "cut.rec")
    assert r.returncode == 1 and "truncated record at byte" in r.stderr, r.stderr
    assert not (d / "cut.idx").exists()
    pos = RecordIO(d / "train.rec").offset(3)
    (d / "bad.rec").write_bytes(data[:pos] + b"\1\2\3\4" + data[pos + 4:])
    r = cli("index", d / "bad.rec")
    assert r.returncode == 1 and "bad magic 0x04030201 at byte %d" % pos in r.stderr, r.stderr


def _jpeg(seed, size=24, quality=90):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8)).save(
        buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _walk_everything(data):
    """check_image's JPEG verdict without the remembered header: the whole walk each time."""
    from facenms.data import base
    saved = base._known_header[0]
    base._known_header[0] = b""
    try:
        return base._check_jpeg(data)
    finally:
        base._known_header[0] = saved


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["whole", "cut", "flip", "pad"]),
                          st.integers(0, 10 ** 6), st.integers(0, 255)), min_size=1, max_size=8))
def test_jpeg_header_shortcut_gives_the_walk_verdict(images):
    """Images sharing an encoder's headers skip the walk: the verdict is the walk's for any
    sequence of whole, truncated, flipped and padded JPEGs of two sizes and qualities."""
    from facenms.data import base
    for seed, how, at, byte in images:
        data = bytearray(_jpeg(seed % 2, size=16 if seed < 2 else 24, quality=90 if seed else 70))
        at %= len(data)
        if how == "cut":
            data = data[:at]
        elif how == "flip":
            data[at] = byte
        elif how == "pad":
            data += b"\0" * (at % 7)
        data = bytes(data)
        assert base._check_jpeg(data) == _walk_everything(data), (how, at, byte)
