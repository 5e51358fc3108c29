"""amp="auto": the precision extraction and proxy training resolve to, per device."""
import argparse
import json

import pytest

import tinyfaces
from facenms.cli import extract as cx, train as ct
from facenms.pipeline import precision
from facenms.pipeline.extract import extract
from facenms.pipeline.proxy import load_checkpoint, train_proxy

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
TINY = dict(backbone="iresnet", model_kwargs=dict(layers=(1, 1, 1, 1), width=8),
            embedding_size=16, input_size=32, batch_size=16, workers=0, progress=False)


@pytest.fixture(autouse=True)
def _threads(one_thread):
    """Tiny nets: one thread."""


def _probes(monkeypatch, cpu_bf16=False, cuda_bf16=False):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: cpu_bf16)
    monkeypatch.setattr(precision, "cuda_has_bf16", lambda dev: cuda_bf16)


@pytest.mark.parametrize("device, cpu_bf16, cuda_bf16, want", [
    ("cpu", False, False, None), ("cpu", True, False, "bf16"),
    ("cuda", False, False, "fp16"), ("cuda:1", False, True, "bf16"),
    ("cuda", True, False, "fp16"), ("meta", True, True, None)])
def test_auto_per_device(monkeypatch, capsys, device, cpu_bf16, cuda_bf16, want):
    _probes(monkeypatch, cpu_bf16, cuda_bf16)
    assert precision.resolve_amp("auto", device) == want
    assert capsys.readouterr().err == ""


def test_explicit_choice_kept_with_a_warning_when_emulated(monkeypatch, capsys):
    _probes(monkeypatch, cpu_bf16=False, cuda_bf16=False)
    assert precision.resolve_amp("bf16", "cpu", "extract") == "bf16"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("facenms extract: warning: amp='bf16'")
    assert "fp32" in err
    assert precision.resolve_amp("bf16", "cuda") == "bf16"
    assert "warning" in capsys.readouterr().err
    for amp in ("none", "fp32", None):
        assert precision.resolve_amp(amp, "cpu") is None
    assert capsys.readouterr().err == ""
    _probes(monkeypatch, cpu_bf16=True)
    assert precision.resolve_amp("bf16", "cpu") == "bf16"
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="amp must be 'auto'"):
        precision.resolve_amp("int8", "cpu")


def test_real_probe_answers():
    assert isinstance(precision.cpu_has_native_bf16(), bool)


@pytest.fixture(scope="module")
def ds():
    return tinyfaces.make(n_ids=4, per_id=4, size=32, seed=0)


@pytest.mark.parametrize("cpu_bf16, want", [(False, None), (True, "bf16")])
def test_extract_and_proxy_record_the_resolved_precision(monkeypatch, capsys, tmp_path, ds,
                                                         cpu_bf16, want):
    _probes(monkeypatch, cpu_bf16=cpu_bf16)
    ck = train_proxy(ds, tmp_path / "p", fraction=1.0, epochs=1, **TINY)  # default amp
    assert load_checkpoint(ck)["config"]["amp"] == want
    out = extract(ds, ck, tmp_path / "f.npy", batch_size=8, workers=0, progress=False)
    assert json.load(open(out + ".json"))["config"]["amp"] == want
    log = capsys.readouterr().out
    assert ("amp bf16" if want else "fp32") in log and "amp None" not in log
    # where auto resolves otherwise, the finished features are another setting: never mixed
    _probes(monkeypatch, cpu_bf16=not cpu_bf16)
    with pytest.raises(ValueError, match="amp: %r before, %r now" % (
            want, None if cpu_bf16 else "bf16")):
        extract(ds, ck, tmp_path / "f.npy", batch_size=8, workers=0, progress=False)


def test_cli_default_is_auto():
    for mod, cmd in ((cx, ["extract", "--dataset", "d", "--model", "m", "--out", "o"]),
                     (ct, ["train-proxy", "--dataset", "d", "--out", "o"])):
        p = argparse.ArgumentParser()
        mod.add(p.add_subparsers())
        assert p.parse_args(cmd).amp == "auto"
