"""Face models as embedders: float NCHW batch in, float32 (N, d) embeddings out.

A model is a facenms proxy checkpoint, a TorchScript file, a ``torch.export``
program (``.pt2``), an ONNX file (through onnxruntime) or an ``nn.Module``;
``load_model`` gives each the same interface, with a fingerprint of its
weights so that a feature file records what made it.
"""
import contextlib
import hashlib
import logging
import os
import warnings
import zipfile

import numpy as np
import torch
from torch import nn

def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _sha256_module(module):
    h = hashlib.sha256(type(module).__qualname__.encode())
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


FEEDS = "float N x 3 x H x W (NCHW) or N x H x W x 3 (NHWC) faces, H = W"


class _TorchModel:
    """A torch module run in channels_last: the layout oneDNN and cuDNN convolve
    fastest (the values are the same up to float rounding)."""
    layout = "NCHW"
    channels_last = True

    def __init__(self, module, device, input_size, desc, fingerprint, eval_mode=True):
        self.module = module.to(device)
        if eval_mode:  # an exported program is frozen in the mode it was exported in
            self.module.eval()
        try:
            self.module.to(memory_format=torch.channels_last)
        except (TypeError, RuntimeError):  # a module that cannot convert keeps its layout
            self.channels_last = False
        self.input_size = input_size
        self.dim = getattr(module, "embedding_size", None)
        self.desc = desc
        self.fingerprint = fingerprint
        self.uses_autocast = True

    def check(self, size):
        """Nothing to check before the probe: a torch module states no input shape."""

    def __call__(self, x):
        if not self.channels_last:
            x = x.contiguous()
        try:
            out = self.module(x)
        except RuntimeError:
            if not self.channels_last:
                raise
            # e.g. a traced .view() that assumes NCHW strides: this model stays in NCHW
            self.channels_last = False
            self.module.to(memory_format=torch.contiguous_format)
            out = self.module(x.contiguous())
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            raise ValueError("%s must return one (batch, dim) tensor, got %s" % (
                self.desc, tuple(out.shape) if isinstance(out, torch.Tensor) else type(out)))
        return out.float()


def _onnx_layout(path, shape):
    """"NCHW" or "NHWC" from an ONNX input shape (ints or symbolic names)."""
    if len(shape) == 4:
        if shape[1] == 3 or (not isinstance(shape[1], int) and shape[3] != 3):
            return "NCHW"
        if shape[3] == 3:
            return "NHWC"
    raise ValueError("the ONNX model %s takes input of shape %s; facenms feeds %s"
                     % (path, list(shape), FEEDS))


class _OnnxModel:
    """An ONNX face model (e.g. insightface's) run by onnxruntime. Input NCHW
    or NHWC float (from the model's input shape); a model exported with a
    fixed batch size is fed in chunks of that size."""

    def __init__(self, path, device, fingerprint):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("extracting with the ONNX model %s needs onnxruntime: "
                              "pip install onnxruntime (onnxruntime-gpu for CUDA)" % path) from e
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        try:
            self.sess = ort.InferenceSession(os.fspath(path), opts, providers=providers)
        except Exception as e:
            raise ValueError("onnxruntime cannot load %s: %s" % (path, e)) from e
        inputs = self.sess.get_inputs()
        if len(inputs) != 1:
            raise ValueError("the ONNX model %s has %d inputs %s; facenms feeds one, %s" % (
                path, len(inputs), [(i.name, i.shape) for i in inputs], FEEDS))
        inp = self.inp = inputs[0]
        self.path, self.name = os.fspath(path), inp.name
        self.layout = _onnx_layout(path, inp.shape)
        if inp.type not in ("tensor(float)", "tensor(float16)"):
            raise ValueError("the ONNX model %s takes %s input of shape %s; facenms feeds %s"
                             % (path, inp.type, list(inp.shape), FEEDS))
        self.channels_last = self.layout == "NHWC"  # then the NHWC view is free
        self.batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        h, w = inp.shape[1:3] if self.layout == "NHWC" else inp.shape[2:4]
        self.hw = (h if isinstance(h, int) else None, w if isinstance(w, int) else None)
        self.input_size = h if isinstance(h, int) and h == w else None
        out = self.sess.get_outputs()[0].shape
        self.dim = out[1] if len(out) >= 2 and isinstance(out[1], int) else None
        self.np_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.desc = "ONNX model %s" % os.path.basename(path)
        self.fingerprint = fingerprint
        self.uses_autocast = False

    def check(self, size):
        """ValueError before the run when faces of size x size cannot be fed."""
        if any(d is not None and d != size for d in self.hw):
            raise ValueError("the ONNX model %s takes input of shape %s; facenms would feed "
                             "%d x %d faces (%s): pass an input size the model takes"
                             % (self.path, list(self.inp.shape), size, size, FEEDS))

    def __call__(self, x):
        if self.layout == "NHWC":
            x = x.permute(0, 2, 3, 1)
        a = np.ascontiguousarray(x.detach().float().cpu().numpy(), self.np_dtype)
        if self.batch is None or self.batch == len(a):
            out = self.sess.run(None, {self.name: a})[0]
        else:
            parts = []
            for s in range(0, len(a), self.batch):
                chunk = a[s:s + self.batch]
                n = len(chunk)
                if n < self.batch:  # the model only takes full batches: pad
                    chunk = np.concatenate([chunk, np.zeros((self.batch - n,) + chunk.shape[1:],
                                                            chunk.dtype)])
                parts.append(self.sess.run(None, {self.name: chunk})[0][:n])
            out = np.concatenate(parts)
        out = np.asarray(out).reshape(len(a), -1).astype(np.float32, copy=False)
        return torch.from_numpy(out).to(x.device)


@contextlib.contextmanager
def _quiet(logger):
    """torch logs a whole traceback when a load fails; the error facenms raises is enough."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        log.setLevel(level)


def _is_torchscript(path):
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_model(model, device="cpu"):
    """A callable (float NCHW -> float32 (N, d)) with .desc, .fingerprint,
    .input_size, from a path (proxy checkpoint, TorchScript, .pt2 exported
    program, .onnx) or an nn.Module."""
    device = torch.device(device)
    if isinstance(model, nn.Module):
        return _TorchModel(model, device, getattr(model, "input_size", None),
                           "model %s" % type(model).__name__, _sha256_module(model))
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError("model must be a path (proxy checkpoint, TorchScript, .pt2, .onnx) or "
                        "an nn.Module, got %s" % type(model).__name__)
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise FileNotFoundError("model file %s does not exist" % path)
    fp = _sha256_file(path)
    if path.lower().endswith(".onnx"):
        return _OnnxModel(path, device, fp)
    if path.lower().endswith(".pt2"):
        try:
            with _quiet("torch.export"), _quiet("torch._export"):
                module = torch.export.load(path).module()
        except Exception as e:
            raise ValueError("cannot load exported program %s (torch.export.save): %s"
                             % (path, e)) from e
        return _TorchModel(module, device, None, "exported program %s" % os.path.basename(path),
                           fp, eval_mode=False)
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():  # torch's deprecation notice, on every load
                warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated")
                module = torch.jit.load(path, map_location=device)
        except Exception as e:
            raise ValueError("cannot load TorchScript model %s: %s" % (path, e)) from e
        return _TorchModel(module, device, None, "TorchScript %s" % os.path.basename(path), fp)
    from .proxy import load_checkpoint, load_proxy  # only for proxy checkpoints
    try:
        ck = load_checkpoint(path)
    except ValueError as e:
        raise ValueError("%s is neither an ONNX file (.onnx), an exported program (.pt2), a "
                         "TorchScript file nor a facenms proxy checkpoint (%s)"
                         % (path, e)) from None
    return _TorchModel(load_proxy(path, device), device, ck["config"]["input_size"],
                       "proxy %s (%s)" % (os.path.basename(path), ck["config"]["backbone"]), fp)
