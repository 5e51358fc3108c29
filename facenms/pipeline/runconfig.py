"""The check of a whole `facenms run` config before any stage runs, and its settings
normalised against the defaults (a setting restated at its default value is the same
setting as one left out).

check_config names every problem at once: unknown sections and keys (against the
arguments of the function each section feeds), sections that are not tables, values
of the wrong type or outside their choices, missing paths, an unknown export format,
outputs over the work directory's files or over the dataset. check_dataset adds what
needs the opened dataset.
"""
import inspect
import os

import numpy as np

from ..io import check_not_inputs
from .precision import AMP_CHOICES

STAGES = ("proxy", "extract", "select", "export", "report")
FORMATS = ("recordio", "lst", "folder", "npy")
DEFAULT_SELECT = {"ratio": 0.6}
DATA_KEYS = ("dataset", "work_dir")
# arguments the run itself passes: never taken from the config
_SKIP = {"proxy": {"dataset", "out_dir", "progress"},
         "extract": {"dataset", "out_path", "labels_path", "progress"},
         "select": {"features", "labels", "return_info", "progress"},
         "report": {"out_dir", "features", "labels", "keep", "threshold"},
         "export": {"out", "out_dir", "path", "dataset", "keep", "progress", "inputs"}}
_CHOICES = {("proxy", "schedule"): ("cosine", "poly"),
            ("proxy", "amp"): AMP_CHOICES + ("none", "fp32"),
            ("extract", "amp"): AMP_CHOICES + ("none", "fp32"),
            ("extract", "channel_order"): ("rgb", "bgr"),
            ("export", "layout"): ("im2rec", "insightface"),
            ("export", "verify"): ("structure", "decode", "none"),
            ("export", "mode"): ("symlink", "copy")}


def _functions(fmt="recordio"):
    from ..scale.dispatch import select
    from . import export as ex
    from .extract import extract
    from .proxy import train_proxy
    from .report import write_report
    writer = dict(recordio=ex.write_recordio, lst=ex.write_lst, folder=ex.write_imagefolder,
                  npy=ex.save_indices).get(fmt, ex.write_recordio)
    return dict(proxy=train_proxy, extract=extract, select=select, report=write_report,
                export=writer)


def _params(fn, section):
    return {n: p.default for n, p in inspect.signature(fn).parameters.items()
            if n not in _SKIP[section] and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _type_problem(section, key, value, default):
    """Why `value` cannot stand where the function's default is `default`, or None."""
    if value is None or default is None or default is inspect.Parameter.empty:
        return None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (tuple, list)):
        ok = isinstance(value, (tuple, list))
    else:
        return None
    if ok:
        return None
    return "[%s] %s = %r: expected %s like the default %r" % (
        section, key, value, type(default).__name__, default)


def _check_keys(section, values, fn, problems):
    params = _params(fn, section)
    extra = {"model"} if section == "extract" else set()
    if section == "export":
        extra = {"format", "out"}
    for key in sorted(values):
        if key not in params and key not in extra:
            problems.append("[%s] unknown key %r (known: %s)" % (
                section, key, ", ".join(sorted(set(params) | extra))))
            continue
        if key in params:
            why = _type_problem(section, key, values[key], params[key])
            if why:
                problems.append(why)
                continue
        choices = _CHOICES.get((section, key))
        if choices is not None and values[key] not in choices:
            problems.append("[%s] %s = %r is not one of %s" % (
                section, key, values[key], ", ".join(str(c) for c in choices if c)))


def _check_select(values, problems):
    """facenms.select's own argument checks, on four rows: before hours of extraction."""
    from ..scale.dispatch import select
    rng = np.random.default_rng(0)
    try:
        select(rng.standard_normal((4, 8)).astype(np.float32), np.array([0, 0, 1, 1]),
               **values)
    except (ValueError, TypeError, RuntimeError) as e:
        problems.append("[select] %s" % " ".join(str(e).split()))


def work_paths(work):
    """Every path the stages write in the work directory."""
    j = lambda *p: os.path.join(work, *p)  # noqa: E731
    feats = j("features.npy")
    return dict(proxy=j("proxy", "proxy.pt"), proxy_dir=j("proxy"), features=feats,
                labels=j("labels.npy"), keep=j("keep.npy"), select_info=j("select.json"),
                label_issues=j("label_issues.csv"),
                export_info=j("export.json"), extract_info=j("extract.json"),
                proxy_info=j("proxy.json"), report=j("report"),
                **{"features" + s: feats + s for s in (".json", ".partial", ".progress",
                                                      ".state.json")})


def export_out(cfg):
    exp = cfg.get("export") or {}
    fmt = exp.get("format", "recordio")
    work = cfg["data"].get("work_dir", "facenms_work")
    return exp.get("out", os.path.join(work, "core" if fmt in ("recordio", "folder")
                                       else "core." + fmt))


def _inside(path, folder):
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _check_export_out(cfg, problems):
    work = os.path.realpath(cfg["data"].get("work_dir", "facenms_work"))
    out = os.path.realpath(export_out(cfg))
    files = work_paths(work)
    if _inside(work, out):
        problems.append("[export] out = %s is the work directory %s or holds it: the export "
                        "would replace the features, labels and selection; choose another "
                        "folder" % (export_out(cfg), work))
        return
    for key, p in files.items():
        p = os.path.realpath(p)
        if _inside(p, out) or (key in ("proxy_dir", "report") and _inside(out, p)):
            problems.append("[export] out = %s would replace the work directory's %s; choose "
                            "another path" % (export_out(cfg), p))
            return
    try:  # the same through hard links
        check_not_inputs([out], [p for p in files.values() if os.path.isfile(p)])
    except ValueError as e:
        problems.append("[export] %s" % e)


def _check_data(cfg, problems):
    data = cfg.get("data")
    if not isinstance(data, dict):
        problems.append("[data] needs dataset = path to a RecordIO file or image folder")
        return False
    for key in sorted(set(data) - set(DATA_KEYS)):
        problems.append("[data] unknown key %r (known: %s)" % (key, ", ".join(DATA_KEYS)))
    ok = True
    for key in DATA_KEYS:
        if key in data and not isinstance(data[key], str):
            problems.append("[data] %s must be a path (a string), got %r" % (key, data[key]))
            ok = False
    if "dataset" not in data:
        problems.append("[data] needs dataset = path to a RecordIO file or image folder")
        ok = False
    elif ok and not os.path.exists(data["dataset"]):
        problems.append("[data] dataset %s not found" % data["dataset"])
    if ok and os.path.isfile(data.get("work_dir", "facenms_work")):
        problems.append("[data] work_dir %s is a file, not a folder" % data["work_dir"])
    return ok


def check_config(cfg):
    """Every problem of a run config (a dict) that needs no dataset opened, as lines."""
    if not isinstance(cfg, dict):
        return ["the config must be a table of sections, got %s" % type(cfg).__name__]
    problems = []
    unknown = sorted(set(cfg) - {"data", *STAGES}, key=str)
    if unknown:
        problems.append("unknown section(s) %s; expected data, %s" % (
            ", ".join(map(str, unknown)), ", ".join(STAGES)))
    data_ok = _check_data(cfg, problems)
    tables = {}
    for s in STAGES:
        if s in cfg and not isinstance(cfg[s], dict):
            problems.append("[%s] must be a table of key = value settings, got a %s"
                            % (s, type(cfg[s]).__name__))
        elif s in cfg:
            tables[s] = cfg[s]
    fmt = (tables.get("export") or {}).get("format", "recordio")
    if "export" in tables and fmt not in FORMATS:
        problems.append("[export] format = %r is not one of %s" % (fmt, ", ".join(FORMATS)))
    if "export" in tables and not isinstance(tables["export"].get("out", ""), str):
        problems.append("[export] out must be a path (a string), got %r"
                        % (tables["export"]["out"],))
    fns = _functions(fmt)
    for s, values in tables.items():
        before = len(problems)
        _check_keys(s, values, fns[s], problems)
        if s == "select" and len(problems) == before:
            _check_select(values, problems)
    model = (tables.get("extract") or {}).get("model")
    if isinstance(model, str) and not os.path.exists(model):
        problems.append("[extract] model %s not found" % model)
    if data_ok and "export" in tables and fmt in FORMATS \
            and isinstance(tables["export"].get("out", ""), str):
        _check_export_out(cfg, problems)
    return problems


def check_dataset(cfg, ds):
    """The problems only the opened dataset shows: outputs over its files, the work
    directory inside its tree, a .lst of a dataset with no file names."""
    problems = []
    work = cfg["data"].get("work_dir", "facenms_work")
    files, trees = list(ds.files()), list(ds.trees())
    try:
        check_not_inputs([work], files, trees)
    except ValueError as e:
        problems.append("[data] work_dir: %s" % e)
    exp = cfg.get("export")
    if exp is not None:
        try:
            check_not_inputs([export_out(cfg)], files + [cfg["data"]["dataset"]], trees)
        except ValueError as e:
            problems.append("[export] %s" % e)
        if exp.get("format") == "lst" and getattr(ds, "rec_path", None) \
                and not exp.get("rec_names", False):
            problems.append("[export] format = \"lst\" of the RecordIO dataset %s: its names "
                            "(rec:<key>) are no image paths im2rec can read; export "
                            "format = \"recordio\", or set rec_names = true" % ds.rec_path)
    return problems


def normalised(cfg, section):
    """A section's settings with every default filled in (what the stamps record)."""
    if section == "select":
        values = dict(cfg.get("select", DEFAULT_SELECT))
    else:
        values = dict(cfg.get(section) or {})
    fmt = values.get("format", "recordio") if section == "export" else None
    params = _params(_functions(fmt or "recordio")[section], section)
    out = {k: v for k, v in params.items() if v is not inspect.Parameter.empty}
    out.update(values)
    if section == "export":
        out.update(format=fmt, out=os.path.abspath(export_out(cfg)))
    return out
