"""The quality bench end to end on a tiny world (the full run is bench/quality/run.py)."""
import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def bench():
    sys.path.insert(0, os.path.join(HERE, "..", "bench", "quality"))
    try:
        import run
        yield run
    finally:
        sys.path.pop(0)


def test_quick_run(tmp_path, bench):
    table = bench.main(["--quick", "--epochs", "2", "--out", str(tmp_path), "--report"])
    methods = {e["method"] for e in table}
    assert methods == {"full", "facenms", "random", "kcenter", "semdedup", "diffprob"}
    for e in table:
        assert 0 <= e["tar_0.0001"][0] <= 100
        if e["method"] != "full":
            assert abs(e["kept_ratio"][0] - 0.6) < 0.01
    md = (tmp_path / "results.md").read_text()
    assert "python bench/quality/run.py --quick" in md and "| **facenms** | 0.6 |" in md
    with open(tmp_path / "results.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "results.json").read_text())["rows"]
    assert (tmp_path / "report" / "roc.png").is_file()


def test_real_dataset_path(tmp_path, bench):
    """An image folder and a .bin go through the same pipeline (tiny CNN, 1 epoch)."""
    import numpy as np
    from PIL import Image

    from facenms.verification import write_bin
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (12, 16, 16, 3))
    for c in range(12):
        os.makedirs(tmp_path / "faces" / ("id%02d" % c))
        for k in range(6):
            img = np.clip(base[c] + rng.normal(0, 20, base[c].shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "faces" / ("id%02d" % c) / ("%d.png" % k))
    pairs = np.stack([np.clip(base[c] + rng.normal(0, 20, base[c].shape), 0, 255)
                      for c in (0, 0, 1, 2, 3, 3, 4, 5) * 3]).astype(np.uint8)
    write_bin(tmp_path / "p.bin", pairs, [True, False, True, False] * 3)
    table = bench.main(["--data", str(tmp_path / "faces"), "--pairs", str(tmp_path / "p.bin"),
                        "--image-size", "16", "16", "--quick", "--epochs", "1", "--workers", "0",
                        "--batch-size", "16", "--methods", "facenms", "random",
                        "--proxy-fraction", "0.2", "--out", str(tmp_path / "out")])
    assert {e["method"] for e in table} == {"full", "facenms", "random"}
    assert (tmp_path / "out" / "results.md").is_file()
