"""Export a core set: kept indices, .lst files, a RecordIO subset, an image-folder tree.

Every output is written under a temporary name and moved into place when
complete (facenms.io): a directory export is swapped in with one
rename, a group of files in a shared folder is committed under a journal. A
failure midway - an image that does not decode, a full disk, a kill - leaves
the previous state, never a half-written output. Before any work the outputs
are checked against the inputs (same file or folder: refused) and against
the free space of their file system.

RecordIO layouts. "im2rec" (the default): keys 0..n-1, each image with its
own label, no header or identity records: what MXFaceDataset,
mx.io.ImageRecordIter and DALI's readers.mxnet all read, at any size.
"insightface": the header record 0 and identity records (empty payloads)
that some insightface tools want; DALI and ImageRecordIter cannot read it,
and its float32 keys limit it to 2**24 images + identities.
"""
import glob
import io
import os
import shutil

import numpy as np
from PIL import Image

from ..io import AtomicDir, AtomicFiles, check_not_inputs, check_writable, user_error
from ..data.base import check_image, decode_image, image_format
from ..data.imagefolder import ImageFolderDataset
from ..data.recdataset import RecordDataset, labels_sidecar_path, write_face_recordio
from ..data.recfiles import property_path

# formats insightface (OpenCV imdecode), mxnet and DALI all decode; others are re-encoded
_REC_FORMATS = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp"}


def _keep_array(keep, n=None):
    """`keep` as unique int64 indices (numpy, torch or list), checked against n."""
    if hasattr(keep, "detach"):
        keep = keep.detach().cpu().numpy()
    keep = np.asarray(keep)
    if keep.ndim != 1:
        raise ValueError("keep must be a 1-D array of indices, got shape %s" % (keep.shape,))
    if keep.size == 0:
        keep = keep.astype(np.int64)
    if keep.dtype.kind not in "iu":
        raise TypeError("keep must hold integer indices, got dtype %s" % keep.dtype)
    keep = keep.astype(np.int64)
    if n is not None:
        bad = np.flatnonzero((keep < 0) | (keep >= n))
        if bad.size:
            raise ValueError("keep[%d] = %d is out of range for a dataset of %d images"
                             % (bad[0], keep[bad[0]], n))
    if len(np.unique(keep)) != len(keep):
        raise ValueError("keep contains duplicate indices")
    return keep


def _not_empty(keep, allow_empty):
    if len(keep) == 0 and not allow_empty:
        raise ValueError("keep selects no faces: the export would be an empty dataset (0 "
                         "images, 0 classes); pass allow_empty=True (--allow-empty) if that "
                         "is wanted")


def _guard(outputs, dataset, inputs, need_bytes):
    """Refuse outputs over inputs and outputs that cannot fit, before any work."""
    files = list(dataset.files()) if dataset is not None else []
    trees = list(dataset.trees()) if dataset is not None else []
    check_not_inputs(outputs, files + [os.fspath(i) for i in inputs], trees)
    check_writable(outputs[0], need_bytes)


def _reraise(e, final):
    """Raise e again; a full (or read-only) disk named by the user's path, not the
    hidden temporary."""
    mapped = user_error(e, final) if isinstance(e, OSError) else None
    if mapped is not None and mapped is not e:
        raise mapped from None
    raise e


def save_indices(path, keep, inputs=(), dataset=None, *, allow_empty: bool = True) -> str:
    """Kept indices as an int64 .npy file.

    inputs (e.g. the keep file) and dataset's files are never replaced.
    allow_empty=False refuses an empty keep (as the dataset exports do).
    """
    keep = _keep_array(keep)
    _not_empty(keep, allow_empty)
    _guard([os.fspath(path)], dataset, inputs, 128 + 8 * len(keep))
    try:
        with AtomicFiles() as out:
            np.save(out.open(path), keep)
    except OSError as e:
        _reraise(e, os.fspath(path))
    return os.fspath(path)


def _each(items, progress):
    return progress(items) if progress is not None else items


def _order(dataset, keep, shuffle, seed):
    """Faces grouped by identity (identity order, then dataset order), or seeded-shuffled."""
    labels = np.asarray(dataset.labels, dtype=np.int64)
    idx = keep[np.lexsort((keep, labels[keep]))]
    if shuffle:
        idx = idx[np.random.default_rng(seed).permutation(len(idx))]
    old = np.unique(labels[idx])
    new = np.searchsorted(old, labels[idx])
    return idx, old, new


def _label_map(old):
    return np.stack([old, np.arange(len(old))], axis=1).astype(np.int64)


def write_lst(path, dataset, keep, *, shuffle=False, seed=0, verify="structure", progress=None,
              inputs=(), allow_empty=False, rec_names=False):
    """An im2rec list `index\\tlabel\\tname`, ready for `python -m mxnet.tools.im2rec`.

    index is dense 0..n-1 (the RecordIO keys im2rec will write: MXFaceDataset
    reads keys 0..n-1), label the new dense label, renumbered exactly as
    write_recordio renumbers (its old-to-new map goes to <prefix>.label_map.npy
    beside), name dataset.name(i): the path relative to the image-folder root,
    which is im2rec's `root` argument. Faces are grouped by identity, or in a
    seeded shuffled order. Every image is checked (verify) before anything is
    committed. progress: optional wrapper of the index iterable, e.g. tqdm.
    A RecordIO dataset has no image files to name: its names are rec:<key>,
    which im2rec cannot read, so it is refused unless rec_names=True. An
    empty keep is refused unless allow_empty=True.
    """
    keep = _keep_array(keep, len(dataset))
    path = os.fspath(path)
    mapp = (path[:-4] if path.endswith(".lst") else path) + ".label_map.npy"
    _guard([path, mapp], dataset, inputs, 64 * len(keep))
    _not_empty(keep, allow_empty)
    if isinstance(dataset, RecordDataset) and not rec_names:
        raise ValueError("%s is a RecordIO dataset: a .lst of it would name its records "
                         "rec:<key>, paths no tool (im2rec included) can read; export the "
                         "RecordIO format instead, or pass rec_names=True (--rec-names) for "
                         "such a list" % dataset.rec_path)
    idx, old, new = _order(dataset, keep, shuffle, seed)
    out = AtomicFiles()
    try:
        with out.open(path, "w") as f:
            for j, i in enumerate(_each(idx, progress)):
                i = int(i)
                name = dataset.name(i)
                if "\t" in name or "\n" in name:
                    raise ValueError("%s: a tab or newline in the name breaks the .lst format"
                                     % dataset.where(i))
                if verify != "none":
                    check_image(dataset.read_bytes(i), lambda: dataset.where(i), verify)
                f.write("%d\t%d\t%s\n" % (j, new[j], name))
        np.save(out.open(mapp), _label_map(old))
        out.commit()
    except BaseException as e:
        out.abort()
        _reraise(e, path)
    return path


def magic_format(data):
    """'JPEG', 'PNG' or 'BMP' from an image's first bytes, else None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    return "BMP" if data[:2] == b"BM" else None


def _rec_payload(dataset, i, verify="structure"):
    """The encoded bytes to store for face i, re-encoded as PNG if readers may not decode it."""
    data = dataset.read_bytes(i)
    check_image(data, lambda: dataset.where(i), verify)
    # the three formats every reader decodes are known by their first bytes; PIL
    # parsing the header of each of 42M faces would cost more than copying them
    fmt = magic_format(data) or image_format(data, dataset.where(i))[0]
    if fmt in _REC_FORMATS:
        return data, _REC_FORMATS[fmt]
    buf = io.BytesIO()
    Image.fromarray(decode_image(data, dataset.where(i))).save(buf, format="PNG")
    return buf.getvalue(), "png"


def rec_paths(out):
    """(rec, idx, property, label map) paths for write_recordio's `out`."""
    out = os.fspath(out)
    if out.endswith(".rec"):
        prefix = out[:-4]
        return out, prefix + ".idx", property_path(out), prefix + ".label_map.npy"
    return tuple(os.path.join(out, f) for f in ("train.rec", "train.idx", "property",
                                                 "label_map.npy"))


# what a directory export owns: replaced wholesale; anything else a user put there is kept
_EXPORT_NAMES = ("train.rec", "train.idx", "property", "label_map.npy", "train.labels.npz",
                 "arcface_config.py")


def _export_owned(name):
    return name in _EXPORT_NAMES or name.endswith(".bin")


def verification_bins(dataset):
    """The insightface verification files (*.bin) beside a RecordIO dataset's train.rec."""
    if not isinstance(dataset, RecordDataset):
        return []
    d = os.path.dirname(os.path.abspath(dataset.rec_path))
    return sorted(glob.glob(os.path.join(glob.escape(d), "*.bin")))


def arcface_config(rec_dir, num_classes, num_image, val_targets):
    """An arcface_torch config snippet (configs/*.py style) for the export in rec_dir."""
    return ("# arcface_torch settings for this core set (merge into your configs/*.py)\n"
            "from easydict import EasyDict as edict\n\n"
            "config = edict()\n"
            "config.rec = %r\n"
            "config.num_classes = %d\n"
            "config.num_image = %d\n"
            "config.val_targets = %r\n"
            % (os.path.abspath(rec_dir), num_classes, num_image, list(val_targets)))


def write_recordio(out, dataset, keep, *, layout="im2rec", shuffle=False, seed=0,
                   verify="structure", copy_bins=True, progress=None, inputs=(),
                   allow_empty=False):
    """The kept faces as a new RecordIO dataset, labels re-numbered densely.

    out: a directory (created if needed) that receives train.rec, train.idx,
    property, label_map.npy (int64 (C, 2) rows of (old label, new label)) and
    train.labels.npz (the labels, so reading them back needs no header scan);
    for a RecordIO source also its verification *.bin files and
    arcface_config.py. The new directory is swapped in with one rename; files
    a user put in an existing `out` (other than these) are kept. Or a path
    ending in .rec: the .idx, <prefix>.label_map.npy, <prefix>.labels.npz and
    the property go beside it, committed as a group; the property is named
    after the .rec (<prefix>.property; `property` for train.rec, the name
    MXFaceDataset reads), so exports into one folder never share one.
    An empty keep is refused unless allow_empty=True.

    layout: "im2rec" (default) or "insightface", see the module docstring.
    shuffle: a seeded random record order (keys and labels stay dense), as
    DALI training wants; im2rec layout only. Otherwise faces are grouped by
    identity (identity order, then dataset order).
    verify: "structure" (JPEG markers, PNG chunks and CRCs), "decode" (also a
    full decode) or "none"; a bad image fails the export, naming its record,
    before anything is committed. Image bytes are copied as they are (JPEG,
    PNG and BMP; other formats are re-encoded as PNG).
    inputs: files the export must not replace; progress: a wrapper of the indices.
    Returns a dict of the written paths and num_classes / num_image.
    """
    _check_layout(layout, shuffle)
    keep = _keep_array(keep, len(dataset))
    out = os.fspath(out)
    as_dir = not out.endswith(".rec")
    rec, idxp, prop, mapp = rec_paths(out)
    bins = verification_bins(dataset) if (copy_bins and as_dir) else []
    need = (dataset.approx_bytes(keep) + 48 * len(keep) + sum(os.path.getsize(b) for b in bins))
    outputs = [out] if as_dir else [rec, idxp, prop, mapp, labels_sidecar_path(rec)]
    _guard(outputs, dataset, inputs, need)
    _not_empty(keep, allow_empty)
    if as_dir:
        _check_not_a_tree(out)
    idx, old, new = _order(dataset, keep, shuffle, seed)
    d = AtomicDir(out, overwrite=True, keep_others=lambda n: not _export_owned(n)) \
        if as_dir else None
    if d is not None:
        rec, idxp, prop, mapp = rec_paths(d.tmp)
    files = d if d is not None else AtomicFiles()
    try:
        payloads = (_rec_payload(dataset, int(i), verify)[0] for i in _each(idx, progress))
        write_face_recordio(rec, new, payloads, num_classes=len(old),
                            image_size=dataset.image_size, layout=layout, files=files)
        np.save(files.open(mapp), _label_map(old))
        if d is not None:  # a directory export is ready to train: .bin files and a config
            names = [_copy_into(d, files, b)[:-4] for b in bins]
            with files.open(os.path.join(d.tmp, "arcface_config.py"), "w") as f:
                f.write(arcface_config(out, len(old), len(idx), names))
        files.commit()
    except BaseException as e:
        files.abort()
        _reraise(e, out)
    return _recordio_result(out, as_dir, len(old), len(idx), bins)


def _recordio_result(out, as_dir, num_classes, num_image, bins):
    """What write_recordio wrote, by role, and the set's size."""
    rec, idxp, prop, mapp = rec_paths(out)
    res = {"rec": rec, "idx": idxp, "property": prop, "label_map": mapp,
           "labels": labels_sidecar_path(rec), "num_classes": int(num_classes),
           "num_image": int(num_image), "bins": [os.path.join(out, os.path.basename(b))
                                                  for b in bins]}
    if as_dir:
        res["config"] = os.path.join(out, "arcface_config.py")
    return res


def _check_layout(layout, shuffle):
    if layout not in ("insightface", "im2rec"):
        raise ValueError("layout must be 'insightface' or 'im2rec', got %r" % (layout,))
    if shuffle and layout == "insightface":
        raise ValueError("the insightface layout keeps each identity's images together; "
                         "shuffle needs layout='im2rec'")


def _check_not_a_tree(out):
    """Replacing a folder that holds folders could be replacing something else entirely."""
    if os.path.isdir(out):
        sub = sorted(e.name for e in os.scandir(out) if e.is_dir(follow_symlinks=False))
        if sub:
            raise FileExistsError("%s holds folders (%s): not a RecordIO export; choose a new or "
                                  "empty output folder" % (out, ", ".join(sub[:3])))


def _copy_into(d, files, path):
    """Copy a file into the tree being built; its name."""
    name = os.path.basename(path)
    with open(path, "rb") as src, files.open(os.path.join(d.tmp, name)) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return name


def _write_file(path, data):
    """One new file: the bare system calls (the tree makes one per face)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def write_imagefolder(out_dir, dataset, keep, *, mode="symlink", overwrite=False,
                      verify="structure", progress=None, inputs=(), allow_empty=False):
    """The kept faces as an image-folder tree out_dir/<identity>/<file>.

    Image-folder datasets keep their relative paths, as symlinks to the
    originals (mode="symlink") or copies (mode="copy"). RecordIO datasets have
    no files to link: each face's encoded bytes are written to
    <label, zero-padded>/<key>.<jpg|png|...> whatever the mode.
    out_dir must not exist or be empty unless overwrite=True; the new tree is
    swapped in with one rename. Every image is checked (verify) first. An
    empty keep is refused unless allow_empty=True.
    The tree reaches the disk with one syncfs of its file system before the swap:
    an fsync per file would be a disk write per face.
    progress: optional wrapper of the index iterable, e.g. tqdm.
    """
    if mode not in ("symlink", "copy"):
        raise ValueError("mode must be 'symlink' or 'copy', got %r" % (mode,))
    keep = _keep_array(keep, len(dataset))
    out_dir = os.fspath(out_dir)
    need = 0 if (mode == "symlink" and isinstance(dataset, ImageFolderDataset)) \
        else dataset.approx_bytes(keep)
    _guard([out_dir], dataset, inputs, need)
    _not_empty(keep, allow_empty)
    width = len(str(max(int(dataset.num_classes) - 1, 0)))
    d = AtomicDir(out_dir, overwrite=overwrite)
    try:
        made = set()
        for i in _each(keep, progress):
            i = int(i)
            if isinstance(dataset, ImageFolderDataset):
                rel, data = dataset.name(i), None
                if mode == "copy":  # the bytes checked are the bytes written: one read
                    data = dataset.read_bytes(i)
                    check_image(data, lambda: dataset.where(i), verify)
                elif verify != "none":
                    check_image(dataset.read_bytes(i), lambda: dataset.where(i), verify)
            else:
                data, ext = _rec_payload(dataset, i, verify)
                stem = dataset.key(i) if isinstance(dataset, RecordDataset) else i
                rel = "%0*d/%d.%s" % (width, dataset.labels[i], stem, ext)
            dst = os.path.join(d.tmp, rel)
            parent = os.path.dirname(dst)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            if data is not None:
                _write_file(dst, data)
            else:
                os.symlink(dataset.path(i), dst)
        d.commit(sync="filesystem")
    except BaseException as e:
        d.abort()
        _reraise(e, out_dir)
    return out_dir
