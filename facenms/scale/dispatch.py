"""facenms.select: the one entry point, which hands the work to the in-memory selection
(facenms.core.select) or to the streamed, multi-process one (facenms.scale.blocks)."""
from typing import Optional

from ..core import select as in_memory
from . import blocks


def select(features, labels, ratio: Optional[float] = None, threshold: Optional[float] = None,
           *, scores=None, rank: Optional[str] = None, min_per_identity: int = 1,
           per_identity: bool = False, seed: int = 0, device=None, return_info: bool = False,
           progress: bool = False, block_size: Optional[int] = None,
           max_memory: Optional[int] = None, distributed: Optional[bool] = None):
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
    if blocks.should_stream(features, block_size, max_memory, distributed):
        return blocks.select(features, labels, ratio, threshold, block_size=block_size,
                              max_memory=max_memory, distributed=distributed, **kw)
    return in_memory.select(features, labels, ratio, threshold, **kw)
