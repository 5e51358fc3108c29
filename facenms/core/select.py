"""Selection in memory: one driver from inputs to indices, and SelectionInfo.

Everything is a few vectorised torch calls around the kernels; the same code
runs on CPU and CUDA tensors. Faces are grouped into CSR segments, put in
rank order once, and every pass sees that order.
"""
import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from .csr import group, segment_ids
from .inputs import as_tensor, check_device, check_features, check_scores, settings, to_family
from . import ranking
from .runner import Runner
from .search import LANES, decide, sample_lanes


@dataclass
class SelectionInfo:
    """What a selection did. Per-identity arrays follow ``identities`` (ascending)."""
    threshold: Optional[float]  # the global threshold (None with per_identity=True)
    ratio: float  # kept / faces, achieved
    target_ratio: Optional[float]
    kept: int
    n_faces: int
    identities: np.ndarray
    faces_per_identity: np.ndarray
    kept_per_identity: np.ndarray
    thresholds: Optional[np.ndarray] = None  # per identity, with per_identity=True
    passes: int = 0  # NMS passes over the whole set (not counting the sample's)
    label_issues: int = 0  # faces dropped as label issues first (select(clean=True))
    # with clean=True: (their indices, the LabelIssuesInfo that found them)
    issues: Optional[tuple] = field(default=None, repr=False, compare=False)
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def n_identities(self) -> int:
        return len(self.identities)

    def to_dict(self) -> Dict[str, object]:
        """The summary that `facenms select --info` and `facenms run` write as JSON."""
        doc = {k: getattr(self, k) for k in ("threshold", "ratio", "target_ratio", "kept",
                                              "n_faces", "n_identities", "passes",
                                              "label_issues")}
        doc["timings"] = dict(self.timings)
        return doc

    def summary(self) -> str:
        t = self.timings.get("total", 0.0)
        thr = "per identity" if self.threshold is None else "%.6f" % self.threshold
        dropped = ", %d label issues dropped" % self.label_issues if self.label_issues else ""
        return ("%d faces, %d identities%s -> kept %d (%.2f%%), threshold %s, %d pass%s, "
                "%.3f s, %.0f faces/s" % (
                    self.n_faces, self.n_identities, dropped, self.kept, 100 * self.ratio, thr,
                    self.passes, "" if self.passes == 1 else "es", t,
                    self.n_faces / t if t > 0 else float("inf")))


def make_info(settings, kept, n, *, uniq, sizes, kept_per, threshold, thresholds, passes,
              timings):
    """A SelectionInfo from what a driver computed (arrays may be tensors)."""
    return SelectionInfo(
        threshold=threshold, ratio=kept / n if n else 0.0, target_ratio=settings.ratio,
        kept=kept, n_faces=n, identities=uniq, faces_per_identity=sizes.cpu().numpy(),
        kept_per_identity=kept_per.cpu().numpy(),
        thresholds=None if thresholds is None else thresholds.cpu().numpy(),
        passes=passes, timings=timings)


def kept_per_identity(keep_pos, sizes):
    """Kept faces per identity from keep bits in rank (CSR) order."""
    out = torch.zeros(len(sizes), dtype=torch.int64, device=keep_pos.device)
    if keep_pos.numel():
        out.index_add_(0, segment_ids(sizes, total=keep_pos.shape[0]), keep_pos.long())
    return out


def grouped_input(features, labels, scores, device):
    """(x, uniq, order, offsets, sizes, scores) on the device the work runs on."""
    x = check_features(as_tensor(features, "features"))
    device = check_device(device)
    if device is not None:
        x = x.to(device)
    n = x.shape[0]
    uniq, order, offsets, sizes = group(labels, n, x.device)
    if scores is not None:
        scores = check_scores(scores, n, x.device)
    return x, uniq, order, offsets, sizes, scores


def select(features, labels, ratio=None, threshold=None, *, scores=None, rank=None,
           min_per_identity=1, per_identity=False, seed=0, device=None, return_info=False,
           progress=False):
    """facenms.select with the features in memory (see its documentation)."""
    t0 = time.perf_counter()
    s = settings(ratio=ratio, threshold=threshold, rank=rank, scores=scores,
                 min_per_identity=min_per_identity, per_identity=per_identity, seed=seed)
    x, uniq, order, offsets, sizes, scores = grouped_input(features, labels, scores, device)
    n = x.shape[0]
    timings = {"group": time.perf_counter() - t0}

    t1 = time.perf_counter()
    fuse, norms = ranking.fused(x, s.rank), None
    if n > 0 and not fuse:
        order, norms = ranking.rank(x, order, offsets, sizes, method=s.rank, scores=scores,
                                    seed=s.seed, with_norms=True)
        if x.device.type == "cuda":  # the norms spare the kernels a read of the features
            safe = ranking.float32_safe(x, torch.empty_like(norms).index_copy_(0, order, norms))
            if safe is not x:  # rows rescaled: the kernels take their norms themselves
                x, norms = safe, None
        else:
            norms = None
    timings["rank"] = time.perf_counter() - t1  # with fuse: inside the first pass

    t2 = time.perf_counter()
    run = Runner(x, order, offsets, sizes, min_keep=s.min_keep, progress=progress, fuse=fuse,
                 norms=norms)
    try:
        keep_pos, thr_used, per_thr = decide(
            run, s, n, sizes, x.device,
            lambda: sample_lanes(x, order, offsets, sizes, min_keep=s.min_keep, ratio=s.ratio,
                                 seed=seed, fuse=fuse))
    finally:
        run.close()
    timings["nms"] = time.perf_counter() - t2

    mask = torch.zeros(n, dtype=torch.bool, device=x.device)
    mask[run.order[keep_pos]] = True
    result = torch.nonzero(mask).reshape(-1)  # ascending, without a sort
    out = to_family(result, features)
    timings["total"] = time.perf_counter() - t0
    if not return_info:
        return out
    return out, make_info(s, int(result.numel()), n, uniq=uniq, sizes=sizes,
                          kept_per=kept_per_identity(keep_pos, sizes), threshold=thr_used,
                          thresholds=per_thr, passes=run.passes, timings=timings)


def curve(features, labels, thresholds=None, *, scores=None, rank: Optional[str] = None,
          min_per_identity: int = 1, seed: int = 0, device=None, progress: bool = False
          ) -> Tuple[np.ndarray, np.ndarray]:
    """Kept ratio at up to 64 thresholds, from one pass.

    Returns (thresholds, ratios) as numpy arrays. Default thresholds: 64
    evenly spaced in [0, 1].
    """
    s = settings(threshold=0.0, rank=rank, scores=scores, min_per_identity=min_per_identity,
                 seed=seed)
    ts = torch.linspace(0, 1, LANES, dtype=torch.float64) if thresholds is None else \
        torch.as_tensor(np.asarray(thresholds, dtype=np.float64))
    if ts.dim() != 1 or not 1 <= len(ts) <= LANES:
        raise ValueError("thresholds must be 1 to %d values, got shape %s"
                         % (LANES, tuple(ts.shape)))
    if not bool((ts[1:] >= ts[:-1]).all()):
        raise ValueError("thresholds must be ascending")
    x, uniq, order, offsets, sizes, scores = grouped_input(features, labels, scores, device)
    n = x.shape[0]
    if n == 0:
        return ts.numpy(), np.zeros(len(ts))
    fuse = ranking.fused(x, s.rank)
    if not fuse:
        order = ranking.rank(x, order, offsets, sizes, method=s.rank, scores=scores,
                             seed=s.seed)
        x = ranking.float32_safe(x)
    run = Runner(x, order, offsets, sizes, min_keep=s.min_keep, progress=progress, fuse=fuse)
    try:
        _, counts = run(ts)
    finally:
        run.close()
    counts[ts.to(counts.device) >= 1.0] = n  # as select(): a threshold of 1 keeps every face
    return ts.numpy(), counts.cpu().double().numpy() / n
