"""Label issues as a CSV file: what `facenms label-issues` and `facenms run` with
``[select] clean = true`` write.

Columns: index (the face's position in the dataset), label, score (the score
label_issues compared with its threshold, in robust sigmas), other_label (the
identity the face most resembles), other_similarity (its cosine to that
identity's centre). One row per flagged face, ascending index.
"""
import os

import numpy as np

from ..io import AtomicFiles, check_writable, user_error

COLUMNS = ("index", "label", "score", "other_label", "other_similarity")


def write_label_issues(path, issues, labels, info, positions=None):
    """Write the flagged faces of `info` (a LabelIssuesInfo) to `path`, atomically.

    issues: the indices label_issues returned; labels: every face's label (in
    the same order as the features); positions: dataset position of every row
    of the features when they are not in dataset order (a sorted file), else None.
    """
    issues = np.asarray(issues, dtype=np.int64)
    labels = np.asarray(labels)
    index = issues if positions is None else np.asarray(positions)[issues]
    srt = np.argsort(index, kind="stable")
    path = os.fspath(path)
    check_writable(path, need_bytes=96 * len(issues))
    lines = [",".join(COLUMNS) + "\n"]
    for j in srt:
        lines.append("%d,%d,%.6f,%d,%.6f\n" % (
            index[j], labels[issues[j]], info.issue_score[j], info.other_label[j],
            info.other_similarity[j]))
    try:
        with AtomicFiles() as out:
            with out.open(path, "w") as f:
                f.writelines(lines)
    except OSError as e:
        raise user_error(e, path) or e
    return path


def read_label_issues(path):
    """The indices (int64, ascending) of a label-issues CSV."""
    rows = np.loadtxt(path, delimiter=",", skiprows=1, usecols=0, dtype=np.int64, ndmin=1)
    return np.sort(rows)
