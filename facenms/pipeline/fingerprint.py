"""What a pipeline stage's stamp records of a file, a folder or a dataset: its identity
(device, inode, size, modification time) and a digest of its content, since size and
mtime can lie (a file rewritten in place with its mtime restored, a copy made with
`cp -p`). Small files and the ones named `full` are hashed whole; big ones by a sample:
their first and last 64 KiB and 64 blocks of 4 KiB spread evenly between, which any
rewrite of more than a few records of a .rec or rows of a features file changes."""
import hashlib
import os

import numpy as np

WHOLE = 1 << 20  # files up to this size are hashed whole
EDGE = 1 << 16
BLOCK = 1 << 12
BLOCKS = 64
FOLDER_SAMPLES = 256  # images of an image-folder dataset whose content is sampled


def _sample(f, size):
    h = hashlib.sha1()
    if size <= WHOLE:
        h.update(f.read())
        return h.hexdigest()
    spots = [0, size - EDGE] + [int(p) for p in np.linspace(EDGE, size - EDGE - BLOCK,
                                                            BLOCKS)]
    for pos in spots:
        f.seek(pos)
        h.update(f.read(EDGE if pos in (0, size - EDGE) else BLOCK))
    return h.hexdigest()


def _whole(f):
    h = hashlib.sha1()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def file_id(path, full=False):
    """[device, inode, size, mtime_ns, sha1 of the content (whole, or a sample)]."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        digest = _whole(f) if full else _sample(f, st.st_size)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, digest]


def tree_id(root):
    """A folder's entries (names, link targets, sizes, mtimes, inodes), as count and sha1."""
    h = hashlib.sha1()
    count = 0
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files) + dirs:
            p = os.path.join(d, name)
            st = os.lstat(p)
            h.update(("%s\0%d\0%d\0%d\0%s\n" % (
                os.path.relpath(p, root), st.st_size, st.st_mtime_ns, st.st_ino,
                os.readlink(p) if os.path.islink(p) else "")).encode("utf-8", "surrogateescape"))
            count += 1
    return [count, h.hexdigest()]


def path_id(path, full=False):
    """file_id of a file, tree_id of a folder, None when nothing is there."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return tree_id(path)
    if not os.path.exists(path):
        return None
    return file_id(path, full)


def dataset_id(ds):
    """A dataset's files (RecordIO: .rec sampled, .idx/property/sidecar whole when small) or,
    for an image folder, its root, its names and labels, and a sample of its images."""
    labels = np.ascontiguousarray(np.asarray(ds.labels, dtype=np.int64))
    out = {"faces": len(ds), "labels": hashlib.sha1(labels.tobytes()).hexdigest()}
    files = list(ds.files()) if hasattr(ds, "files") else []
    for p in files:
        out[os.path.abspath(p)] = file_id(p)
    trees = list(ds.trees()) if hasattr(ds, "trees") else []
    if trees and hasattr(ds, "path") and hasattr(ds, "name"):
        # stat'ing every one of millions of images on each run would cost minutes
        h = hashlib.sha1()
        for i in range(len(ds)):
            h.update(ds.name(i).encode("utf-8", "surrogateescape") + b"\0")
        out["names"] = h.hexdigest()
        n = len(ds)
        picks = np.unique(np.linspace(0, n - 1, min(n, FOLDER_SAMPLES)).astype(np.int64))
        out["images"] = hashlib.sha1(repr([file_id(ds.path(int(i)))[2:]
                                           for i in picks]).encode()).hexdigest()
        for t in trees:
            st = os.stat(t)
            out[os.path.abspath(t)] = [st.st_dev, st.st_ino]
    return out
