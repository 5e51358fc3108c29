"""`facenms run`'s report stage shows the faces of the run's own dataset."""
import json
import os

import numpy as np

import facenms
from facenms.data import open_dataset, synthetic
from facenms.pipeline.run import run


def test_run_report_stage_shows_the_dataset(tmp_path):
    data = synthetic.make_recordio(tmp_path / "data", num_identities=6, images_per_identity=(4, 8))
    ds = open_dataset(str(data))
    labels = np.asarray(ds.labels)
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(labels.max() + 1, 8))[labels]
         + 0.4 * rng.normal(size=(len(labels), 8))).astype(np.float32)
    work = tmp_path / "work"
    work.mkdir()
    keep = facenms.select(x, labels, threshold=0.9, rank="random", seed=3)
    np.save(work / "features.npy", x)
    np.save(work / "labels.npy", labels)
    np.save(work / "keep.npy", keep)
    (work / "select.json").write_text(json.dumps({"threshold": 0.9}))
    cfg = dict(data=dict(dataset=str(data), work_dir=str(work)),
               select=dict(threshold=0.9, rank="random", seed=3), report=dict(sample_pairs=500))
    paths = run(cfg, stages=("report",), progress=False)
    page = open(os.path.join(paths["report"], "index.html")).read()
    assert 'id="galleries"' in page and "0.9000" in page
    thumbs = os.listdir(os.path.join(paths["report"], "thumbs"))
    assert len(thumbs) == len(labels)  # a small set: every face is shown
