import numpy as np
import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("ci")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pair_sims(x, labels):
    """All within-identity cosine similarities (float64)."""
    y = x.astype(np.float64)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    out = []
    for c in np.unique(labels):
        yc = y[labels == c]
        out.append((yc @ yc.T)[np.triu_indices(len(yc), 1)])
    return np.concatenate(out) if out else np.zeros(0)


def threshold_away(x, labels, candidates=(0.0, 0.3, 0.5, 0.7, 0.9, -0.3), margin=1e-3):
    """A threshold no within-identity similarity comes near, or None."""
    sims = pair_sims(x, labels)
    for t in candidates:
        if not len(sims) or np.abs(sims - t).min() > margin:
            return t
    return None


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param
