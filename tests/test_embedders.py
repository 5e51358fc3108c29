"""Models with their own preprocessing: ONNX models exported from torch, NCHW
and NHWC, dynamic and fixed batch, fed (x - 127) / 128 in RGB or BGR, against
onnxruntime run directly on the same preprocessed input."""
import json

import numpy as np
import pytest
import torch

import tinyfaces
from pipeline_worker import tiny_model
from facenms.cli import main as cli
from facenms.pipeline.embedders import load_model
from facenms.pipeline.extract import extract

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
# the TorchScript ONNX exporter warns that it is deprecated
pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning"),
              pytest.mark.usefixtures("one_thread")]  # every test and module fixture


@pytest.fixture(scope="module")
def ds():
    return tinyfaces.make(n_ids=4, per_id=5, size=32, seed=1)


class NHWC(torch.nn.Module):
    """The tiny net taking N x H x W x 3, as TensorFlow-born models do."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2))


def export(path, layout, fixed):
    net = tiny_model().eval()
    if layout == "NHWC":
        net = NHWC(net)
    shape = (3, 32, 32, 3) if layout == "NHWC" else (3, 3, 32, 32)
    torch.onnx.export(net, torch.randn(*shape), str(path), dynamo=False, input_names=["data"],
                      dynamic_axes=None if fixed else {"data": {0: "n"}})
    return path


def direct(path, ds, layout, channel_order, mean=127.0, std=128.0):
    """onnxruntime alone: the model's own preprocessing, written out by hand."""
    x = ds.images.astype(np.float32)                  # N x H x W x 3, RGB
    if channel_order == "bgr":
        x = x[..., ::-1]
    x = (x - mean) / std
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    x = np.ascontiguousarray(x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name, batch = sess.get_inputs()[0].name, sess.get_inputs()[0].shape[0]
    step = batch if isinstance(batch, int) else len(x)
    e = []
    for s in range(0, len(x), step):
        chunk = x[s:s + step]
        pad = step - len(chunk)
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        e.append(sess.run(None, {name: chunk})[0][:len(chunk) - pad])
    e = np.concatenate(e)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


@pytest.mark.parametrize("fixed", [False, True], ids=["dynamic", "fixed3"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_onnx_preprocessing_matches_onnxruntime(ds, tmp_path, layout, fixed):
    path = export(tmp_path / "face.onnx", layout, fixed)
    assert load_model(path).layout == layout
    got = {}
    for order in ("rgb", "bgr"):
        out = tmp_path / order / "features.npy"
        extract(ds, path, out, batch_size=7, workers=0, mean=127, std=128,
                channel_order=order, progress=False)
        got[order] = np.load(out).astype(np.float32)
        assert np.abs(got[order] - direct(path, ds, layout, order)).max() < 2e-3
    # the channel order changes the embedding: it must be the model's own
    assert np.abs(got["rgb"] - got["bgr"]).max() > 0.02


def test_cli_preprocessing_options(tiny_rec, tmp_path, capsys):
    from facenms.data import open_dataset
    path = export(tmp_path / "face.onnx", "NHWC", fixed=False)
    out = tmp_path / "features.npy"
    cli(["extract", "--dataset", tiny_rec, "--model", str(path), "--out", str(out),
         "--workers", "0", "--mean", "127", "--std", "128,128,128", "--channel-order", "bgr"])
    assert "facenms extract: features" in capsys.readouterr().out
    ref = tmp_path / "ref.npy"
    extract(open_dataset(tiny_rec), path, ref, workers=0, mean=127, std=128,
            channel_order="bgr", progress=False)
    assert out.read_bytes() == ref.read_bytes()


def test_run_config_extract_model(tiny_rec, tmp_path):
    """[extract] model = ... (and the preprocessing keys) in a `facenms run` config."""
    from facenms.pipeline.run import run
    path = export(tmp_path / "face.onnx", "NCHW", fixed=True)
    cfg = dict(data=dict(dataset=tiny_rec, work_dir=str(tmp_path / "work")),
               extract=dict(model=str(path), workers=0, mean=127, std=128,
                            channel_order="bgr"))
    paths = run(cfg, stages=("extract",), progress=False)
    assert np.load(paths["features"]).shape == (len(np.load(paths["labels"])), 16)
    config = json.load(open(paths["features"] + ".json"))["config"]
    assert config["channel_order"] == "bgr" and config["mean"] == [127.0] * 3


def _onnx_with_input(path, shape, elem):
    """A tiny ONNX model (cast to float, flatten) with this input shape and type."""
    import onnx
    from onnx import TensorProto, helper
    g = helper.make_graph(
        [helper.make_node("Cast", ["data"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("Flatten", ["f"], ["e"], axis=1)], "g",
        [helper.make_tensor_value_info("data", elem, shape)],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["n", "d"])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.mark.parametrize("shape,elem", [([1, 1, 32, 32], "float"), (["n", 32, 32, 4], "float"),
                                        ([2, 3], "float"), (["n", 3, 32, 32], "uint8")])
def test_model_that_cannot_be_fed(ds, tmp_path, shape, elem):
    from onnx import TensorProto
    path = _onnx_with_input(tmp_path / "bad.onnx", shape,
                            dict(float=TensorProto.FLOAT, uint8=TensorProto.UINT8)[elem])
    with pytest.raises(ValueError, match=r"ONNX model .*bad\.onnx takes .*input of shape "
                                         r"\[.*\]; facenms feeds float N x 3 x H x W"):
        extract(ds, path, tmp_path / "f.npy", workers=0, progress=False)
    assert not (tmp_path / "f.npy.partial").exists()  # refused before the run


def test_fixed_input_size_conflict(ds, tmp_path):
    path = export(tmp_path / "face.onnx", "NCHW", fixed=False)  # 32 x 32 only
    with pytest.raises(ValueError, match=r"face\.onnx takes input of shape \['n', 3, 32, 32\]; "
                                         r"facenms would feed 48 x 48"):
        extract(ds, path, tmp_path / "f.npy", input_size=48, workers=0, progress=False)


def test_torch_model_that_cannot_be_fed(ds, tmp_path):
    gray = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten())
    with pytest.raises(ValueError, match=r"model Sequential fails on a 1 x 3 x 32 x 32 float "
                                         r"input"):
        extract(ds, gray, tmp_path / "f.npy", workers=0, progress=False)


class Viewing(torch.nn.Module):
    """A model whose forward assumes NCHW strides (x.view of the raw layout)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return y.view(len(y), -1)  # fails for channels_last strides


def test_model_that_needs_nchw_strides(ds, tmp_path):
    torch.manual_seed(0)
    m = Viewing()
    out = tmp_path / "f.npy"
    extract(ds, m, out, batch_size=7, workers=0, amp=None, progress=False)
    x = torch.from_numpy(ds.images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        ref = torch.nn.functional.normalize(m(x.contiguous())).numpy()
    assert np.abs(np.load(out).astype(np.float32) - ref).max() < 2e-3
