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

Open transactions are aborted on SIGTERM and SIGINT (transaction.py), and the
temporaries of dead processes on this host are removed by the next run
(stale.sweep_stale).
"""
import os
import shutil

from .journal import move_in, remove, write_journal
from .owners import JOURNAL_RE, TEMP_RE, temp_name
from .preflight import existing_ancestor, missing_folders, one_line_oserror, user_error
from .stale import sweep_stale
from .syscalls import exchange, fsync_dir, sync_filesystem
from .transaction import Transaction


def _same_path(a, b):
    """Two spellings (or links) of one file."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # not both there yet
        return False


def _named(e, final):
    """An OSError met creating the temporary of `final`, restated with `final`."""
    return user_error(e, final) or one_line_oserror(
        e.errno, "%s: cannot write it (%s)" % (final, e.strerror or e))


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
        if os.path.isdir(final):
            raise IsADirectoryError("%s: a folder is in the way; give a file name" % final)
        for other, _, _ in self._pending:  # two outputs of one group at one path: one lost
            if _same_path(other, final):
                raise ValueError("%s: also given as the output %s; give different outputs"
                                 % (final, other))
        parent = os.path.dirname(os.path.abspath(final))
        above = existing_ancestor(parent)
        if not os.path.isdir(above):
            raise NotADirectoryError("%s: cannot write it (%s is a file, not a folder)"
                                     % (final, above))
        self._made += missing_folders(final)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as e:
            raise _named(e, final) from None
        if parent not in self._swept:
            self._swept.add(parent)
            sweep_stale(parent)
        tmp = temp_name(final)
        self._pending.append([final, tmp, None])
        return tmp

    def open(self, final, mode="wb", buffering=-1):
        tmp = self.path(final)
        try:
            f = open(tmp, mode, buffering=buffering)
        except OSError as e:  # named by the user's path, not the hidden temporary
            self._pending.pop()
            raise _named(e, final) from None
        self._pending[-1][2] = f
        return f

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
                    journal = write_journal(d, pairs)
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
                remove(tmp)
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
        self._made = missing_folders(self.final)
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
            if os.path.lexists(dst) or TEMP_RE.match(e.name) or JOURNAL_RE.match(e.name):
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
                journal = write_journal(parent, [(self.tmp, self.final)])
                move_in(self.tmp, self.final)
                os.remove(journal)
        else:
            os.replace(self.tmp, self.final)
        fsync_dir(parent)
        self._closed()
        if old is not None:
            remove(old)

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
