"""The core set in any export format: the one dispatch that `facenms export` and
`facenms run` share."""
from . import export
from .runconfig import FORMATS


def write_core_set(fmt, out, dataset, keep, **options):
    """Write the kept faces of `dataset` to `out` as `fmt` (see FORMATS) with the
    writer's own options; returns (the main path, every file written, the writer's
    result: write_recordio's dict, or a path)."""
    if fmt == "recordio":
        res = export.write_recordio(out, dataset, keep, **options)
        files = [res[k] for k in ("rec", "idx", "property", "label_map", "labels", "config")
                 if res.get(k)] + list(res["bins"])
        return res["rec"], files, res
    if fmt == "lst":
        res = export.write_lst(out, dataset, keep, **options)
        return res, [res, (res[:-4] if res.endswith(".lst") else res) + ".label_map.npy"], res
    if fmt == "folder":
        res = export.write_imagefolder(out, dataset, keep, **options)
        return res, [res], res
    if fmt == "npy":
        res = export.save_indices(out, keep, dataset=dataset, **options)
        return res, [res], res
    raise ValueError("export format must be one of %s, got %r" % (", ".join(FORMATS), fmt))
