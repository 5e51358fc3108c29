"""Proxy backbones and margin heads, by name.

    backbone = get_model("iresnet18", embedding_size=512, input_size=112)
    head = get_head("arcface", embedding_size=512, num_classes=1000)

Backbones take float NCHW RGB scaled to [-1, 1] and return (N, embedding_size).
"""
from .heads import ArcFace, CosFace
from .iresnet import DEPTHS, IResNet
from .mobilefacenet import MobileFaceNet


def _iresnet(depth):
    def make(**kw):
        kw.setdefault("layers", DEPTHS[depth])
        return IResNet(**kw)
    return make


MODELS = {name: _iresnet(name) for name in DEPTHS}
MODELS["iresnet"] = IResNet  # give layers= and width= yourself
MODELS["mobilefacenet"] = MobileFaceNet
HEADS = {"arcface": ArcFace, "cosface": CosFace}


def get_model(name, **kwargs):
    """A backbone by name (see ``MODELS``); kwargs go to its constructor
    (embedding_size, input_size, and width / layers / dropout where they apply)."""
    try:
        make = MODELS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError("unknown backbone %r; choose one of %s"
                         % (name, ", ".join(sorted(MODELS)))) from None
    return make(**kwargs)


def get_head(name, embedding_size, num_classes, scale=64.0, margin=None):
    """A margin head by name (``arcface``: m=0.5, ``cosface``: m=0.35 by default)."""
    try:
        cls = HEADS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError("unknown head %r; choose one of %s"
                         % (name, ", ".join(sorted(HEADS)))) from None
    kw = {} if margin is None else {"margin": margin}
    return cls(embedding_size, num_classes, scale=scale, **kw)


__all__ = ["get_model", "get_head", "MODELS", "HEADS", "IResNet", "MobileFaceNet",
           "ArcFace", "CosFace"]
