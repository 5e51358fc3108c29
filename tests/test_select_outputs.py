"""`facenms select --out K --info X`: both outputs commit together. An output that cannot
be written fails before the selection runs, names the user's path (not a hidden
temporary), and leaves every old output as it was."""
import os

import numpy as np
import pytest

from facenms import cli


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "f.npy", rng.standard_normal((40, 8)).astype(np.float32))
    np.save(tmp_path / "l.npy", np.repeat(np.arange(4), 10))
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "adir").mkdir()
    return tmp_path


def unwritable(d):
    """Output paths that cannot be written, even by root."""
    return [d / "afile" / "info.json", d / "afile" / "deeper" / "info.json", d / "adir",
            "/proc/facenms-info.json"]


@pytest.mark.parametrize("which", ["info", "out"])
@pytest.mark.parametrize("k", range(4))
def test_an_unwritable_output_writes_nothing(inputs, which, k):
    d = inputs
    bad = str(unwritable(d)[k])
    old = np.arange(3)
    np.save(d / "keep.npy", old)
    (d / "info.json").write_text("old")
    out, info = (bad, d / "info.json") if which == "out" else (d / "keep.npy", bad)
    with pytest.raises(SystemExit) as e:
        cli.main(["select", "--features", str(d / "f.npy"), "--labels", str(d / "l.npy"),
                  "--ratio", "0.5", "--out", str(out), "--info", str(info)])
    msg = str(e.value.code)
    assert msg.startswith("facenms select: error: %s: " % bad), msg
    assert ".tmp-" not in msg
    assert np.array_equal(np.load(d / "keep.npy"), old)
    assert (d / "info.json").read_text() == "old"
    assert sorted(os.listdir(d)) == ["adir", "afile", "f.npy", "info.json", "keep.npy",
                                     "l.npy"]
    assert os.listdir(d / "adir") == []


def test_both_outputs_written_on_success(inputs, capsys):
    d = inputs
    cli.main(["select", "--features", str(d / "f.npy"), "--labels", str(d / "l.npy"),
              "--ratio", "0.5", "--out", str(d / "o" / "keep.npy"), "--info",
              str(d / "o" / "info.json")])
    assert len(np.load(d / "o" / "keep.npy")) == 20
    assert '"kept": 20' in (d / "o" / "info.json").read_text()
    assert sorted(os.listdir(d / "o")) == ["info.json", "keep.npy"]


def test_out_and_info_at_one_path_are_refused(inputs):
    d = inputs
    np.save(d / "keep.npy", np.arange(3))
    os.link(d / "keep.npy", d / "hard.npy")
    for info in ("keep.npy", "./keep.npy", "hard.npy"):
        with pytest.raises(SystemExit, match="also given as the output"):
            cli.main(["select", "--features", str(d / "f.npy"), "--labels", str(d / "l.npy"),
                      "--ratio", "0.5", "--out", str(d / "keep.npy"), "--info",
                      str(d / info)])
        assert np.array_equal(np.load(d / "keep.npy"), np.arange(3))
