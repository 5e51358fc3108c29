"""facenms.select and facenms.label_issues: the entry points, which hand the work to the
in-memory code (facenms.core) or to the streamed, multi-process one (facenms.scale)."""
import dataclasses
import time
from typing import Any, Optional, Tuple, Union

import numpy as np
import torch

from ..core import cleaning as clean_in_memory
from ..core import select as in_memory
from ..core.cleaning import LabelIssuesInfo, counted_ratio
from ..core.inputs import as_tensor, number, settings, to_family
from . import blocks
from . import cleaning as clean_streamed
from .reader import open_features, open_labels


def select(features, labels, ratio: Optional[float] = None, threshold: Optional[float] = None,
           *, scores=None, rank: Optional[str] = None, min_per_identity: int = 1,
           per_identity: bool = False, seed: int = 0, device=None, return_info: bool = False,
           progress: bool = False, block_size: Optional[int] = None,
           max_memory: Optional[int] = None, distributed: Optional[bool] = None,
           clean: bool = False):
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
        clean: first drop the faces ``label_issues`` flags (with its defaults),
            then select among the rest. ``ratio`` still counts kept faces
            against all N faces; ``per_identity`` counts each identity's
            remaining faces. SelectionInfo.label_issues says how many were
            dropped. Default False: the paper's method.

    Returns:
        Sorted int64 indices of the kept faces, in the array family and on the
        device of ``features`` (and a SelectionInfo with return_info=True).
    """
    kw = dict(scores=scores, rank=rank, min_per_identity=min_per_identity,
              per_identity=per_identity, seed=seed, device=device, return_info=return_info,
              progress=progress)
    if not isinstance(clean, bool):
        raise TypeError("clean must be True or False, got %r" % (clean,))
    if clean:
        return _select_clean(features, labels, ratio, threshold, kw, block_size=block_size,
                             max_memory=max_memory, distributed=distributed)
    if blocks.should_stream(features, block_size, max_memory, distributed):
        return blocks.select(features, labels, ratio, threshold, block_size=block_size,
                              max_memory=max_memory, distributed=distributed, **kw)
    return in_memory.select(features, labels, ratio, threshold, **kw)


def _select_clean(features, labels, ratio, threshold, kw, *, block_size, max_memory,
                  distributed):
    """select(clean=True): label issues out, then the selection on the rest."""
    stream = blocks.should_stream(features, block_size, max_memory, distributed)
    labels = open_labels(labels)
    scores = kw.pop("scores")
    settings(ratio=ratio, threshold=threshold, rank=kw["rank"], scores=scores,
             min_per_identity=kw["min_per_identity"], per_identity=kw["per_identity"],
             seed=kw["seed"])  # bad settings fail before the work
    t0 = time.perf_counter()
    issues, found = label_issues(features, labels, device=kw["device"], block_size=block_size,
                                 max_memory=max_memory, distributed=distributed,
                                 return_info=True)
    issues = np.asarray(torch.as_tensor(issues).cpu()) if not isinstance(issues, np.ndarray) \
        else issues
    features = open_features(features) if stream else features
    n = len(features) if not isinstance(features, torch.Tensor) else features.shape[0]
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), issues, assume_unique=True)
    t_issues = time.perf_counter() - t0
    ratio_rest = ratio  # per identity: of each identity's remaining faces
    if ratio is not None and not kw["per_identity"]:
        ratio_rest = counted_ratio(number(ratio, "ratio", 0, 1, lo_open=True), n, len(issues))
    sub_labels = _take(labels, rest)
    sub_scores = None if scores is None else _take(scores, rest)
    if stream:
        got = blocks.select(features, sub_labels, ratio_rest, threshold, scores=sub_scores,
                            block_size=block_size, max_memory=max_memory,
                            distributed=distributed, subset=rest, **kw)
    else:
        x = as_tensor(features, "features")  # the remaining rows, copied once
        got = in_memory.select(x[torch.from_numpy(rest).to(x.device)], sub_labels, ratio_rest,
                               threshold, scores=sub_scores, **kw)
    keep, info = got if kw["return_info"] else (got, None)
    keep_t = torch.as_tensor(np.asarray(keep.cpu() if isinstance(keep, torch.Tensor) else keep))
    result = torch.from_numpy(rest)[keep_t]
    if isinstance(features, torch.Tensor):
        result = result.to(features.device)
    out = to_family(result, features)
    if info is None:
        return out
    timings = dict(info.timings, label_issues=t_issues, total=time.perf_counter() - t0)
    return out, dataclasses.replace(info, n_faces=n, timings=timings,
                                    ratio=info.kept / n if n else 0.0,
                                    target_ratio=ratio if threshold is None else None,
                                    label_issues=len(issues), issues=(issues, found))


def _take(a, rows):
    """a[rows] for labels or scores of any family (tensors stay tensors, on their device)."""
    if isinstance(a, torch.Tensor):
        return a[torch.from_numpy(rows).to(a.device)]
    if hasattr(a, "__dlpack__") and not isinstance(a, np.ndarray):
        t = torch.from_dlpack(a)
        return t[torch.from_numpy(rows).to(t.device)]
    return np.asarray(a)[rows]


def label_issues(features, labels, *, threshold: Optional[float] = None,
                 min_faces: Optional[int] = None, device=None, return_info: bool = False,
                 block_size: Optional[int] = None, max_memory: Optional[int] = None,
                 distributed: Optional[bool] = None, search: str = "exact"
                 ) -> Union[Any, Tuple[Any, LabelIssuesInfo]]:
    """Indices of the faces most likely filed under the wrong identity.

    The rule, in short (facenms.core.cleaning has it in full, and
    facenms.reference.label_issues in plain numpy): each identity gets a
    trimmed centre, the mean of its nearer half; a face scores
    ``s = ((mu - a) + (b - a)) / sigma``, where ``a`` is its cosine to its own
    centre, ``b`` its largest cosine to another identity's centre, and
    ``mu``, ``sigma`` the median and 1.4826 * MAD of ``a`` over the dataset.
    Faces with ``s > threshold`` are flagged. The scale is measured on the
    data, so the default threshold fits a proxy's cosines and a final
    model's alike.

    Args:
        features: (N, d) float embeddings (numpy, torch CPU or CUDA, DLPack, a
            memory map or a path to a .npy); need not be normalised.
        labels: (N,) integer identity labels (or a path to a .npy).
        threshold: flag faces scoring above this many sigmas (default 8).
        min_faces: identities with fewer faces (default 3, the least allowed)
            are not judged: their faces are never flagged, and their centre is
            the mean of all their faces.
        device: run there (default: where features are).
        return_info: also return a LabelIssuesInfo (per-face score; for each
            flagged face its score, the identity it most resembles and that
            similarity).
        block_size, max_memory, distributed: as for select: stream blocks of
            identities, split them over torch.distributed ranks. Same result.
        search: how each candidate finds its nearest other identity centre:
            "exact" (blocks of faces against all centres) or "faiss" (a faiss
            index of the centres; approximate from 100k identities on, where
            the exact search grows with candidates x identities: it can miss
            flags, never add wrong ones).

    Returns:
        Sorted int64 indices of the flagged faces, in the array family and on
        the device of ``features`` (and a LabelIssuesInfo with return_info=True).
    """
    kw = dict(threshold=threshold, min_faces=min_faces, device=device, return_info=return_info,
              search=search)
    if blocks.should_stream(features, block_size, max_memory, distributed):
        return clean_streamed.label_issues(features, labels, block_size=block_size,
                                           max_memory=max_memory, distributed=distributed, **kw)
    return clean_in_memory.label_issues(features, labels, **kw)
