"""`facenms run CONFIG`: proxy training, extraction, selection, export, report.

A TOML (or YAML, with pyyaml) file in insightface's spirit:

    [data]
    dataset = "/data/ms1m/train.rec"     # RecordIO or image folder
    work_dir = "work"                    # everything the stages write

    [proxy]                              # facenms.proxy.train_proxy arguments
    fraction = 0.1
    backbone = "iresnet18"
    epochs = 10

    [extract]                            # facenms.extract.extract arguments
    batch_size = 256
    flip = true

    [select]                             # facenms.select arguments
    ratio = 0.6

    [export]
    format = "recordio"                  # recordio | lst | folder | npy

Every stage skips work that is already complete (a finished checkpoint, a
finished feature file, a selection made with the same settings, an export
that exists) and every file is written atomically, so a run can be killed and
started again.
"""
import os
import time

import numpy as np

from ..scale.dist import is_main
from .runtime import read_json, write_json

STAGES = ("proxy", "extract", "select", "export", "report")


def load_config(path):
    if not os.path.exists(path):
        raise FileNotFoundError("config file not found: %s" % path)
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise ImportError("reading %s needs pyyaml (pip install pyyaml), or use TOML" % path)
        cfg = yaml.safe_load(raw) or {}
    else:
        try:
            import tomllib
        except ImportError:  # Python < 3.11
            import tomli as tomllib
        try:
            cfg = tomllib.loads(raw.decode())
        except tomllib.TOMLDecodeError as e:
            raise ValueError("%s: %s" % (path, e))
    unknown = set(cfg) - {"data", *STAGES}
    if unknown:
        raise ValueError("%s: unknown section(s) %s; expected data, %s" % (
            path, ", ".join(sorted(unknown)), ", ".join(STAGES)))
    if "dataset" not in cfg.get("data", {}):
        raise ValueError("%s: [data] needs dataset = path to a RecordIO file or image folder"
                         % path)
    return cfg


def _log(stage, msg):
    print("facenms run [%s] %s" % (stage, msg), flush=True)


def run(config, stages=STAGES, progress=True):
    """Run the stages of a config (a dict or a path); returns the paths written."""
    import facenms
    from ..data import open_dataset
    from . import export as ex
    from .extract import extract
    from .proxy import train_proxy

    cfg = load_config(os.fspath(config)) if not isinstance(config, dict) else config
    data = cfg["data"]
    work = data.get("work_dir", "facenms_work")
    os.makedirs(work, exist_ok=True)
    paths = dict(proxy=os.path.join(work, "proxy", "proxy.pt"),
                 features=os.path.join(work, "features.npy"),
                 labels=os.path.join(work, "labels.npy"),
                 keep=os.path.join(work, "keep.npy"),
                 select_info=os.path.join(work, "select.json"),
                 report=os.path.join(work, "report"))
    ds = open_dataset(data["dataset"])
    _log("data", "%s: %d faces, %d identities" % (data["dataset"], len(ds), ds.num_classes))

    if "proxy" in stages:
        t = time.perf_counter()
        paths["proxy"] = train_proxy(ds, os.path.join(work, "proxy"), progress=progress,
                                     **cfg.get("proxy", {}))
        _log("proxy", "%s (%.1f s)" % (paths["proxy"], time.perf_counter() - t))

    if "extract" in stages:
        t = time.perf_counter()
        kw = dict(cfg.get("extract", {}))
        model = kw.pop("model", paths["proxy"])  # [extract] model = ...: another face model
        extract(ds, model, paths["features"], labels_path=paths["labels"],
                progress=progress, **kw)
        _log("extract", "%s (%.1f s)" % (paths["features"], time.perf_counter() - t))

    if not is_main():
        return paths  # under torchrun, rank 0 alone selects, exports and reports

    if "select" in stages:
        sel = dict(cfg.get("select", {"ratio": 0.6}))
        done = read_json(paths["select_info"], {})
        if done.get("settings") == sel and os.path.exists(paths["keep"]):
            _log("select", "already done: %s" % paths["keep"])
        else:
            feats = np.load(paths["features"], mmap_mode="r")
            labels = np.load(paths["labels"])
            keep, info = facenms.select(feats, labels, return_info=True, progress=progress,
                                        **sel)
            ex.save_indices(paths["keep"], keep)
            write_json(paths["select_info"], dict(settings=sel, threshold=info.threshold,
                                                   ratio=info.ratio, kept=info.kept))
            _log("select", info.summary())

    if "export" in stages and cfg.get("export") is not None:
        exp = dict(cfg["export"])
        fmt = exp.pop("format", "recordio")
        out = exp.pop("out", os.path.join(work, "core" if fmt in ("recordio", "folder")
                                          else "core." + fmt))
        keep = np.load(paths["keep"])
        if os.path.exists(out):
            _log("export", "already done: %s" % out)
        else:
            writer = dict(recordio=ex.write_recordio, lst=ex.write_lst,
                          folder=ex.write_imagefolder, npy=None)[fmt]
            (writer(out, ds, keep, **exp) if writer else ex.save_indices(out, keep))
            _log("export", "%d of %d faces -> %s" % (len(keep), len(ds), out))
        paths["export"] = out

    if "report" in stages and cfg.get("report") is not None:
        from .report import write_report
        info = read_json(paths["select_info"], {})
        write_report(paths["report"], np.load(paths["features"], mmap_mode="r"),
                     np.load(paths["labels"]), np.load(paths["keep"]),
                     threshold=info.get("threshold"), **cfg["report"])
        _log("report", paths["report"])
    return paths
