"""The few system calls the commits need beyond os: syncfs, renameat2, a folder fsync."""
import ctypes
import errno
import os
import sys

_libc = None


def _c_library():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def sync_filesystem(path):
    """Flush the whole file system that holds path, syncfs(2): for a tree of many small
    files one flush, where an fsync per file is a disk write per file. False where there
    is no syncfs (the caller then fsyncs each file)."""
    fn = getattr(_c_library(), "syncfs", None) if sys.platform.startswith("linux") else None
    if fn is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        if fn(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)
    return True


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - some file systems do not allow it
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a, b):
    """Swap two existing paths atomically (Linux renameat2 RENAME_EXCHANGE)."""
    fn = getattr(_c_library(), "renameat2", None) if sys.platform.startswith("linux") else None
    if fn is None:
        raise OSError(errno.ENOSYS, "no atomic exchange on this platform")
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), a)


def pwrite_all(fd, data, offset):
    """os.pwrite until every byte is written (it may write fewer)."""
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def pread_all(fd, buf, pos):
    """Fill the writable buffer buf from fd at pos (pread may return less than asked)."""
    view = memoryview(buf).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], pos + done)
        if got <= 0:
            raise OSError("file ended early at byte %d" % (pos + done))
        done += got
