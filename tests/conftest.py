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


# ---------------------------------------------------- proxy training and extraction

@pytest.fixture(scope="session")
def tiny_faces():
    """tests/tinyfaces.py's in-memory dataset: 6 identities of 8 faces of 32 x 32."""
    import tinyfaces
    return tinyfaces.make(n_ids=6, per_id=8, size=32, seed=0)


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory, tiny_faces):
    """tiny_faces saved for worker processes to load."""
    import tinyfaces
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    tinyfaces.save(tiny_faces, path)
    return path


@pytest.fixture(scope="session")
def tiny_rec(tmp_path_factory):
    """A generated insightface-layout RecordIO dataset (train.rec/.idx/property)."""
    from facenms.data.synthetic import make_recordio
    return make_recordio(tmp_path_factory.mktemp("rec") / "faces", num_identities=6,
                         images_per_identity=(6, 9), size=32, seed=3)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny nets gain nothing from threads, and on a shared 2-core machine two
    threads contend: one is several times faster. Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
