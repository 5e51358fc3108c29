"""Renames that must all happen: a journal is written before the first and removed after
the last, and recover() finishes the renames a dead process left half done."""
import json
import os
import shutil

from .owners import JOURNAL_RE, journal_name, owner_dead, temp_name
from .syscalls import fsync_dir


def remove(path):
    """Remove a file, link or whole folder."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def move_in(tmp, final):
    """Rename tmp to final; a directory in the way is moved aside and removed after."""
    aside = None
    if os.path.isdir(tmp) and os.path.isdir(final) and not os.path.islink(final):
        aside = temp_name(final)
        os.replace(final, aside)
    os.replace(tmp, final)
    if aside is not None:
        remove(aside)


def write_journal(directory, pairs):
    """The renames to finish if this process dies: written and fsync'ed before the first."""
    journal = journal_name(directory)
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
        m = JOURNAL_RE.match(name)
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
                    move_in(tmp, final)
                    done.append(final)
            fsync_dir(directory)
            os.remove(path)
        except (OSError, ValueError):  # read-only reader, or a damaged journal: leave it
            continue
    return done
