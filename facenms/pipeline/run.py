"""`facenms run CONFIG`: proxy training, extraction, selection, export, report.

A TOML (or YAML, with pyyaml) file in insightface's spirit:

    [data]
    dataset = "/data/ms1m/train.rec"     # RecordIO or image folder
    work_dir = "work"                    # everything the stages write

    [proxy]                              # facenms.pipeline.proxy.train_proxy arguments
    fraction = 0.1
    backbone = "iresnet18"
    epochs = 10

    [extract]                            # facenms.pipeline.extract.extract arguments
    batch_size = 256
    flip = true

    [select]                             # facenms.select arguments
    ratio = 0.6

    [export]
    format = "recordio"                  # recordio | lst | folder | npy

Every stage skips work that is already complete, and only then: a stage's
stamp (in work_dir, written after its outputs) records its settings and the
identity of its input files (device, inode, size, modification time), so a
changed setting or a replaced input redoes the stage and everything after it.
Proxy training and extraction keep their own fingerprints (the checkpoint's
config, the features' settings and model hash). Every file is written
atomically, so a run can be killed and started again.
"""
import json
import os
import time

from ..io import file_identity, load_features, load_indices, load_labels
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


def _stamp(settings, inputs, outputs=()):
    """What a stage was made from (settings, input files) and what it made."""
    return json.loads(json.dumps({
        "settings": settings, "inputs": {k: file_identity(v) for k, v in inputs.items()},
        "outputs": {p: file_identity(p) for p in outputs}}))


def _up_to_date(stamp_path, stamp, outputs):
    """The stage ran with these settings on these inputs, and its outputs are untouched."""
    done = read_json(stamp_path, {})
    if done.get("settings") != stamp["settings"] or done.get("inputs") != stamp["inputs"]:
        return False
    try:
        return done.get("outputs") == {p: file_identity(p) for p in outputs}
    except OSError:  # an output is gone
        return False


def run(config, stages=STAGES, progress=True):
    """Run the stages of a config (a dict or a path); returns the paths written."""
    from ..data import open_dataset

    cfg = load_config(os.fspath(config)) if not isinstance(config, dict) else config
    data = cfg["data"]
    work = data.get("work_dir", "facenms_work")
    os.makedirs(work, exist_ok=True)
    paths = dict(proxy=os.path.join(work, "proxy", "proxy.pt"),
                 features=os.path.join(work, "features.npy"),
                 labels=os.path.join(work, "labels.npy"),
                 keep=os.path.join(work, "keep.npy"),
                 select_info=os.path.join(work, "select.json"),
                 export_info=os.path.join(work, "export.json"),
                 report=os.path.join(work, "report"))
    ds = open_dataset(data["dataset"])
    _log("data", "%s: %d faces, %d identities" % (data["dataset"], len(ds), ds.num_classes))
    if "proxy" in stages:
        _proxy(cfg, ds, work, paths, progress)
    if "extract" in stages:
        _extract(cfg, ds, paths, progress)
    if not is_main():
        return paths  # under torchrun, rank 0 alone selects, exports and reports
    if "select" in stages:
        _select(cfg, paths, progress)
    if "export" in stages and cfg.get("export") is not None:
        _export(cfg, ds, work, paths)
    if "report" in stages and cfg.get("report") is not None:
        _report(cfg, paths)
    return paths


def _proxy(cfg, ds, work, paths, progress):
    from .proxy import train_proxy
    t = time.perf_counter()
    paths["proxy"] = train_proxy(ds, os.path.join(work, "proxy"), progress=progress,
                                 **cfg.get("proxy", {}))
    _log("proxy", "%s (%.1f s)" % (paths["proxy"], time.perf_counter() - t))


def _extract(cfg, ds, paths, progress):
    from .extract import extract
    t = time.perf_counter()
    kw = dict(cfg.get("extract", {}))
    model = kw.pop("model", paths["proxy"])  # [extract] model = ...: another face model
    extract(ds, model, paths["features"], labels_path=paths["labels"], progress=progress, **kw)
    _log("extract", "%s (%.1f s)" % (paths["features"], time.perf_counter() - t))


def _select(cfg, paths, progress):
    from ..scale.dispatch import select
    from .export import save_indices
    sel = dict(cfg.get("select", {"ratio": 0.6}))
    stamp = _stamp(sel, {"features": paths["features"], "labels": paths["labels"]})
    if _up_to_date(paths["select_info"], stamp, [paths["keep"]]):
        _log("select", "already done: %s" % paths["keep"])
        return
    feats = load_features(paths["features"])
    labels = load_labels(paths["labels"])
    keep, info = select(feats, labels, return_info=True, progress=progress, **sel)
    save_indices(paths["keep"], keep)
    stamp = _stamp(sel, {"features": paths["features"], "labels": paths["labels"]},
                   [paths["keep"]])
    write_json(paths["select_info"], dict(stamp, threshold=info.threshold, ratio=info.ratio,
                                          kept=info.kept))
    _log("select", info.summary())


def _export(cfg, ds, work, paths):
    from . import export as ex
    exp = dict(cfg["export"])
    fmt = exp.pop("format", "recordio")
    out = exp.pop("out", os.path.join(work, "core" if fmt in ("recordio", "folder")
                                      else "core." + fmt))
    paths["export"] = out
    source = getattr(ds, "rec_path", None) or cfg["data"]["dataset"]
    stamp = _stamp(dict(exp, format=fmt, out=os.path.abspath(out)),
                   {"keep": paths["keep"], "dataset": source})
    if _up_to_date(paths["export_info"], stamp, [out]):
        _log("export", "already done: %s" % out)
        return
    keep = load_indices(paths["keep"])
    if fmt == "npy":
        ex.save_indices(out, keep)
    elif fmt == "folder":
        ex.write_imagefolder(out, ds, keep, overwrite=True, **exp)
    else:
        dict(recordio=ex.write_recordio, lst=ex.write_lst)[fmt](out, ds, keep, **exp)
    write_json(paths["export_info"], _stamp(stamp["settings"], {
        "keep": paths["keep"], "dataset": source}, [out]))
    _log("export", "%d of %d faces -> %s" % (len(keep), len(ds), out))


def _report(cfg, paths):
    from .report import write_report
    info = read_json(paths["select_info"], {})
    write_report(paths["report"], load_features(paths["features"]),
                 load_labels(paths["labels"]), load_indices(paths["keep"]),
                 threshold=info.get("threshold"), **cfg["report"])
    _log("report", paths["report"])
