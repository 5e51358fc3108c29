"""End to end: RecordIO in, proxy, features, selection, RecordIO subset out."""
import os

import numpy as np
import pytest

import facenms
from facenms.cli.demo import DEMO_CONFIG
from facenms.data import open_dataset, synthetic
from facenms.pipeline.run import load_config, run
from facenms.pipeline.proxy import load_checkpoint


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    data = synthetic.make_recordio(root / "data", num_identities=12, images_per_identity=(5, 9))
    cfg = {k: dict(v) for k, v in DEMO_CONFIG.items()}
    cfg["proxy"].update(epochs=3, fraction=0.5)
    cfg["data"] = dict(dataset=str(data), work_dir=str(root / "work"))
    return root, cfg, run(cfg, progress=False)


def test_every_stage_ran_and_the_subset_reads_back(done):
    root, cfg, paths = done
    history = load_checkpoint(paths["proxy"])["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    feats, labels = np.load(paths["features"]), np.load(paths["labels"])
    assert feats.dtype == np.float16 and len(feats) == len(labels)
    np.testing.assert_allclose(np.linalg.norm(feats.astype(np.float32), axis=1), 1, atol=2e-3)
    keep = np.load(paths["keep"])
    np.testing.assert_array_equal(keep, facenms.select(feats, labels, ratio=0.6,
                                                       clean=cfg["select"].get("clean", False)))
    src, core = open_dataset(cfg["data"]["dataset"]), open_dataset(paths["export"])
    assert len(core) == len(keep)
    # the subset holds the kept images, identities renumbered densely in order
    order = sorted(keep, key=lambda i: (src.labels[i], i))
    old = src.labels[order]
    np.testing.assert_array_equal(core.labels, np.unique(old, return_inverse=True)[1])
    for j, i in enumerate(order):
        assert core.read_bytes(j) == src.read_bytes(i)


def test_a_second_run_skips_every_stage(done, capsys):
    root, cfg, paths = done
    before = {k: open(v, "rb").read() for k, v in paths.items()
              if k in ("features", "keep")}
    run(cfg, progress=False)
    out = capsys.readouterr().out
    assert "already done" in out and "already trained" in out
    for k, b in before.items():
        assert open(paths[k], "rb").read() == b


def test_config_errors_name_the_problem(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[data]\nwork_dir = 'w'\n")
    with pytest.raises(ValueError, match="dataset"):
        load_config(str(p))
    p.write_text("[data]\ndataset = 'x'\n[selct]\nratio = 0.5\n")
    with pytest.raises(ValueError, match="unknown section.*selct"):
        load_config(str(p))
    with pytest.raises(FileNotFoundError):
        load_config(str(tmp_path / "missing.toml"))


def test_a_changed_setting_or_input_redoes_the_stages_after_it(done, capsys):
    root, cfg, paths = done
    keep_before = np.load(paths["keep"])
    cfg2 = dict(cfg, select={"ratio": 0.4})
    run(cfg2, stages=("select", "export"), progress=False)
    out = capsys.readouterr().out
    assert "already done" not in out
    keep = np.load(paths["keep"])
    assert len(keep) < len(keep_before)
    assert len(open_dataset(paths["export"])) == len(keep)  # the export followed
    # a replaced features file (what re-extraction does) is selected again
    feats = np.load(paths["features"])
    tmp = paths["features"] + ".new.npy"
    np.save(tmp, feats[:, ::-1].copy())
    os.replace(tmp, paths["features"])
    run(cfg2, stages=("select",), progress=False)
    assert "already done" not in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(paths["keep"]),
                                  facenms.select(feats[:, ::-1].copy(), np.load(paths["labels"]),
                                                 ratio=0.4))
    run(cfg2, stages=("select", "export"), progress=False)
    out = capsys.readouterr().out  # the export had not seen the new keep.npy yet
    assert "[select] already done" in out and "[export] already done" not in out
    run(cfg2, stages=("select", "export"), progress=False)
    assert capsys.readouterr().out.count("already done") == 2
    # put the module's state back for the other tests
    os.replace(paths["features"], tmp)
    np.save(paths["features"], feats)
    os.remove(tmp)
    run(cfg, stages=("select", "export"), progress=False)
