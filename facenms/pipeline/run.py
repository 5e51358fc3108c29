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

Before the first stage the whole config is checked (check_config: every
section, key, type, choice, path and format, and that no output lands on the
work directory's files or the dataset's) and every problem is named at once;
`facenms run --check` does only that.

Every stage skips work that is already complete, and only then: a stage's
stamp (in work_dir, written after its outputs) records its settings, with the
defaults filled in (a default restated changes nothing), and the identity and
content of its input and output files (device, inode, size, modification time
and a SHA-1 of the content: whole for labels and kept indices, a sample of the
rest; see fingerprint.py), so a changed setting, a replaced or rewritten input
or a damaged output redoes the stage and everything after it. Proxy training
and extraction also keep their own fingerprints (the checkpoint's config, the
features' settings and model hash); their stamps add the dataset's content, so
a dataset replaced at the same path trains and extracts afresh, and a
labels.npy that no longer matches the dataset is written again. Every file is
written atomically, so a run can be killed and started again.
"""
import json
import os
import time
from typing import Dict, Sequence, Union

from ..io import load_features, load_indices, load_labels
from ..scale.dist import is_main
from .fingerprint import dataset_id, path_id
from .runconfig import STAGES, check_config, check_dataset, export_out, normalised, work_paths
from .runtime import read_json, write_json

__all__ = ["STAGES", "load_config", "check", "run"]


def _parse(path):
    if not os.path.exists(path):
        raise FileNotFoundError("config file not found: %s" % path)
    if os.path.isdir(path):
        raise ValueError("%s is a folder, not a config file" % path)
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise ImportError("reading %s needs pyyaml (pip install pyyaml), or use TOML" % path)
        try:
            return yaml.safe_load(raw) or {}
        except yaml.YAMLError as e:
            raise ValueError("%s: %s" % (path, " ".join(str(e).split()))) from None
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    try:
        return tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError("%s: %s" % (path, e)) from None


def _raise_problems(where, problems):
    if problems:
        raise ValueError("%s: %d problem%s: %s" % (where, len(problems),
                                                    "s" if len(problems) > 1 else "",
                                                    "; ".join(problems)))


def load_config(path):
    """A config file, parsed and checked whole (ValueError naming every problem)."""
    path = os.fspath(path)
    cfg = _parse(path)
    _raise_problems(path, check_config(cfg))
    return cfg


def check(config, stages=STAGES):
    """Check a config (a dict or a path) and open its dataset without running anything.

    Returns (config dict, dataset); ValueError naming every problem at once.
    """
    from ..data import open_dataset
    where = os.fspath(config) if not isinstance(config, dict) else "config"
    if isinstance(config, dict):
        cfg = config
        _raise_problems(where, check_config(cfg))
    else:
        cfg = load_config(where)
    bad = sorted(set(stages) - set(STAGES))
    if bad:
        raise ValueError("unknown stage(s) %s; stages are %s" % (", ".join(bad),
                                                                 ",".join(STAGES)))
    ds = open_dataset(cfg["data"]["dataset"])
    _raise_problems(where, check_dataset(cfg, ds))
    return cfg, ds


def _log(stage, msg):
    print("facenms run [%s] %s" % (stage, msg), flush=True)


def _id(path):
    """A stamp's record of one file (labels and kept indices hashed whole: a permutation
    of them keeps size and sample)."""
    return path_id(path, full=os.fspath(path).endswith(("labels.npy", "keep.npy")))


def _stamp(settings, inputs, outputs=()):
    """What a stage was made from (settings, input files or fingerprints) and what it made."""
    return json.loads(json.dumps({
        "settings": settings,
        "inputs": {k: _id(v) if isinstance(v, (str, os.PathLike)) else v
                   for k, v in inputs.items()},
        "outputs": {os.fspath(p): _id(p) for p in outputs}}))


def _outputs_intact(done):
    outs = done.get("outputs")
    return bool(outs) and all(_id(p) == v for p, v in outs.items())


def _up_to_date(stamp_path, stamp, outputs):
    """The stage ran with these settings on these inputs, and its outputs are untouched."""
    done = read_json(stamp_path, {})
    if done.get("settings") != stamp["settings"] or done.get("inputs") != stamp["inputs"]:
        return False
    return done.get("outputs") == {os.fspath(p): _id(p) for p in outputs}


def run(config: Union[str, os.PathLike, dict], stages: Sequence[str] = STAGES,
        progress: bool = True) -> Dict[str, str]:
    """Run the stages of a config (a dict or a path); returns the paths written.

    The whole config is checked first (see check), so a bad setting of a late
    stage fails before the first one runs.
    """
    cfg, ds = check(config, stages)
    data = cfg["data"]
    work = data.get("work_dir", "facenms_work")
    # settings as the stages get them: every default filled in
    cfg = dict(cfg, select=normalised(cfg, "select"))
    os.makedirs(work, exist_ok=True)
    paths = work_paths(work)
    _log("data", "%s: %d faces, %d identities" % (data["dataset"], len(ds), ds.num_classes))
    data_id = dataset_id(ds) if {"proxy", "extract", "export"} & set(stages) else None
    if "proxy" in stages:
        _proxy(cfg, ds, work, paths, progress, data_id)
    if "extract" in stages:
        _extract(cfg, ds, paths, progress, data_id)
    if not is_main():
        return paths  # under torchrun, rank 0 alone selects, exports and reports
    if "select" in stages:
        _select(cfg, paths, progress)
    if "export" in stages and cfg.get("export") is not None:
        _export(cfg, ds, paths, data_id)
    if "report" in stages and cfg.get("report") is not None:
        _report(cfg, paths)
    return paths


def _afresh(stamp_path, inputs, stage):
    """True when the stage last ran on other inputs: its outputs, and any unfinished work,
    are not to be resumed. The new inputs are recorded at once (one process only: under
    torchrun the ranks decide from the same old stamp), so a kill after this resumes."""
    done = read_json(stamp_path, None)
    if done is None or done.get("inputs") == inputs:
        return False
    _log(stage, "its inputs changed since it last ran (the dataset or the model): afresh")
    if os.environ.get("WORLD_SIZE", "1") == "1":
        write_json(stamp_path, {"inputs": inputs, "outputs": None})
    return True


def _proxy(cfg, ds, work, paths, progress, data_id):
    from .proxy import train_proxy
    t = time.perf_counter()
    kw = dict(cfg.get("proxy", {}))
    inputs = {"dataset": data_id}
    if _afresh(paths["proxy_info"], inputs, "proxy"):
        kw["resume"] = False
    paths["proxy"] = train_proxy(ds, os.path.join(work, "proxy"), progress=progress, **kw)
    if is_main():
        write_json(paths["proxy_info"], {"inputs": inputs,
                                         "outputs": {paths["proxy"]: _id(paths["proxy"])}})
    _log("proxy", "%s (%.1f s)" % (paths["proxy"], time.perf_counter() - t))


def _extract(cfg, ds, paths, progress, data_id):
    from .extract import extract
    t = time.perf_counter()
    kw = dict(cfg.get("extract", {}))
    model = kw.pop("model", paths["proxy"])  # [extract] model = ...: another face model
    stamp_path = paths["extract_info"]
    inputs = json.loads(json.dumps({"dataset": data_id, "model": _id(model) if isinstance(
        model, (str, os.PathLike)) and os.path.exists(model) else repr(type(model))}))
    if _afresh(stamp_path, inputs, "extract"):
        kw["resume"] = False
    else:
        done = read_json(stamp_path, {})
        outs = done.get("outputs") or {}
        if outs.get(paths["features"]) is not None and os.path.exists(paths["features"]) \
                and _id(paths["features"]) != outs[paths["features"]]:
            _log("extract", "%s changed since it was written: extracting afresh"
                 % paths["features"])
            kw["resume"] = False
        elif outs.get(paths["labels"]) is not None and os.path.exists(paths["labels"]) \
                and _id(paths["labels"]) != outs[paths["labels"]] and is_main():
            # the features are intact: the extraction writes the dataset's labels again
            _log("extract", "%s changed since it was written: writing it again"
                 % paths["labels"])
            os.remove(paths["labels"])
    extract(ds, model, paths["features"], labels_path=paths["labels"], progress=progress, **kw)
    if is_main():
        write_json(stamp_path, _stamp({}, inputs, [paths["features"], paths["labels"]]))
    _log("extract", "%s (%.1f s)" % (paths["features"], time.perf_counter() - t))


def _select(cfg, paths, progress):
    from ..scale.dispatch import select
    from .export import save_indices
    sel = dict(cfg.get("select", {"ratio": 0.6}))
    stamp = _stamp(sel, {"features": paths["features"], "labels": paths["labels"]})
    outputs = [paths["keep"]] + ([paths["label_issues"]] if sel.get("clean") else [])
    if _up_to_date(paths["select_info"], stamp, outputs):
        _log("select", "already done: %s" % paths["keep"])
        return
    feats = load_features(paths["features"])
    labels = load_labels(paths["labels"])
    keep, info = select(feats, labels, return_info=True, progress=progress, **sel)
    if sel.get("clean"):  # the faces select(clean=True) dropped, for the user to look at
        from .cleaning import write_label_issues
        issues, found = info.issues
        write_label_issues(paths["label_issues"], issues, labels, found)
    save_indices(paths["keep"], keep)
    stamp = _stamp(sel, {"features": paths["features"], "labels": paths["labels"]}, outputs)
    write_json(paths["select_info"], dict(stamp, **info.to_dict()))
    _log("select", info.summary())


def _export(cfg, ds, paths, data_id):
    from .core_set import write_core_set
    exp = normalised(cfg, "export")
    settings = dict(exp)
    fmt, out = exp.pop("format"), export_out(cfg)
    exp.pop("out")
    paths["export"] = out
    stamp = _stamp(settings, {"keep": paths["keep"], "dataset": data_id})
    done = read_json(paths["export_info"], {})
    if done.get("settings") == stamp["settings"] and done.get("inputs") == stamp["inputs"] \
            and _outputs_intact(done):
        _log("export", "already done: %s" % out)
        return
    keep = load_indices(paths["keep"])
    if fmt == "folder":
        # a tree is replaced only when this run wrote it (or the config says so)
        mine = (done.get("settings") or {}).get("out") == settings["out"]
        exp["overwrite"] = bool(exp.get("overwrite")) or mine
    _, written, _ = write_core_set(fmt, out, ds, keep, **exp)
    write_json(paths["export_info"], _stamp(settings, {"keep": paths["keep"],
                                                       "dataset": data_id}, written))
    _log("export", "%d of %d faces -> %s" % (len(keep), len(ds), out))


def _report(cfg, paths):
    from .report import write_report
    info = read_json(paths["select_info"], {})
    sel = cfg.get("select", {})
    ranked_as_selected = {k: sel[k] for k in ("rank", "seed") if k in sel}
    write_report(paths["report"], load_features(paths["features"]),
                 load_labels(paths["labels"]), load_indices(paths["keep"]),
                 threshold=info.get("threshold"), dataset=cfg["data"]["dataset"], info=info,
                 label_issues=paths["label_issues"] if sel.get("clean") else None,
                 **ranked_as_selected, **cfg["report"])
    _log("report", paths["report"])
