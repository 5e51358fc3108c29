"""A report on a selection: PNG plots and a markdown summary.

    facenms.report.write_report("report/", features, labels, keep, threshold=0.63)
    facenms report --features F.npy --labels L.npy --keep keep.npy --out report/   # the CLI

Writes, into ``out_dir``:

- ``kept_per_identity.png``: histogram of faces and kept faces per identity;
- ``similarity.png``: within-identity cosine similarities, all pairs against
  pairs of kept faces, with the threshold marked (pairs are sampled for large
  sets, so this costs O(sample), not O(sum n_c^2));
- ``ratio_vs_threshold.png``: kept ratio against threshold, from one pass of
  ``facenms.curve`` (64 thresholds);
- ``roc.png`` when ``eval_results`` are given: TAR against FAR per model;
- ``report.md``: the numbers behind the plots;
- ``index.html``: one static page with the summary and the plots, and, when a
  dataset is given, the faces themselves (thumbnails in ``thumbs/``): identity
  galleries with each suppressed face beside the face that suppressed it, and
  the label issues (facenms.pipeline.html_report says what is shown).

Every file is written under a temporary name and renamed when complete; the
thumbnails first, then the page with the other files as one group. Thumbnails
that a previous report left and this page does not show are removed after.
"""
import os

import numpy as np

from ..io import AtomicFiles
from .html_report import MAX_BYTES, MAX_THUMBNAILS, check_page_inputs, page_summary, write_page

__all__ = ["write_report"]

SAMPLE_PAIRS = 200_000
PLOT_TITLES = {"kept_per_identity": "faces and kept faces per identity",
               "similarity": "within-identity cosine similarity, all faces against kept faces",
               "ratio_vs_threshold": "kept ratio against threshold",
               "roc": "verification: true accept rate against false accept rate"}
OUTPUT_NAMES = ["index.html", "report.md", "thumbs"] + [k + ".png" for k in PLOT_TITLES]


def _plt():
    import matplotlib
    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt
    return plt


def _unit_rows(x, rows):
    y = np.asarray(x[rows], dtype=np.float32)
    n = np.linalg.norm(y, axis=1, keepdims=True)
    return y / np.where(n > 0, n, 1)


def _sample_pairs(labels, mask, n_pairs, rng):
    """Up to n_pairs random (i, j), i != j, same identity, both in mask; uniform over faces i.

    Exact enumeration when the identity pairs are fewer than n_pairs.
    """
    idx = np.flatnonzero(mask)
    if len(idx) < 2:
        return np.zeros((0, 2), np.int64)
    lab = labels[idx]
    order = np.argsort(lab, kind="stable")
    idx, lab = idx[order], lab[order]
    uniq, start, size = np.unique(lab, return_index=True, return_counts=True)
    total = int((size * (size - 1) // 2).sum())
    if total == 0:
        return np.zeros((0, 2), np.int64)
    if total <= n_pairs:
        out = []
        for s, n in zip(start, size):
            if n > 1:
                a, b = np.triu_indices(n, 1)
                out.append(np.stack([idx[s + a], idx[s + b]], 1))
        return np.concatenate(out)
    # pick a face i among faces with a partner, then a different face of its identity
    has = size[np.searchsorted(uniq, lab)] > 1
    i = rng.choice(np.flatnonzero(has), n_pairs)
    c = np.searchsorted(uniq, lab[i])
    off = rng.integers(1, size[c])  # 1..n_c-1 steps ahead, wrapping
    j = start[c] + (i - start[c] + off) % size[c]
    return np.stack([idx[i], idx[j]], 1)


def _pair_sims(features, pairs, chunk=65536):
    out = np.empty(len(pairs), np.float32)
    for a in range(0, len(pairs), chunk):
        p = pairs[a:a + chunk]
        out[a:a + chunk] = np.einsum("ij,ij->i", _unit_rows(features, p[:, 0]),
                                     _unit_rows(features, p[:, 1]))
    return out


def _field(r, name):
    return r[name] if isinstance(r, dict) else getattr(r, name)


def write_report(out_dir, features, labels, keep, *, threshold=None, eval_results=None,
                 sample_pairs=SAMPLE_PAIRS, seed=0, dataset=None, dataset_index=None,
                 label_issues=None, info=None, identities=(), sample=(6, 6, 12), rank=None,
                 scores=None, max_thumbnails=MAX_THUMBNAILS, max_bytes=MAX_BYTES,
                 workers=None):
    """Write the plots, report.md and index.html for a selection; returns {name: path}.

    features: (N, d) array (numpy, memmap or torch CPU); labels: (N,) ints;
    keep: indices of the kept faces (e.g. facenms.select's output);
    threshold: the similarity threshold used, drawn on the similarity plot;
    eval_results: optional {model name: result} where a result has ``fpr`` and
    ``tpr`` (and optionally ``tar``, {far: TAR}): a facenms.verification
    VerificationResult or a dict with those keys.

    The page (see facenms.pipeline.html_report): dataset, a FaceDataset or a path
    open_dataset reads, adds the faces (thumbs/ beside index.html); dataset_index
    gives the dataset position of every feature row (default: the same).
    label_issues: a CSV (index,label,score,other_label,other_similarity; only
    index is needed) or .npy path, an index array, or a mapping of those columns.
    info: the selection's SelectionInfo or select.json dict (passes, label issues).
    identities: labels to show besides the sample; sample: how many (largest,
    most suppressed, random) identities; rank, scores, seed: the selection's
    ranking, so that suppressed faces pair with their suppressors.
    max_thumbnails, max_bytes: the page's bounds.
    """
    features, labels, keep = _check(features, labels, keep, threshold)
    dataset, dataset_index, issues = check_page_inputs(
        out_dir, features, labels, dataset=dataset, dataset_index=dataset_index,
        label_issues=label_issues, rank=rank, scores=scores,
        outputs=[os.path.join(out_dir, f) for f in OUTPUT_NAMES])
    missing = np.setdiff1d(np.asarray(identities, dtype=labels.dtype), labels)
    if len(missing):
        raise ValueError("identity %r is not among the labels" % (missing[0].item(),))
    n = len(labels)
    kept = np.zeros(n, bool)
    kept[keep] = True
    uniq, inv = np.unique(labels, return_inverse=True)
    faces_per = np.bincount(inv, minlength=len(uniq))
    kept_per = np.bincount(inv[keep], minlength=len(uniq))
    lines = _summary(n, len(keep), threshold, faces_per, kept_per)
    with AtomicFiles() as out:  # it makes out_dir, and removes it again on a failure
        paths, sizes = _plots(out, out_dir, features, labels, kept, threshold=threshold,
                              eval_results=eval_results, sample_pairs=sample_pairs, seed=seed,
                              lines=lines, faces_per=faces_per, kept_per=kept_per)
        plots = [(os.path.basename(v), PLOT_TITLES[k]) for k, v in paths.items()]
        lines += ["## Plots", ""] + ["![%s](%s)" % (k, os.path.basename(v))
                                      for k, v in paths.items()] + [""]
        paths["index"], shown = write_page(
            out, out_dir, features, labels, kept, summary=page_summary(
                n, len(keep), threshold, faces_per, kept_per, info=info, issues=issues,
                kept=kept), plots=plots, dataset=dataset, dataset_index=dataset_index,
            issues=issues, identities=identities, sample=sample, seed=seed, rank=rank or "sparsity",
            scores=scores, threshold=threshold, max_thumbnails=max_thumbnails,
            max_bytes=max_bytes, plot_bytes=sum(sizes.values()), workers=workers)
        paths["report"] = os.path.join(out_dir, "report.md")
        with out.open(paths["report"], "w") as f:
            f.write("\n".join(lines))
    _remove_old_thumbnails(out_dir, shown["files"])
    return paths


def _plots(out, out_dir, features, labels, kept, *, threshold, eval_results, sample_pairs,
           seed, lines, faces_per, kept_per):
    """The PNG plots through `out`; ({name: path}, {name: bytes}); appends to `lines`."""
    n, n_keep = len(labels), int(kept.sum())
    rng = np.random.default_rng(seed)
    paths, sizes = {}, {}

    def save(name, fig):
        paths[name] = os.path.join(out_dir, name + ".png")
        with out.open(paths[name], "wb") as f:
            fig.savefig(f, format="png", dpi=100)
            sizes[name] = f.tell()
        _plt().close(fig)

    save("kept_per_identity", _kept_per_identity_plot(faces_per, kept_per, n_keep, n))
    all_pairs = _sample_pairs(labels, np.ones(n, bool), sample_pairs, rng)
    kept_pairs = _sample_pairs(labels, kept, sample_pairs, rng)
    s_all, s_kept = _pair_sims(features, all_pairs), _pair_sims(features, kept_pairs)
    fig, more = _similarity_plot(s_all, s_kept, threshold)
    save("similarity", fig)
    lines += more
    if n:
        fig, more = _curve_plot(features, labels, s_all, n_keep, threshold)
        save("ratio_vs_threshold", fig)
        lines += more
    if eval_results:
        fig, more = _roc_plot(eval_results)
        save("roc", fig)
        lines += more
    return paths, sizes


def _remove_old_thumbnails(out_dir, files):
    """Thumbnails an earlier report left that this page does not show (the page is
    already in place: an interrupted removal leaves only unused files)."""
    d = os.path.join(out_dir, "thumbs")
    if not os.path.isdir(d):
        return
    keep = {os.path.basename(f) for f in files}
    for e in os.scandir(d):
        if e.is_file(follow_symlinks=False) and e.name.endswith(".jpg") and \
                e.name not in keep:
            os.remove(e.path)
    if not os.listdir(d):
        os.rmdir(d)


def _check(features, labels, keep, threshold):
    if hasattr(features, "detach"):
        features = features.detach().cpu().numpy()
    labels = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).reshape(-1)
    keep = np.asarray(keep.cpu() if hasattr(keep, "cpu") else keep)
    n = len(labels)
    if features.ndim != 2 or features.shape[0] != n:
        raise ValueError("features must be (N, d) with N = len(labels) = %d, got shape %s"
                         % (n, tuple(features.shape)))
    if keep.dtype.kind not in "iu":
        raise TypeError("keep must hold integer indices, got %s" % keep.dtype)
    if keep.ndim != 1:
        raise ValueError("keep must be a 1-D array of indices, got shape %s" % (keep.shape,))
    if len(keep) and (keep.min() < 0 or keep.max() >= n):
        bad = keep[(keep < 0) | (keep >= n)][0]
        raise ValueError("keep has indices outside [0, %d): the first is %d" % (n, bad))
    if len(np.unique(keep)) != len(keep):
        raise ValueError("keep has repeated indices")
    if threshold is not None and not -1 <= float(threshold) <= 1:
        raise ValueError("threshold must be in [-1, 1], got %r" % (threshold,))
    return features, labels, keep


def _summary(n, n_keep, threshold, faces_per, kept_per):
    some = len(faces_per) > 0
    return ["# facenms selection report", "",
            "| | |", "|---|---|",
            "| faces | %d |" % n, "| identities | %d |" % len(faces_per),
            "| kept | %d (%.2f%%) |" % (n_keep, 100 * n_keep / max(1, n)),
            "| threshold | %s |" % ("%.4f" % threshold if threshold is not None else "not given"),
            "| identities with no face kept | %d |" % int((kept_per == 0).sum()),
            "| identities with one face kept | %d |" % int((kept_per == 1).sum()),
            "| kept per identity: min / median / max | %d / %g / %d |" % (
                kept_per.min(), np.median(kept_per), kept_per.max()) if some else "| | |",
            "| faces per identity: min / median / max | %d / %g / %d |" % (
                faces_per.min(), np.median(faces_per), faces_per.max()) if some else "| | |",
            ""]


def _kept_per_identity_plot(faces_per, kept_per, n_keep, n):
    fig, ax = _plt().subplots(figsize=(6.5, 4))
    top = max(1, int(faces_per.max()) if len(faces_per) else 1)
    bins = np.unique(np.geomspace(1, top + 1, 40).astype(int)) if top > 40 else \
        np.arange(0, top + 2) - 0.5
    ax.hist(faces_per, bins=bins, alpha=0.5, label="faces per identity")
    ax.hist(kept_per, bins=bins, alpha=0.7, label="kept per identity")
    if top > 40:
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("faces")
    ax.set_ylabel("identities")
    ax.legend()
    ax.set_title("kept %d of %d faces (%.1f%%)" % (n_keep, n, 100 * n_keep / max(1, n)))
    fig.tight_layout()
    return fig


def _similarity_plot(s_all, s_kept, threshold):
    """Within-identity similarities, all faces against kept faces."""
    fig, ax = _plt().subplots(figsize=(6.5, 4))
    hb = np.linspace(min(-0.2, float(s_all.min()) if len(s_all) else 0), 1.0, 80)
    if len(s_all):
        ax.hist(s_all, bins=hb, density=True, alpha=0.5, label="all faces (%d pairs)"
                % len(s_all))
    if len(s_kept):
        ax.hist(s_kept, bins=hb, density=True, alpha=0.6, label="kept faces (%d pairs)"
                % len(s_kept))
    if threshold is not None:
        ax.axvline(threshold, color="r", ls="--", label="threshold %.3f" % threshold)
    ax.set_xlabel("cosine similarity within an identity")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    lines = ["## Within-identity similarity (sampled pairs)", "",
             "| pairs | count | mean | 99th pct | above threshold |", "|---|---|---|---|---|"]
    for name, s in (("all faces", s_all), ("kept faces", s_kept)):
        if len(s):
            above = "%.2f%%" % (100 * np.mean(s > threshold)) if threshold is not None else "-"
            lines.append("| %s | %d | %.4f | %.4f | %s |" % (
                name, len(s), s.mean(), np.percentile(s, 99), above))
    return fig, lines + [""]


def _curve_plot(features, labels, s_all, n_keep, threshold):
    """Kept ratio against threshold, from one pass of facenms.curve."""
    from ..core.select import curve
    n = len(labels)
    lo = min(0.0, float(np.percentile(s_all, 1))) if len(s_all) else 0.0
    ts, ratios = curve(features, labels, thresholds=np.linspace(lo, 1.0, 64))
    fig, ax = _plt().subplots(figsize=(6.5, 4))
    ax.plot(ts, 100 * ratios, marker=".")
    ax.axhline(100 * n_keep / n, color="g", ls=":", label="this selection %.1f%%"
               % (100 * n_keep / n))
    if threshold is not None:
        ax.axvline(threshold, color="r", ls="--", label="threshold %.3f" % threshold)
    ax.set_xlabel("threshold")
    ax.set_ylabel("kept faces (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    lines = ["## Kept ratio against threshold (one pass, Face-NMS rule)", "",
             "| threshold | kept % |", "|---|---|"]
    lines += ["| %.3f | %.2f |" % (ts[j], 100 * ratios[j]) for j in range(0, len(ts), 8)]
    return fig, lines + [""]


def _roc_plot(eval_results):
    fig, ax = _plt().subplots(figsize=(6.5, 4))
    lines = ["## Verification", "", "| model | TAR@FAR=1e-3 | TAR@FAR=1e-4 |", "|---|---|---|"]
    for name, r in eval_results.items():
        fpr, tpr = np.asarray(_field(r, "fpr")), np.asarray(_field(r, "tpr"))
        ok = fpr > 0
        ax.plot(fpr[ok], tpr[ok], label=name)
        try:
            tar = _field(r, "tar")
        except (KeyError, AttributeError):
            tar = None
        if tar:
            get = lambda f: tar.get(f, tar.get(str(f), float("nan")))  # noqa: E731
            lines.append("| %s | %.4f | %.4f |" % (name, get(1e-3), get(1e-4)))
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, lines + [""]
