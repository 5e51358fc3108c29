"""Checks made before anything is written: room on the disk, permission, and that no
output is an input; and the rewording of write errors so they name the user's path."""
import errno
import os


def missing_folders(path):
    """The folders above `path` that do not exist yet, deepest first."""
    out = []
    p = os.path.dirname(os.path.abspath(os.fspath(path)))
    while not os.path.exists(p):
        out.append(p)
        p = os.path.dirname(p)
    return out


def existing_ancestor(path):
    """`path` itself if it exists, else its nearest existing folder."""
    p = os.path.abspath(os.fspath(path))
    if os.path.exists(p):
        return p
    missing = missing_folders(p)
    return os.path.dirname(missing[-1] if missing else p)


def one_line_oserror(code, msg):
    """An OSError with errno `code` whose text is `msg` alone (one clean line for the CLI)."""
    e = OSError(msg)
    e.errno = code
    return e


def check_writable(path, need_bytes=0, margin=None):
    """Raise OSError naming `path` unless its nearest existing folder is writable with room.

    need_bytes: the estimated size of what will be written, plus `margin`
    (default 1% + 64 KiB: file system overhead).
    """
    if margin is None:
        margin = (1 << 16) + need_bytes // 100
    path = os.fspath(path)
    d = existing_ancestor(path)
    if not os.path.isdir(d):
        d = os.path.dirname(d)
    if not os.access(d, os.W_OK | os.X_OK):
        raise one_line_oserror(errno.EACCES, "%s: cannot write there (%s is not writable)"
                               % (path, d))
    st = os.statvfs(d)
    free = st.f_bavail * st.f_frsize
    if need_bytes and need_bytes + margin > free:
        raise one_line_oserror(errno.ENOSPC, "%s: no space left: the output needs about %d "
                               "bytes, %s has %d free" % (path, need_bytes + margin, d, free))
    return free


def user_error(e, final):
    """An OSError from writing a temporary, restated with the user's path (None: leave it)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return one_line_oserror(e.errno, "%s: no space left on device while writing it "
                                "(nothing was changed)" % final)
    if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EIO):
        return one_line_oserror(e.errno, "%s: %s while writing it (nothing was changed)"
                                % (final, os.strerror(e.errno)))
    return None


def _ident(path):
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _ancestors(path):
    """(dev, ino) of `path` and every folder above it."""
    out = []
    p = os.path.realpath(path)
    while True:
        try:
            out.append(_ident(p))
        except OSError:
            pass
        q = os.path.dirname(p)
        if q == p:
            return out
        p = q


def check_not_inputs(outputs, inputs, tree_inputs=()):
    """Raise ValueError when writing `outputs` would replace one of `inputs`.

    Compares real files (device and inode), not names: an output that is an
    input (a hard link, a symlink, another spelling), or an output directory
    that is or contains an input. tree_inputs are input directories (an image
    folder root) inside which nothing may be written either.
    """
    inputs = [os.fspath(i) for i in inputs if i is not None and os.path.exists(i)]
    trees = [os.fspath(t) for t in tree_inputs if os.path.exists(t)]
    for out in outputs:
        out = os.fspath(out)
        if os.path.exists(out):
            ident = _ident(out)
            for i in inputs + trees:
                if ident in _ancestors(i):
                    what = "is" if _ident(i) == ident else "contains"
                    raise ValueError("%s: the output %s the input %s; choose another output"
                                     % (out, what, i))
        anc = set(_ancestors(existing_ancestor(out)))
        for t in trees:
            if _ident(t) in anc:
                raise ValueError("%s: the output would be written inside the input %s; "
                                 "choose another output" % (out, t))


def file_identity(path):
    """What changes when a file is rewritten or replaced: [device, inode, size, mtime_ns]."""
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
