"""Export a core set: kept indices, .lst files, a RecordIO subset, an image-folder tree.

Every output is written under a temporary name and renamed when complete
(facenms._atomic), so a failure midway - an image that does not decode, a full
disk, a kill - leaves the previous state, never a half-written output.
"""
import io
import os
import shutil

import numpy as np
from PIL import Image

from ..data.atomic import AtomicDir, AtomicFiles
from ..data.base import decode_image, image_format
from ..data.imagefolder import ImageFolderDataset
from ..data.recdataset import RecordDataset, write_face_recordio

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


def save_indices(path, keep):
    """Kept indices as an int64 .npy file."""
    keep = _keep_array(keep)
    with AtomicFiles() as out:
        np.save(out.open(path), keep)
    return os.fspath(path)


def _each(items, progress):
    return progress(items) if progress is not None else items


def write_lst(path, dataset, keep, progress=None):
    """An im2rec-style list: `index\\tlabel\\tname` per kept face, in `keep` order.

    index is the face's index in `dataset`, label its original label, name
    dataset.name(i) (the relative path for image folders, rec:<key> for RecordIO).
    progress: optional wrapper of the index iterable, e.g. tqdm.
    """
    keep = _keep_array(keep, len(dataset))
    with AtomicFiles() as out:
        with out.open(path, "w") as f:
            for i in _each(keep, progress):
                name = dataset.name(int(i))
                if "\t" in name or "\n" in name:
                    raise ValueError("%s: a tab or newline in the name breaks the .lst format"
                                     % dataset.where(int(i)))
                f.write("%d\t%d\t%s\n" % (i, dataset.labels[i], name))
    return os.fspath(path)


def _rec_payload(dataset, i):
    """The encoded bytes to store for face i, re-encoded as PNG if readers may not decode it."""
    data = dataset.read_bytes(i)
    fmt, _ = image_format(data, dataset.where(i))
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
        return (out, prefix + ".idx",
                os.path.join(os.path.dirname(os.path.abspath(out)), "property"),
                prefix + ".label_map.npy")
    return tuple(os.path.join(out, f) for f in ("train.rec", "train.idx", "property",
                                                 "label_map.npy"))


def write_recordio(out, dataset, keep, layout="insightface", progress=None):
    """The kept faces as a new RecordIO dataset, labels re-numbered densely.

    out: a directory (created if needed) that receives train.rec, train.idx,
    property and label_map.npy; or a path ending in .rec (the .idx and
    <prefix>.label_map.npy go beside it, `property` in its directory).
    Faces are grouped by identity (identity order, then dataset order) as the
    insightface layout requires. label_map.npy is an int64 (C, 2) array of
    (old label, new label) rows. Image bytes are copied as they are (JPEG, PNG
    and BMP; other formats are re-encoded as PNG), after a header check.
    layout="im2rec" writes no header or identity records (keys 0..n-1): needed
    past 2**24 images + identities, where the header's float32 keys are inexact.
    progress: optional wrapper of the index iterable, e.g. tqdm.
    Returns the dict of written paths.
    """
    keep = _keep_array(keep, len(dataset))
    labels = np.asarray(dataset.labels, dtype=np.int64)
    idx = keep[np.lexsort((keep, labels[keep]))]
    old = np.unique(labels[idx])
    new = np.searchsorted(old, labels[idx])
    rec, idxp, prop, mapp = rec_paths(out)
    files = AtomicFiles()
    payloads = (_rec_payload(dataset, int(i))[0] for i in _each(idx, progress))
    write_face_recordio(rec, new, payloads,
                        num_classes=len(old), image_size=dataset.image_size,
                        layout=layout, files=files)
    try:
        np.save(files.open(mapp), np.stack([old, np.arange(len(old))], axis=1).astype(np.int64))
        files.commit()
    except BaseException:
        files.abort()
        raise
    return {"rec": rec, "idx": idxp, "property": prop, "label_map": mapp}


def write_imagefolder(out_dir, dataset, keep, mode="symlink", overwrite=False, progress=None):
    """The kept faces as an image-folder tree out_dir/<identity>/<file>.

    Image-folder datasets keep their relative paths, as symlinks to the
    originals (mode="symlink") or copies (mode="copy"). RecordIO datasets have
    no files to link: each face's encoded bytes are written to
    <label, zero-padded>/<key>.<jpg|png|...> whatever the mode.
    out_dir must not exist or be empty unless overwrite=True.
    progress: optional wrapper of the index iterable, e.g. tqdm.
    """
    if mode not in ("symlink", "copy"):
        raise ValueError("mode must be 'symlink' or 'copy', got %r" % (mode,))
    keep = _keep_array(keep, len(dataset))
    width = len(str(max(int(dataset.num_classes) - 1, 0)))
    with AtomicDir(out_dir, overwrite=overwrite) as d:
        made = set()
        for i in _each(keep, progress):
            i = int(i)
            if isinstance(dataset, ImageFolderDataset):
                rel, data = dataset.name(i), None
            else:
                data, ext = _rec_payload(dataset, i)
                stem = dataset.key(i) if isinstance(dataset, RecordDataset) else i
                rel = "%0*d/%d.%s" % (width, dataset.labels[i], stem, ext)
            dst = os.path.join(d.tmp, rel)
            parent = os.path.dirname(dst)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            if data is not None:
                with open(dst, "wb") as f:
                    f.write(data)
            elif mode == "symlink":
                os.symlink(dataset.path(i), dst)
            else:
                shutil.copyfile(dataset.path(i), dst)
    return os.fspath(out_dir)
