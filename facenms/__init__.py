"""facenms: Face-NMS core-set selection for face-recognition training sets.

    keep = facenms.select(features, labels, ratio=0.6)

returns the sorted indices of the faces to train on. See ``select``.

Layers: ``core`` (selection in memory), ``scale`` (larger than memory, several
processes), ``data`` and ``models`` (datasets and networks), ``pipeline``
(proxy training, extraction, export, report), ``eval`` (baselines,
verification), ``cli``. The compiled kernels load on first use.
"""
from . import reference
from .core import select as _in_memory
from .core.extension import build_info
from .core.select import SelectionInfo, curve
from .scale import blocks as _blocks

__version__ = "0.1.0"
__all__ = ["select", "curve", "SelectionInfo", "reference", "build_info"]


def select(features, labels, ratio=None, threshold=None, *, scores=None, rank=None,
           min_per_identity=1, per_identity=False, seed=0, device=None, return_info=False,
           progress=False, block_size=None, max_memory=None, distributed=None):
    """Indices of the core set: Face-NMS within each identity.

    Args:
        features: (N, d) float32/float16/bfloat16 embeddings (numpy, torch CPU or
            CUDA, or any DLPack array such as cupy); need not be normalised.
        labels: (N,) integer identity labels, any values, any order.
        ratio: keep this fraction of all faces (a global threshold is searched), or
        threshold: suppress a face whose cosine similarity to a kept face of its
            identity exceeds this.
        scores: (N,) ranking scores, higher first (e.g. face quality).
        rank: "sparsity" (default: farthest from the identity centre first),
            "centrality" (nearest first), "random" (seeded), "scores".
        min_per_identity: every identity keeps at least min(m, n_c) faces.
        per_identity: with ratio, every identity keeps max(m, round(ratio*n_c)).
        seed: for rank="random".
        device: run there (e.g. "cuda" for numpy input); default: where features are.
        return_info: also return a SelectionInfo.
        progress: show a progress bar.
        block_size, max_memory: stream the features one block of identities at
            a time, of block_size faces or of max_memory bytes for two blocks
            (default 1 GiB). Memory-mapped arrays and paths to a .npy always
            stream; see facenms.scale.blocks. Same result as in memory.
        distributed: split the identities over the ranks of torch.distributed
            (default: when it is initialised with several processes); every
            rank returns the whole result. See facenms.scale.dist.

    Returns:
        Sorted int64 indices of the kept faces, in the array family and on the
        device of ``features`` (and a SelectionInfo with return_info=True).
    """
    kw = dict(scores=scores, rank=rank, min_per_identity=min_per_identity,
              per_identity=per_identity, seed=seed, device=device, return_info=return_info,
              progress=progress)
    if _blocks.wanted(features, block_size, max_memory, distributed):
        return _blocks.select(features, labels, ratio, threshold, block_size=block_size,
                              max_memory=max_memory, distributed=distributed, **kw)
    return _in_memory.select(features, labels, ratio, threshold, **kw)
