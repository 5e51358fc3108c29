"""`facenms label-issues`, `facenms select --clean` and `[select] clean = true` in a run."""
import csv
import json
import os
import sys

import numpy as np
import pytest

import facenms
from procs import facenms_cli as cli
from facenms.data import open_dataset, synthetic
from facenms.pipeline.cleaning import read_label_issues
from facenms.pipeline.run import run as run_config
from facenms.scale.sort_features import sort_features

from test_cleaning import planted


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("clean_cli")
    x, labels, wrong = planted(n_ident=120, seed=12)
    labels = labels * 5 + 3
    np.save(d / "f.npy", x)
    np.save(d / "l.npy", labels)
    return d, x, labels


def test_label_issues_writes_the_csv(files):
    d, x, labels = files
    out = cli("label-issues", "--features", d / "f.npy", "--labels", d / "l.npy",
              "--out", d / "issues.csv")
    want, info = facenms.label_issues(x, labels, return_info=True)
    assert "facenms label-issues: %d faces: %d label issues" % (len(x), len(want)) in out
    with open(d / "issues.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["index", "label", "score", "other_label", "other_similarity"]
    assert [int(r["index"]) for r in rows] == list(want)
    assert [int(r["label"]) for r in rows] == list(labels[want])
    assert [int(r["other_label"]) for r in rows] == list(info.other_label)
    np.testing.assert_allclose([float(r["score"]) for r in rows], info.issue_score, atol=1e-5)
    np.testing.assert_allclose([float(r["other_similarity"]) for r in rows],
                               info.other_similarity, atol=1e-5)
    np.testing.assert_array_equal(read_label_issues(d / "issues.csv"), want)
    cli("label-issues", "--features", d / "f.npy", "--labels", d / "l.npy", "--out",
        d / "issues4.csv", "--threshold", 4, "--block-size", 100)
    assert len(read_label_issues(d / "issues4.csv")) == len(
        facenms.label_issues(x, labels, threshold=4))


def test_label_issues_on_a_sorted_file_names_dataset_positions(files):
    d, x, labels = files
    sort_features(str(d / "f.npy"), str(d / "l.npy"), str(d / "sorted.npy"))
    cli("label-issues", "--features", d / "sorted.npy", "--labels", d / "l.npy",
        "--out", d / "sorted.csv")
    np.testing.assert_array_equal(read_label_issues(d / "sorted.csv"),
                                  facenms.label_issues(x, labels))


def test_label_issues_errors_are_one_line_and_write_nothing(files, tmp_path):
    d, x, labels = files
    np.save(tmp_path / "short.npy", labels[:10])
    out = cli("label-issues", "--features", d / "f.npy", "--labels", tmp_path / "short.npy",
              "--out", tmp_path / "o.csv", ok=False)
    assert out.startswith("facenms label-issues: error: ") and "one label per face" in out
    assert len(out.strip().splitlines()) == 1 and not (tmp_path / "o.csv").exists()
    out = cli("label-issues", "--features", d / "f.npy", "--labels", d / "l.npy",
              "--out", d / "l.npy", ok=False)
    assert out.startswith("facenms label-issues: error: ")
    out = cli("label-issues", "--features", d / "f.npy", "--labels", d / "l.npy",
              "--out", tmp_path / "o.csv", "--min-faces", 1, ok=False)
    assert "min_faces must be >= 3" in out


def test_select_clean(files):
    d, x, labels = files
    out = cli("select", "--features", d / "f.npy", "--labels", d / "l.npy", "--ratio", 0.5,
              "--clean", "--out", d / "keep.npy", "--info", d / "info.json")
    want, info = facenms.select(x, labels, ratio=0.5, clean=True, return_info=True)
    np.testing.assert_array_equal(np.load(d / "keep.npy"), want)
    assert "label issues dropped" in out
    assert json.loads((d / "info.json").read_text())["label_issues"] == info.label_issues > 0


def test_run_config_with_clean_writes_label_issues_and_exports_without_them(tmp_path):
    data = synthetic.make_recordio(tmp_path / "data", num_identities=20,
                                   images_per_identity=(6, 9), size=16, seed=1)
    n = len(open_dataset(str(data)))
    work = tmp_path / "work"
    os.makedirs(work)
    x, _, _ = planted(n_ident=20, seed=13)
    x = x[np.random.default_rng(0).integers(0, len(x), n)]
    labels = open_dataset(str(data)).labels.astype(np.int64)
    x = np.random.default_rng(1).standard_normal((20, x.shape[1]))[labels] * 3 + x[:n]
    x[5] = x[labels == labels[5] + 1][0]  # another identity's face
    np.save(work / "features.npy", x.astype(np.float16))
    np.save(work / "labels.npy", labels)
    cfg = dict(data=dict(dataset=str(data), work_dir=str(work)),
               select=dict(ratio=0.6, clean=True), export=dict(format="npy"))
    paths = run_config(cfg, stages=("select", "export"), progress=False)
    issues = read_label_issues(paths["label_issues"])
    assert 5 in issues
    keep = np.load(paths["keep"])
    np.testing.assert_array_equal(keep, facenms.select(x.astype(np.float16), labels, ratio=0.6,
                                                       clean=True))
    assert not np.isin(keep, issues).any()
    np.testing.assert_array_equal(np.load(paths["export"]), keep)
    os.remove(paths["label_issues"])  # a missing output redoes the stage
    run_config(cfg, stages=("select",), progress=False)
    np.testing.assert_array_equal(read_label_issues(paths["label_issues"]), issues)


def test_cleaning_bench_quick_run(tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench",
                                    "quality"))
    try:
        import clean
        doc = clean.main(["--quick", "--worlds", "noise 3%", "3% + 3% open-set", "--epochs", "1",
                          "--out", str(tmp_path)])
    finally:
        sys.path.pop(0)
    assert [d["world"] for d in doc["detection"]] == ["noise 3%", "3% + 3% open-set"]
    assert "open_set_recall" in doc["detection"][1]
    methods = {(r["method"], r["ratio"]) for r in doc["quality"]}
    assert methods == {("full", 1.0)} | {(m, 0.4) for m in clean.METHODS}
    for r in doc["quality"]:
        assert abs(r["kept_ratio"] - r["ratio"]) < 0.01
    md = (tmp_path / "results.md").read_text()
    assert "| noise 3% | **facenms+clean** | 0.4 |" in md
    assert json.loads((tmp_path / "results.json").read_text())["quality"]
