"""A resumed extraction checks what is on disk before trusting it: flipped
bytes, forged done marks and truncated partial files are redone, and the
result is byte-identical to an uninterrupted run."""
import os

import numpy as np
import pytest
import torch

import tinyfaces
from pipeline_worker import tiny_model
from facenms.cli import main as cli
from facenms.pipeline import runtime as rt
from facenms.pipeline.extract import MARK, batches_done, extract

BS = 4  # 48 faces -> 12 batches

pytestmark = pytest.mark.usefixtures("one_thread")  # every test and module fixture


@pytest.fixture(scope="module")
def ds(tiny_faces):
    return tiny_faces


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def reference(ds, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "features.npy"
    extract(ds, model, out, batch_size=BS, workers=0, progress=False)
    return out.read_bytes()


def crashed(ds, model, out, batches=5, **kw):
    """A partial extraction: `batches` batches done, then a crash."""
    crashing = tinyfaces.Crashing(ds, after=1 + batches * BS)  # 1: the first face, read ahead
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract(crashing, model, out, batch_size=BS, workers=0, progress=False,
                sync_every=0.0, **kw)
    assert batches_done(str(out) + ".progress").sum() == batches
    return str(out) + ".partial", str(out) + ".progress"


def resume(ds, model, out, capsys):
    extract(ds, model, out, batch_size=BS, workers=0, progress=False)
    return capsys.readouterr()


def test_flipped_bytes_in_a_done_batch_are_redone(ds, model, reference, tmp_path, capsys):
    out = tmp_path / "features.npy"
    partial, _ = crashed(ds, model, out)
    rows = np.lib.format.open_memmap(partial, mode="r+")
    rows[BS + 1, 3] = -rows[BS + 1, 3] + 1  # a byte flip inside batch 1
    rows.flush()
    del rows
    r = resume(ds, model, out, capsys)
    assert "1 batch of %s marked done fail their checksum (batch 1)" % partial in r.err
    assert "resumed with 4 of 12 batches done" in r.out
    assert out.read_bytes() == reference


def test_forged_done_marks_are_redone(ds, model, reference, tmp_path, capsys):
    out = tmp_path / "features.npy"
    _, progress = crashed(ds, model, out)
    marks = bytearray(open(progress, "rb").read())
    marks[8 * MARK.size:9 * MARK.size] = marks[0:MARK.size]  # batch 8 "done" like batch 0
    marks[9 * MARK.size:10 * MARK.size] = MARK.pack(b"done", 0)
    open(progress, "wb").write(bytes(marks))
    assert batches_done(progress).sum() == 7
    r = resume(ds, model, out, capsys)
    assert "2 batches of" in r.err and "(batch 8, 9)" in r.err
    assert "resumed with 5 of 12 batches done" in r.out
    assert out.read_bytes() == reference


@pytest.mark.parametrize("damage", ["truncated", "no header", "old progress"])
def test_damaged_partial_file_starts_afresh(ds, model, reference, tmp_path, capsys, damage):
    out = tmp_path / "features.npy"
    partial, progress = crashed(ds, model, out)
    if damage == "truncated":
        os.truncate(partial, os.path.getsize(partial) // 2)
    elif damage == "no header":
        open(partial, "r+b").write(b"\0" * 16)
    else:  # facenms-features/1 kept one byte per batch
        open(progress, "wb").write(b"\1" * 5 + b"\0" * 7)
    r = resume(ds, model, out, capsys)
    assert ("%s is" % partial if damage == "truncated" else partial) in r.err
    assert "starting afresh" in r.err and "resumed" not in r.out
    assert out.read_bytes() == reference


@pytest.mark.parametrize("change", [dict(channel_order="bgr"), dict(mean=127.0),
                                    dict(std=(127.5, 127.5, 128.0))])
def test_resume_with_other_preprocessing_is_refused(ds, model, tmp_path, change):
    out = tmp_path / "features.npy"
    crashed(ds, model, out)
    key = next(iter(change))
    with pytest.raises(ValueError, match="other settings .*%s" % key):
        extract(ds, model, out, batch_size=BS, workers=0, progress=False, **change)
    # the same settings spelled per channel are the same settings
    extract(ds, model, out, batch_size=BS, workers=0, progress=False, mean=[127.5] * 3,
            channel_order="rgb")


@pytest.mark.parametrize("size", [0, -5, 2.5, True])
def test_bad_input_size(ds, model, tmp_path, size):
    with pytest.raises(ValueError, match="input_size must be a positive integer"):
        extract(ds, model, tmp_path / "f.npy", input_size=size, workers=0, progress=False)


@pytest.mark.parametrize("arg", ["0", "-5", "x"])
def test_cli_bad_input_size(arg, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli(["extract", "--dataset", "d", "--model", "m", "--out", str(tmp_path / "f.npy"),
             "--input-size", arg])
    assert e.value.code == 2
    assert "--input-size: must be a positive integer" in capsys.readouterr().err


def test_bad_mean_std_channel_order(ds, model, tmp_path):
    for kw, msg in ((dict(mean=(1, 2)), "mean must be one number or 3"),
                    (dict(std=0), "std must be > 0"),
                    (dict(channel_order="BGRA"), "channel_order must be")):
        with pytest.raises(ValueError, match=msg):
            extract(ds, model, tmp_path / "f.npy", workers=0, progress=False, **kw)


class Inf(torch.nn.Module):
    """Finite embeddings except for face 5's."""

    def forward(self, x):
        e = x.mean((2, 3)).repeat(1, 3)
        return torch.where(x[:, :1, 0, 0] == x[5:6, :1, 0, 0], float("inf"), e) \
            if len(x) > 5 else e


def test_non_finite_embedding_names_the_face(ds, tmp_path):
    with pytest.raises(ValueError, match="non-finite embedding for face 5 "):
        extract(ds, Inf(), tmp_path / "f.npy", batch_size=8, workers=0, progress=False)


def test_identical_across_worker_counts(ds, model, reference, tmp_path):
    for workers in (1, 2):
        out = tmp_path / ("w%d.npy" % workers)
        extract(ds, model, out, batch_size=BS, workers=workers, progress=False,
                labels_path=tmp_path / "l.npy")
        assert out.read_bytes() == reference


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_identical_with_and_without_pinned_memory(ds, model, tmp_path):
    outs = []
    for pin in (False, True):
        outs.append(tmp_path / ("p%d.npy" % pin))
        extract(ds, model, outs[-1], batch_size=BS, workers=2, device="cuda", pin_memory=pin,
                progress=False, labels_path=tmp_path / "l.npy")
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_channels_last_input_same_values():
    img = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    a = rt.to_input(img, "cpu", mean=(1, 2, 3), std=(4, 5, 6), channel_order="bgr")
    b = rt.to_input(img, "cpu", mean=(1, 2, 3), std=(4, 5, 6), channel_order="bgr",
                    channels_last=True)
    assert b.is_contiguous(memory_format=torch.channels_last) and torch.equal(a, b)
    want = (img.flip(1).float() - torch.tensor([1., 2, 3]).view(3, 1, 1)) \
        / torch.tensor([4., 5, 6]).view(3, 1, 1)
    assert torch.equal(a, want)


def test_default_workers(monkeypatch):
    """Workers leave the cores to the model on the CPU, and feed the GPU otherwise."""
    def cores(n):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)
    cores(2)
    assert rt.default_workers("cpu") == 0
    cores(64)
    assert rt.default_workers("cpu") == 4
    assert rt.default_workers("cuda") == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert rt.default_workers("cuda") == 7
    cores(8)
    assert rt.default_workers("cuda") == 1
