"""Write outputs under temporary names and move them into place when complete.

A run that crashes or raises midway must never leave a file (or directory)
that has the final name but not the final content: readers would take a
truncated train.rec for a small one. So every output is written to a hidden
temporary sibling `.NAME.tmp-PID-HOST-RAND`, flushed and fsync'ed, and then
moved into place:

- AtomicDir builds a whole directory and swaps it in with one rename
  (renameat2(RENAME_EXCHANGE) on Linux when the directory exists): every
  reader, facenms or not, sees the old tree or the new one. Where the system
  or file system lacks it, the old tree is moved aside under a journal.
- AtomicFiles commits a group of files in one directory. The renames cannot
  be one system call, so a journal listing them is written (and fsync'ed)
  first and removed last; a process that dies in between leaves the journal,
  and the next open or run of that directory (recover()) finishes the renames,
  so readers see the new group, never a mix.

Open transactions are aborted on SIGTERM and SIGINT, and the temporaries of
dead processes on this host are removed by the next run (sweep_stale()).
"""
import ctypes
import errno
import json
import os
import re
import shutil
import signal
import socket
import sys
import threading
import uuid
import weakref

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
# facenms's own pattern and nothing else: the PID and host tell whose temporary it is
_TEMP_RE = re.compile(r"^\.(?P<base>.+)\.tmp-(?P<pid>\d+)-(?P<host>[A-Za-z0-9]+)-[0-9a-f]{8}$")
_JOURNAL_RE = re.compile(r"^\.facenms-commit-(?P<pid>\d+)-(?P<host>[A-Za-z0-9]+)-[0-9a-f]{8}"
                         r"\.json$")


_libc = None


def _c_library():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def temp_name(final):
    """A hidden sibling of `final` that no other writer will pick."""
    d, base = os.path.split(os.path.abspath(final))
    return os.path.join(d, ".%s.tmp-%d-%s-%s" % (base, os.getpid(), _HOST, uuid.uuid4().hex[:8]))


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


# -- stale temporaries ---------------------------------------------------------------

def _boot_time():
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _process_start(pid):
    """Start time (epoch seconds) of process `pid`, None if unknown."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        bt = _boot_time()
        return None if bt is None else bt + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def owner_dead(pid, host, mtime):
    """True when the process that made a temporary of this host is gone.

    A live PID whose process started after the temporary was last written is
    a reused PID: the owner is dead too. Other hosts' temporaries are never
    judged (their PIDs mean nothing here).
    """
    if host != _HOST:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, someone else's
    start = _process_start(pid)
    return start is not None and start > mtime + 2


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def sweep_stale(directory):
    """Remove facenms temporaries in `directory` whose process is dead; their paths.

    Only entries matching facenms's own `.NAME.tmp-PID-HOST-RAND` pattern made
    on this host are considered. Unfinished commit journals are completed first.
    """
    directory = os.fspath(directory)
    recover(directory)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for e in entries:
        m = _TEMP_RE.match(e.name)
        if not m:
            continue
        try:
            mtime = e.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if owner_dead(int(m.group("pid")), m.group("host"), mtime):
            try:
                _remove(e.path)
                removed.append(e.path)
            except OSError:
                pass
    return removed


# -- signals: abort what is open, then die as the signal asks ------------------------

_OPEN = weakref.WeakSet()
_LOCK = threading.Lock()
_INSTALLED = {}


def _on_signal(signum, frame):
    for t in list(_OPEN):
        if getattr(t, "_owner", None) != os.getpid():
            continue  # a forked worker (DataLoader) must not remove its parent's temporaries
        try:
            t.abort()
        except Exception:  # pragma: no cover - best effort while dying
            pass
    prev = _INSTALLED.get(signum, signal.SIG_DFL)
    if callable(prev):
        return prev(signum, frame)  # e.g. KeyboardInterrupt for SIGINT
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # the default action: the exit status says which signal


def _install_handlers():
    if threading.current_thread() is not threading.main_thread():
        return
    with _LOCK:
        for sig in (signal.SIGTERM, signal.SIGINT):
            if sig in _INSTALLED:
                continue
            prev = signal.getsignal(sig)
            if prev is signal.SIG_IGN or prev is None:
                continue
            if prev is not signal.SIG_DFL and prev is not signal.default_int_handler:
                continue  # the application has its own: leave it alone
            _INSTALLED[sig] = prev
            signal.signal(sig, _on_signal)


class Transaction:
    """`with` commits on success and aborts on an exception."""

    def _opened(self):
        _install_handlers()
        self._owner = os.getpid()
        _OPEN.add(self)

    def _closed(self):
        _OPEN.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False


# -- disk space and the user's path in errors ---------------------------------------

def _existing_ancestor(path):
    p = os.path.abspath(os.fspath(path))
    while not os.path.exists(p):
        p = os.path.dirname(p)
    return p


def _oserror(code, msg):
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
    d = _existing_ancestor(path)
    if not os.path.isdir(d):
        d = os.path.dirname(d)
    if not os.access(d, os.W_OK | os.X_OK):
        raise _oserror(errno.EACCES, "%s: cannot write there (%s is not writable)" % (path, d))
    st = os.statvfs(d)
    free = st.f_bavail * st.f_frsize
    if need_bytes and need_bytes + margin > free:
        raise _oserror(errno.ENOSPC, "%s: no space left: the output needs about %d bytes, "
                      "%s has %d free" % (path, need_bytes + margin, d, free))
    return free


def user_error(e, final):
    """An OSError from writing a temporary, restated with the user's path."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return _oserror(e.errno, "%s: no space left on device while writing it (nothing was "
                       "changed)" % final)
    if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EIO):
        return _oserror(e.errno, "%s: %s while writing it (nothing was changed)"
                       % (final, os.strerror(e.errno)))
    return None


# -- the swap ------------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2(a, b, flags):
    fn = getattr(_c_library(), "renameat2", None)
    if fn is None:
        raise OSError(errno.ENOSYS, "renameat2 not available")
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), a)


def exchange(a, b):
    """Swap two existing paths atomically (Linux renameat2 RENAME_EXCHANGE)."""
    if not sys.platform.startswith("linux"):
        raise OSError(errno.ENOSYS, "no atomic exchange on this platform")
    _renameat2(a, b, _RENAME_EXCHANGE)


# -- groups of files -----------------------------------------------------------------

def _move_in(tmp, final):
    """Rename tmp to final; a directory in the way is moved aside and removed after."""
    aside = None
    if os.path.isdir(tmp) and os.path.isdir(final) and not os.path.islink(final):
        aside = temp_name(final)
        os.replace(final, aside)
    os.replace(tmp, final)
    if aside is not None:
        _remove(aside)


def _write_journal(directory, pairs):
    """The renames to finish if this process dies: written and fsync'ed before the first."""
    journal = _journal_path(directory)
    try:
        with open(journal, "w") as f:
            json.dump([[os.path.basename(t), os.path.basename(fi)] for t, fi in pairs], f)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(directory)
    except BaseException:
        if os.path.lexists(journal):
            os.remove(journal)
        raise
    return journal


def _journal_path(directory):
    return os.path.join(directory, ".facenms-commit-%d-%s-%s.json"
                        % (os.getpid(), _HOST, uuid.uuid4().hex[:8]))


def recover(directory):
    """Finish the group commits that a dead process left half done in `directory`.

    Every temporary a journal lists was complete and fsync'ed before the
    journal was written, so rolling forward is safe; readers call this before
    they read. Returns the finals moved into place.
    """
    done = []
    try:
        names = os.listdir(directory)
    except OSError:
        return done
    for name in names:
        m = _JOURNAL_RE.match(name)
        if not m:
            continue
        path = os.path.join(directory, name)
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            continue
        if not owner_dead(int(m.group("pid")), m.group("host"), mtime):
            continue
        try:
            with open(path) as f:
                pairs = json.load(f)
            for tmp, final in pairs:
                tmp, final = os.path.join(directory, tmp), os.path.join(directory, final)
                if os.path.lexists(tmp):
                    _move_in(tmp, final)
                    done.append(final)
            fsync_dir(directory)
            os.remove(path)
        except (OSError, ValueError):  # read-only reader, or a damaged journal: leave it
            continue
    return done


class AtomicFiles(Transaction):
    """A group of output files, committed together or not at all.

        with AtomicFiles() as out:
            with out.open("a.txt", "w") as f: ...
            np.save(out.open("b.npy"), x)
        # both renamed into place here; on an exception neither exists

    Renames happen after every file is complete, under a journal (see the
    module docstring), so a crash during them is finished by the next open.
    """

    def __init__(self):
        self._pending = []  # [final, temp, file object or None]
        self._made = []  # directories created here, deepest first: removed on abort
        self._swept = set()
        self._opened()

    def path(self, final):
        """A temporary path to write `final` through (for writers that want a name)."""
        final = os.fspath(final)
        parent = os.path.dirname(os.path.abspath(final))
        p = parent
        while not os.path.exists(p):
            self._made.append(p)
            p = os.path.dirname(p)
        os.makedirs(parent, exist_ok=True)
        if parent not in self._swept:
            self._swept.add(parent)
            sweep_stale(parent)
        tmp = temp_name(final)
        self._pending.append([final, tmp, None])
        return tmp

    def open(self, final, mode="wb", buffering=-1):
        tmp = self.path(final)
        f = open(tmp, mode, buffering=buffering)
        self._pending[-1][2] = f
        return f

    def finals(self):
        return [p[0] for p in self._pending]

    def commit(self):
        try:
            for final, tmp, f in self._pending:
                try:
                    if f is not None and not f.closed:
                        f.flush()
                        os.fsync(f.fileno())
                        f.close()
                    elif os.path.isfile(tmp):
                        with open(tmp, "rb") as g:
                            os.fsync(g.fileno())
                except OSError as e:
                    mapped = user_error(e, final)
                    if mapped is not None:
                        raise mapped from None
                    raise
        except BaseException:
            self.abort()
            raise
        by_dir = {}
        for final, tmp, _ in self._pending:
            by_dir.setdefault(os.path.dirname(os.path.abspath(final)), []).append((tmp, final))
        for d, pairs in by_dir.items():
            journal = None
            if len(pairs) > 1:
                try:
                    journal = _write_journal(d, pairs)
                except OSError as e:
                    self.abort()
                    raise user_error(e, pairs[0][1]) or e
            # past the journal the group is decided: what is left is finished by recover()
            for tmp, final in pairs:
                os.replace(tmp, final)
            fsync_dir(d)
            if journal is not None:
                os.remove(journal)
                fsync_dir(d)
        self._pending = []
        self._made = []
        self._closed()

    def abort(self):
        for _, tmp, f in self._pending:
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
            try:
                _remove(tmp)
            except OSError:
                pass
        self._pending = []
        for d in self._made:
            try:
                os.rmdir(d)
            except OSError:  # not empty: someone else wrote there too
                pass
        self._made = []
        self._closed()


class AtomicDir(Transaction):
    """Build a directory tree under a temporary name; swap it into place on success.

    `final` must not exist, or be an empty directory, unless overwrite=True.
    The swap is one renameat2(RENAME_EXCHANGE) where the system has it, so a
    reader sees the old tree or the new one; the old tree is removed after.
    keep_others: True, or a predicate on names, carries the old tree's other
    top-level entries (those the new tree does not have) into the new one as
    hard links, so replacing an export does not drop a user's files beside it.
    """

    def __init__(self, final, overwrite=False, keep_others=False):
        self.final = os.path.abspath(os.fspath(final))
        self.keep_others = keep_others
        if os.path.lexists(self.final) and not overwrite:
            if not os.path.isdir(self.final) or os.listdir(self.final):
                raise FileExistsError(
                    "%s already exists and is not an empty directory; "
                    "pass overwrite=True (facenms export --overwrite) to replace it" % self.final)
        if os.path.lexists(self.final) and not os.path.isdir(self.final):
            raise FileExistsError("%s exists and is not a directory" % self.final)
        self._made = []
        p = os.path.dirname(self.final)
        while not os.path.exists(p):
            self._made.append(p)
            p = os.path.dirname(p)
        os.makedirs(os.path.dirname(self.final), exist_ok=True)
        sweep_stale(os.path.dirname(self.final))
        self.tmp = temp_name(self.final)
        os.makedirs(self.tmp)
        self._files = []  # opened by open(): fsync'ed by commit while still open
        self._opened()

    def open(self, path, mode="wb", buffering=-1):
        """A new file at path inside the tree (under self.tmp), as AtomicFiles.open: the
        tree is swapped in whole, so its files need no renames of their own."""
        f = open(path, mode, buffering=buffering)
        self._files.append(f)
        return f

    def _carry_over(self):
        for e in os.scandir(self.final):
            dst = os.path.join(self.tmp, e.name)
            if os.path.lexists(dst) or _TEMP_RE.match(e.name) or _JOURNAL_RE.match(e.name):
                continue
            if callable(self.keep_others) and not self.keep_others(e.name):
                continue
            if e.is_dir(follow_symlinks=False):
                shutil.copytree(e.path, dst, symlinks=True, copy_function=_link_or_copy)
            else:
                _link_or_copy(e.path, dst)

    def commit(self, sync="files"):
        """sync: how the tree reaches the disk before the swap: "files", an fsync of
        every file and folder; "filesystem", one syncfs of its file system (which also
        waits for other writers' data there; worth it for many small files)."""
        if sync not in ("files", "filesystem"):
            raise ValueError("sync must be 'files' or 'filesystem', got %r" % (sync,))
        parent = os.path.dirname(self.final)
        try:
            synced = set()
            for f in self._files:
                if not f.closed:
                    f.flush()
                    if sync == "files":
                        os.fsync(f.fileno())
                        synced.add(os.path.abspath(f.name))
                    f.close()
            walk = () if sync == "filesystem" and sync_filesystem(self.tmp) else \
                os.walk(self.tmp)
            for root, dirs, files in walk:
                for f in files:
                    p = os.path.join(root, f)
                    if not os.path.islink(p) and os.path.abspath(p) not in synced:
                        with open(p, "rb") as g:
                            os.fsync(g.fileno())
                fsync_dir(root)
            exists = os.path.isdir(self.final) and not os.path.islink(self.final)
            if exists and self.keep_others:
                self._carry_over()
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError) and user_error(e, self.final) is not None:
                raise user_error(e, self.final) from None
            raise
        old = None
        if exists:
            try:
                exchange(self.tmp, self.final)  # one step: readers see old or new
                old = self.tmp
            except OSError:
                # no renameat2 here (or not on this file system): move aside, then in, under
                # a journal, so the next open or run finishes a swap a crash cut in two
                journal = _write_journal(parent, [(self.tmp, self.final)])
                _move_in(self.tmp, self.final)
                os.remove(journal)
        else:
            os.replace(self.tmp, self.final)
        fsync_dir(parent)
        self._closed()
        if old is not None:
            _remove(old)

    def abort(self):
        for f in self._files:
            try:
                f.close()
            except OSError:  # its buffer could not be written (a full disk): dropped anyway
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)
        for d in self._made:
            try:
                os.rmdir(d)
            except OSError:
                pass
        self._made = []
        self._closed()


def _link_or_copy(src, dst):
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


# -- outputs must not be inputs ------------------------------------------------------

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
        anc = set(_ancestors(_existing_ancestor(out)))
        for t in trees:
            if _ident(t) in anc:
                raise ValueError("%s: the output would be written inside the input %s; "
                                 "choose another output" % (out, t))


def file_identity(path):
    """What changes when a file is rewritten or replaced: [device, inode, size, mtime_ns]."""
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
