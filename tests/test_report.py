"""facenms.report: files written atomically, valid PNGs that matplotlib reads back, the CLI."""
import os

import numpy as np
import pytest

import facenms
from facenms import cli
from facenms.pipeline.report import write_report
from facenms.eval.embeddings import webface_like
from facenms.verification import evaluate

PNG = b"\x89PNG\r\n\x1a\n"


def _check_png(path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    with open(path, "rb") as f:
        assert f.read(8) == PNG
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


@pytest.fixture(scope="module")
def selection():
    x, labels = webface_like(1500, dim=32, seed=0)
    keep, info = facenms.select(x, labels, ratio=0.6, return_info=True)
    return x, labels, keep, info


def test_report_files(tmp_path, selection):
    x, labels, keep, info = selection
    rng = np.random.default_rng(0)
    issame = rng.random(4000) < 0.3
    evals = {"model a": evaluate(rng.normal(2, 1, 4000) * issame + rng.normal(0, 1, 4000), issame),
             "model b": evaluate(rng.normal(0, 1, 4000) + issame, issame).to_dict()}
    out = tmp_path / "rep"
    paths = write_report(out, x, labels, keep, threshold=info.threshold, eval_results=evals,
                         sample_pairs=5000)
    assert set(paths) == {"kept_per_identity", "similarity", "ratio_vs_threshold", "roc",
                          "report", "index"}
    for k, p in paths.items():
        assert os.path.isfile(p)
        if p.endswith(".png"):
            _check_png(p)
    md = open(paths["report"]).read()
    assert "| kept | %d (60.00%%) |" % len(keep) in md
    assert "%.4f" % info.threshold in md and "model a" in md and "![roc](roc.png)" in md
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in paths.values())


def test_report_without_threshold_or_eval(tmp_path, selection):
    x, labels, keep, _ = selection
    paths = write_report(tmp_path, x, labels, keep, sample_pairs=2000)
    assert "roc" not in paths and "not given" in open(paths["report"]).read()
    _check_png(paths["similarity"])


def test_report_bad_keep_writes_nothing(tmp_path, selection):
    x, labels, keep, _ = selection
    with pytest.raises(ValueError, match="outside"):
        write_report(tmp_path / "r", x, labels, np.array([0, len(labels)]))
    with pytest.raises(ValueError, match="repeated"):
        write_report(tmp_path / "r", x, labels, np.array([1, 1]))
    assert not (tmp_path / "r").exists()


def test_report_failure_midway_leaves_no_file(tmp_path, selection, monkeypatch):
    x, labels, keep, _ = selection
    def boom(*a, **k):  # fails after the first two plots were written
        raise RuntimeError("boom")
    monkeypatch.setattr(facenms.core.select, "curve", boom)
    with pytest.raises(RuntimeError, match="boom"):
        write_report(tmp_path, x, labels, keep, sample_pairs=1000)
    assert os.listdir(tmp_path) == []


def test_cli(tmp_path, selection, capsys):
    x, labels, keep, info = selection
    for name, a in (("f.npy", x), ("l.npy", labels), ("k.npy", keep)):
        np.save(tmp_path / name, a)
    argv = ["report", "--features", str(tmp_path / "f.npy"), "--labels",
            str(tmp_path / "l.npy"), "--keep", str(tmp_path / "k.npy"),
            "--out", str(tmp_path / "out"), "--threshold", str(info.threshold),
            "--sample-pairs", "2000"]
    cli.main(argv)
    assert "report.md" in capsys.readouterr().out
    _check_png(tmp_path / "out" / "ratio_vs_threshold.png")
    argv[6] = str(tmp_path / "missing.npy")
    with pytest.raises(SystemExit, match="facenms report: error: keep file not found"):
        cli.main(argv)
