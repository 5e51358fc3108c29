"""`facenms run`: the whole config checked before the first stage, and stamps that see
outputs damaged in place, a dataset replaced at its path and a permuted labels file."""
import os
import subprocess
import sys

import numpy as np
import pytest

import facenms
from facenms.cli.demo import DEMO_CONFIG
from facenms.data import open_dataset, synthetic
from facenms.pipeline import run as runner
from facenms.pipeline.run import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(path, seed):
    # a fixed count per identity: every seed gives the same labels, other images
    return synthetic.make_recordio(path, num_identities=6, images_per_identity=(6, 6),
                                   seed=seed)


def _config(root, **sections):
    cfg = {k: dict(v) for k, v in DEMO_CONFIG.items()}
    cfg["proxy"].update(epochs=1, fraction=0.5, batch_size=8)
    cfg["data"] = dict(dataset=str(root / "data"), work_dir=str(root / "work"))
    cfg.update(sections)
    return cfg


@pytest.fixture
def first(tmp_path, one_thread):
    _data(tmp_path / "data", seed=1)
    cfg = _config(tmp_path)
    paths = run(cfg, progress=False)
    return tmp_path, cfg, paths


def _rerun(cfg, capsys, stages=None):
    capsys.readouterr()
    paths = run(cfg, progress=False) if stages is None else run(cfg, stages, progress=False)
    out = capsys.readouterr().out
    return paths, {s for s in ("proxy", "extract", "select", "export")
                   if "[%s] already done" % s not in out}, out


def _export_matches(paths):
    keep, src = np.load(paths["keep"]), open_dataset(paths["export"])
    assert len(src) == len(keep)
    return src


def _keep_times(path):
    st = os.stat(path)
    return st.st_atime_ns, st.st_mtime_ns


def test_a_second_run_redoes_nothing(first, capsys):
    root, cfg, paths = first
    feats = _keep_times(paths["features"])
    _, redone, out = _rerun(cfg, capsys)
    assert not {"select", "export"} & redone and "afresh" not in out
    assert _keep_times(paths["features"]) == feats


def test_an_export_truncated_in_place_is_written_again(first, capsys):
    root, cfg, paths = first
    rec = os.path.join(paths["export"], "train.rec")
    size = os.path.getsize(rec)
    with open(rec, "r+b") as f:
        f.truncate(size // 2)
    _, redone, _ = _rerun(cfg, capsys)
    assert "export" in redone and os.path.getsize(rec) == size
    core = _export_matches(paths)
    core.read_bytes(len(core) - 1)


def test_an_export_overwritten_in_place_with_its_mtime_kept_is_written_again(first, capsys):
    root, cfg, paths = first
    rec = os.path.join(paths["export"], "train.rec")
    before, times = open(rec, "rb").read(), _keep_times(rec)
    with open(rec, "r+b") as f:
        f.seek(len(before) // 3)
        f.write(b"\0" * 64)
    os.utime(rec, ns=times)
    _, redone, _ = _rerun(cfg, capsys)
    assert "export" in redone and open(rec, "rb").read() == before


def test_a_dataset_replaced_by_other_images_with_the_same_labels_is_extracted_again(
        first, capsys):
    root, cfg, paths = first
    feats = np.load(paths["features"])
    other = _data(root / "other", seed=2)
    assert np.array_equal(open_dataset(other).labels, open_dataset(cfg["data"]["dataset"]).labels)
    os.rename(cfg["data"]["dataset"], root / "old")
    os.rename(other, cfg["data"]["dataset"])
    _, redone, out = _rerun(cfg, capsys)
    assert {"select", "export"} <= redone and "afresh" in out
    assert not np.array_equal(np.load(paths["features"]), feats)
    np.testing.assert_array_equal(
        np.load(paths["keep"]), facenms.select(np.load(paths["features"]),
                                               np.load(paths["labels"]), ratio=0.6))
    src, core = open_dataset(cfg["data"]["dataset"]), _export_matches(paths)
    i = int(np.load(paths["keep"]).min())
    assert any(core.read_bytes(j) == src.read_bytes(i) for j in range(len(core)))


def test_a_permuted_labels_file_is_written_again(first, capsys):
    root, cfg, paths = first
    labels = np.load(paths["labels"])
    times = _keep_times(paths["labels"])
    perm = np.random.default_rng(0).permutation(len(labels))
    assert not np.array_equal(labels[perm], labels)
    with open(paths["labels"], "r+b") as f:  # in place, same size, same mtime
        np.save(f, labels[perm])
    os.utime(paths["labels"], ns=times)
    feats = _keep_times(paths["features"])
    _, redone, _ = _rerun(cfg, capsys)
    np.testing.assert_array_equal(np.load(paths["labels"]), labels)
    assert _keep_times(paths["features"]) == feats  # the features stay: only labels.npy


def test_a_permuted_labels_file_redoes_the_selection_on_a_select_only_run(first, capsys):
    root, cfg, paths = first
    labels = np.load(paths["labels"])
    perm = np.random.default_rng(0).permutation(len(labels))
    times = _keep_times(paths["labels"])
    with open(paths["labels"], "r+b") as f:
        np.save(f, labels[perm])
    os.utime(paths["labels"], ns=times)
    _, redone, _ = _rerun(cfg, capsys, stages=("select",))
    assert "select" in redone


def test_a_restated_default_changes_nothing(first, capsys):
    root, cfg, paths = first
    cfg2 = dict(cfg, select=dict(cfg["select"], min_per_identity=1, per_identity=False),
                export=dict(cfg["export"], layout="im2rec", verify="structure"))
    _, redone, out = _rerun(cfg2, capsys)
    assert "[select] already done" in out and "[export] already done" in out


def _nothing_ran(root):
    assert not os.path.exists(root / "work" / "features.npy")
    assert not os.path.exists(root / "work" / "proxy" / "proxy.pt")


@pytest.mark.parametrize("change, message", [
    (dict(export=dict(format="tar")), r"\[export\] format = 'tar' is not one of"),
    (dict(select=[1, 2]), r"\[select\] must be a table"),
    (dict(select=dict(ratio=2.0)), r"\[select\].*ratio"),
    (dict(select=dict(ratio=0.5, rnak="random")), r"\[select\] unknown key 'rnak'"),
    (dict(extract=dict(batch_size="big")), r"\[extract\] batch_size = 'big'"),
    (dict(extract=dict(model="missing.pt")), r"\[extract\] model missing.pt not found"),
    (dict(export=dict(format="recordio", layout="mxnet")), r"layout = 'mxnet' is not one of"),
    (dict(export=dict(format="folder", mode="hardlink")), r"mode = 'hardlink'"),
    (dict(proxy=dict(epochs=1, shedule="poly")), r"\[proxy\] unknown key 'shedule'"),
    (dict(report=7), r"\[report\] must be a table"),
    (dict(colour=dict()), r"unknown section.*colour"),
])
def test_a_bad_setting_of_any_stage_fails_before_the_first(tmp_path, change, message):
    _data(tmp_path / "data", seed=1)
    cfg = _config(tmp_path, **change)
    with pytest.raises(ValueError, match=message):
        run(cfg, progress=False)
    _nothing_ran(tmp_path)


def test_every_problem_is_named_at_once(tmp_path):
    cfg = _config(tmp_path, export=dict(format="tar"), select=[1])
    cfg["data"]["dataset"] = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="3 problems") as e:
        run(cfg, progress=False)
    for part in ("format = 'tar'", "[select] must be a table", "nowhere not found"):
        assert part in str(e.value)


@pytest.mark.parametrize("out", ["work", ".", "work/proxy", "work/features.npy", "work/report"])
def test_an_export_over_the_work_directory_is_refused_before_anything_runs(first, out, capsys):
    root, cfg, paths = first
    before = {k: open(paths[k], "rb").read() for k in ("features", "labels", "keep")}
    fmt = "npy" if out.endswith(".npy") else "folder"
    cfg2 = dict(cfg, export=dict(format=fmt, out=str(root / out) if out != "." else str(root)))
    with pytest.raises(ValueError, match=r"\[export\] out"):
        run(cfg2, progress=False)
    for k, b in before.items():
        assert open(paths[k], "rb").read() == b
    assert os.path.exists(paths["proxy"])


def test_a_folder_export_does_not_replace_a_tree_it_did_not_write(first):
    root, cfg, paths = first
    mine = root / "photos"
    (mine / "a").mkdir(parents=True)
    (mine / "a" / "x.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        run(dict(cfg, export=dict(format="folder", out=str(mine))), progress=False)
    assert (mine / "a" / "x.txt").read_text() == "mine"


def test_a_lst_of_a_recordio_dataset_is_refused_before_anything_runs(tmp_path):
    _data(tmp_path / "data", seed=1)
    with pytest.raises(ValueError, match="rec:<key>"):
        run(_config(tmp_path, export=dict(format="lst")), progress=False)
    _nothing_ran(tmp_path)


def _cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "facenms", *args], capture_output=True,
                          text=True, env=env, cwd=cwd)


def test_run_check_validates_without_running(tmp_path, monkeypatch):
    _data(tmp_path / "data", seed=1)
    good = tmp_path / "good.toml"
    good.write_text('[data]\ndataset = "data"\nwork_dir = "work"\n[select]\nratio = 0.5\n'
                    '[export]\nformat = "npy"\n')
    r = _cli("run", "--check", str(good), cwd=tmp_path)
    assert r.returncode == 0 and "is valid" in r.stdout, r.stderr
    assert not os.path.exists(tmp_path / "work")
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\ndataset = "nothere"\n[select]\nratio = 0.5\nrnak = 1\n'
                   '[export]\nformat = "tar"\n')
    r = _cli("run", "--check", str(bad), cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    for part in ("nothere not found", "unknown key 'rnak'", "format = 'tar'"):
        assert part in r.stderr
    monkeypatch.chdir(tmp_path)
    assert len(runner.check(str(good))[1]) == 36


def test_an_export_over_the_dataset_is_refused_before_anything_runs(tmp_path):
    _data(tmp_path / "data", seed=1)
    before = open(tmp_path / "data" / "train.rec", "rb").read()
    for exp in (dict(format="folder", out=str(tmp_path / "data")),
                dict(format="recordio", out=str(tmp_path / "data" / "train.rec")),
                dict(format="npy", out=str(tmp_path / "data" / "train.idx"))):
        with pytest.raises(ValueError, match=r"\[export\].*the input"):
            run(_config(tmp_path, export=exp), progress=False)
        _nothing_ran(tmp_path)
    assert open(tmp_path / "data" / "train.rec", "rb").read() == before


def test_a_work_dir_inside_an_image_folder_dataset_is_refused(tmp_path):
    root = synthetic.make_image_folder(tmp_path / "img", num_identities=3,
                                       images_per_identity=(3, 3), size=12)
    cfg = _config(tmp_path)
    cfg["data"] = dict(dataset=str(root), work_dir=str(tmp_path / "img" / "work"))
    with pytest.raises(ValueError, match=r"\[data\] work_dir"):
        run(cfg, progress=False)
    assert not os.path.exists(tmp_path / "img" / "work")


def test_the_example_config_is_valid_but_for_its_dataset():
    """examples/webface.toml, checked as a user would before pointing it at their data:
    the only problem is the placeholder dataset path."""
    example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "examples", "webface.toml")
    if not os.path.exists(example):
        pytest.skip("needs the source tree's examples/")
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        runner.check(example)
    assert "1 problem" in str(e.value) and "dataset" in str(e.value), str(e.value)
