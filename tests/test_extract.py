import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import tinyfaces
from procs import WORKER, child_env, torchrun
from facenms.pipeline.embedders import load_model
from facenms.pipeline.extract import batches_done, extract
from facenms.pipeline.proxy import load_proxy, train_proxy

BS = 4  # 48 faces -> 12 batches
# torch.jit and the TorchScript ONNX exporter warn that they are deprecated
pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning"),
              pytest.mark.usefixtures("one_thread")]  # every test and module fixture


@pytest.fixture(scope="module")
def ds(tiny_faces):
    return tiny_faces


@pytest.fixture(scope="module")
def proxy_ckpt(ds, tmp_path_factory):
    return train_proxy(ds, tmp_path_factory.mktemp("proxy"), fraction=1.0, backbone="iresnet",
                       model_kwargs=dict(layers=(1, 1, 1, 1), width=8), embedding_size=16,
                       input_size=32, epochs=2, batch_size=16, workers=0, progress=False)


def _reference(ds, model, flip=False):
    """Embeddings computed directly, in float32, no batching tricks."""
    x = torch.stack([ds[i][0] for i in range(len(ds))]).float() / 127.5 - 1
    with torch.no_grad():
        e = model(x)
        if flip:
            e = e + model(x.flip(-1))
    return torch.nn.functional.normalize(e).numpy()


def _maxdiff(path, ref):
    return np.abs(np.load(path).astype(np.float32) - ref).max()


def test_extract_from_proxy_checkpoint(ds, proxy_ckpt, tmp_path, capsys):
    out = tmp_path / "f" / "features.npy"
    assert extract(ds, proxy_ckpt, out, batch_size=BS, workers=0, progress=False) == str(out)
    f = np.load(out)
    assert f.shape == (48, 16) and f.dtype == np.float16
    assert np.allclose(np.linalg.norm(f.astype(np.float32), axis=1), 1, atol=2e-3)
    assert np.array_equal(np.load(tmp_path / "f" / "labels.npy"), ds.labels)
    assert sorted(os.listdir(tmp_path / "f")) == ["features.npy", "features.npy.json",
                                                   "labels.npy"]
    meta = json.load(open(str(out) + ".json"))
    assert meta["config"]["n"] == 48 and meta["config"]["dim"] == 16
    # bf16 autocast stays close to float32
    ref = _reference(ds, load_proxy(proxy_ckpt))
    assert np.abs(f.astype(np.float32) - ref).max() < 0.05
    assert "extract: 48 faces x 16 dims" in capsys.readouterr().out
    # complete: a rerun does nothing; other settings are refused unless resume=False
    os.unlink(tmp_path / "f" / "labels.npy")
    extract(ds, proxy_ckpt, out, batch_size=BS, workers=0, progress=False)
    assert "already holds" in capsys.readouterr().out
    assert np.array_equal(np.load(tmp_path / "f" / "labels.npy"), ds.labels)
    with pytest.raises(ValueError, match="other settings.*flip"):
        extract(ds, proxy_ckpt, out, batch_size=BS, workers=0, flip=True, progress=False)
    extract(ds, proxy_ckpt, out, batch_size=BS, workers=2, flip=True, resume=False,
            progress=False)
    assert not np.array_equal(np.load(out), f)


def test_flip_sum_and_module_input(ds, proxy_ckpt, tmp_path):
    model = load_proxy(proxy_ckpt)
    for flip in (False, True):
        out = tmp_path / ("flip%d.npy" % flip)
        extract(ds, model, out, batch_size=BS, workers=0, amp=None, flip=flip,
                labels_path=tmp_path / "l.npy", progress=False)
        assert _maxdiff(out, _reference(ds, model, flip)) < 2e-3


def test_torchscript_input(ds, proxy_ckpt, tmp_path):
    model = load_proxy(proxy_ckpt)
    ts = tmp_path / "model.pt"
    torch.jit.trace(model, torch.randn(2, 3, 32, 32)).save(str(ts))
    assert load_model(ts).desc.startswith("TorchScript")
    extract(ds, ts, tmp_path / "ts.npy", batch_size=BS, workers=0, amp=None, progress=False)
    assert _maxdiff(tmp_path / "ts.npy", _reference(ds, model)) < 2e-3


def test_exported_program_input(ds, proxy_ckpt, tmp_path):
    model = load_proxy(proxy_ckpt)
    ep = torch.export.export(model, (torch.randn(2, 3, 32, 32),),
                             dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    torch.export.save(ep, str(tmp_path / "model.pt2"))
    extract(ds, tmp_path / "model.pt2", tmp_path / "e.npy", batch_size=BS, workers=0,
            amp=None, progress=False)
    assert _maxdiff(tmp_path / "e.npy", _reference(ds, model)) < 2e-3


@pytest.mark.parametrize("fixed_batch", [False, True])
def test_onnx_input(ds, proxy_ckpt, tmp_path, fixed_batch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = load_proxy(proxy_ckpt)
    path = tmp_path / "face.onnx"
    # fixed: exported for batches of exactly 3, fed 4 at a time in chunks (padded)
    torch.onnx.export(model, torch.randn(3, 3, 32, 32), str(path), dynamo=False,
                      input_names=["data"],
                      dynamic_axes=None if fixed_batch else {"data": {0: "n"}})
    extract(ds, path, tmp_path / "o.npy", batch_size=BS, workers=0, progress=False)
    assert _maxdiff(tmp_path / "o.npy", _reference(ds, model)) < 2e-3


def test_onnx_without_onnxruntime(ds, tmp_path, monkeypatch):
    path = tmp_path / "face.onnx"
    path.write_bytes(b"not really")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match="face.onnx needs onnxruntime"):
        extract(ds, path, tmp_path / "o.npy", workers=0, progress=False)


def test_resize_to_model_input(proxy_ckpt, tmp_path):
    big = tinyfaces.make(n_ids=3, per_id=4, size=48)  # the proxy takes 32x32
    extract(big, proxy_ckpt, tmp_path / "r.npy", batch_size=5, workers=0, progress=False)
    assert np.load(tmp_path / "r.npy").shape == (12, 16)


def test_recordio_path_train_and_extract(tiny_rec, tmp_path):
    """Paths go through facenms.data.open_dataset; DataLoader workers read the
    RecordIO; the number of workers does not change a byte."""
    from facenms.data import open_dataset
    ds = open_dataset(tiny_rec)
    ck = train_proxy(tiny_rec, tmp_path / "p", fraction=0.5, backbone="mobilefacenet",
                     model_kwargs=dict(width=0.25), embedding_size=16, input_size=32,
                     epochs=1, batch_size=8, workers=2, progress=False)
    assert load_proxy(ck).embedding_size == 16
    a = extract(tiny_rec, ck, tmp_path / "a" / "features.npy", batch_size=5, workers=2,
                progress=False)
    b = extract(tiny_rec, ck, tmp_path / "b" / "features.npy", batch_size=5, workers=0,
                progress=False)
    assert open(a, "rb").read() == open(b, "rb").read()
    assert np.array_equal(np.load(tmp_path / "a" / "labels.npy"), ds.labels)
    assert np.load(a).shape == (len(ds), 16)


class Zero(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3, 8))

    def forward(self, x):
        return x.mean((2, 3)) @ self.w


def test_bad_inputs(ds, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        extract(ds, tmp_path / "nope.pt", tmp_path / "x.npy", workers=0)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match="junk.bin is neither an ONNX"):
        extract(ds, junk, tmp_path / "x.npy", workers=0)
    with pytest.raises(ValueError, match="zero embedding for face 0 "):
        extract(ds, Zero(), tmp_path / "z.npy", workers=0, progress=False)
    assert not os.path.exists(tmp_path / "z.npy")
    np.save(tmp_path / "mine.npy", np.zeros((48, 8), np.float16))
    with pytest.raises(ValueError, match="exist but it has no settings file"):
        extract(ds, Zero(), tmp_path / "mine.npy", workers=0)


# ---------------------------------------------------------- real processes: kill, torchrun

def _worker(npz, out, *extra):
    return [sys.executable, WORKER, "extract", str(npz), str(out), "tiny",
            "--batch-size", str(BS)] + list(extra)


@pytest.fixture(scope="module")
def uninterrupted(tiny_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "features.npy"
    subprocess.run(_worker(tiny_npz, out), env=child_env(), check=True, timeout=120,
                   capture_output=True)
    return out


def test_killed_extraction_resumes_byte_identical(tiny_npz, uninterrupted, tmp_path):
    out = tmp_path / "features.npy"
    progress = str(out) + ".progress"
    child = subprocess.Popen(_worker(tiny_npz, out, "--delay", "0.3"), env=child_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and child.poll() is None:
            if os.path.exists(progress) and batches_done(progress).sum() >= 3:
                child.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
    done = batches_done(progress)
    assert 3 <= done.sum() < len(done) == 12
    assert not out.exists() and not (tmp_path / "labels.npy").exists()  # nothing looks done
    assert os.path.exists(str(out) + ".partial")

    r = subprocess.run(_worker(tiny_npz, out), env=child_env(), timeout=120,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed with %d of 12 batches done" % done.sum() in r.stdout
    assert out.read_bytes() == uninterrupted.read_bytes()
    ref_labels = uninterrupted.parent / "labels.npy"
    assert (tmp_path / "labels.npy").read_bytes() == ref_labels.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["features.npy", "features.npy.json", "labels.npy"]


def test_torchrun_two_ranks_extract(tiny_npz, uninterrupted, tmp_path):
    """One process does 5 of the 12 batches and crashes; 2 torchrun ranks do the
    rest into the same file; the bytes are those of one uninterrupted run."""
    from pipeline_worker import tiny_model
    out = tmp_path / "features.npy"
    crashing = tinyfaces.Crashing(tinyfaces.load(tiny_npz), after=1 + 5 * BS)  # 1: the probe
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract(crashing, tiny_model(), out, batch_size=BS, workers=0, progress=False,
                sync_every=0.0)
    assert batches_done(str(out) + ".progress").sum() == 5
    r = torchrun(["extract", tiny_npz, out, "tiny", "--batch-size", BS])
    assert r.stdout.count("extract: 48 faces x 16 dims") == 1 and "2 ranks" in r.stdout
    assert "resumed with 5 of 12 batches done" in r.stdout
    assert out.read_bytes() == uninterrupted.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["features.npy", "features.npy.json", "labels.npy"]
