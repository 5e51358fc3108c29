"""Face verification as insightface evaluates it: pair files and TAR at fixed FAR.

- ``load_bin(path)`` reads an insightface verification ``.bin`` (lfw.bin,
  cfp_fp.bin, ...): a pickle of ``(bins, issame_list)`` where ``bins`` holds
  2P encoded images (pair i is ``bins[2i], bins[2i+1]``).
- ``evaluate(scores, issame)`` splits the pairs into 10 contiguous folds (as
  insightface's ``KFold(n_splits=10, shuffle=False)``); for each fold the
  threshold is chosen on the other nine so that their false accept rate is the
  target, and TAR and FAR are measured on the held-out fold. insightface
  interpolates the threshold on a 0.001 grid of distances; we take the exact
  order statistic of the training folds' impostor scores instead, which is the
  same threshold up to the grid step. Accuracy uses the best threshold of the
  other nine folds, likewise.
"""
import pickle
from dataclasses import dataclass, field
from typing import Dict

import numpy as np


def load_bin(path, image_size=None):
    """(images uint8 (2P, H, W, 3) RGB, issame bool (P,)) from an insightface .bin.

    image_size=(h, w) resizes every image; without it all images must share one size.
    """
    from PIL import Image

    from ..data.base import decode_image

    with open(path, "rb") as f:
        try:
            bins, issame = pickle.load(f)
        except UnicodeDecodeError:  # written by Python 2: bytes inside
            f.seek(0)
            bins, issame = pickle.load(f, encoding="bytes")
    issame = np.asarray(issame, dtype=bool).reshape(-1)
    if len(bins) != 2 * len(issame):
        raise ValueError("%s: %d images for %d pairs; expected two images per pair"
                         % (path, len(bins), len(issame)))
    out = None
    for i, b in enumerate(bins):
        if isinstance(b, np.ndarray):
            b = b.tobytes()
        elif not isinstance(b, (bytes, bytearray)):
            raise TypeError("%s: image %d is %s, expected encoded image bytes"
                            % (path, i, type(b).__name__))
        img = decode_image(bytes(b), "%s image %d" % (path, i))
        if image_size is not None and img.shape[:2] != tuple(image_size):
            img = np.asarray(Image.fromarray(img).resize((image_size[1], image_size[0]),
                                                         Image.BILINEAR))
        if out is None:
            out = np.empty((len(bins),) + img.shape, dtype=np.uint8)
        elif img.shape != out.shape[1:]:
            raise ValueError("%s: image %d is %s but image 0 is %s; pass image_size=(h, w)"
                             % (path, i, img.shape[:2], out.shape[1:3]))
        out[i] = img
    if out is None:
        out = np.zeros((0, 0, 0, 3), dtype=np.uint8)
    return out, issame


def write_bin(path, images, issame, fmt="PNG"):
    """Write an insightface-style .bin from uint8 (2P, H, W, 3) images (for tests and tools)."""
    import io

    from PIL import Image

    from ..io import AtomicFiles

    bins = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(np.asarray(img, dtype=np.uint8)).save(buf, format=fmt)
        bins.append(buf.getvalue())
    with AtomicFiles() as out:
        with out.open(path, "wb") as f:
            pickle.dump((bins, [bool(s) for s in issame]), f, protocol=4)


@dataclass
class VerificationResult:
    """TAR at each target FAR (mean and std over folds) and the ROC of all pairs."""
    tar: Dict[float, float]
    tar_std: Dict[float, float]
    far: Dict[float, float]  # the FAR achieved on held-out folds (mean)
    accuracy: float
    accuracy_std: float
    n_pos: int
    n_neg: int
    fpr: np.ndarray = field(repr=False, default=None)
    tpr: np.ndarray = field(repr=False, default=None)

    def to_dict(self):
        return {"tar": {str(k): v for k, v in self.tar.items()},
                "tar_std": {str(k): v for k, v in self.tar_std.items()},
                "far": {str(k): v for k, v in self.far.items()},
                "accuracy": self.accuracy, "accuracy_std": self.accuracy_std,
                "n_pos": self.n_pos, "n_neg": self.n_neg,
                "fpr": np.asarray(self.fpr).tolist(), "tpr": np.asarray(self.tpr).tolist()}


def _threshold_at_far(neg, far):
    """Lowest threshold t (accept score > t) with at most floor(far * len(neg)) accepts."""
    if len(neg) == 0:
        return np.inf
    k = int(np.floor(far * len(neg)))
    neg = np.sort(neg)[::-1]
    return float(neg[min(k, len(neg) - 1)])


def _best_accuracy_threshold(scores, issame):
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], issame[order]
    # accepting the top j pairs: correct = true positives + negatives not accepted
    correct = np.concatenate([[0], np.cumsum(y)]) + (len(y) - np.sum(y)) - np.concatenate(
        [[0], np.cumsum(~y)])
    last = np.concatenate([np.flatnonzero(s[1:] != s[:-1]), [len(s) - 1]]) + 1  # tie-safe cuts
    cuts = np.concatenate([[0], last])
    j = cuts[np.argmax(correct[cuts])]
    return np.inf if j == 0 else float(s[j - 1]) - 1e-12


def roc(scores, issame, points=400):
    """(fpr, tpr) on a log-spaced FAR grid from 1/n_neg to 1 (accept: score > threshold)."""
    scores, issame = np.asarray(scores, np.float64), np.asarray(issame, bool)
    pos, neg = np.sort(scores[issame]), np.sort(scores[~issame])
    if len(pos) == 0 or len(neg) == 0:
        return np.zeros(0), np.zeros(0)
    fpr = np.unique(np.concatenate([np.geomspace(1.0 / len(neg), 1.0, points), [1.0]]))
    # the threshold that lets floor(f * n_neg) impostors through, as in _threshold_at_far
    thr = neg[::-1][np.minimum(np.floor(fpr * len(neg)).astype(int), len(neg) - 1)]
    tpr = 1.0 - np.searchsorted(pos, thr, side="right") / len(pos)
    fpr_real = 1.0 - np.searchsorted(neg, thr, side="right") / len(neg)
    return fpr_real, tpr


def evaluate(scores, issame, fars=(1e-3, 1e-4), n_folds=10):
    """10-fold verification: TAR at each FAR in `fars`, accuracy, ROC.

    scores: (P,) similarity per pair, higher = more likely the same person
    (e.g. cosine similarity of normalised embeddings); issame: (P,) bools.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    issame = np.asarray(issame, dtype=bool).reshape(-1)
    if scores.shape != issame.shape:
        raise ValueError("scores (%d) and issame (%d) must have one entry per pair"
                         % (len(scores), len(issame)))
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores[%d] is not finite" % int(np.flatnonzero(~np.isfinite(scores))[0]))
    if len(scores) < n_folds:
        raise ValueError("need at least %d pairs for %d folds, got %d"
                         % (n_folds, n_folds, len(scores)))
    folds = np.array_split(np.arange(len(scores)), n_folds)
    tars = {f: [] for f in fars}
    fars_got = {f: [] for f in fars}
    accs = []
    for test in folds:
        train = np.ones(len(scores), dtype=bool)
        train[test] = False
        neg_tr = scores[train & ~issame]
        s_te, y_te = scores[test], issame[test]
        for f in fars:
            t = _threshold_at_far(neg_tr, f)
            acc_ = s_te > t
            tars[f].append(acc_[y_te].mean() if y_te.any() else np.nan)
            fars_got[f].append(acc_[~y_te].mean() if (~y_te).any() else np.nan)
        t = _best_accuracy_threshold(scores[train], issame[train])
        accs.append(np.mean((s_te > t) == y_te))
    fpr, tpr = roc(scores, issame)
    return VerificationResult(
        tar={f: float(np.nanmean(v)) for f, v in tars.items()},
        tar_std={f: float(np.nanstd(v)) for f, v in tars.items()},
        far={f: float(np.nanmean(v)) for f, v in fars_got.items()},
        accuracy=float(np.mean(accs)), accuracy_std=float(np.std(accs)),
        n_pos=int(issame.sum()), n_neg=int((~issame).sum()), fpr=fpr, tpr=tpr)
