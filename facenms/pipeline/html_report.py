"""The report's page, index.html, with the faces themselves when a dataset is given.

What it shows (the documented sample): the identities named by the caller, the
largest identities, those with most faces suppressed, and a seeded random few;
each with kept faces and suppressed faces beside the kept face that suppressed
them (the most similar kept face ranked before it). Then the label issues, when
given: each flagged face beside typical faces of its label and of the identity it
most resembles. The page is bounded: at most `max_thumbnails` thumbnails and
`max_bytes` bytes (thumbnails, plots and the page together), filled in the order
named identities, label issues, the rest of the sample.
"""
import csv
import os

import numpy as np

from ..io import check_not_inputs, load_indices
from . import gallery
from .cleaning import COLUMNS
from .html_page import render_page
from .thumbs import make_thumbnails

__all__ = ["load_label_issues", "check_page_inputs", "page_summary", "write_page",
           "MAX_THUMBNAILS", "MAX_BYTES"]

MAX_THUMBNAILS = 2000
MAX_BYTES = 20 << 20
PAGE_BYTES_PER_FACE = 400  # the HTML around one thumbnail, for the byte budget


def _read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "index" not in rows[0]:
        raise ValueError("%s: label issues need an 'index' column (columns: %s)"
                         % (path, ", ".join(rows[0])))
    cols = {}
    for k in COLUMNS:
        if rows and k in rows[0]:
            try:
                cols[k] = np.array([float(r[k]) if r[k] not in ("", None) else np.nan
                                    for r in rows])
            except ValueError:
                raise ValueError("%s: column %s holds a value that is not a number"
                                 % (path, k)) from None
    cols.setdefault("index", np.zeros(0))
    return cols


def load_label_issues(issues, labels):
    """Label issues as {column: array} (cleaning.COLUMNS), from a CSV or .npy path, an array of
    face indices, or a mapping / object with those fields; None stays None."""
    if issues is None:
        return None
    where = "label issues"
    if isinstance(issues, (str, os.PathLike)):
        where = os.fspath(issues)
        if not os.path.isfile(where):
            raise FileNotFoundError("label issues file not found: %s" % where)
        issues = load_indices(where, "label issues") if where.endswith(".npy") else \
            _read_csv(where)
    get = (lambda k: issues.get(k)) if isinstance(issues, dict) else \
        (lambda k: getattr(issues, k, None))
    if not isinstance(issues, dict) and not hasattr(issues, "index"):
        get = {"index": issues}.get
    if isinstance(issues, np.ndarray) and issues.dtype.names:
        get = {k: issues[k] for k in issues.dtype.names}.get
    idx = np.asarray(get("index") if get("index") is not None else [])
    if idx.ndim != 1 or (len(idx) and not np.all(np.mod(idx, 1) == 0)):
        raise ValueError("%s: face indices must be a 1-D list of integers" % where)
    idx = idx.astype(np.int64)
    n = len(labels)
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        raise ValueError("%s: face index %d is outside [0, %d)" % (
            where, int(idx[(idx < 0) | (idx >= n)][0]), n))
    out = {"index": idx}
    for k in COLUMNS[1:]:
        v = get(k)
        out[k] = np.asarray(v).reshape(-1) if v is not None else None
        if out[k] is not None and len(out[k]) != len(idx):
            raise ValueError("%s: column %s has %d values for %d faces"
                             % (where, k, len(out[k]), len(idx)))
    out["label"] = labels[idx] if out["label"] is None else out["label"].astype(labels.dtype)
    out["score"] = np.full(len(idx), np.nan) if out["score"] is None else out["score"]
    if out["other_label"] is not None and out["other_label"].dtype.kind == "f":
        out["other_label"] = np.where(np.isnan(out["other_label"]), -1,
                                        out["other_label"]).astype(np.int64)
    return out


def check_page_inputs(out_dir, features, labels, *, dataset, dataset_index, label_issues,
                      rank, scores, outputs):
    """The dataset (opened), its row map and the label issues, checked before any write."""
    n = len(labels)
    if rank not in (None, "sparsity", "centrality", "random", "scores"):
        raise ValueError("rank must be sparsity, centrality, random or scores, got %r"
                         % (rank,))
    if (rank == "scores") != (scores is not None) and rank is not None:
        raise ValueError("rank='scores' and scores= go together")
    if scores is not None and np.shape(scores) != (n,):
        raise ValueError("scores must hold one value per face (%d), got shape %s"
                         % (n, np.shape(scores)))
    if isinstance(dataset, (str, os.PathLike)):
        from ..data import open_dataset
        dataset = open_dataset(os.fspath(dataset))
    if dataset_index is not None:
        dataset_index = np.asarray(dataset_index).reshape(-1)
        if len(dataset_index) != n:
            raise ValueError("dataset_index has %d entries for %d faces"
                             % (len(dataset_index), n))
    if dataset is not None:
        if dataset_index is None and len(dataset) != n:
            raise ValueError("the dataset %s has %d faces but the features have %d rows; "
                             "give the dataset the features were extracted from"
                             % (_name(dataset), len(dataset), n))
        if dataset_index is not None and len(dataset_index) and (
                dataset_index.min() < 0 or dataset_index.max() >= len(dataset)):
            raise ValueError("dataset_index points outside the dataset's %d faces"
                             % len(dataset))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError("%s: the report's output must be a folder, and this is a file"
                         % os.fspath(out_dir))
    inputs = [getattr(features, "filename", None)] + (
        [os.fspath(label_issues)] if isinstance(label_issues, (str, os.PathLike)) else [])
    check_not_inputs(outputs, inputs + (list(dataset.files()) if dataset is not None else []),
                     list(dataset.trees()) if dataset is not None else [])
    return dataset, dataset_index, load_label_issues(label_issues, labels)


def _name(dataset):
    files = list(dataset.files()) + list(dataset.trees())
    return files[0] if files else repr(dataset)


def page_summary(n, n_keep, threshold, faces_per, kept_per, *, info, issues, kept):
    """[(name, value)] for the page's summary table."""
    get = (lambda k: info.get(k)) if isinstance(info, dict) else \
        (lambda k: getattr(info, k, None))
    passes = get("passes") if info is not None else None
    rows = [("faces", n), ("identities", len(faces_per)),
            ("kept", "%d (%.2f%%)" % (n_keep, 100 * n_keep / max(1, n))),
            ("threshold", "%.4f" % threshold if threshold is not None else "not given"),
            ("passes", passes if passes is not None else "not recorded"),
            ("identities with no face kept", int((kept_per == 0).sum()))]
    if issues is not None:
        flagged = issues["index"]
        rows.append(("label issues", "%d flagged, %d of them dropped (not kept)" % (
            len(flagged), int((~kept[flagged]).sum()))))
    return rows


def _priority(galleries, issues):
    """Rows in the order the budget admits them: named identities, label issues, the rest."""
    def rows_of(g):
        return g.kept + [r for p in g.pairs for r in p[:2] if r >= 0]
    named = [r for g in galleries if "named" in g.reasons for r in rows_of(g)]
    rest = [r for g in galleries if "named" not in g.reasons for r in rows_of(g)]
    iss = [r for it in issues for r in [it["index"]] + it["own"] + it["other"]]
    return list(dict.fromkeys(named + iss + rest))


def _within_budget(thumbs, max_bytes):
    out, used = {}, 0
    for t in thumbs:
        used += len(t.data) + PAGE_BYTES_PER_FACE
        if used > max_bytes:
            break
        out[t.row] = t
    return out


def plan(features, labels, kept_mask, issues, *, identities=(), sample=(6, 6, 12), seed=0,
         rank="sparsity", scores=None):
    """(galleries, issues to show, sample note) without reading any image."""
    index = gallery.IdentityIndex(labels)
    kept_per = np.add.reduceat(kept_mask[index.order], index.start) if len(labels) else \
        np.zeros(0, np.int64)
    largest, suppressed, random = sample
    chosen = gallery.choose_identities(index, kept_per, named=identities, largest=largest,
                                       suppressed=suppressed, random=random, seed=seed)
    gals = gallery.galleries(features, kept_mask, index, chosen, rank=rank, scores=scores,
                             seed=seed)
    note = ("Shown: %sthe %d largest identities, the %d with most faces suppressed, and %d "
            "drawn at random (seed %d). Each shows kept faces and suppressed faces spread "
            "evenly over its rank order; a suppressed face stands beside the most similar "
            "kept face ranked before it, with their cosine similarity." % (
                "the identities asked for, " if len(identities) else "", largest, suppressed,
                random, seed))
    shown = gallery.issue_neighbours(features, index, issues) if issues is not None else []
    return gals, shown, note


def write_page(out, out_dir, features, labels, kept_mask, *, summary, plots, dataset=None,
               dataset_index=None, issues=None, identities=(), sample=(6, 6, 12), seed=0,
               rank="sparsity", scores=None, threshold=None, max_thumbnails=MAX_THUMBNAILS,
               max_bytes=MAX_BYTES, plot_bytes=0, workers=None):
    """Write index.html (and thumbs/ when `dataset` is given) through AtomicFiles `out`.

    Returns (path of index.html, {"thumbnails": n, "undecodable": [names], "files":
    [thumbnail paths relative to out_dir], "bytes": n}).
    """
    summary, notes = list(summary), []
    gals, shown, note = ([], [], "")
    if dataset is not None:
        gals, shown, note = plan(features, labels, kept_mask, issues, identities=identities,
                                 sample=sample, seed=seed, rank=rank, scores=scores)
    elif issues is not None:
        shown = [dict(index=int(i), label=issues["label"][j], score=issues["score"][j],
                      other_label=_at(issues["other_label"], j),
                      other_similarity=_at(issues["other_similarity"], j), own=[],
                      other=[]) for j, i in enumerate(issues["index"][:200])]
    thumbs = {}
    if dataset is not None:
        rows = _priority(gals, shown)
        if len(rows) > max_thumbnails:
            notes.append("%d faces were left out to stay within %d thumbnails."
                         % (len(rows) - max_thumbnails, max_thumbnails))
        made = make_thumbnails(dataset, rows[:max_thumbnails], dataset_index, workers=workers)
        thumbs = _within_budget(made, max_bytes - plot_bytes)
        if len(thumbs) < len(made):
            notes.append("%d faces were left out to stay within %d bytes."
                         % (len(made) - len(thumbs), max_bytes))
    bad = [t.name for t in thumbs.values() if t.error]
    if bad:
        notes.append("%d image(s) could not be decoded and show a placeholder: %s"
                     % (len(bad), ", ".join(bad[:10])))
    summary.append(("faces shown", "%d thumbnails" % len(thumbs) if dataset is not None
                    else "none (no dataset given)"))
    issues_note = ("%d faces flagged as likely carrying another identity's label; the %d "
                   "of highest score are shown." % (len(issues["index"]), len(shown))
                   if issues is not None else "")
    for t in thumbs.values():  # the thumbnails first: the page commits after them
        with out.open(os.path.join(out_dir, t.file), "wb") as f:
            f.write(t.data)
    page = render_page(summary, plots, labels=labels, galleries=gals, thumbs=thumbs,
                       issues=shown, threshold=threshold, sample_note=note, notes=notes,
                       issues_note=issues_note)
    path = os.path.join(out_dir, "index.html")
    with out.open(path, "wb") as f:
        f.write(page.encode("utf-8"))
    return path, {"thumbnails": len(thumbs), "undecodable": bad,
                  "files": [t.file for t in thumbs.values()],
                  "bytes": plot_bytes + len(page.encode()) +
                  sum(len(t.data) for t in thumbs.values())}


def _at(a, j):
    return None if a is None else a[j]
