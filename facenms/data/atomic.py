"""Write outputs under temporary names and rename them into place when complete.

A run that crashes or raises midway must never leave a file (or directory)
that has the final name but not the final content: readers would take a
truncated train.rec for a small one. So every output is written to a hidden
temporary sibling and renamed (atomic on POSIX within one file system) only
after it has been flushed and fsync'ed; on failure the temporaries are removed.
"""
import os
import shutil
import uuid


def temp_name(final):
    """A hidden sibling of `final` that no other writer will pick."""
    d, base = os.path.split(os.path.abspath(final))
    return os.path.join(d, ".%s.tmp-%d-%s" % (base, os.getpid(), uuid.uuid4().hex[:8]))


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


class Transaction:
    """`with` commits on success and aborts on an exception."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False


class AtomicFiles(Transaction):
    """A group of output files, committed together or not at all.

        with AtomicFiles() as out:
            with out.open("a.txt", "w") as f: ...
            np.save(out.open("b.npy"), x)
        # both renamed into place here; on an exception neither exists

    Renames happen one after another at commit, after every file is complete,
    so a crash can at worst leave some outputs missing, never a partial one.
    """

    def __init__(self):
        self._pending = []  # [final, temp, file object or None]
        self._made = []  # directories created here, deepest first: removed on abort

    def path(self, final):
        """A temporary path to write `final` through (for writers that want a name)."""
        final = os.fspath(final)
        parent = os.path.dirname(os.path.abspath(final))
        p = parent
        while not os.path.exists(p):
            self._made.append(p)
            p = os.path.dirname(p)
        os.makedirs(parent, exist_ok=True)
        tmp = temp_name(final)
        self._pending.append([final, tmp, None])
        return tmp

    def open(self, final, mode="wb"):
        tmp = self.path(final)
        f = open(tmp, mode)
        self._pending[-1][2] = f
        return f

    def commit(self):
        try:
            for _, tmp, f in self._pending:
                if f is not None and not f.closed:
                    f.flush()
                    os.fsync(f.fileno())
                    f.close()
                elif os.path.isfile(tmp):
                    with open(tmp, "rb") as g:
                        os.fsync(g.fileno())
        except BaseException:
            self.abort()
            raise
        dirs = set()
        for final, tmp, _ in self._pending:
            os.replace(tmp, final)
            dirs.add(os.path.dirname(os.path.abspath(final)))
        for d in dirs:
            fsync_dir(d)
        self._pending = []
        self._made = []

    def abort(self):
        for _, tmp, f in self._pending:
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
            if os.path.isdir(tmp) and not os.path.islink(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
            elif os.path.lexists(tmp):
                os.remove(tmp)
        self._pending = []
        for d in self._made:
            try:
                os.rmdir(d)
            except OSError:  # not empty: someone else wrote there too
                pass
        self._made = []



class AtomicDir(Transaction):
    """Build a directory tree under a temporary name; rename it into place on success.

    `final` must not exist, or be an empty directory, unless overwrite=True (the
    old tree is then moved aside and removed only after the new one is in place).
    """

    def __init__(self, final, overwrite=False):
        self.final = os.path.abspath(os.fspath(final))
        if os.path.lexists(self.final) and not overwrite:
            if not os.path.isdir(self.final) or os.listdir(self.final):
                raise FileExistsError(
                    "%s already exists and is not an empty directory; "
                    "pass overwrite=True to replace it" % self.final)
        self._made = []
        p = os.path.dirname(self.final)
        while not os.path.exists(p):
            self._made.append(p)
            p = os.path.dirname(p)
        os.makedirs(os.path.dirname(self.final), exist_ok=True)
        self.tmp = temp_name(self.final)
        os.makedirs(self.tmp)

    def commit(self):
        old = None
        if os.path.lexists(self.final):
            if os.path.isdir(self.final) and not os.listdir(self.final):
                os.rmdir(self.final)
            else:
                old = temp_name(self.final)
                os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        fsync_dir(os.path.dirname(self.final))
        if old is not None:
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.remove(old)

    def abort(self):
        shutil.rmtree(self.tmp, ignore_errors=True)
        for d in self._made:
            try:
                os.rmdir(d)
            except OSError:
                pass



def file_identity(path):
    """What changes when a file is rewritten or replaced: [device, inode, size, mtime_ns]."""
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
