import os

import numpy as np
import pytest
import torch

import tinyfaces
from procs import torchrun
from facenms.data import open_dataset
from facenms.models import HEADS, MODELS, get_head, get_model
from facenms.pipeline.proxy import (lr_factor, load_checkpoint, load_proxy, proxy_subset,
                           train_proxy)

pytestmark = pytest.mark.usefixtures("one_thread")  # every test and module fixture


TINY = dict(backbone="iresnet", model_kwargs=dict(layers=(1, 1, 1, 1), width=8),
            embedding_size=16, input_size=32, batch_size=16, lr=0.1, workers=0,
            progress=False)


# ------------------------------------------------------------------ models and heads

@pytest.mark.parametrize("name,kw", [
    ("iresnet18", dict(width=8)), ("iresnet", dict(layers=(1, 1, 1, 1), width=8)),
    ("mobilefacenet", dict(width=0.25))])
def test_backbones_tiny_input(name, kw):
    m = get_model(name, embedding_size=24, input_size=32, **kw).eval()
    assert m(torch.randn(3, 3, 32, 32)).shape == (3, 24)


def test_registry_errors():
    assert {"iresnet18", "iresnet50", "iresnet100", "mobilefacenet"} <= set(MODELS)
    assert set(HEADS) == {"arcface", "cosface"}
    with pytest.raises(ValueError, match="unknown backbone 'resnet9'"):
        get_model("resnet9")
    with pytest.raises(ValueError, match="unknown head"):
        get_head("softmax", 8, 4)
    with pytest.raises(ValueError, match="multiple of 16"):
        get_model("iresnet18", input_size=100)


def test_margin_heads():
    torch.manual_seed(0)
    emb, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 3, 0])
    for name, m in (("arcface", 0.5), ("cosface", 0.35)):
        head = get_head(name, 8, 4, scale=10.0)
        cos = torch.nn.functional.normalize(emb) @ torch.nn.functional.normalize(head.weight).T
        logits = head(emb, y)
        theta = torch.acos(cos[torch.arange(5), y].clamp(-1, 1))
        want = torch.cos(theta + m) if name == "arcface" else torch.cos(theta) - m
        if name == "arcface":  # past pi - m the logit continues linearly
            lin = cos[torch.arange(5), y] - np.sin(np.pi - m) * m
            want = torch.where(theta < np.pi - m, want, lin)
        assert torch.allclose(logits[torch.arange(5), y], 10 * want, atol=1e-5)
        other = torch.ones_like(cos, dtype=torch.bool)
        other[torch.arange(5), y] = False
        assert torch.allclose(logits[other], 10 * cos[other], atol=1e-5)
        assert torch.allclose(head(emb), 10 * cos, atol=1e-5)  # no labels: no margin


# ------------------------------------------------------------------------ the subset

def test_proxy_subset_identities():
    labels = np.repeat([7, 3, 11, 5, 20], [3, 1, 4, 2, 5])
    idx, new = proxy_subset(labels, "identities", 0.4, seed=1)
    assert (np.diff(idx) > 0).all()
    kept = np.unique(labels[idx])
    assert len(kept) == 2  # round(0.4 * 5)
    assert set(np.flatnonzero(np.isin(labels, kept))) == set(idx)  # whole identities
    assert (new == np.searchsorted(kept, labels[idx])).all()  # dense, in label order
    again = proxy_subset(labels, "identities", 0.4, seed=1)
    assert (again[0] == idx).all() and (again[1] == new).all()
    other = [tuple(proxy_subset(labels, "identities", 0.4, seed=s)[0]) for s in range(8)]
    assert len(set(other)) > 1


def test_proxy_subset_faces_and_errors():
    labels = np.repeat(np.arange(10) * 3, 10)
    idx, new = proxy_subset(labels, "faces", 0.25, seed=0)
    assert len(idx) == 25 and (np.diff(idx) > 0).all()
    assert (np.unique(new) == np.arange(new.max() + 1)).all()
    assert (np.argsort(labels[idx], kind="stable") == np.argsort(new, kind="stable")).all()
    with pytest.raises(ValueError, match="fraction"):
        proxy_subset(labels, "faces", 0.0)
    with pytest.raises(ValueError, match="subset must be"):
        proxy_subset(labels, "people", 0.5)
    with pytest.raises(ValueError, match="at least 2 identities"):
        proxy_subset(np.zeros(5, np.int64), "faces", 1.0)


def test_lr_schedules():
    cos = [lr_factor(s, 100, 10, "cosine") for s in range(100)]
    poly = [lr_factor(s, 100, 0, "poly") for s in range(100)]
    assert cos[0] == pytest.approx(0.1) and cos[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(cos[9:], cos[10:]))
    assert poly[0] == 1.0 and all(a > b for a, b in zip(poly, poly[1:]))
    assert poly[-1] < 1e-3 and cos[-1] < 1e-2


# ---------------------------------------------------------------------------- training

def test_train_loss_goes_down(tmp_path, capsys):
    ds = tinyfaces.make(n_ids=8, per_id=12, size=32, seed=0)
    ck = train_proxy(ds, tmp_path, subset="identities", fraction=1.0, epochs=5,
                     head="arcface", **TINY)
    assert ck == os.path.join(tmp_path, "proxy.pt")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("proxy: iresnet+arcface on 96 faces of 8 identities") and "loss" in line
    c = load_checkpoint(ck)
    losses = [h["loss"] for h in c["history"]]
    assert c["epoch"] == 5 and len(losses) == 5
    assert losses[-1] < 0.5 * losses[0], losses
    assert sorted(os.listdir(tmp_path)) == ["proxy.pt"]  # no temporary files left
    # the trained backbone separates identities on its own training faces
    model = load_proxy(ck)
    x = torch.stack([ds[i][0] for i in range(len(ds))]).float() / 127.5 - 1
    with torch.no_grad():
        e = torch.nn.functional.normalize(model(x))
    sim, same = e @ e.T, torch.from_numpy(ds.labels[:, None] == ds.labels[None])
    assert sim[same].mean() > sim[~same].mean() + 0.3


def test_resume_after_crash_matches_uninterrupted(tmp_path, capsys):
    ds = tinyfaces.make(n_ids=4, per_id=12, size=32, seed=1)  # 48 faces: 3 steps of 16
    kw = dict(fraction=1.0, epochs=4, head="cosface", amp=None, **TINY)
    full = load_checkpoint(train_proxy(ds, tmp_path / "full", **kw))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_proxy(tinyfaces.Crashing(ds, after=2 * 48 + 20), tmp_path / "crash", **kw)  # in epoch 3
    assert load_checkpoint(tmp_path / "crash" / "proxy.pt")["epoch"] == 2
    assert sorted(os.listdir(tmp_path / "crash")) == ["proxy.pt"]
    resumed = load_checkpoint(train_proxy(ds, tmp_path / "crash", **kw))
    assert resumed["epoch"] == 4
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    for k, v in full["backbone"].items():
        assert torch.equal(v, resumed["backbone"][k]), k
    assert torch.equal(full["head"]["weight"], resumed["head"]["weight"])
    # finished: a rerun trains nothing and says so
    capsys.readouterr()
    before = os.stat(tmp_path / "crash" / "proxy.pt").st_mtime_ns
    train_proxy(ds, tmp_path / "crash", **kw)
    assert "already trained" in capsys.readouterr().out
    assert os.stat(tmp_path / "crash" / "proxy.pt").st_mtime_ns == before
    with pytest.raises(ValueError, match="trained with other settings.*seed"):
        train_proxy(ds, tmp_path / "crash", **dict(kw, seed=5))


def test_fp16_with_grad_scaler_and_poly_schedule(tmp_path):
    ds = tinyfaces.make(n_ids=4, per_id=8, size=32, seed=2)
    ck = load_checkpoint(train_proxy(ds, tmp_path, subset="faces", fraction=1.0, epochs=2,
                                     amp="fp16", schedule="poly", **TINY))
    assert ck["scaler"]["scale"] > 0 and all(np.isfinite(h["loss"]) for h in ck["history"])
    assert ck["history"][-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # poly ends at 0


def test_train_errors(tmp_path):
    ds = tinyfaces.make(n_ids=3, per_id=4, size=32)
    with pytest.raises(ValueError, match="not one full batch"):
        train_proxy(ds, tmp_path, fraction=1.0, epochs=1, **dict(TINY, batch_size=64))
    with pytest.raises(ValueError, match="amp must be"):
        train_proxy(ds, tmp_path, epochs=1, amp="int8", **TINY)
    with pytest.raises(TypeError, match="FaceDataset"):
        train_proxy(object(), tmp_path, epochs=1, **TINY)


def test_torchrun_two_processes(tiny_rec, tmp_path):
    # each rank opens the RecordIO; extraction follows in the same process group
    r = torchrun(["proxy", tiny_rec, tmp_path / "proxy", "--then-extract", tmp_path / "f.npy"])
    n = len(open_dataset(tiny_rec))
    assert r.stdout.count("proxy: iresnet+arcface on %d faces" % n) == 1  # rank 0 only
    assert np.load(tmp_path / "f.npy").shape == (n, 16)
    c = load_checkpoint(tmp_path / "proxy" / "proxy.pt")
    assert c["config"]["global_batch"] == 16  # 8 per rank x 2 ranks
    losses = [h["loss"] for h in c["history"]]
    assert c["epoch"] == 3 and losses[-1] < losses[0], losses
